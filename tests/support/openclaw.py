"""Shared helpers for the OpenClaw sync tests: spec/settings builders and OpenClaw's own config schema."""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import json5
import jsonschema

from aiosd.config.settings import ModelSpec, OpenClawSettings
from tests.support.chat_fixtures import FIXTURES
from tests.support.model_specs import model_spec

OPENCLAW_SCHEMA = FIXTURES / "config-schema-2026.9.6.json"
BASE_URL = "http://127.0.0.1:8700/v1"
API_KEY = "sk-aiosd-test-key-0123456789"


def spec(model_id: str, **overrides) -> ModelSpec:
    return model_spec(model_id, **{"kernel_model": f"kernel-{model_id}", "backend": "openai", **overrides})


def settings(config_path: Path | str | None, **overrides) -> OpenClawSettings:
    base = OpenClawSettings(
        sync=True,
        config_path=str(config_path) if config_path is not None else None,
        provider_id="aios",
        interval=60.0,
        base_url=None,
        api_key=None,
        create=True,
        allowlist="auto",
        allow_entries="wildcard",
        backup=True,
        timeout_seconds=None,
    )
    return replace(base, **overrides)


@functools.cache
def openclaw_validator() -> jsonschema.Draft7Validator:
    """OpenClaw's own (draft-07) schema; built once. check_schema is skipped on purpose: some
    channel patterns use ``\\p{Cs}``, which Python's ``re`` cannot compile, in parts aiosd never writes."""
    schema = json.loads(OPENCLAW_SCHEMA.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    return jsonschema.Draft7Validator(schema)


def assert_valid_openclaw(document_or_path: dict | Path) -> dict:
    """Fail with every schema error when the document (or the file's JSON5) is not valid for OpenClaw."""
    path = document_or_path
    document: dict = json5.loads(path.read_text()) if isinstance(path, Path) else path
    errors = sorted(openclaw_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    return document


# A hand-edited file of the legacy generation... and the current one, with everything aiosd must keep.
RICH_FILE = """\
// OpenClaw config, edited by hand
{
  meta: { lastTouchedVersion: "2026.9.6" },
  gateway: { port: 18789, mode: "local", bind: "loopback" },  // restart on change
  logging: { level: "info" },
  models: {
    mode: "merge",
    providers: {
      openrouter: {
        baseUrl: "https://openrouter.ai/api/v1",
        apiKey: "sk-or-other-provider-secret",
        api: "openai-completions",
        models: [ { id: "qwen", name: "Qwen" } ],
      },
      aios: {
        baseUrl: "http://127.0.0.1:9999/v1",
        apiKey: "stale-key",
        api: "openai-completions",
        timeoutSeconds: 900,  // the kernel is slow
        models: [
          { id: "old", name: "old (via AIOS)" },
          { id: "sonnet", name: "renamed", params: { temperature: 0.2 }, compat: { supportsStrictMode: false } },
        ],
      },
    },
  },
  agents: {
    defaults: {
      model: { primary: "openrouter/qwen", fallbacks: ["aios/sonnet"] },
      workspace: "~/work",
      models: {
        "openrouter/qwen": { alias: "q" },
        "aios/sonnet": { alias: "s" },
        "aios/old": { alias: "o" },
      },
      %(policy)s
    },
  },
}
"""


def rich_file(*, model_policy: bool) -> str:
    policy = 'modelPolicy: { allow: ["openrouter/qwen", "aios/old", "q"] },' if model_policy else ""
    text = RICH_FILE % {"policy": policy}
    if model_policy:
        text = text.replace('meta: { lastTouchedVersion: "2026.9.6" }',
                            'meta: { lastTouchedVersion: "2026.9.6", migrations: { modelPolicyAllowlist: true } }')
    return text

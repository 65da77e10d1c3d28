"""The typed ``Config`` from a validated, defaulted document: the few derived values, then one ``msgspec.convert``.

The settings classes mirror the schema's sections field for field, so msgspec fills them (durations are
already seconds); what is not a plain copy of a file key is one small function here, one per concern.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from aiosd.config.schema import in_seconds
from aiosd.config.settings import Config, redact_url

Section = dict[str, Any]


def to_config(filled: Section, keys: list[str], source_path: Path) -> Config:
    """``filled`` (validated, every default in) as a ``Config``; ``keys`` are the secrets ``auth.keys`` names."""
    document = in_seconds(filled)
    kernel = primary_kernel(document["kernel"])
    listen_host, listen_port = split_listen(document["listen"])
    shaped = {
        **document,
        "listen_host": listen_host,
        "listen_port": listen_port,
        "log_level": document["logging"]["level"],
        "kernel": kernel,
        "kernels": [pool_member(kernel, entry) for entry in document["kernels"]],
        "scheduler": {**document["scheduler"], "priority_header": document["scheduler"]["priority_header"].lower()},
        "models": {**document["models"], "map": mapped_models(document["models"])},
        "auth": {"keys": keys, "clients": [client(i, entry) for i, entry in enumerate(document["auth"]["keys"])]},
    }
    # strict=False: JSON Schema counts 4.0 as an integer, so msgspec may too.
    return replace(msgspec.convert(shaped, Config, strict=False), source_path=source_path)


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (the host maybe in brackets) as its host and port."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def kernel_name(url: str) -> str:
    """A pool member's default name: its URL's host:port, never a password."""
    host = urlsplit(redact_url(url)).netloc.rpartition("@")[2]
    # Shown in a response header and as a metrics label: plain ASCII only.
    return re.sub(r"[^A-Za-z0-9._:\[\]-]", "_", host)[:64] or "kernel"


def primary_kernel(section: Section) -> Section:
    """The ``kernel:`` section, named after its URL."""
    return {**section, "url": section["url"].rstrip("/"), "name": kernel_name(section["url"])}


def pool_member(kernel: Section, entry: Section) -> Section:
    """A ``kernels:`` entry: the shared ``kernel:`` settings with its own url, name, slots, weight and labels."""
    return {
        **kernel,
        **entry,
        "url": entry["url"].rstrip("/"),
        "name": entry.get("name") or kernel_name(entry["url"]),
        "labels": sorted(entry["labels"].items()),
    }


def mapped_models(models: Section) -> list[Section]:
    """``models.map`` as a list in file order, each entry with its id and the defaults it does not set."""
    return [
        {
            **models["defaults"],
            "backend": None,
            **entry,
            "id": model_id,
            "name": entry.get("name") or f"{model_id} (via AIOS)",
            "source": "map",
        }
        for model_id, entry in models["map"].items()
    ]


def client(index: int, entry: str | Section) -> Section:
    """Who the ``auth.keys`` entry at ``index`` belongs to (a bare key string is ``key-<n>`` with the defaults)."""
    fields = entry if isinstance(entry, dict) else {}
    return {**fields, "name": fields.get("name") or f"key-{index + 1}"}

"""The pure merge: what aiosd writes into OpenClaw's config document, and everything it leaves alone."""

from __future__ import annotations

import copy

import json5
import pytest

from aiosd.openclaw.merge import (
    MergeConflict,
    allowlists_in,
    desired_provider,
    merge,
    remove,
)
from tests.support.openclaw import (
    API_KEY,
    BASE_URL,
    assert_valid_openclaw,
    openclaw_validator,
    rich_file,
    spec,
)

SONNET, NEW = spec("sonnet"), spec("new-model", tools="none", reasoning=True, input=("text", "image"))


def provider(*specs):
    return desired_provider(specs or (SONNET,), BASE_URL, API_KEY)


def merged(document, *specs, **kwargs):
    out = merge(document, "aios", provider(*specs), **kwargs)
    assert_valid_openclaw(out)
    return out


# --- the provider entry -----------------------------------------------------------------------


def test_provider_rows_are_honest_and_use_only_keys_openclaw_knows():
    entry = provider(SONNET, NEW)
    schema = openclaw_validator().schema["properties"]["models"]["properties"]["providers"]["additionalProperties"]
    assert set(entry) <= set(schema["properties"])
    row_schema = schema["properties"]["models"]["items"]
    for row in entry["models"]:
        assert set(row) <= set(row_schema["properties"])
        assert set(row["compat"]) <= set(row_schema["properties"]["compat"]["properties"])
        assert row["cost"] == {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}
        assert row["compat"]["supportsUsageInStreaming"] is True
        # OpenClaw then sends each call's session id (x-session-affinity): aiosd's fair share per session.
        assert row["compat"]["sendSessionAffinityHeaders"] is True
    assert entry["api"] == "openai-completions" and entry["baseUrl"] == BASE_URL and entry["apiKey"] == API_KEY
    sonnet, new = entry["models"]
    assert (sonnet["contextWindow"], sonnet["maxTokens"], sonnet["input"], sonnet["reasoning"]) == (
        200000, 8192, ["text"], False)
    assert sonnet["compat"]["supportsTools"] is True
    assert (new["reasoning"], new["input"], new["compat"]["supportsTools"]) == (True, ["text", "image"], False)


def test_a_repeated_id_keeps_the_first_spec():
    entry = provider(spec("a", name="first"), spec("a", name="second"))
    assert [row["name"] for row in entry["models"]] == ["first"]


def test_an_empty_api_key_is_refused():
    with pytest.raises(ValueError):
        desired_provider([SONNET], BASE_URL, "")


def test_an_empty_document_gets_only_the_provider():
    out = merged({})
    assert out == {"models": {"providers": {"aios": provider()}}}


def test_the_input_document_is_not_modified():
    document = json5.loads(rich_file(model_policy=True))
    before = copy.deepcopy(document)
    merge(document, "aios", provider(NEW))
    remove(document, "aios")
    assert document == before


def test_everything_else_in_the_file_is_kept_in_order():
    document = json5.loads(rich_file(model_policy=True))
    out = merged(document, SONNET)
    assert list(out) == list(document)
    for key in ("meta", "gateway", "logging"):
        assert out[key] == document[key]
    assert out["models"]["mode"] == "merge"
    assert out["models"]["providers"]["openrouter"] == document["models"]["providers"]["openrouter"]
    assert list(out["models"]["providers"]) == ["openrouter", "aios"]
    defaults = out["agents"]["defaults"]
    assert defaults["model"] == document["agents"]["defaults"]["model"]
    assert defaults["workspace"] == "~/work"


def test_the_users_own_provider_and_row_keys_are_kept_and_aiosd_keys_updated():
    document = json5.loads(rich_file(model_policy=False))
    aios = merged(document, SONNET)["models"]["providers"]["aios"]
    assert aios["timeoutSeconds"] == 900
    assert (aios["baseUrl"], aios["apiKey"]) == (BASE_URL, API_KEY)
    [row] = aios["models"]  # "old" is gone
    assert row["id"] == "sonnet" and row["name"] == "sonnet (via AIOS)"
    assert row["params"] == {"temperature": 0.2}
    assert row["compat"] == {"supportsStrictMode": False, "supportsUsageInStreaming": True, "supportsTools": True,
                             "sendSessionAffinityHeaders": True}


def test_a_secret_ref_api_key_chosen_by_the_user_is_kept():
    ref = {"source": "env", "provider": "default", "id": "AIOSD_KEY"}
    document = {"models": {"providers": {"aios": {**provider(), "apiKey": ref}}}}
    assert merged(document)["models"]["providers"]["aios"]["apiKey"] == ref


def test_rows_for_models_that_are_gone_are_removed():
    document = merged({}, SONNET, NEW)
    out = merged(document, NEW)
    assert [row["id"] for row in out["models"]["providers"]["aios"]["models"]] == ["new-model"]


def test_a_non_object_where_aiosd_writes_is_a_conflict():
    with pytest.raises(MergeConflict, match=r"models\.providers is not an object"):
        merge({"models": {"providers": []}}, "aios", provider())
    with pytest.raises(MergeConflict, match=r"agents\.defaults\.modelPolicy\.allow is not a list"):
        merge({"agents": {"defaults": {"modelPolicy": {"allow": "aios/*"}}}}, "aios", provider())


# --- the allowlist: current generation (modelPolicy.allow) -------------------------------------------


def test_model_policy_gets_the_wildcard_and_loses_stale_refs():
    document = json5.loads(rich_file(model_policy=True))
    defaults = merged(document, SONNET)["agents"]["defaults"]
    assert defaults["modelPolicy"]["allow"] == ["openrouter/qwen", "q", "aios/*"]
    # the legacy map is non-empty, so it is kept in step too (aliases kept, stale entry gone)
    assert defaults["models"] == {"openrouter/qwen": {"alias": "q"}, "aios/sonnet": {"alias": "s"}}


def test_model_policy_with_one_entry_per_model():
    document = {"agents": {"defaults": {"modelPolicy": {"allow": ["openai/gpt-4o", "aios/*", "aios/old"]}}}}
    out = merged(document, SONNET, NEW, allow_entries="each")
    assert out["agents"]["defaults"]["modelPolicy"]["allow"] == ["openai/gpt-4o", "aios/sonnet", "aios/new-model"]
    assert "models" not in out["agents"]["defaults"]


def test_an_empty_allow_list_already_permits_everything_and_stays_empty():
    document = {"agents": {"defaults": {"modelPolicy": {"allow": []}}}}
    assert merged(document)["agents"] == document["agents"]


def test_the_allow_entry_is_not_repeated():
    document = {"agents": {"defaults": {"modelPolicy": {"allow": ["aios/*", "x/y"]}}}}
    once = merged(document)
    assert merged(once) == once
    assert once["agents"]["defaults"]["modelPolicy"]["allow"] == ["aios/*", "x/y"]


# --- the allowlist: legacy generation (agents.defaults.models) -----------------------------------------


def test_legacy_map_gets_each_ref_and_no_model_policy_is_introduced():
    document = json5.loads(rich_file(model_policy=False))
    defaults = merged(document, SONNET, NEW)["agents"]["defaults"]
    assert "modelPolicy" not in defaults
    assert defaults["models"] == {
        "openrouter/qwen": {"alias": "q"},
        "aios/sonnet": {"alias": "s"},
        "aios/new-model": {},
    }
    assert allowlists_in({"agents": {"defaults": defaults}}, "auto") == ["agents.defaults.models"]


def test_no_allowlist_in_the_file_means_none_is_created():
    for document in ({}, {"agents": {"defaults": {"workspace": "~/w"}}}, {"agents": {"defaults": {"models": {}}}}):
        out = merged(document)
        assert out.get("agents") == document.get("agents")
        out = merged(document, allowlist="model_policy")
        assert out.get("agents") == document.get("agents")


def test_allowlist_model_policy_creates_the_list_carrying_the_legacy_entries():
    document = json5.loads(rich_file(model_policy=False))
    defaults = merged(document, SONNET, allowlist="model_policy")["agents"]["defaults"]
    assert defaults["modelPolicy"] == {"allow": ["openrouter/qwen", "aios/*"]}
    assert defaults["models"] == {"openrouter/qwen": {"alias": "q"}, "aios/sonnet": {"alias": "s"}}


def test_allowlist_none_leaves_the_allowlist_alone():
    document = json5.loads(rich_file(model_policy=True))
    out = merged(document, NEW, allowlist="none")
    assert out["agents"] == document["agents"]
    assert out["models"]["providers"]["aios"]["models"][0]["id"] == "new-model"


def test_a_non_empty_allowlist_is_never_emptied():
    notes = []
    document = {"agents": {"defaults": {"modelPolicy": {"allow": ["aios/old"]}, "models": {"aios/old": {}}}}}
    out = merge(document, "aios", desired_provider([], BASE_URL, API_KEY), allow_entries="each", notes=notes)
    assert out["agents"] == document["agents"]
    assert len(notes) == 2


# --- remove --------------------------------------------------------------------------------------


def test_remove_takes_out_the_provider_and_its_allowlist_entries_only():
    document = merged(json5.loads(rich_file(model_policy=True)), SONNET)
    out = remove(document, "aios")
    assert_valid_openclaw(out)
    assert list(out["models"]["providers"]) == ["openrouter"]
    assert out["agents"]["defaults"]["modelPolicy"]["allow"] == ["openrouter/qwen", "q"]
    assert out["agents"]["defaults"]["models"] == {"openrouter/qwen": {"alias": "q"}}
    assert out["meta"] == document["meta"] and out["gateway"] == document["gateway"]


def test_remove_from_a_file_aiosd_created_leaves_an_empty_object():
    assert remove(merged({}), "aios") == {}


def test_remove_without_aiosd_entries_changes_nothing():
    document = json5.loads(rich_file(model_policy=True))
    document["models"]["providers"].pop("aios")
    document["agents"]["defaults"]["modelPolicy"]["allow"].remove("aios/old")
    for ref in ("aios/sonnet", "aios/old"):
        document["agents"]["defaults"]["models"].pop(ref)
    assert remove(document, "aios") == document

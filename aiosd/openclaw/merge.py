"""The pure merge of aiosd's provider and allowlist entries into OpenClaw's config document (no I/O).

What aiosd owns in the document, and nothing else:

- ``models.providers.<provider_id>``: ``baseUrl``, ``apiKey``, ``api`` and one row per exposed model
  (rows for models that are gone are dropped). Keys a user added to the provider or to a row
  (``timeoutSeconds``, ``headers``, ``params``, other ``compat`` flags...) are kept; an ``apiKey``
  that is a SecretRef object is kept too.
- The allowlist, in the generation the file is in: ``agents.defaults.modelPolicy.allow`` when it is a
  non-empty list, and ``<provider_id>/<id>`` keys of a non-empty legacy ``agents.defaults.models``
  map (their values, e.g. aliases, kept). An empty or absent allowlist already permits every model,
  so aiosd never creates one that would restrict the user's other models; and it never empties a
  non-empty allowlist (that would turn "only these" into "anything"), it leaves its stale entry then.

Every function returns a new document; the input is never modified and key order is preserved.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

from aiosd.config.settings import ModelSpec

Allowlist = Literal["auto", "model_policy", "none"]
AllowEntries = Literal["wildcard", "each"]

API = "openai-completions"
ZERO_COST = {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}


class MergeConflict(ValueError):
    """The document has something aiosd must not overwrite where it needs to write (e.g. a non-object)."""


# --- what aiosd wants -------------------------------------------------------------------------


def model_row(spec: ModelSpec) -> dict:
    """One model row of OpenClaw's catalog, with only keys OpenClaw's schema knows."""
    return {
        "id": spec.id,
        "name": spec.name,
        "reasoning": spec.reasoning,
        "input": list(spec.input),
        "cost": dict(ZERO_COST),
        "contextWindow": spec.context_window,
        "maxTokens": spec.max_tokens,
        "compat": {
            # aiosd always sends usage in streams; without this OpenClaw asks for it only on loopback.
            "supportsUsageInStreaming": True,
            # tools: none means aiosd does not offer tools to the model; OpenClaw should not send them.
            "supportsTools": spec.tools != "none",
        },
    }


def desired_provider(models: Sequence[ModelSpec], base_url: str, api_key: str) -> dict:
    """The provider entry aiosd wants, one row per model (the first spec wins for a repeated id)."""
    if not base_url:
        raise ValueError("base_url must not be empty")
    if not api_key:
        raise ValueError("api_key must not be empty (OpenClaw requires one)")
    rows: dict[str, dict] = {}
    for spec in models:
        rows.setdefault(spec.id, model_row(spec))
    return {"baseUrl": base_url, "apiKey": api_key, "api": API, "models": list(rows.values())}


# --- merging ----------------------------------------------------------------------------------


def merge(
    document: dict,
    provider_id: str,
    provider: dict,
    *,
    allowlist: Allowlist = "auto",
    allow_entries: AllowEntries = "wildcard",
    notes: list[str] | None = None,
) -> dict:
    """``document`` with aiosd's provider entry and allowlist entries brought up to date."""
    doc = copy.deepcopy(document)
    notes = notes if notes is not None else []
    models_section = _object(doc, "models", "models", create=True)
    providers = _object(models_section, "providers", "models.providers", create=True)
    existing = providers.get(provider_id)
    providers[provider_id] = _merge_provider(existing if isinstance(existing, dict) else None, provider)
    if allowlist != "none":
        ids = [row["id"] for row in provider["models"]]
        _merge_allowlist(doc, provider_id, ids, allowlist, allow_entries, notes)
    return doc


def remove(document: dict, provider_id: str, *, notes: list[str] | None = None) -> dict:
    """``document`` without aiosd's provider entry and without its allowlist entries."""
    doc = copy.deepcopy(document)
    notes = notes if notes is not None else []
    models_section = _object(doc, "models", "models")
    providers = _object(models_section, "providers", "models.providers")
    if providers is not None and provider_id in providers:
        del providers[provider_id]
        if not providers:  # emptied by aiosd: take the containers it needed out too
            del models_section["providers"]
            if not models_section:
                del doc["models"]
    defaults = _defaults(doc)
    if defaults is not None:
        allow = _allow_list(defaults)
        if allow:
            _set_allow(defaults, _sync_allow(allow, provider_id, [], notes))
        legacy = _legacy_map(defaults)
        if legacy:
            _sync_legacy(legacy, provider_id, [], notes)
    return doc


def allowlists_in(document: dict, allowlist: Allowlist) -> list[str]:
    """Which allowlists ``merge`` maintains in this document (for the one-line sync log)."""
    if allowlist == "none":
        return []
    found = []
    defaults = _defaults(document, strict=False)
    if defaults is not None:
        allow = _allow_list(defaults, strict=False)
        legacy = _legacy_map(defaults, strict=False)
        if allow or (allowlist == "model_policy" and legacy):
            found.append("agents.defaults.modelPolicy.allow")
        if legacy:
            found.append("agents.defaults.models")
    return found


def is_ours(ref: str, provider_id: str) -> bool:
    return isinstance(ref, str) and ref.startswith(provider_id + "/")


# --- the provider entry -----------------------------------------------------------------------


def _merge_provider(old: dict | None, new: dict) -> dict:
    if old is None:
        return copy.deepcopy(new)
    out = dict(old)  # keeps the user's own keys and their order
    out["baseUrl"] = new["baseUrl"]
    if not isinstance(old.get("apiKey"), dict):  # a SecretRef the user chose stays
        out["apiKey"] = new["apiKey"]
    out["api"] = new["api"]
    old_rows = {}
    if isinstance(old.get("models"), list):
        for row in old["models"]:
            if isinstance(row, dict) and isinstance(row.get("id"), str):
                old_rows.setdefault(row["id"], row)
    out["models"] = [_merge_row(old_rows.get(row["id"]), row) for row in new["models"]]
    return out


def _merge_row(old: dict | None, new: dict) -> dict:
    if old is None:
        return copy.deepcopy(new)
    out = dict(old)
    for key, value in new.items():
        if key == "compat" and isinstance(old.get("compat"), dict):
            out["compat"] = {**old["compat"], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- the allowlist ----------------------------------------------------------------------------


def _merge_allowlist(
    doc: dict, provider_id: str, ids: list[str], allowlist: Allowlist, allow_entries: AllowEntries, notes: list[str]
) -> None:
    defaults = _defaults(doc)
    if defaults is None:
        return  # no allowlist anywhere: every model is allowed already
    each = [f"{provider_id}/{i}" for i in ids]
    ours = [f"{provider_id}/*"] if (allow_entries == "wildcard" and ids) else each
    allow = _allow_list(defaults)
    legacy = _legacy_map(defaults)
    if allow:
        _set_allow(defaults, _sync_allow(allow, provider_id, ours, notes))
    elif allowlist == "model_policy" and legacy:
        # Create the current-generation allowlist, carrying over what the legacy map allowed
        # (as OpenClaw's own migration does), so no other model loses its permission.
        carried = [ref for ref in legacy if not is_ours(ref, provider_id)]
        policy = defaults.get("modelPolicy")
        if not isinstance(policy, dict):
            policy = defaults["modelPolicy"] = {}
        policy["allow"] = _dedupe(carried + ours)
    if legacy:
        _sync_legacy(legacy, provider_id, each, notes)


def _sync_allow(allow: list, provider_id: str, ours: list[str], notes: list[str]) -> list:
    """Other entries stay in place; ours are exactly ``ours`` (existing ones in place, new ones last)."""
    wanted = set(ours)
    out, seen = [], set()
    for entry in allow:
        if is_ours(entry, provider_id):
            if entry not in wanted or entry in seen:
                continue
            seen.add(entry)
        out.append(entry)
    out += [ref for ref in ours if ref not in seen]
    if not out:
        notes.append("kept the last entries of modelPolicy.allow (an empty list would allow every model)")
        return list(allow)
    return out


def _sync_legacy(legacy: dict, provider_id: str, each: list[str], notes: list[str]) -> None:
    wanted = set(each)
    stale = [ref for ref in legacy if is_ours(ref, provider_id) and ref not in wanted]
    if stale and len(stale) == len(legacy) and not each:
        notes.append("kept the last entries of agents.defaults.models (an empty map would allow every model)")
        return
    for ref in stale:
        del legacy[ref]
    for ref in each:
        legacy.setdefault(ref, {})


def _set_allow(defaults: dict, allow: list) -> None:
    defaults["modelPolicy"]["allow"] = allow


# --- navigating ---------------------------------------------------------------------------------


def _object(parent: dict | None, key: str, where: str, *, create: bool = False, strict: bool = True) -> dict | None:
    if parent is None:
        return None
    value = parent.get(key)
    if value is None and key not in parent:
        if create:
            value = parent[key] = {}
        return value
    if not isinstance(value, dict):
        if strict:
            raise MergeConflict(f"{where} is not an object")
        return None
    return value


def _defaults(doc: dict, *, strict: bool = True) -> dict | None:
    return _object(_object(doc, "agents", "agents", strict=strict), "defaults", "agents.defaults", strict=strict)


def _allow_list(defaults: dict, *, strict: bool = True) -> list | None:
    policy = _object(defaults, "modelPolicy", "agents.defaults.modelPolicy", strict=strict)
    if policy is None or "allow" not in policy:
        return None
    allow = policy["allow"]
    if not isinstance(allow, list):
        if strict:
            raise MergeConflict("agents.defaults.modelPolicy.allow is not a list")
        return None
    return allow


def _legacy_map(defaults: dict, *, strict: bool = True) -> dict | None:
    return _object(defaults, "models", "agents.defaults.models", strict=strict)


def _dedupe(refs: list[str]) -> list[str]:
    return list(dict.fromkeys(refs))

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
from collections.abc import Iterator, Sequence
from typing import Literal

from aiosd.config.settings import ModelSpec, redact_url

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
            # OpenClaw then names the conversation of each call (x-session-affinity, session_id), so aiosd
            # shares a key's slots fairly between its sessions and keeps each on one kernel.
            "sendSessionAffinityHeaders": True,
        },
    }


def desired_provider(
    models: Sequence[ModelSpec], base_url: str, api_key: str, timeout_seconds: int | None = None
) -> dict:
    """The provider entry aiosd wants, one row per model (the first spec wins for a repeated id)."""
    if not base_url:
        raise ValueError("base_url must not be empty")
    if not api_key:
        raise ValueError("api_key must not be empty (OpenClaw requires one)")
    rows: dict[str, dict] = {}
    for spec in models:
        rows.setdefault(spec.id, model_row(spec))
    provider: dict[str, object] = {"baseUrl": base_url, "apiKey": api_key, "api": API}
    if timeout_seconds is not None:
        provider["timeoutSeconds"] = timeout_seconds
    provider["models"] = list(rows.values())
    return provider


def existing_timeout(document: dict, provider_id: str) -> int | None:
    """The provider's timeoutSeconds in the document, when it is one OpenClaw accepts (an integer > 0)."""
    provider = _provider_of(document, provider_id)
    value = provider.get("timeoutSeconds") if provider is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


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
    models_section = _created_object(doc, "models", "models")
    providers = _created_object(models_section, "providers", "models.providers")
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
    if models_section is not None and providers is not None and provider_id in providers:
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


def is_ours(ref: object, provider_id: str) -> bool:
    """True for an allowlist entry of aiosd's provider (``<provider_id>/...``)."""
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
    if "timeoutSeconds" in new:
        out["timeoutSeconds"] = new["timeoutSeconds"]
    old_rows: dict[str, dict] = {}
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


def _created_object(parent: dict, key: str, where: str) -> dict:
    """``parent[key]``, created empty when absent; MergeConflict when it is there and not an object."""
    value = _object(parent, key, where, create=True)
    assert value is not None  # created when absent; anything else not an object raised
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


# --- describing a change ----------------------------------------------------------------------

_SHOWN_IDS = 5


def describe_changes(old: dict, new: dict, provider_id: str) -> list[str]:
    """What ``merge`` or ``remove`` changed in aiosd's part of the document, as short phrases for one
    log line: models added and removed, provider fields changed, allowlist entries added and removed.
    Never a secret (an apiKey change is named, not shown)."""
    old_provider = _provider_of(old, provider_id)
    new_provider = _provider_of(new, provider_id)
    changes: list[str] = []
    if old_provider is None and new_provider is not None:
        changes.append(f"added provider {provider_id} with {_ids_phrase(_row_ids(new_provider))}")
    elif old_provider is not None and new_provider is None:
        changes.append(f"took provider {provider_id} out")
    elif old_provider is not None and new_provider is not None:
        changes += _provider_changes(old_provider, new_provider)
    for where, old_refs, new_refs in _allowlist_refs(old, new, provider_id):
        added, removed = _added_and_removed(old_refs, new_refs)
        if added:
            changes.append(f"{where} +{', +'.join(_cap(added))}")
        if removed:
            changes.append(f"{where} -{', -'.join(_cap(removed))}")
    return changes


def _provider_changes(old_provider: dict, new_provider: dict) -> list[str]:
    """Models added, removed and updated, and provider fields changed, between two provider entries."""
    changes: list[str] = []
    added, removed = _added_and_removed(_row_ids(old_provider), _row_ids(new_provider))
    if added:
        changes.append(f"models added: {_listed(added)}")
    if removed:
        changes.append(f"models removed: {_listed(removed)}")
    updated = _updated_row_ids(old_provider, new_provider)
    if updated:
        changes.append(f"model rows updated: {_listed(updated)}")
    for key in ("baseUrl", "api", "timeoutSeconds"):
        before, after = old_provider.get(key), new_provider.get(key)
        if before != after:
            if key == "baseUrl":
                before, after = (redact_url(v) if isinstance(v, str) else v for v in (before, after))
            changes.append(f"{key} {_scalar(before)} -> {_scalar(after)}")
    if old_provider.get("apiKey") != new_provider.get("apiKey"):
        changes.append("apiKey replaced")
    return changes


def _added_and_removed(old: list[str], new: list[str]) -> tuple[list[str], list[str]]:
    """(in ``new`` only, in ``old`` only), each in its list's order; each id set built once."""
    old_set, new_set = set(old), set(new)
    return [i for i in new if i not in old_set], [i for i in old if i not in new_set]


def _updated_row_ids(old_provider: dict, new_provider: dict) -> list[str]:
    """Ids of the model rows in both entries whose contents differ."""
    old_rows = {r.get("id"): r for r in old_provider.get("models") or [] if isinstance(r, dict)}
    return [r["id"] for r in new_provider.get("models") or []
            if isinstance(r, dict) and r.get("id") in old_rows and old_rows[r["id"]] != r]


def _provider_of(doc: dict, provider_id: str) -> dict | None:
    providers = _object(_object(doc, "models", "models", strict=False), "providers", "models.providers", strict=False)
    provider = providers.get(provider_id) if providers is not None else None
    return provider if isinstance(provider, dict) else None


def _row_ids(provider: dict) -> list[str]:
    rows = provider.get("models")
    if not isinstance(rows, list):
        return []
    return [r["id"] for r in rows if isinstance(r, dict) and isinstance(r.get("id"), str)]


def _allowlist_refs(old: dict, new: dict, provider_id: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """(where, aiosd's entries before, after) for each allowlist whose entries of aiosd's changed."""
    for where, getter in (("modelPolicy.allow", _allow_refs), ("agents.defaults.models", _legacy_refs)):
        old_refs = [r for r in getter(old) if is_ours(r, provider_id)]
        new_refs = [r for r in getter(new) if is_ours(r, provider_id)]
        if old_refs != new_refs:
            yield where, old_refs, new_refs


def _allow_refs(doc: dict) -> list:
    defaults = _defaults(doc, strict=False)
    return (_allow_list(defaults, strict=False) or []) if defaults is not None else []


def _legacy_refs(doc: dict) -> list:
    defaults = _defaults(doc, strict=False)
    return list(_legacy_map(defaults, strict=False) or {}) if defaults is not None else []


def _cap(items: list[str]) -> list[str]:
    if len(items) <= _SHOWN_IDS:
        return items
    return [*items[:_SHOWN_IDS], f"{len(items) - _SHOWN_IDS} more"]


def _listed(ids: list[str]) -> str:
    return ", ".join(_cap(ids))


def _ids_phrase(ids: list[str]) -> str:
    count = f"{len(ids)} model" + ("" if len(ids) == 1 else "s")
    return f"{count} ({_listed(ids)})" if ids else count


def _scalar(value: object) -> str:
    return "unset" if value is None else str(value)

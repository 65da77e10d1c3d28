"""How every way the AIOS kernel fails maps onto ``aiosd.errors``: the mapping table and the functions that apply it.

What does not live here: talking HTTP (``wires``); raising these errors and remembering
failures for readiness (``client``); the errors for the three failures with no kernel answer
to read (unreachable, aiosd's deadline, a 200 that is not a /query answer), which ``KernelClient``
builds itself because only it knows the kernel's url and the call's deadline (the notes below the
table still describe them).

Status mapping of errors the kernel reports inside HTTP 200 (``response.status_code``), as the
client sees it:

====================  ===========  =========================================================
kernel status_code    client gets  why
====================  ===========  =========================================================
429                   429          the LLM's rate limit; Retry-After is kept if the kernel sent one
408                   504          the LLM was too slow for the kernel
400                   400          the LLM rejected the *content* (context too long, an image the
                                   model cannot take, ...). aiosd validated the shape, so what is
                                   left is the client's content; a 4xx also stops OpenAI SDKs from
                                   re-sending a request that fails the same way every time.
401, 403, 404         502          the kernel's LLM credentials or model config are wrong
503                   503          the kernel cannot reach its LLM (or misread the content)
other 5xx / other     502          the kernel or its LLM failed
====================  ===========  =========================================================

HTTP-level answers: 422 (the kernel could not parse aiosd's body: an aiosd bug) -> 502;
500 ``{"detail"}`` -> 502; 429 -> 429; 503 -> 503; 504 -> 504; anything else -> 502.
``kernel_status`` always carries the kernel's own number (the HTTP status, or the status_code
inside 200), 0 for "no usable HTTP answer" (unreachable, and a 200 that is not a /query answer:
whatever answered is not a working kernel, so it is retried exactly when 0 is in
``retry.on_status``), and None for aiosd's own deadline (never retried: a hung kernel call holds
a kernel worker for good, and a retry would take another one).
"""

from __future__ import annotations

import email.utils
import math
import re
import time

from aiosd.errors import KernelError, KernelRateLimited, KernelRejected
from aiosd.kernel.answer_json import UnreadableJSON, loads_answer

MESSAGE_LIMIT = 300

# Things that look like credentials in the kernel's error sentences (litellm likes to quote them).
_SECRET = re.compile(
    r"sk-[A-Za-z0-9_\-]{6,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-~+/]+=*"
    r"|(?i:api[_-]?key)[\"']?\s*[=:]\s*[\"']?[^\s\"',}]+"
    r"|\b[A-Za-z0-9_\-]{40,}\b"
)


def scrub(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """The kernel's text made safe for a client: one line, credentials redacted, bounded length."""
    line = " ".join(str(text).split())
    line = _SECRET.sub("[redacted]", line)
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def summarize_validation_detail(detail: object) -> str:
    """One sentence out of FastAPI's 422 ``detail`` list (one entry per query type the kernel tried).

    Only ``loc`` and ``msg`` are used: ``input`` echoes the request, i.e. the prompt.
    """
    if isinstance(detail, str):
        return scrub(detail, 200)
    if not isinstance(detail, list) or not detail:
        return "no detail given"
    first = detail[0] if isinstance(detail[0], dict) else {}
    loc = first.get("loc")
    where = ".".join(str(part) for part in loc) if isinstance(loc, list) else "?"
    msg = scrub(first.get("msg") or "invalid", 120)
    more = len(detail) - 1
    suffix = f" (and {more} more problem{'s' if more != 1 else ''})" if more else ""
    return f"{where}: {msg}{suffix}"


# Statuses whose meaning does not depend on where the kernel reported them:
# status -> (error class, what it means, client status or None for the class's, error code or None).
_BY_STATUS: dict[int, tuple[type[KernelError], str, int | None, str | None]] = {
    429: (KernelRateLimited, "The LLM behind the AIOS kernel is rate limited", None, None),
    408: (KernelRejected, "The LLM behind the AIOS kernel took too long to answer", 504, "llm_timeout"),
    503: (KernelRejected, "The AIOS kernel cannot reach its LLM right now", 503, "kernel_llm_unavailable"),
    504: (KernelRejected, "The AIOS kernel (or a proxy in front of it) timed out", 504, "kernel_timeout"),
}


def kernel_error_for_status(
    code: int, sentence: str | None, *, retry_after: float | None, inside_200: bool
) -> KernelError:
    """The client-facing error for a status the kernel reported (inside 200 or as HTTP status)."""
    where = f"status_code {code} inside HTTP 200" if inside_200 else f"HTTP {code}"
    said = f": {scrub(sentence)}" if sentence else ""
    simple = _BY_STATUS.get(code)
    if simple is not None:
        kind, what, status, error_code = simple
        return kind(f"{what} ({where}){said}", kernel_status=code, retry_after=retry_after, status=status,
                    code=error_code, reason=where)
    if code == 400 and inside_200:
        err = KernelRejected(
            f"The LLM behind the AIOS kernel rejected the request ({where}){said.rstrip('.')}. "
            "Usual causes: the conversation exceeds the model's context window, or it contains "
            "content the model does not accept (images for a text-only model).",
            kernel_status=code,
            status=400,
            code="llm_rejected_request",
            reason=where,
        )
        err.type = "invalid_request_error"
        return err
    if code in (401, 403, 404) and inside_200:
        return KernelRejected(
            f"The AIOS kernel's LLM refused it ({where}){said}. The kernel's LLM credentials or "
            "model configuration are wrong; fix the kernel's config.",
            kernel_status=code,
            code="kernel_llm_misconfigured",
            reason=where,
        )
    if code == 500 and sentence and "not all available" in sentence:
        return KernelRejected(
            f"The AIOS kernel does not have the requested model ({where}){said}. "
            "Check models.map against the kernel's LLM config.",
            kernel_status=code,
            code="kernel_model_unavailable",
            reason=where,
        )
    return KernelRejected(
        f"The AIOS kernel failed ({where}){said}",
        kernel_status=code,
        retry_after=retry_after,
        reason=where,
    )


def kernel_error_for_http_answer(
    code: int, body: bytes, path: str, *, retry_after: float | None
) -> KernelError:
    """The error for a non-200 HTTP answer from the kernel: its status, body bytes, and the path asked."""
    try:
        data = loads_answer(body) if body else None
    except UnreadableJSON:
        data = None  # the status alone says enough
    detail = data.get("detail") if isinstance(data, dict) else None
    if code == 422:
        return KernelRejected(
            "The AIOS kernel could not parse the /query body aiosd sent (HTTP 422, "
            f"{summarize_validation_detail(detail)}). This kernel version expects a different "
            "request shape; please report it to aiosd.",
            kernel_status=code,
            code="kernel_rejected_body",
            reason="HTTP 422",
        )
    if code == 500 and isinstance(detail, str):
        hint = ""
        if detail.strip("'\"") == "provider":
            # Seen after anyone called POST /user/select/llms: every later /query fails this way.
            hint = " The kernel is stuck after an LLM selection (POST /user/select/llms); restart it."
        return KernelRejected(
            f"The AIOS kernel failed while handling the request (HTTP 500: {scrub(detail, 200)}).{hint}",
            kernel_status=code,
            reason="HTTP 500",
        )
    if code in (429, 503, 504):
        return kernel_error_for_status(code, None, retry_after=retry_after, inside_200=False)
    if code in (404, 405):
        return KernelRejected(
            f"The server at kernel.url answered HTTP {code} for {path}: "
            "it does not look like an AIOS kernel (check kernel.url).",
            kernel_status=code,
            code="kernel_wrong_url",
            reason=f"HTTP {code}",
        )
    sentence = detail if isinstance(detail, str) else None
    return kernel_error_for_status(code, sentence, retry_after=retry_after, inside_200=False)

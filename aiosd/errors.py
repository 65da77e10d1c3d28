"""The exception tree: every error aiosd can answer a client with, and whose fault it is.

Each subtree means one thing a caller can act on:

- ``ClientError``: the request is wrong; retrying the same request will not help (4xx).
- ``KernelError``: the AIOS kernel (or the LLM behind it) failed; its ``kernel_status`` is what
  the retry policy's ``on_status`` is matched against.
- ``CapacityError``: aiosd itself could not take the request in time (503 + Retry-After).

Every ``AiosdError`` carries what the OpenAI error body needs: HTTP status, ``type`` and
``code``. The HTTP layer turns them into ``{"error": {"message", "type", "code"}}`` in one place.
"""

from __future__ import annotations


class AiosdError(Exception):
    """Base of every error aiosd turns into an OpenAI-style error response."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        # Seconds the client should wait before trying again; sent as Retry-After.
        self.retry_after = retry_after
        # Set on the way up by the code that made kernel calls for this request: how many calls were
        # made (retries and failovers included) and the pool kernel of each, in order. The HTTP layer
        # sends them as X-Aiosd-Attempts and X-Aiosd-Kernels.
        self.attempts: int = 0
        self.kernels: tuple[str, ...] = ()
        # The model the request asked for, when it was known before the failure (metrics label it).
        self.model_id: str | None = None

    def to_body(self) -> dict[str, dict[str, object]]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": None}}


# --- the client's fault -------------------------------------------------------------------


class ClientError(AiosdError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidRequest(ClientError):
    """The body is not a chat completion request aiosd can forward."""


class AuthenticationFailed(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(ClientError):
    status = 404
    code = "model_not_found"


class RequestTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class HeaderFieldsTooLarge(ClientError):
    status = 431
    code = "request_header_fields_too_large"


class RequestTimeout(ClientError):
    status = 408
    code = "request_timeout"


class HostNotAllowed(ClientError):
    status = 421
    type = "invalid_request_error"
    code = "host_not_allowed"


class OriginNotAllowed(ClientError):
    status = 403
    type = "permission_error"
    code = "origin_not_allowed"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


# --- aiosd's own capacity -------------------------------------------------------------------


class CapacityError(AiosdError):
    status = 503
    type = "server_error"
    code = "queue_timeout"


class QueueLimitExceeded(CapacityError):
    """An API key is over its own limit (``max_queued``/``max_in_flight``): 429 with Retry-After."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class TooManyConnections(AiosdError):
    status = 503
    code = "too_many_connections"


# --- the kernel's (or its LLM's) fault ---------------------------------------------------------


class KernelError(AiosdError):
    """The kernel did not give a usable answer.

    ``kernel_status`` is the status that decides retrying: the kernel's HTTP status, or the
    ``response.status_code`` it buried inside an HTTP 200. ``reason`` says in a few words what
    happened, for log lines ("connection refused", "HTTP 500", "status_code 429 inside HTTP 200").
    """

    status = 502
    type = "upstream_error"
    code = "kernel_error"

    def __init__(
        self,
        message: str,
        *,
        kernel_status: int | None = None,
        reason: str | None = None,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, retry_after=retry_after)
        self.kernel_status = kernel_status
        self.reason = reason


class KernelUnreachable(KernelError):
    """No HTTP answer at all: connection refused, reset, DNS, garbage on the wire."""

    status = 502
    code = "kernel_unreachable"


class KernelTimeout(KernelError):
    """aiosd's own deadline for one kernel call ran out (the kernel can hang forever)."""

    status = 504
    code = "kernel_timeout"


class KernelRejected(KernelError):
    """The kernel answered with an error, either as HTTP status or inside HTTP 200."""

    code = "kernel_rejected"


class KernelRateLimited(KernelRejected):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class KernelBadAnswer(KernelError):
    """The kernel answered 200 but the body is not something aiosd can turn into a reply."""

    code = "kernel_bad_answer"


class KernelTextDropped(KernelBadAnswer):
    """Native tool mode: the kernel answered with neither text nor tool calls.

    The kernel throws away any text answer when tools are passed to it natively. The forwarding
    layer applies the model's ``on_text_dropped`` policy: ask again without tools, or answer 502
    with this error's message (which says how to configure around it).
    """

    code = "kernel_dropped_text"

"""The one error tree: every failure a user can cause or meet is a CorralError.

The CLI turns it into one line on stderr and `exit_code`; the gateway and workers turn it into
OpenAI-style error JSON with `http_status`. Nothing else should reach a user as a traceback.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base class: a clear, user-facing message."""

    exit_code = 1
    http_status = 500
    error_type = "server_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_openai(self) -> dict[str, object]:
        """The body OpenAI's API would send for this error."""
        return {"error": {"message": str(self), "type": self.error_type, "param": None, "code": None}}


class ConfigError(CorralError):
    """corral.yaml or a CORRAL_* variable is wrong; names the file, key and fix."""

    exit_code = 2


class InvalidInputError(CorralError):
    """A request, file or argument that cannot be accepted as given."""

    exit_code = 2
    http_status = 400
    error_type = "invalid_request_error"


class BodyTooLargeError(InvalidInputError):
    """A request body over the configured size limit."""

    http_status = 413


class MethodNotAllowedError(InvalidInputError):
    """An HTTP method a path does not support; `allow` lists those it does (sent as the Allow header)."""

    http_status = 405

    def __init__(self, message: str, *, allow: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.allow = allow


class ContentPolicyViolation(InvalidInputError):
    """A guard check blocked the request or its answer; `check` names it (pii, secrets, injection...)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check

    def to_openai(self) -> dict[str, object]:
        body = super().to_openai()
        body["error"] = {**body["error"], "code": "content_policy_violation", "param": self.check}  # type: ignore[dict-item]
        return body


class NotFoundError(CorralError):
    """A model, version, alias, dataset, prompt or artifact that does not exist."""

    exit_code = 3
    http_status = 404
    error_type = "not_found_error"


class ConflictError(CorralError):
    """The request clashes with current state (e.g. retiring a production version)."""

    exit_code = 4
    http_status = 409
    error_type = "conflict_error"


class ArtifactIntegrityError(CorralError):
    """A stored artifact's bytes no longer match its content hash."""

    exit_code = 5
    error_type = "artifact_integrity_error"


class StoreUnavailableError(CorralError):
    """The SQL store cannot be reached or is not migrated."""

    exit_code = 6
    http_status = 503
    error_type = "store_unavailable"


class AuthenticationError(CorralError):
    http_status = 401
    error_type = "authentication_error"


class PermissionDeniedError(CorralError):
    http_status = 403
    error_type = "permission_error"


class RateLimitError(CorralError):
    http_status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s


class OverloadedError(CorralError):
    """A queue is full; the client should retry later."""

    http_status = 503
    error_type = "overloaded_error"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s


class TargetUnreachableError(CorralError):
    """A model, worker or gateway that an evaluation needs cannot be reached: an outage, not a regression."""

    exit_code = 7
    http_status = 502
    error_type = "upstream_error"


class UpstreamError(CorralError):
    """Every route for a request failed."""

    http_status = 502


class UpstreamTimeoutError(UpstreamError):
    """The request as a whole took longer than the gateway allows (gateway.request_timeout_s)."""

    http_status = 504
    error_type = "upstream_error"


INTERNAL = {"message": "internal error", "type": "server_error", "param": None, "code": None}


def openai_error(
    exc: BaseException, internal: str = "internal error"
) -> tuple[int, dict[str, object], dict[str, str]]:
    """The one translation of an error for HTTP clients: (status, OpenAI error body, headers).

    The gateway and the engine worker both use it, so a client meets the same JSON and the same
    `Retry-After` (whole seconds, at least 1) for rate limits and overload from either.
    """
    if not isinstance(exc, CorralError):
        return 500, {"error": {**INTERNAL, "message": internal}}, {}
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["retry-after"] = str(max(1, round(retry_after)))
    allow = getattr(exc, "allow", None)
    if allow:
        headers["allow"] = allow
    return exc.http_status, exc.to_openai(), headers

"""tierline's exception tree. Every error knows its HTTP status, OpenAI error type and
whether trying another deployment (or the same one later) can help.

    TierlineError
    ├── ConfigError                  bad config file / catalog (start-up, never HTTP)
    ├── ClientError                  the caller's mistake: never retried, never failed over
    │   ├── InvalidRequest           400 invalid_request_error (names the field in `param`)
    │   ├── AuthenticationError      401 authentication_error
    │   ├── PaymentRequired          402 insufficient_quota (budget exhausted)
    │   ├── PermissionDenied         403 permission_error
    │   ├── ModelNotFound            404 model_not_found
    │   ├── PayloadTooLarge          413 request_too_large
    │   └── RateLimited              429 rate_limit_exceeded (per-key limits, full queues)
    ├── RouteError
    │   └── NoDeploymentAvailable    503 every candidate was filtered out or failed
    └── UpstreamError                a provider failed; carries the deployment name
        ├── UpstreamTimeout          504 connect / first-token / idle / total timeout
        ├── UpstreamConnectionError  502 refused, reset, DNS
        ├── UpstreamBadResponse      502 malformed body, error inside a 200 stream
        ├── UpstreamStatusError      the upstream's own 4xx/5xx (429 and 5xx retryable;
        │                            401/403/404 are 502s: our key or model id is wrong)
        │   ├── ContextLengthExceeded  400, fails over to a larger window
        │   └── ContentPolicyError     400, fails over only where configured
        └── UpstreamOverloaded       429 the embedded model's queue is full

Messages never contain API keys or prompt text: tierline's own messages are written without
them, and every UpstreamError's message - which may quote the upstream's own error text - is
passed through `redact_secrets` (an upstream can echo the key it was sent, e.g. OpenAI's
"Incorrect API key provided: sk-..."); the gateway also replaces the exact values of the
configured provider keys and header values in every error it answers or logs.
"""

from __future__ import annotations

import re
from typing import Any

#: what an API key looks like: the vendors' key prefixes, bearer tokens, "key: value" echoes,
#: and long random alphanumeric runs (hex / base62 keys of Together, Mistral, Baseten, ...)
_SECRET_RE = re.compile(
    # a vendor prefix, then a body with a long random run (model ids such as
    # "key-value-extractor-v2" or "fw-llama-3-70b" are short words between dashes)
    r"(?:\b(?:sk|pk|rk|csk|xai|r8|gsk|fw|tgp|nvapi|hf|key)[-_]"
    r"(?=[A-Za-z0-9_\-]*[A-Za-z0-9]{12})[A-Za-z0-9][A-Za-z0-9_\-]{5,}"
    r"|\bAIza[A-Za-z0-9_\-]{16,}"
    # a bearer token / "key: value" echo: values with a digit, 8+ characters
    r"|(?i:bearer)\s+(?=[^\s\"',;]*\d)[^\s\"',;]{8,}"
    r"|(?i:(?:api[ _-]?key|token|secret)(?: provided)?\s*[:=]\s*)"
    r"(?=[^\s\"',;]*\d)[^\s\"',;]{8,}"
    r"|\b(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{32,}\b)"
)


def redact_secrets(text: str, known: tuple[str, ...] = ()) -> str:
    """``text`` with the ``known`` secrets (the configured provider keys, whatever their
    format) and anything that looks like a credential replaced by ``[redacted]``."""
    for s in known:
        if s in text:
            text = text.replace(s, "[redacted]")
    return _SECRET_RE.sub(_mask, text)


def _mask(m: re.Match[str]) -> str:
    t = m.group(0)
    # keep a "key provided:" / "Bearer" lead-in readable, mask the value
    for sep in (":", "="):
        if sep in t and not t.lower().startswith(("sk", "key")):
            head, _, _ = t.partition(sep)
            return f"{head}{sep} [redacted]"
    if t.lower().startswith("bearer"):
        return "Bearer [redacted]"
    return "[redacted]"


class TierlineError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def to_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigError(TierlineError):
    type = "config_error"


class ClientError(TierlineError):
    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    status = 400
    code = "invalid_value"


class AuthenticationError(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PaymentRequired(ClientError):
    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"


class PermissionDenied(ClientError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class ModelNotFound(ClientError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(ClientError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(ClientError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class RouteError(TierlineError):
    status = 503
    type = "service_unavailable"


class NoDeploymentAvailable(RouteError):
    code = "no_deployment_available"


class UpstreamError(TierlineError):
    """A provider failed. `deployment` names it; `retry_after` is seconds, when known."""

    status = 502
    type = "upstream_error"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        deployment: str = "",
        retry_after: float | None = None,
        upstream_status: int | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(redact_secrets(message), param=param, code=code, headers=headers)
        self.deployment = deployment
        self.retry_after = retry_after
        self.upstream_status = upstream_status


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamConnectionError(UpstreamError):
    status = 502
    code = "upstream_connection_error"


class UpstreamBadResponse(UpstreamError):
    status = 502
    code = "upstream_bad_response"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status. Retryable for 408/409/429/5xx."""

    code = "upstream_error"

    def __init__(self, message: str, *, upstream_status: int, **kw: Any) -> None:
        super().__init__(message, upstream_status=upstream_status, **kw)
        self.retryable = upstream_status in (408, 409, 429) or upstream_status >= 500
        if upstream_status == 429:
            self.status = 429
            self.type = "rate_limit_error"
            self.code = "upstream_rate_limited"
        elif upstream_status in (401, 403):
            # The gateway's credentials for that provider are wrong: not the client's fault.
            self.status = 502
            self.code = "upstream_auth_error"
        elif upstream_status == 404:
            # the deployment's upstream model id (or base URL) is wrong: our config's fault
            self.status = 502
            self.code = "upstream_model_not_found"
        elif upstream_status == 413:
            self.status = 413
            self.type = "invalid_request_error"
            self.code = "request_too_large"
        elif 400 <= upstream_status < 500:
            self.status = 400
            self.type = "invalid_request_error"
            self.code = "upstream_rejected_request"
        else:
            self.status = 502


class ContextLengthExceeded(UpstreamStatusError):
    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("upstream_status", 400)
        super().__init__(message, **kw)
        self.code = "context_length_exceeded"
        self.retryable = False


class ContentPolicyError(UpstreamStatusError):
    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("upstream_status", 400)
        super().__init__(message, **kw)
        self.code = "content_policy_violation"
        self.retryable = False


class UpstreamOverloaded(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "model_overloaded"


def log_text(err: TierlineError) -> str:
    """What the request log and the server log keep of an error. An upstream's own message
    may quote the request (prompt text), so it is reduced to the error class, the deployment
    and the upstream status; the client still gets the full message in its response."""
    if isinstance(err, UpstreamError):
        status = f" HTTP {err.upstream_status}" if err.upstream_status else ""
        code = f" ({err.code})" if err.code else ""
        return f"{type(err).__name__} from {err.deployment or 'upstream'}{status}{code}"
    return err.message

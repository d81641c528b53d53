"""KSeF failures as exceptions, parsed from both of KSeF's error formats (REFERENCE.md §14).

- legacy ``ExceptionResponse``: ``{"exception": {"exceptionDetailList": [{exceptionCode, exceptionDescription,
  details}], "referenceNumber", ...}}`` (400, and 5xx with code 500);
- ``application/problem+json``: ``{title, status, detail, errors[{code, description, details}], reasonCode}``
  (always for 401/403, for everything with ``X-Error-Format: problem-details``);
- 429: ``{"status": {"code": 429, "description", "details"}}`` or problem+json, with ``Retry-After``.

Only codes and descriptions are kept for logs; ``details`` may echo request values (a challenge, a key id), so
the communication log stores codes and descriptions only.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import httpx

# KSeF's statuses of a failed authentication (GET /auth/{ref}), explained for the people setting credentials up.
AUTH_STATUS_HINTS: dict[int, str] = {
    415: "the credential holds no permission in this context",
    425: "the authentication was revoked",
    450: "the KSeF token is invalid, inactive, revoked or belongs to another context",
    460: "the certificate is invalid, untrusted, expired or revoked",
    470: "the credential belongs to a deceased person",
    480: "KSeF blocked the context (suspected security incident)",
    500: "KSeF failed with an unknown error",
    550: "KSeF cancelled the operation",
}

INVALID_PUBLIC_KEY = 21470


class KsefError(Exception):
    """A KSeF call failed: HTTP status (``None`` when no response came), KSeF exception codes, description."""

    def __init__(
        self,
        description: str,
        *,
        http_status: int | None = None,
        codes: list[int] | None = None,
        details: list[str] | None = None,
        retry_after_s: float | None = None,
        reference_number: str | None = None,
        reason_code: str | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.http_status = http_status
        self.codes = list(codes or [])
        self.details = list(details or [])
        self.retry_after_s = retry_after_s
        self.reference_number = reference_number
        self.reason_code = reason_code

    def __str__(self) -> str:
        where = f"HTTP {self.http_status}" if self.http_status is not None else "no response"
        codes = f" [{', '.join(map(str, self.codes))}]" if self.codes else ""
        return f"KSeF: {self.description} ({where}{codes})"


class KsefUnauthorized(KsefError):
    """401: the bearer token is invalid or expired (a fresh access token may help)."""


class KsefForbidden(KsefError):
    """403: ``reason_code`` says why (missing-permissions, ip-not-allowed, ...)."""


class KsefRateLimited(KsefError):
    """429: the (context, IP) window is full; ``retry_after_s`` says how long KSeF blocks it."""


class KsefUnavailable(KsefError):
    """5xx or no answer at all (transport error, timeout): KSeF is down or overloaded."""


class KsefAuthFailed(KsefError):
    """The authentication ended in a failure status (415, 425, 450, 460, 470, 480, ...) or timed out at 100."""

    def __init__(
        self, auth_status: int, status_description: str, details: list[str], *, reference_number: str | None
    ) -> None:
        hint = AUTH_STATUS_HINTS.get(auth_status)
        said = status_description + (f": {'; '.join(details)}" if details else "")
        description = f"authentication failed with status {auth_status}" + (f" - {hint}" if hint else "")
        super().__init__(
            f"{description} (KSeF: {said})",
            http_status=None,
            codes=[auth_status],
            details=details,
            reference_number=reference_number,
        )
        self.auth_status = auth_status
        self.status_description = status_description


class KsefPackageError(KsefError):
    """An export package does not match what KSeF said about it (part hash, invoice hash, archive)."""


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [str(value)] if value else []


def _parse_body(body: Any) -> tuple[list[int], str | None, list[str], str | None, str | None]:
    """``(codes, description, details, reference_number, reason_code)`` from either format."""
    if not isinstance(body, dict):
        return [], None, [], None, None
    exception = body.get("exception")
    if isinstance(exception, dict):
        items = [i for i in exception.get("exceptionDetailList") or [] if isinstance(i, dict)]
        codes = [int(i["exceptionCode"]) for i in items if isinstance(i.get("exceptionCode"), int)]
        descriptions = [str(i["exceptionDescription"]) for i in items if i.get("exceptionDescription")]
        details = [d for i in items for d in _as_list(i.get("details"))]
        return codes, "; ".join(descriptions) or None, details, exception.get("referenceNumber"), None
    status = body.get("status")
    if isinstance(status, dict):  # TooManyRequestsResponse
        return [], status.get("description"), _as_list(status.get("details")), None, None
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    codes = [int(e["code"]) for e in errors if isinstance(e.get("code"), int)]
    descriptions = [str(e["description"]) for e in errors if e.get("description")]
    details = [d for e in errors for d in _as_list(e.get("details"))]
    description = "; ".join(descriptions) or body.get("detail") or body.get("title")
    if not errors and body.get("detail"):
        details = []
    return codes, description, details, None, body.get("reasonCode")


def error_from_response(response: httpx.Response) -> KsefError:
    """The exception for a non-2xx KSeF answer."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    codes, description, details, reference, reason = _parse_body(body)
    status = response.status_code
    text = description or response.reason_phrase or f"HTTP {status}"
    kwargs: dict[str, Any] = {
        "http_status": status,
        "codes": codes,
        "details": details,
        "reference_number": reference,
        "reason_code": reason,
        "retry_after_s": retry_after_seconds(response.headers.get("retry-after")),
    }
    if status == 429:
        return KsefRateLimited(text, **kwargs)
    if status >= 500:
        return KsefUnavailable(text, **kwargs)
    if status == 401:
        return KsefUnauthorized(text, **kwargs)
    if status == 403:
        return KsefForbidden(text, **kwargs)
    return KsefError(text, **kwargs)

"""Structured logs (JSON lines) carrying the current trace and span ids, for stdlib and structlog loggers.

Every line goes through one redaction pass first: the values of secret-looking query parameters (pre-signed
``sig=``, ``token=``, ``code=``...) and of ``Authorization``-like headers never reach the output, whoever logged
them (uvicorn's access log and httpx both log full URLs at INFO). A last line of defence: secrets are not
logged on purpose anywhere.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace


def _add_trace_ids(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


# Query parameters whose values are credentials: pre-signed links, OAuth codes and tokens, API keys.
SECRET_QUERY_PARAMS = (
    "sig",
    "signature",
    "token",
    "code",
    "access_token",
    "refresh_token",
    "id_token",
    "key",
    "api_key",
    "apikey",
    "secret",
    "client_secret",
    "password",
)
SECRET_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie")
REDACTED = "***"

# A parameter name starts after a separator (?, &, ;, space, quote...), never inside a longer name (postcode=).
# A value ends where a URL, a quoted string or an escaped JSON quote does.
_QUERY_SECRET = re.compile(
    r"(?<![\w.-])(" + "|".join(SECRET_QUERY_PARAMS) + r")=[^&\s\"'\\<>#]+",
    re.IGNORECASE,
)
# "Authorization: Bearer x", "'authorization': 'Basic x'", (b'authorization', b'x'): the scheme stays.
_HEADER_SECRET = re.compile(
    r"(?<![\w-])(" + "|".join(SECRET_HEADERS) + r")(['\"]?\s*[:=,]\s*(?:b?['\"])?)"
    r"((?:bearer|basic|digest|token|negotiate)\s+)?[^\s'\"\\,}\]]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` without the values of secret query parameters and credential headers."""
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\1={REDACTED}", text)
    return _HEADER_SECRET.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}{REDACTED}", text)


def _redact_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float):
        return value
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        return value
    redacted = redact(text)
    # Unchanged arguments keep their type, so %d and %r format them as before.
    return value if redacted == text else redacted


URL_LOGGERS = ("uvicorn.access", "httpx")


class RedactingFilter(logging.Filter):
    """Redacts a record's message and arguments in place (uvicorn's access log passes the path with its query
    string as an argument, httpx the ``httpx.URL``), so every handler after it sees the redacted record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        elif isinstance(record.msg, dict):
            # structlog's event dict, rendered later by the formatter.
            record.msg = {k: _redact_value(v) for k, v in record.msg.items()}
        if isinstance(record.args, Mapping):
            record.args = {k: _redact_value(v) for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(_redact_value(a) for a in record.args)
        return True


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is at each record, not as it was when logging was configured.

    A handler that kept the stream of the moment wrote into whatever replaced it then (pytest swaps
    ``sys.stderr`` per test and closes the old one): a later record, e.g. from a database worker thread at
    shutdown, failed with "--- Logging error --- I/O operation on closed file".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _stream: TextIO) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        # Also what the filter cannot see: tracebacks and values bound to structlog loggers.
        return redact(super().format(record))


_configured = False


def configure_logging(level: str = "INFO", *, json: bool = True, force: bool = False) -> None:
    """Process-wide (logging is global). The first call wins unless ``force``: in the embedded runner the
    runner chooses the format and the services' own calls change nothing."""
    global _configured
    if _configured and not force:
        return
    _configured = True
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _StderrHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter)
    handler.set_name("ksef-hub")
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != "ksef-hub"] + [handler]
    root.setLevel(level.upper())
    # The loggers that write full URLs redact at the source too, so a handler added before ours (a test's log
    # capture, an APM agent) never meets a consent link's token or a pre-signed URL either.
    for name in URL_LOGGERS:
        source = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in source.filters):
            source.addFilter(RedactingFilter())
    # uvicorn's own handlers would print a second, unstructured copy.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))

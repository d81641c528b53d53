"""KSeF's two error formats (REFERENCE.md §14).

400/410/429 come as the legacy ``ExceptionResponse`` / ``TooManyRequestsResponse`` (``application/json``) unless the
request says ``X-Error-Format: problem-details``; 401 and 403 are always ``application/problem+json``.
Request-validation failures are 400 21405, as on the real service, never FastAPI's 422.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)

DESCRIPTIONS: dict[int, str] = {
    21001: "Nieczytelna treść.",
    21111: "Nieprawidłowe wyzwanie autoryzacyjne.",
    21115: "Nieprawidłowy certyfikat.",
    21117: "Nieprawidłowy identyfikator podmiotu dla wskazanego typu kontekstu.",
    21155: "Przekroczono dopuszczalną liczbę faktur w sesji.",
    21157: "Nieprawidłowy rozmiar części pakietu.",
    21161: "Przekroczono dopuszczalną liczbę części pakietu.",
    21164: "Faktura o podanym identyfikatorze nie istnieje.",
    21165: "Faktura o podanym numerze KSeF nie jest jeszcze dostępna.",
    21166: "Korekta techniczna niedostępna.",
    21167: "Status faktury nie pozwala na korektę techniczną.",
    21173: "Brak sesji o wskazanym numerze referencyjnym.",
    21175: "Wynik zapytania o podanym identyfikatorze nie istnieje.",
    21178: "Nie znaleziono UPO dla podanych kryteriów.",
    21180: "Status sesji nie pozwala na wykonanie operacji.",
    21181: "Nieprawidłowe żądanie eksportu faktur.",
    21182: "Osiągnięto limit trwających eksportów.",
    21183: "Zakres filtrowania wykracza poza dostępny zakres danych.",
    21205: "Pakiet nie może być pusty.",
    21208: "Czas oczekiwania na requesty upload lub finish został przekroczony.",
    21217: "Nieprawidłowe kodowanie znaków.",
    21301: "Brak autoryzacji.",
    21304: "Brak uwierzytelnienia.",
    21401: "Dokument nie jest zgodny ze schemą (xsd).",
    21402: "Nieprawidłowy rozmiar pliku.",
    21403: "Nieprawidłowy skrót pliku.",
    21405: "Błąd walidacji danych wejściowych.",
    21406: "Konflikt podpisu i typu uwierzytelnienia.",
    21418: "Przekazany token kontynuacji ma nieprawidłowy format.",
    21470: "Nieprawidłowy lub wycofany identyfikator klucza publicznego.",
    26001: "Nie można nadać tokenowi uprawnień, których nie posiada podmiot.",
    26002: "Nie można wygenerować tokena dla obecnego typu kontekstu.",
    30001: "Podmiot lub uprawnienie już istnieje.",
    9101: "Nieprawidłowy dokument.",
    9102: "Brak podpisu.",
    9103: "Przekroczona liczba dozwolonych podpisów.",
    9105: "Nieprawidłowa treść podpisu.",
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _trace_id() -> str:
    return secrets.token_hex(16)


def wants_problem_details(request: Request) -> bool:
    return request.headers.get("x-error-format", "").lower() == "problem-details"


class KsefError(Exception):
    """A 400 with KSeF exception codes; several codes may be reported at once."""

    def __init__(self, code: int, *details: str, description: str | None = None, status: int = 400) -> None:
        self.status = status
        self.errors: list[tuple[int, str, list[str]]] = [
            (code, description or DESCRIPTIONS.get(code, ""), list(details))
        ]
        super().__init__(f"{code}: {self.errors[0][1]} {' '.join(details)}".strip())

    def also(self, code: int, *details: str, description: str | None = None) -> KsefError:
        self.errors.append((code, description or DESCRIPTIONS.get(code, ""), list(details)))
        return self


class Unauthorized(Exception):
    def __init__(self, detail: str = "Wymagane jest uwierzytelnienie.") -> None:
        super().__init__(detail)
        self.detail = detail


class Forbidden(Exception):
    """403 with ``reasonCode`` (missing-permissions, insufficient-resource-access, auth-method-not-allowed, ...)."""

    def __init__(self, reason_code: str, detail: str, security: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.reason_code = reason_code
        self.detail = detail
        self.security = security


class Gone(Exception):
    def __init__(self, detail: str = "Zasób wygasł i nie jest już dostępny.") -> None:
        super().__init__(detail)
        self.detail = detail


class TooManyRequests(Exception):
    def __init__(self, retry_after_s: int, detail: str) -> None:
        super().__init__(detail)
        self.retry_after_s = max(1, retry_after_s)
        self.detail = detail


def ksef_error_response(request: Request, exc: KsefError) -> Response:
    if wants_problem_details(request):
        body: dict[str, Any] = {
            "title": "Bad Request",
            "status": exc.status,
            "instance": request.url.path,
            "detail": "Żądanie jest nieprawidłowe.",
            "errors": [{"code": c, "description": d, "details": det} for c, d, det in exc.errors],
            "timestamp": _now(),
            "traceId": _trace_id(),
        }
        return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_JSON)
    body = {
        "exception": {
            "exceptionDetailList": [
                {"exceptionCode": c, "exceptionDescription": d, "details": det or None} for c, d, det in exc.errors
            ],
            "referenceNumber": None,
            "serviceCode": f"00-{_trace_id()}-{secrets.token_hex(8)}-00",
            "serviceCtx": "srvKSEFSIM",
            "serviceName": "ksef-sim",
            "timestamp": _now(),
        }
    }
    return JSONResponse(body, status_code=exc.status)


def _unauthorized(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Unauthorized)
    body = {
        "title": "Unauthorized",
        "status": 401,
        "detail": exc.detail,
        "instance": request.url.path,
        "traceId": _trace_id(),
        "timestamp": _now(),
    }
    return JSONResponse(body, status_code=401, media_type=PROBLEM_JSON)


def _forbidden(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Forbidden)
    body: dict[str, Any] = {
        "title": "Forbidden",
        "status": 403,
        "detail": exc.detail,
        "instance": request.url.path,
        "reasonCode": exc.reason_code,
        "traceId": _trace_id(),
        "timestamp": _now(),
    }
    if exc.security is not None:
        body["security"] = exc.security
    return JSONResponse(body, status_code=403, media_type=PROBLEM_JSON)


def _gone(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Gone)
    body = {
        "title": "Gone",
        "status": 410,
        "instance": request.url.path,
        "detail": exc.detail,
        "timestamp": _now(),
        "traceId": _trace_id(),
    }
    return JSONResponse(body, status_code=410, media_type=PROBLEM_JSON)


def too_many_requests_response(request: Request, exc: TooManyRequests) -> Response:
    headers = {"Retry-After": str(exc.retry_after_s)}
    if wants_problem_details(request):
        body: dict[str, Any] = {
            "title": "Too Many Requests",
            "status": 429,
            "instance": request.url.path,
            "detail": exc.detail,
            "timestamp": _now(),
            "traceId": _trace_id(),
        }
        return JSONResponse(body, status_code=429, media_type=PROBLEM_JSON, headers=headers)
    body = {"status": {"code": 429, "description": "Too Many Requests", "details": [exc.detail]}}
    return JSONResponse(body, status_code=429, headers=headers)


def _ksef(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KsefError)
    return ksef_error_response(request, exc)


def _too_many(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TooManyRequests)
    return too_many_requests_response(request, exc)


def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        details.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return ksef_error_response(request, KsefError(21405, *details))


def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI rejects a body it cannot even decode (e.g. not UTF-8) with a bare HTTPException(400) instead of a
        # RequestValidationError; the spec documents 400 as an ExceptionResponse, so it is 21405 like any bad input.
        return ksef_error_response(request, KsefError(21405, str(exc.detail)))
    # Unknown paths and methods: the real service answers a bare 404/405 with no body [obs #171].
    return Response(status_code=exc.status_code, headers=getattr(exc, "headers", None))


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("simulator error on %s %s", request.method, request.url.path)
    error = KsefError(500, "Wystąpił nieoczekiwany błąd.", description="Błąd serwera.", status=500)
    return ksef_error_response(request, error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(KsefError, _ksef)
    app.add_exception_handler(Unauthorized, _unauthorized)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(Gone, _gone)
    app.add_exception_handler(TooManyRequests, _too_many)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)

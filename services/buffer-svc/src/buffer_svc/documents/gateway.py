"""The invoices' XML from ksef-gateway, over its internal endpoint with this service's own bearer token.

The caller has authorised its own caller (the route's gate) and checks the copy against KSeF's hash; this only
fetches, bounded: a connect/read timeout and at most ``MAX_XML_BYTES`` read before the body is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import httpx

from buffer_svc.documents.domain import MAX_XML_BYTES, DocumentError

log = logging.getLogger(__name__)

TokenSource = Callable[[], Awaitable[str]]


class GatewayDocuments:
    def __init__(
        self, base_url: str, *, timeout_s: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self.transport, timeout=self._timeout, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def xml(self, client_nip: str, ksef_number: str, token: TokenSource) -> bytes:
        url = f"{self._base}/internal/clients/{client_nip}/invoices/{ksef_number}/xml"
        try:
            bearer = await token()
            async with self._http().stream("GET", url, headers={"Authorization": f"Bearer {bearer}"}) as response:
                if response.status_code == 404:
                    raise DocumentError("document-missing", f"The gateway holds no XML for {ksef_number}.", status=502)
                if response.status_code != 200:
                    raise DocumentError(
                        "gateway-unavailable",
                        f"The gateway answered {response.status_code} for the invoice's XML; try again later.",
                        status=503,
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_XML_BYTES:
                        raise DocumentError(
                            "document-too-large", "The invoice's XML is larger than KSeF allows.", status=502
                        )
                return bytes(body)
        except httpx.HTTPError as exc:
            log.warning("gateway unreachable for an invoice's XML: %s", type(exc).__name__)
            raise DocumentError(
                "gateway-unavailable",
                "The gateway cannot be reached for the invoice's XML; try again later.",
                status=503,
            ) from None

"""The port to auth-svc that the integrations need: the requesting office's name and NIP.

Asked with the caller's own credential, so auth-svc's rules decide (a user of another organisation gets a 404),
and the office cannot claim a NIP it does not have: the client is asked on behalf of the NIP auth-svc knows, and
with the *grant* mode the client grants that NIP in KSeF.
"""

from __future__ import annotations

import uuid

import httpx

from approval_svc.integrations.domain import IntegrationError
from approval_svc.integrations.service import Office


class OfficeDirectory:
    def __init__(self, auth_api_url: str, *, timeout_s: float = 5.0) -> None:
        self._url = auth_api_url
        self._timeout = timeout_s
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def office(self, office_id: uuid.UUID, credential_headers: dict[str, str]) -> Office:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        try:
            response = await self._http.get(f"{self._url}/organisations/{office_id}", headers=credential_headers)
        except httpx.HTTPError as exc:
            raise IntegrationError(
                "auth-unavailable", f"auth-svc cannot be reached right now ({type(exc).__name__}).", status=503
            ) from None
        if response.status_code in (401, 403, 404):
            raise IntegrationError("not-found", "The office does not exist.", status=404)
        if response.status_code != 200:
            raise IntegrationError("auth-unavailable", "auth-svc answered unexpectedly; try again.", status=503)
        org = response.json()
        if org.get("kind") != "office":
            raise IntegrationError("not-found", "The office does not exist.", status=404)
        if not org.get("nip"):
            raise IntegrationError(
                "office-without-nip", "The office has no NIP registered: a client cannot be asked for it.", status=422
            )
        return Office(id=office_id, name=str(org["name"]), nip=str(org["nip"]))

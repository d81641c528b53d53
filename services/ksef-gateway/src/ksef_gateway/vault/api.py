"""Credential setup per client NIP, and the vault's operator endpoints.

Secret fields (``token``, ``private_key``, ``private_key_password``) are write-only: they arrive as ``SecretStr``
(masked in any repr, error or log), and no response carries them or their ciphertext. Validation errors name the
field, never its value (platform_common.problems).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ksef_gateway.deps import actor_of, client_nip, credential_problem
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.vault.domain import CredentialError, CredentialKind, CredentialModel, CredentialStatus, Scope
from ksef_gateway.vault.offline import OfflineCertificateError, OfflineCertificates
from ksef_gateway.vault.service import CredentialSetup, CredentialView, Vault
from ksef_gateway.wiring import Gateway
from platform_common.auth import require
from platform_common.auth.principal import Principal
from platform_common.problems import Problem

router = APIRouter(tags=["credentials"])

CredentialManager = Annotated[Principal, Depends(require("ksef.credentials.manage", client_nip_param="nip"))]
# Rotation re-encrypts every tenant's credential: a platform operator's task, never a tenant's.
VaultOperator = Annotated[Principal, Depends(require("ops"))]


def get_vault(request: Request) -> Vault:
    return Gateway.of(request.app.state.runtime).vault


VaultDep = Annotated[Vault, Depends(get_vault)]


class _SetupBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: CredentialModel = Field(
        default=CredentialModel.CLIENT,
        description="client: the client's own credential; delegated: the office's credential, used in the client's "
        "context after the client granted the office InvoiceRead/InvoiceWrite in KSeF.",
    )
    scope: Scope = Field(default=Scope.READ, description="read needs InvoiceRead; read_send also InvoiceWrite.")
    environment: Environment | None = Field(
        default=None, description="KSeF environment; the gateway's default if left out."
    )
    sync_subject3: bool = Field(default=False, description="Also fetch invoices where the client is Subject3.")
    sync_subject_authorized: bool = Field(
        default=False, description="Also fetch invoices where the client is the authorised subject."
    )


class KsefTokenSetup(_SetupBase):
    kind: Literal["ksef_token"]
    token: SecretStr = Field(
        min_length=1, max_length=400, description="The KSeF token exactly as KSeF showed it (write-only)."
    )


class CertificateSetup(_SetupBase):
    kind: Literal["certificate"]
    certificate: str = Field(
        min_length=1, max_length=20_000, description="Authentication certificate: PEM or base64 DER."
    )
    private_key: SecretStr = Field(
        min_length=1,
        max_length=20_000,
        description="Its private key: PEM or base64 DER, encrypted or not (write-only).",
    )
    private_key_password: SecretStr | None = Field(
        default=None,
        max_length=1_000,
        description="The key's password if it is encrypted: used once to decrypt it, never stored (write-only).",
    )


SetupBody = Annotated[KsefTokenSetup | CertificateSetup, Field(discriminator="kind")]


class CertificateOut(BaseModel):
    subject: str
    serial_number: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    identity: str | None


class CredentialStatusOut(BaseModel):
    context_nip: str
    kind: CredentialKind
    model: CredentialModel
    scope: Scope
    environment: Environment
    sync_subject3: bool
    sync_subject_authorized: bool
    status: CredentialStatus
    permissions_seen: list[str]
    valid_until: datetime | None = Field(description="Certificate notAfter; for a KSeF token only if KSeF states it.")
    last_successful_auth: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    token_reference: str | None = Field(description="The KSeF token's reference number (not the token).")
    certificate: CertificateOut | None
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime

    @classmethod
    def of(cls, view: CredentialView) -> CredentialStatusOut:
        cert = view.certificate
        return cls(
            context_nip=view.context_nip,
            kind=view.kind,
            model=view.model,
            scope=view.scope,
            environment=view.environment,
            sync_subject3=view.sync_subject3,
            sync_subject_authorized=view.sync_subject_authorized,
            status=view.status,
            permissions_seen=list(view.permissions),
            valid_until=view.valid_until,
            last_successful_auth=view.last_authenticated_at,
            last_error=view.last_error,
            last_error_at=view.last_error_at,
            token_reference=view.token_reference,
            certificate=CertificateOut(
                subject=cert.subject,
                serial_number=cert.serial_number,
                fingerprint_sha256=cert.fingerprint_sha256,
                not_before=cert.not_before,
                not_after=cert.not_after,
                identity=cert.identity,
            )
            if cert is not None
            else None,
            created_by=view.created_by,
            created_at=view.created_at,
            updated_by=view.updated_by,
            updated_at=view.updated_at,
        )


@router.put(
    "/clients/{nip}/credential",
    summary="Register or replace the KSeF credential of a client",
    response_model=CredentialStatusOut,
    responses={
        200: {"description": "Replaced"},
        201: {"description": "Registered"},
        409: {"description": "Another request changed this client's credential while this one was stored"},
        422: {"description": "The credential is malformed, or KSeF refused it in this context (the problem says why)"},
        503: {"description": "KSeF could not be reached; nothing was stored (Retry-After)"},
    },
)
async def put_credential(
    nip: str, body: SetupBody, principal: CredentialManager, vault: VaultDep, response: Response
) -> CredentialStatusOut:
    """Checks the credential (token shape, or certificate, key and password), authenticates with it in the
    client's KSeF context and reads the permissions it holds there; stores it only if the scope is covered."""
    context_nip = client_nip(nip)
    setup = _setup(body)
    try:
        view, created = await vault.register(context_nip, setup, actor_of(principal))
    except CredentialError as error:
        raise credential_problem(error) from None
    response.status_code = 201 if created else 200
    return CredentialStatusOut.of(view)


def _setup(body: KsefTokenSetup | CertificateSetup) -> CredentialSetup:
    if isinstance(body, KsefTokenSetup):
        kind, token, certificate, private_key, password = CredentialKind.KSEF_TOKEN, body.token, None, None, None
    else:
        kind, token = CredentialKind.CERTIFICATE, None
        certificate, private_key, password = body.certificate, body.private_key, body.private_key_password
    return CredentialSetup(
        kind=kind,
        model=body.model,
        scope=body.scope,
        environment=body.environment,
        sync_subject3=body.sync_subject3,
        sync_subject_authorized=body.sync_subject_authorized,
        token=token,
        certificate=certificate,
        private_key=private_key,
        private_key_password=password,
    )


@router.get(
    "/clients/{nip}/credential",
    summary="Status of the client's KSeF credential (never the secret)",
    response_model=CredentialStatusOut,
)
async def get_credential(nip: str, principal: CredentialManager, vault: VaultDep) -> CredentialStatusOut:
    view = await vault.status(client_nip(nip))
    if view is None:
        raise Problem(404, "No credential", f"No KSeF credential is registered for NIP {nip}.", code="no-credential")
    return CredentialStatusOut.of(view)


@router.delete("/clients/{nip}/credential", summary="Remove the client's KSeF credential", status_code=204)
async def delete_credential(nip: str, principal: CredentialManager, vault: VaultDep) -> Response:
    if not await vault.remove(client_nip(nip), actor_of(principal)):
        raise Problem(404, "No credential", f"No KSeF credential is registered for NIP {nip}.", code="no-credential")
    return Response(status_code=204)


class VaultStateOut(BaseModel):
    active_key_id: str
    configured_key_ids: list[str]
    credentials_by_key: dict[str, int] = Field(
        description="Credentials per master key id: a key may be removed from configuration once it has none."
    )


class RotationOut(VaultStateOut):
    rotated: int
    failed: list[dict[str, str]]


@router.get("/ops/vault", summary="Master keys in use (ids and counts only)", response_model=VaultStateOut)
async def vault_state(principal: VaultOperator, vault: VaultDep) -> VaultStateOut:
    return VaultStateOut(
        active_key_id=vault.keyring.active_key_id,
        configured_key_ids=sorted(vault.keyring.key_ids),
        credentials_by_key=await vault.key_usage(),
    )


@router.post(
    "/ops/vault/rotate",
    summary="Re-encrypt every credential's data key under the active master key",
    response_model=RotationOut,
)
async def rotate_vault_key(principal: VaultOperator, vault: VaultDep) -> RotationOut:
    """Idempotent; run it after making a new key active. Old keys keep decrypting until this run is over and
    they are removed from configuration."""
    report = await vault.rotate_master_key()
    return RotationOut(
        active_key_id=report.active_key_id,
        configured_key_ids=sorted(vault.keyring.key_ids),
        credentials_by_key=report.usage,
        rotated=report.rotated,
        failed=[{"context_nip": nip, "reason": reason} for nip, reason in report.failed],
    )


# --- the Offline certificate (KOD II) --------------------------------------------------------------------------


class OfflineCertificateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    certificate_pem: str = Field(max_length=65536, description="The KSeF certificate of type Offline, PEM")
    private_key_pem: SecretStr = Field(max_length=65536, description="Its private key, PEM (PKCS#8 or traditional)")
    password: SecretStr | None = Field(default=None, max_length=1024, description="When the PEM key is encrypted")


class OfflineCertificateOut(BaseModel):
    client_nip: str
    serial: str = Field(description="As KOD II carries it (16 hex digits)")
    subject: str
    key_type: Literal["RSA-PSS", "ECDSA-P256"]
    valid_until: datetime
    created_by: str
    created_at: datetime


def _offline(request: Request) -> OfflineCertificates:
    return Gateway.of(request.app.state.runtime).offline_certificates


OfflineDep = Annotated[OfflineCertificates, Depends(_offline)]


@router.put(
    "/clients/{nip}/offline-certificate",
    summary="Register or replace the client's KSeF Offline certificate, which signs KOD II (the key is never returned)",
    response_model=OfflineCertificateOut,
)
async def put_offline_certificate(
    nip: str, body: OfflineCertificateIn, principal: CredentialManager, offline: OfflineDep
) -> OfflineCertificateOut:
    try:
        view = await offline.put(
            client_nip(nip),
            body.certificate_pem,
            body.private_key_pem.get_secret_value(),
            body.password.get_secret_value() if body.password is not None else None,
            actor=actor_of(principal),
        )
    except OfflineCertificateError as exc:
        raise Problem(exc.status, "Unusable certificate", str(exc), code=exc.code) from None
    return OfflineCertificateOut(**vars(view))


@router.get(
    "/clients/{nip}/offline-certificate",
    summary="The client's Offline certificate (never its key)",
    response_model=OfflineCertificateOut,
)
async def get_offline_certificate(nip: str, principal: CredentialManager, offline: OfflineDep) -> OfflineCertificateOut:
    view = await offline.view(client_nip(nip))
    if view is None:
        raise Problem(404, "No certificate", "No Offline certificate is registered.", code="no-offline-certificate")
    return OfflineCertificateOut(**vars(view))


@router.delete("/clients/{nip}/offline-certificate", status_code=204, summary="Remove the client's Offline certificate")
async def delete_offline_certificate(nip: str, principal: CredentialManager, offline: OfflineDep) -> Response:
    if not await offline.remove(client_nip(nip)):
        raise Problem(404, "No certificate", "No Offline certificate is registered.", code="no-offline-certificate")
    return Response(status_code=204)

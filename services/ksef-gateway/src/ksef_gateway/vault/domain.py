"""Credentials for KSeF contexts: what they are, which KSeF permissions a scope needs, the checks that run
before any KSeF call (token shape, certificate and key), and what KSeF's refusals mean for a credential.

Two models (issue #5): ``client`` — the client's own token or certificate (Firmino model); ``delegated`` — the
office's own credential used in the client's context after the client granted the office InvoiceRead /
InvoiceWrite in KSeF (REFERENCE.md §15, "Accounting office"). Both authenticate with context = the client NIP.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretBytes, SecretStr

from ksef_gateway.ksef.credentials import CertificateCredential, KsefTokenCredential
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.ksef.errors import KsefAuthFailed, KsefRateLimited


class CredentialKind(StrEnum):
    KSEF_TOKEN = "ksef_token"  # noqa: S105 - a kind name, not a secret
    CERTIFICATE = "certificate"


class CredentialModel(StrEnum):
    CLIENT = "client"
    DELEGATED = "delegated"


class Scope(StrEnum):
    READ = "read"
    READ_SEND = "read_send"

    @property
    def required_permissions(self) -> frozenset[str]:
        """The KSeF permissions (REFERENCE.md §15) the gateway needs in the context for this scope."""
        if self is Scope.READ:
            return frozenset({"InvoiceRead"})
        return frozenset({"InvoiceRead", "InvoiceWrite"})


class CredentialStatus(StrEnum):
    VALID = "valid"
    # Authenticates, but lacks a permission the scope needs (e.g. the client revoked InvoiceWrite).
    INSUFFICIENT_PERMISSIONS = "insufficient_permissions"
    # KSeF refused it: bad token, no permission at all in the context, certificate error, blocked context.
    INVALID = "invalid"
    REVOKED = "revoked"
    EXPIRED = "expired"

    @property
    def usable(self) -> bool:
        return self in (CredentialStatus.VALID, CredentialStatus.INSUFFICIENT_PERMISSIONS)


class CredentialError(Exception):
    """A credential that cannot be set up, with what the caller must fix. ``status`` is the HTTP answer;
    ``extensions`` go into the problem document (never a secret)."""

    def __init__(
        self,
        code: str,
        title: str,
        detail: str,
        *,
        status: int = 422,
        retry_after_s: float | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.title = title
        self.detail = detail
        self.status = status
        self.retry_after_s = retry_after_s
        self.extensions = extensions

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def status_for_permissions(scope: Scope, permissions: frozenset[str]) -> CredentialStatus:
    return (
        CredentialStatus.VALID
        if scope.required_permissions <= permissions
        else CredentialStatus.INSUFFICIENT_PERMISSIONS
    )


def check_permissions(context_nip: str, scope: Scope, model: CredentialModel, permissions: frozenset[str]) -> None:
    """A 422 naming what to grant when the credential lacks a permission its scope needs."""
    missing = sorted(scope.required_permissions - permissions)
    if missing:
        names = " and ".join(missing)
        how = (
            f"the client must grant the office {names} in KSeF (entity permissions) for NIP {context_nip}"
            if model is CredentialModel.DELEGATED
            else f"generate a credential that holds {names} in the context of NIP {context_nip}"
        )
        raise CredentialError(
            "missing-permission",
            f"Missing KSeF permission {names}",
            f"The credential authenticates in the context of NIP {context_nip} but lacks {names}, which scope "
            f"{scope.value!r} needs: {how}.",
            missing_permissions=missing,
            permissions_seen=sorted(permissions),
        )


# --- KSeF tokens ------------------------------------------------------------------------------------------------

# REFERENCE.md §16 [obs] and the simulator: ``{referenceNumber}|nip-{NIP}|{hex}`` (or ``internalId-{id}``), at most
# 160 characters; the reference number has the shape of §2 (``YYYYMMDD-EC-XXXXXXXXXX-XXXXXXXXXX-CC``).
_TOKEN = re.compile(
    r"^(?P<reference>\d{8}-[A-Z]{2}-[0-9A-F]{10}-[0-9A-F]{10}-[0-9A-F]{2})"
    r"\|(?P<context_type>nip|internalId)-(?P<context>[0-9-]{10,16})"
    r"\|(?P<secret>[0-9a-fA-F]{32,128})$"
)
MAX_TOKEN_LENGTH = 160


@dataclass(frozen=True)
class TokenInfo:
    reference_number: str


def check_ksef_token(token: str, context_nip: str, *, delegated: bool = False) -> TokenInfo:
    """The token's reference number when it has KSeF's shape and names this context; a 422 otherwise.

    KSeF builds the context into the token (REFERENCE.md §3.2), so a token of another context cannot work here:
    saying so now is clearer than KSeF's generic "invalid token" (status 450) after a full authentication round.
    That holds for the delegated model too: a grant lets the office *authenticate* in the client's context
    (§15), it does not make the office's own token (context = the office's NIP) valid there.
    """
    malformed = CredentialError(
        "ksef-token-malformed",
        "Malformed KSeF token",
        "This is not a KSeF 2.0 token: expected '<reference number>|nip-<NIP>|<hex secret>' as KSeF shows it once "
        "when the token is generated (KSeF 1.0 tokens do not work in KSeF 2.0).",
    )
    text = token.strip()
    if len(text) > MAX_TOKEN_LENGTH:
        raise malformed
    match = _TOKEN.match(text)
    if match is None:
        raise malformed
    if match["context_type"] != "nip":
        raise CredentialError(
            "ksef-token-wrong-context",
            "KSeF token of another context",
            "This token was generated in an internal-identifier (InternalId) context; the gateway works in the "
            "client's NIP context, so generate the token there.",
        )
    if match["context"] != context_nip:
        detail = (
            f"This token was generated in the KSeF context of NIP {match['context']}, not {context_nip}: a KSeF "
            "token works only in the context it was generated in."
        )
        if delegated:
            detail += (
                f" The office's own token cannot act for a client, even after the client's grant. Authenticate in "
                f"KSeF in the context of NIP {context_nip} (with the office's certificate or seal, once the client "
                "granted the office InvoiceRead) and generate a token there, or register the office's certificate."
            )
        raise CredentialError(
            "ksef-token-wrong-context",
            "KSeF token of another context",
            detail,
            token_context_nip=match["context"],
        )
    return TokenInfo(reference_number=match["reference"])


def token_credential(
    token: SecretStr, context_nip: str, *, delegated: bool = False
) -> tuple[KsefTokenCredential, TokenInfo]:
    info = check_ksef_token(token.get_secret_value(), context_nip, delegated=delegated)
    return KsefTokenCredential(token=SecretStr(token.get_secret_value().strip())), info


# --- certificates -----------------------------------------------------------------------------------------------

_PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z0-9 ]+-----")
# The subject identity KSeF reads from the certificate (REFERENCE.md §3.3).
_SERIAL_IDENTITY = re.compile(r"(TINPL|NIP|PNOPL|PESEL)\D*?(\d{10,11})")
_ORGANIZATION_IDENTITY = re.compile(r"VATPL-\D*?(\d{10})")


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    serial_number: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    # "Nip 1234567890" / "Pesel ..." when the certificate names its owner the way KSeF reads it.
    identity: str | None


def _der_or_pem(text: str, what: str) -> tuple[bytes, bool]:
    """The bytes given as PEM (returned as is) or as base64 DER (decoded); ``True`` when PEM."""
    raw = text.strip().encode()
    if _PEM_BLOCK.search(raw):
        return raw, True
    try:
        return base64.b64decode(b"".join(raw.split()), validate=True), False
    except (binascii.Error, ValueError):
        raise CredentialError(
            f"{what}-unreadable",
            f"Unreadable {what.replace('-', ' ')}",
            f"Give the {what.replace('-', ' ')} as PEM or as base64-encoded DER.",
        ) from None


def _load_certificate(text: str) -> x509.Certificate:
    data, is_pem = _der_or_pem(text, "certificate")
    try:
        return x509.load_pem_x509_certificate(data) if is_pem else x509.load_der_x509_certificate(data)
    except ValueError:
        raise CredentialError(
            "certificate-unreadable",
            "Unreadable certificate",
            "The certificate is not an X.509 certificate in PEM or base64 DER.",
        ) from None


def _load_private_key(text: str, password: SecretStr | None) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    data, is_pem = _der_or_pem(text, "private-key")
    secret = password.get_secret_value().encode() if password is not None and password.get_secret_value() else None
    try:
        if is_pem:
            key = serialization.load_pem_private_key(data, password=secret)
        else:
            key = serialization.load_der_private_key(data, password=secret)
    except TypeError:
        # cryptography says TypeError both for "encrypted, no password" and "password, not encrypted".
        if secret is None:
            raise CredentialError(
                "private-key-password-required",
                "The private key is encrypted",
                "The private key is encrypted: give its password in private_key_password (used once to decrypt "
                "it, never stored).",
            ) from None
        raise CredentialError(
            "private-key-not-encrypted",
            "The private key is not encrypted",
            "A password was given but the private key is not encrypted: leave private_key_password out.",
        ) from None
    except ValueError:
        if secret is not None:
            raise CredentialError(
                "private-key-wrong-password",
                "Wrong private key password",
                "The private key could not be decrypted with the given password.",
            ) from None
        raise CredentialError(
            "private-key-unreadable",
            "Unreadable private key",
            "The private key is not a PKCS#8 or PKCS#1/SEC1 key in PEM or base64 DER.",
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise CredentialError(
                "private-key-unsupported", "Unsupported key", "KSeF needs RSA keys of at least 2048 bits."
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size < 256:
            raise CredentialError("private-key-unsupported", "Unsupported key", "KSeF needs EC keys of P-256 or more.")
        return key
    raise CredentialError("private-key-unsupported", "Unsupported key", "KSeF accepts RSA or EC (ECDSA) keys only.")


def _identity(certificate: x509.Certificate) -> str | None:
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        match = _SERIAL_IDENTITY.search(str(attribute.value))
        if match:
            kind = "Nip" if match[1] in ("TINPL", "NIP") else "Pesel"
            return f"{kind} {match[2]}"
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER):
        match = _ORGANIZATION_IDENTITY.search(str(attribute.value))
        if match:
            return f"Nip {match[1]}"
    return None


def _spki(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def certificate_credential(
    certificate: str, private_key: SecretStr, password: SecretStr | None, now: datetime
) -> tuple[CertificateCredential, CertificateInfo]:
    """Parse and check a certificate and its key. The password decrypts the key here and is dropped: what
    goes on (into the vault) is the unencrypted PKCS#8 key, so the password is never needed again."""
    cert = _load_certificate(certificate)
    key = _load_private_key(private_key.get_secret_value(), password)
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise CredentialError(
            "private-key-mismatch",
            "The key does not match the certificate",
            "The private key is not the key of this certificate's public key.",
        )
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < not_before:
        raise CredentialError(
            "certificate-not-yet-valid",
            "The certificate is not valid yet",
            f"The certificate is valid from {not_before.isoformat()}.",
            valid_from=not_before.isoformat(),
        )
    if now >= not_after:
        raise CredentialError(
            "certificate-expired",
            "The certificate has expired",
            f"The certificate expired on {not_after.isoformat()}.",
            valid_until=not_after.isoformat(),
        )
    info = _info(cert)
    unencrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    credential = CertificateCredential(
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM), private_key_pem=SecretBytes(unencrypted)
    )
    return credential, info


def _info(cert: x509.Certificate) -> CertificateInfo:
    return CertificateInfo(
        subject=cert.subject.rfc4514_string()[:500],
        serial_number=format(cert.serial_number, "X"),
        fingerprint_sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        not_before=cert.not_valid_before_utc.astimezone(UTC),
        not_after=cert.not_valid_after_utc.astimezone(UTC),
        identity=_identity(cert),
    )


def certificate_info(certificate_pem: bytes) -> CertificateInfo:
    """What a stored certificate says (for status views and expiry checks)."""
    return _info(x509.load_pem_x509_certificate(certificate_pem))


# --- what KSeF's refusals mean -------------------------------------------------------------------------------


def failure_status(error: BaseException, valid_until: datetime | None, now: datetime) -> CredentialStatus | None:
    """The status a KSeF failure puts the credential in; ``None`` for failures that say nothing about it
    (outages, rate limits, a revoked auth session)."""
    if not isinstance(error, KsefAuthFailed):
        return None
    if error.auth_status == 450:
        said = " ".join([error.status_description, *error.details]).lower()
        return CredentialStatus.REVOKED if ("unieważnion" in said or "revoked" in said) else CredentialStatus.INVALID
    if error.auth_status == 460 and _certificate_problem(error) == "revoked":
        return CredentialStatus.REVOKED
    if error.auth_status == 460 and valid_until is not None and now >= valid_until:
        return CredentialStatus.EXPIRED
    if error.auth_status in (415, 460, 470, 480):
        return CredentialStatus.INVALID
    return None


def auth_failure(exc: KsefAuthFailed, context_nip: str, model: CredentialModel) -> CredentialError:
    said = exc.status_description + (f": {'; '.join(exc.details)}" if exc.details else "")
    extensions: dict[str, Any] = {"ksef_auth_status": exc.auth_status, "ksef_description": said}
    status = exc.auth_status
    if status == 450:
        text = " ".join([exc.status_description, *exc.details]).lower()
        if "unieważnion" in text or "revoked" in text:
            return CredentialError(
                "ksef-token-revoked",
                "The KSeF token is revoked",
                "KSeF says this token has been revoked; generate a new token in KSeF and register it.",
                **extensions,
            )
        if "nieaktywny" in text or "inactive" in text:
            return CredentialError(
                "ksef-token-inactive",
                "The KSeF token is not active",
                "KSeF says this token is not active yet (or its activation failed); check its status in KSeF.",
                **extensions,
            )
        return CredentialError(
            "ksef-token-rejected",
            "KSeF rejected the token",
            f"KSeF does not accept this token in the context of NIP {context_nip} (unknown, mistyped or from another "
            "environment).",
            **extensions,
        )
    if status == 415:
        hint = (
            f"the client (NIP {context_nip}) must first grant the office's NIP InvoiceRead (and InvoiceWrite to send) "
            "in KSeF"
            if model is CredentialModel.DELEGATED
            else "use a credential of the client itself or of someone the client granted permissions in KSeF"
        )
        return CredentialError(
            "no-access-to-context",
            "No access to this KSeF context",
            f"The credential authenticates, but holds no permission in the KSeF context of NIP {context_nip}: {hint}.",
            **extensions,
        )
    if status == 460:
        return _certificate_failure(_certificate_problem(exc), said, extensions)
    if status == 480:
        return CredentialError(
            "context-blocked",
            "KSeF blocked the context",
            f"KSeF blocked authentication in the context of NIP {context_nip} (suspected security incident); "
            "contact the Ministry of Finance.",
            **extensions,
        )
    if status in (500, 550, 100):
        return CredentialError(
            "ksef-unavailable",
            "KSeF could not finish the authentication",
            f"KSeF could not finish the authentication ({said}); try again shortly.",
            status=503,
            retry_after_s=30,
            **extensions,
        )
    return CredentialError(
        "ksef-auth-failed",
        "KSeF refused the authentication",
        f"KSeF ended the authentication with status {status}: {said}.",
        **extensions,
    )


def _certificate_problem(exc: KsefAuthFailed) -> str:
    """Which of KSeF's 460 details (spec, GET /auth/{ref}: Nieważny certyfikat, Błąd weryfikacji łańcucha
    certyfikatów, Niezaufany łańcuch certyfikatów, Certyfikat odwołany, Certyfikat zawieszony, Niepoprawny
    certyfikat) this is; KSeF gives no code for them, only the Polish text."""
    said = " ".join(exc.details).lower()
    if "odwołan" in said or "revoked" in said:
        return "revoked"
    if "zawieszon" in said or "suspended" in said:
        return "suspended"
    if "łańcuch" in said or "chain" in said or "untrusted" in said:
        return "untrusted"
    return "invalid"


def _certificate_failure(problem: str, said: str, extensions: dict[str, Any]) -> CredentialError:
    if problem == "revoked":
        return CredentialError(
            "certificate-revoked",
            "The certificate is revoked",
            f"KSeF says this certificate has been revoked ({said}); it can never authenticate again: obtain a new "
            "certificate (or KSeF certificate) and register it.",
            **extensions,
        )
    if problem == "suspended":
        return CredentialError(
            "certificate-suspended",
            "The certificate is suspended",
            f"KSeF says this certificate is suspended ({said}); have its issuer lift the suspension, or register "
            "another certificate.",
            **extensions,
        )
    if problem == "untrusted":
        return CredentialError(
            "certificate-untrusted",
            "KSeF does not trust the certificate",
            f"KSeF could not verify the certificate's chain ({said}): use a qualified certificate or seal from an "
            "EU trusted list, or a KSeF certificate.",
            **extensions,
        )
    return CredentialError(
        "certificate-rejected",
        "KSeF rejected the certificate",
        f"KSeF does not accept the certificate ({said}): it must be a qualified certificate or seal, or a KSeF "
        "certificate, within its validity period by KSeF's clock and not revoked.",
        **extensions,
    )


def unreachable(exc: BaseException, environment: Environment) -> CredentialError:
    retry = getattr(exc, "retry_after_s", None)
    retry_after = max(1.0, float(retry)) if isinstance(retry, int | float) else 30.0
    why = "is rate limiting this context" if isinstance(exc, KsefRateLimited) else "cannot be reached right now"
    return CredentialError(
        "ksef-unavailable",
        "KSeF is unavailable",
        f"The credential could not be checked because KSeF ({environment.value}) {why}; nothing was stored. "
        "Try again later.",
        status=503,
        retry_after_s=retry_after,
    )

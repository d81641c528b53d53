"""Our own thin async KSeF 2.0 client (no third-party SDK at run time): environments, credentials, errors,
crypto, the XAdES AuthTokenRequest, and ``KsefClients`` / ``KsefClient``."""

from ksef_gateway.ksef.client import CallObserver, CallRecord, KsefClient, KsefClients
from ksef_gateway.ksef.credentials import CertificateCredential, Credential, KsefTokenCredential
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.ksef.errors import (
    KsefAuthFailed,
    KsefError,
    KsefForbidden,
    KsefPackageError,
    KsefRateLimited,
    KsefUnauthorized,
    KsefUnavailable,
)
from ksef_gateway.ksef.models import (
    FA2,
    FA3,
    AccessToken,
    ExportedPackage,
    ExportHandle,
    ExportPackage,
    ExportStatus,
    FormCode,
    KsefAuthSession,
    MetadataPage,
    OnlineSession,
    SentInvoiceStatus,
    SessionStatus,
)

__all__ = [
    "FA2",
    "FA3",
    "AccessToken",
    "CallObserver",
    "CallRecord",
    "CertificateCredential",
    "Credential",
    "Environment",
    "ExportHandle",
    "ExportPackage",
    "ExportStatus",
    "ExportedPackage",
    "FormCode",
    "KsefAuthFailed",
    "KsefAuthSession",
    "KsefClient",
    "KsefClients",
    "KsefError",
    "KsefForbidden",
    "KsefPackageError",
    "KsefRateLimited",
    "KsefTokenCredential",
    "KsefUnauthorized",
    "KsefUnavailable",
    "MetadataPage",
    "OnlineSession",
    "SentInvoiceStatus",
    "SessionStatus",
]

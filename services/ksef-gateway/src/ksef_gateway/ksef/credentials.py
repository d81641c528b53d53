"""What the gateway authenticates with in a KSeF context: a KSeF token, or a certificate with its private key.

Secrets are held only in memory, wrapped in pydantic's Secret types so a ``repr`` or a log line shows stars.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretBytes, SecretStr


@dataclass(frozen=True)
class KsefTokenCredential:
    token: SecretStr


@dataclass(frozen=True)
class CertificateCredential:
    """An authentication certificate (PEM) and its unencrypted PKCS#8/PKCS#1 private key (PEM, memory only)."""

    certificate_pem: bytes
    private_key_pem: SecretBytes


Credential = KsefTokenCredential | CertificateCredential

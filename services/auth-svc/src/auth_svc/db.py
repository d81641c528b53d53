"""The service's tables, all in its own schema ``auth``.

Secrets are never stored in the clear: passwords as argon2id hashes, tokens and API key secrets as SHA-256
hashes, signing keys and TOTP seeds encrypted with AES-256-GCM (``crypto.SecretBox``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)

from auth_svc.settings import SCHEMA
from platform_common.db import UtcDateTime, make_metadata
from platform_common.messaging.tables import Json, SequenceId, add_messaging_tables

metadata = make_metadata(SCHEMA)
messaging_tables = add_messaging_tables(metadata)


def _org_fk() -> ForeignKey:
    return ForeignKey(f"{SCHEMA}.organisation.id", ondelete="CASCADE")


def _user_fk() -> ForeignKey:
    return ForeignKey(f"{SCHEMA}.user_account.id", ondelete="CASCADE")


organisation = Table(
    "organisation",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("nip", String(10), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    # A company exists once per kind: one client company can be a client of several offices.
    UniqueConstraint("kind", "nip"),
)

office_client = Table(
    "office_client",
    metadata,
    Column("office_id", Uuid, _org_fk(), primary_key=True),
    Column("client_id", Uuid, _org_fk(), primary_key=True, index=True),
    # pending -> active (reported by approval-svc) -> inactive; only active relations reach tokens.
    Column("state", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # The approval-svc integration this relation follows and the last revision applied (auth_0003): an older
    # change replayed after a newer one (a dead letter replayed late) must not undo it.
    Column("integration_id", Uuid, nullable=True),
    Column("integration_revision", Integer, nullable=True),
)

user_account = Table(
    "user_account",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=True),
    Column("display_name", String(200), nullable=True),
    Column("is_active", Boolean, nullable=False),
    Column("failed_logins", Integer, nullable=False),
    Column("locked_at", UtcDateTime, nullable=True),
    Column("locked_until", UtcDateTime, nullable=True),
    Column("totp_secret_enc", Text, nullable=True),
    Column("totp_enabled", Boolean, nullable=False),
    # The last accepted TOTP time step: a code is accepted once only.
    Column("totp_last_counter", BigInteger, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("password_changed_at", UtcDateTime, nullable=True),
)

membership = Table(
    "membership",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, _user_fk(), nullable=False, index=True),
    # NULL for the platform-wide ops role.
    Column("organisation_id", Uuid, _org_fk(), nullable=True, index=True),
    Column("role", String(32), nullable=False),
    # An office accountant limited to the clients listed in membership_client.
    Column("restricted", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("user_id", "organisation_id"),
)

membership_client = Table(
    "membership_client",
    metadata,
    Column("membership_id", Uuid, ForeignKey(f"{SCHEMA}.membership.id", ondelete="CASCADE"), primary_key=True),
    Column("client_id", Uuid, _org_fk(), primary_key=True),
)

invitation = Table(
    "invitation",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("organisation_id", Uuid, _org_fk(), nullable=False, index=True),
    Column("email", String(320), nullable=False),
    Column("role", String(32), nullable=False),
    Column("client_ids", Json, nullable=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("invited_by", Uuid, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("accepted_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
)

password_reset = Table(
    "password_reset",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, _user_fk(), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
)

signing_key = Table(
    "signing_key",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("public_jwk", Json, nullable=False),
    # AES-GCM ciphertext bound to the kid; erased once the key has left the JWKS.
    Column("private_key_enc", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    # Set when a newer key became current; the key keeps verifying (JWKS) until its last token expired.
    Column("retired_at", UtcDateTime, nullable=True),
)

refresh_token = Table(
    "refresh_token",
    metadata,
    Column("id", Uuid, primary_key=True),
    # Every rotation stays in its family; presenting an already rotated token revokes the whole family.
    Column("family_id", Uuid, nullable=False, index=True),
    Column("user_id", Uuid, _user_fk(), nullable=False, index=True),
    Column("organisation_id", Uuid, nullable=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("amr", Json, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
)

api_key = Table(
    "api_key",
    metadata,
    Column("id", String(12), primary_key=True),
    Column("organisation_id", Uuid, _org_fk(), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("perms", Json, nullable=False),
    # Client NIPs the key may touch; NULL = whatever its organisation may touch at the time of use.
    Column("nips", Json, nullable=True),
    Column("created_by", Uuid, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("last_used_at", UtcDateTime, nullable=True),
)

audit_event = Table(
    "audit_event",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("occurred_at", UtcDateTime, nullable=False),
    # The organisation whose admins may read the entry; NULL for platform-level events.
    Column("organisation_id", Uuid, nullable=True),
    Column("event", String(64), nullable=False),
    Column("actor_type", String(16), nullable=True),
    Column("actor_id", String(64), nullable=True),
    Column("subject_id", String(64), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("details", Json, nullable=False),
)
Index("ix_audit_event_org_id", audit_event.c.organisation_id, audit_event.c.id)

login_throttle = Table(
    "login_throttle",
    metadata,
    # SHA-256 of (e-mail, IP): neither is stored in the clear for the sake of a rate limit.
    Column("key", String(64), primary_key=True),
    Column("window_started_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
)

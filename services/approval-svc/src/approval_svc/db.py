"""The service's tables, all in its own schema ``approval``."""

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text, UniqueConstraint, Uuid

from approval_svc.settings import SCHEMA
from platform_common.client_access import add_client_access_table
from platform_common.db import UtcDateTime, make_metadata
from platform_common.messaging.tables import add_messaging_tables

metadata = make_metadata(SCHEMA)
messaging_tables = add_messaging_tables(metadata)
# Which office may read which client now, followed from this service's own integration.changed (approval_0003): the
# same gate as every other service's, so a month's state is read under the same rule as the buffer it summarises.
client_access = add_client_access_table(metadata)

# --- office-client integrations (approval_0002) -------------------------------------------------------------------
# One row per (office, client NIP): a renewed request reuses it, so its id and revision run on across the whole
# relationship and every projection of it (auth-svc, the gateway, buffer-svc) keys on one id.
integration = Table(
    "integration",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("office_id", Uuid, nullable=False),
    Column("office_nip", String(10), nullable=False),
    Column("office_name", String(200), nullable=False),
    Column("client_nip", String(10), nullable=False),
    Column("client_name", String(200), nullable=True),
    Column("client_email", String(320), nullable=False),
    Column("client_language", String(2), nullable=False),
    Column("return_email", String(320), nullable=False),
    Column("return_language", String(2), nullable=False),
    Column("send_sales", Boolean, nullable=False),
    Column("state", String(16), nullable=False),
    # Bumped by every change; events carry it so that projections apply only newer changes.
    Column("revision", Integer, nullable=False),
    Column("access_mode", String(8), nullable=True),  # grant | token, chosen by the client on the consent page
    # --- who did what when (the Firmino screen's three timestamps, and the rest of the lifecycle) ---
    Column("requested_at", UtcDateTime, nullable=False),
    Column("requested_by", String(64), nullable=False),
    Column("consented_at", UtcDateTime, nullable=True),
    Column("consented_by", String(320), nullable=True),
    Column("activated_at", UtcDateTime, nullable=True),
    Column("activated_by", String(64), nullable=True),
    Column("ended_at", UtcDateTime, nullable=True),  # refused, expired, revoked
    Column("ended_by", String(320), nullable=True),
    Column("suspended_by_side", String(8), nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    # --- the consent link: only its SHA-256; kept after use so that a second use is told apart from a bad link ---
    Column("consent_token_hash", String(64), nullable=True),
    Column("consent_expires_at", UtcDateTime, nullable=True),
    Column("consent_used_at", UtcDateTime, nullable=True),
    # --- the activation code: scrypt with its salt ---
    Column("code_salt", String(32), nullable=True),
    Column("code_hash", String(64), nullable=True),
    Column("code_expires_at", UtcDateTime, nullable=True),
    Column("code_attempts", Integer, nullable=False),
    # --- KSeF access as the gateway last reported it (credential.access_*) ---
    Column("access_status", String(12), nullable=True),  # verified | lost
    Column("access_checked_at", UtcDateTime, nullable=True),
    Column("access_reason", Text, nullable=True),
    UniqueConstraint("office_id", "client_nip"),
    Index(None, "consent_token_hash", unique=True),
    Index(None, "client_nip"),
)


# --- month approval (approval_0003) --------------------------------------------------------------------------------
# A client's month: approved ("Zatwierdź miesiąc") or open again ("Odblokuj miesiąc"). ``revision`` grows with every
# change and travels in the month events, so buffer-svc's lock follows only newer changes.
month = Table(
    "month",
    metadata,
    Column("client_nip", String(10), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("state", String(10), nullable=False),  # open | approved
    Column("revision", Integer, nullable=False),
    Column("approved_at", UtcDateTime, nullable=True),
    Column("approved_by", String(64), nullable=True),
    Column("unlocked_at", UtcDateTime, nullable=True),
    Column("unlocked_by", String(64), nullable=True),
    Column("late_arrivals", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# buffer-svc's entries as its status.changed events describe them: enough to count a month and to know whether the
# office imported from it. Applied only when newer (the entry's revision), so redeliveries and replays are harmless.
month_entry = Table(
    "month_entry",
    metadata,
    Column("client_nip", String(10), primary_key=True),
    Column("ksef_number", String(36), primary_key=True),
    Column("period", String(7), nullable=False),
    Column("decision", String(12), nullable=False),
    Column("imported", Boolean, nullable=False),
    Column("archived", Boolean, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "client_nip", "period"),
)

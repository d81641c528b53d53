"""The service's tables, all in its own schema ``buffer``."""

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)

from buffer_svc.settings import SCHEMA
from platform_common.client_access import add_client_access_table
from platform_common.db import UtcDateTime, make_metadata
from platform_common.messaging.tables import Json, SequenceId, add_messaging_tables

metadata = make_metadata(SCHEMA)
messaging_tables = add_messaging_tables(metadata)
# Which office may read which client now (platform_common.client_access, buffer_0002).
client_access = add_client_access_table(metadata)

# --- the purchase buffer (buffer_0003) ----------------------------------------------------------------------------
# One entry per (client NIP, KSeF number): invoice.fetched is delivered at least once and the gateway re-fetches
# overlapping windows, so this key makes ingest idempotent. The raw XML stays with the gateway, the owner of every
# document fetched from KSeF (ARCHITECTURE.md); ``xml_ref`` names it there.
purchase_entry = Table(
    "purchase_entry",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("client_nip", String(10), nullable=False),
    Column("ksef_number", String(36), nullable=False),
    Column("period", String(7), nullable=False),  # YYYY-MM of P_1, the issue date
    Column("subject_role", String(20), nullable=False),
    Column("seller_nip", String(20), nullable=True),
    Column("seller_name", String(512), nullable=True),
    Column("invoice_number", String(256), nullable=False),  # P_2
    Column("issue_date", Date, nullable=False),  # P_1
    Column("acquisition_date", UtcDateTime, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("net_amount", Numeric(18, 2), nullable=False),
    Column("vat_amount", Numeric(18, 2), nullable=False),
    Column("gross_amount", Numeric(18, 2), nullable=False),
    Column("vat_amount_pln", Numeric(18, 2), nullable=True),
    Column("invoice_type", String(8), nullable=False),
    Column("corrected_ksef_number", String(64), nullable=True),
    Column("corrected_invoice_number", String(256), nullable=True),
    Column("invoice_hash", String(44), nullable=False),
    Column("xml_ref", String(200), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    # Arrived after its month was approved (buffer_0003): flagged, and both sides are told.
    Column("late_arrival", Boolean, nullable=False),
    # --- the client's decision ("Księguj" / "Nie księguj") and description ("Opis") ---
    Column("decision", String(12), nullable=False),  # unverified | book | dont_book
    Column("description", Text, nullable=True),
    Column("decided_at", UtcDateTime, nullable=True),  # "data zmiany statusu"
    Column("decided_by", String(64), nullable=True),
    Column("decided_by_side", String(8), nullable=True),  # client | office (an override)
    # --- the office's intake ---
    Column("imported_at", UtcDateTime, nullable=True),  # "realizacja"
    Column("imported_by", String(64), nullable=True),
    Column("archived_at", UtcDateTime, nullable=True),
    Column("archived_by", String(64), nullable=True),
    # Bumped by every change: status.changed carries it, so a consumer applies only newer changes.
    Column("revision", Integer, nullable=False),
    UniqueConstraint("client_nip", "ksef_number"),
    Index(None, "client_nip", "period", "issue_date", "id"),
    Index(None, "client_nip", "acquisition_date", "id"),
    Index(None, "client_nip", "seller_nip", "decided_at"),
)

# The client's months as approval-svc last announced them: what the buffer enforces (locked for client edits).
month_lock = Table(
    "month_lock",
    metadata,
    Column("client_nip", String(10), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("state", String(10), nullable=False),  # approved | open
    # approval-svc's revision of the month: a redelivered or older event never undoes a newer one.
    Column("revision", Integer, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("changed_by", String(64), nullable=True),
)

# "Rejestr komunikacji": what happened to a client's buffer and to each entry, in order.
communication_log = Table(
    "communication_log",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("client_nip", String(10), nullable=False),
    Column("entry_id", Uuid, nullable=True),
    Column("ksef_number", String(36), nullable=True),
    Column("kind", String(32), nullable=False),
    Column("actor", String(64), nullable=True),
    Column("actor_side", String(8), nullable=True),  # client | office | platform
    Column("detail", Json, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index(None, "client_nip", "id"),
    Index(None, "entry_id", "id"),
)

# "Who read my invoices": every read of a client's invoice data by another organisation, and every operator action.
access_ledger = Table(
    "access_ledger",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("client_nip", String(10), nullable=False),
    Column("principal_id", String(64), nullable=False),
    Column("principal_type", String(8), nullable=False),  # user | api_key | service
    Column("org_id", Uuid, nullable=True),
    Column("org_kind", String(8), nullable=True),
    Column("action", String(24), nullable=False),
    Column("target", String(200), nullable=True),
    Column("items", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index(None, "client_nip", "id"),
)

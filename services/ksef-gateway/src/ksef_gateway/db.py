"""The service's tables, all in its own schema ``gateway``."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)

from ksef_gateway.settings import SCHEMA
from platform_common.client_access import add_client_access_table
from platform_common.db import UtcDateTime, make_metadata
from platform_common.messaging.tables import Json, add_messaging_tables

metadata = make_metadata(SCHEMA)
messaging_tables = add_messaging_tables(metadata)
# Which office may read which client now (platform_common.client_access, gateway_0007).
client_access = add_client_access_table(metadata)


# --- KSeF sessions, context leases and the communication log (gateway_0002) ------------------------------------
# One row per context NIP while a replica owns it: acquired and renewed by conditional UPDATE/INSERT (ownership/),
# so exactly one holder at a time on PostgreSQL and SQLite alike; a lease not renewed by expires_at is free.
context_lease = Table(
    "context_lease",
    metadata,
    Column("context_nip", String(10), primary_key=True),
    Column("holder", String(200), nullable=False),  # the replica id
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("renewed_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index(None, "holder"),
)

# --- replica heartbeats (gateway_0005) ---------------------------------------------------------------------------
# One row per live gateway replica, renewed with its context leases and expiring like them: the number of live
# replicas sets each one's fair share of the active contexts (ownership/). A graceful stop deletes the row.
gateway_replica = Table(
    "gateway_replica",
    metadata,
    Column("replica_id", String(200), primary_key=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("renewed_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# Every KSeF call per client context (NULL for public calls such as the Ministry's keys): what, how it ended, which
# reference numbers and KSeF codes; never tokens, challenges, keys or invoice content (communication/).
communication_log = Table(
    "communication_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("context_nip", String(10), nullable=True),
    Column("environment", String(8), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("reference_numbers", Json, nullable=False),
    Column("error_codes", Json, nullable=False),
    Column("description", String(500), nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("replica_id", String(200), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index(None, "context_nip", "id"),
    Index(None, "at"),
)


# --- credential vault (gateway_0003) ---------------------------------------------------------------------------
# One credential per KSeF context NIP. The secret (KSeF token, or the unencrypted private key of a certificate)
# exists only as AES-256-GCM ciphertext under a per-row data key, itself wrapped by a master key
# (vault/envelope.py); both are bound to (id, context_nip) as associated data. The certificate is public and kept
# in the clear. Nothing here is ever returned by the API except the status columns.
credential = Table(
    "credential",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("context_nip", String(10), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # ksef_token | certificate
    Column("model", String(16), nullable=False),  # client | delegated
    Column("scope", String(16), nullable=False),  # read | read_send
    Column("environment", String(8), nullable=False),  # sim | test | demo | prod
    Column("sync_subject3", Boolean, nullable=False),
    Column("sync_subject_authorized", Boolean, nullable=False),
    Column("status", String(32), nullable=False),
    Column("permissions", Json, nullable=False),  # the KSeF permissions seen at the last authentication
    Column("valid_until", UtcDateTime, nullable=True),
    Column("last_authenticated_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_error_at", UtcDateTime, nullable=True),
    Column("token_reference", String(40), nullable=True),
    Column("certificate_pem", Text, nullable=True),
    Column("certificate_fingerprint", String(64), nullable=True),
    Column("certificate_subject", String(500), nullable=True),
    Column("secret_ciphertext", LargeBinary, nullable=False),
    Column("wrapped_data_key", LargeBinary, nullable=False),
    Column("master_key_id", String(64), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Rotation walks the rows still wrapped by a retired master key.
    Index(None, "master_key_id"),
)


# --- purchase sync (gateway_0004) ------------------------------------------------------------------------------
# Every purchase invoice fetched for a client, once per (client NIP, KSeF number): overlapping HWM windows and
# restarts re-fetch, and this key makes storing idempotent. The raw XML is kept in the row itself (not a file
# under data_dir) so the invoice, its XML and its invoice.fetched outbox row commit or roll back together: no orphan
# or missing files after a crash, one backup, and KSeF caps an invoice at 1 MB (3 MB with attachments), which
# PostgreSQL TOASTs and compresses. Amounts are in the invoice currency (KodWaluty); vat_amount_pln as KSeF
# reports VAT in its metadata.
purchase_invoice = Table(
    "purchase_invoice",
    metadata,
    Column("client_nip", String(10), primary_key=True),
    Column("ksef_number", String(36), primary_key=True),
    Column("subject_type", String(20), nullable=False),  # Subject2 | Subject3 | SubjectAuthorized
    Column("form", String(16), nullable=False),  # FA (3) | FA (2)
    Column("invoice_number", String(256), nullable=False),  # P_2
    Column("issue_date", Date, nullable=False),  # P_1
    Column("seller_nip", String(20), nullable=False),
    Column("seller_name", String(512), nullable=True),
    Column("buyer_identifier_type", String(16), nullable=False),  # Nip | VatUe | Other | None
    Column("buyer_identifier", String(64), nullable=True),
    Column("buyer_name", String(512), nullable=True),
    Column("third_subjects", Json, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("net_amount", Numeric(18, 2), nullable=False),
    Column("vat_amount", Numeric(18, 2), nullable=False),
    Column("gross_amount", Numeric(18, 2), nullable=False),
    Column("vat_amount_pln", Numeric(18, 2), nullable=False),
    Column("invoice_type", String(8), nullable=False),  # RodzajFaktury
    Column("corrected_ksef_number", String(36), nullable=True),
    Column("corrected_invoice_number", String(256), nullable=True),
    Column("corrected_invoices", Json, nullable=False),
    Column("invoice_hash", String(44), nullable=False),  # base64 SHA-256 of the exact bytes, as KSeF reports it
    Column("xml", LargeBinary, nullable=False),
    Column("xml_size", Integer, nullable=False),
    Column("acquisition_date", UtcDateTime, nullable=False),  # the legal receipt date (REFERENCE.md §9)
    Column("permanent_storage_date", UtcDateTime, nullable=True),
    Column("invoicing_date", UtcDateTime, nullable=True),
    Column("fetched_at", UtcDateTime, nullable=False),
    Column("fetched_via", String(16), nullable=False),  # export | download
    Column("event_id", Uuid, nullable=False),  # the invoice.fetched envelope written with this row
    Index(None, "client_nip", "acquisition_date", "ksef_number"),
)

# Per client: the month-close day that orders the queue, the backfill depth, and the queued "fetch now" request.
sync_client = Table(
    "sync_client",
    metadata,
    Column("client_nip", String(10), primary_key=True),
    Column("month_close_day", Integer, nullable=True),  # None: SyncSettings.default_month_close_day
    Column("backfill_months", Integer, nullable=True),  # None: SyncSettings.backfill_months
    Column("fetch_requested_at", UtcDateTime, nullable=True),
    Column("fetch_requested_by", String(200), nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Per (client, subject type): the checkpoint (the next window's `from`), the last HWM seen, the cadence, and the
# export in flight so a restart resumes it instead of paying for another one. export_key is that export's AES key
# and IV: it decrypts only a package of invoices this table's neighbour stores in the clear anyway, and is cleared
# as soon as the export is consumed or abandoned.
sync_state = Table(
    "sync_state",
    metadata,
    Column("client_nip", String(10), primary_key=True),
    Column("subject_type", String(20), primary_key=True),
    Column("checkpoint", UtcDateTime, nullable=True),
    Column("hwm", UtcDateTime, nullable=True),
    Column("backfilled", Boolean, nullable=False),  # caught up with the HWM at least once
    Column("last_delta", Integer, nullable=True),  # new invoices of the last completed run
    Column("last_run_at", UtcDateTime, nullable=True),
    Column("last_success_at", UtcDateTime, nullable=True),
    Column("next_run_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_error_at", UtcDateTime, nullable=True),
    Column("consecutive_failures", Integer, nullable=False),
    Column("export_reference", String(36), nullable=True),
    Column("export_started_at", UtcDateTime, nullable=True),
    Column("export_window_start", UtcDateTime, nullable=True),
    Column("export_window_end", UtcDateTime, nullable=True),
    Column("export_key", LargeBinary, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "next_run_at"),
)

# Invoices a run could not store: bytes that do not match KSeF's hash (re-fetched a few times, the checkpoint held
# before them) or a document we cannot read. Nothing is dropped silently: GET /clients/{nip}/sync lists them.
sync_rejection = Table(
    "sync_rejection",
    metadata,
    Column("client_nip", String(10), primary_key=True),
    Column("ksef_number", String(36), primary_key=True),
    Column("subject_type", String(20), nullable=False),
    Column("reason", String(32), nullable=False),  # hash_mismatch | malformed
    Column("detail", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("given_up", Boolean, nullable=False),
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
)


# --- delegated access (gateway_0006) -----------------------------------------------------------------------------
# One certificate per accounting office NIP, sealed like a credential (vault/envelope.py) with the associated data
# bound to (id, office NIP); it authenticates in every client context whose owner granted the office's NIP.
office_certificate = Table(
    "office_certificate",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("office_nip", String(10), nullable=False, unique=True),
    Column("environment", String(8), nullable=False),
    Column("certificate_pem", Text, nullable=False),
    Column("certificate_fingerprint", String(64), nullable=False),
    Column("certificate_subject", String(500), nullable=False),
    Column("valid_until", UtcDateTime, nullable=False),
    Column("secret_ciphertext", LargeBinary, nullable=False),
    Column("wrapped_data_key", LargeBinary, nullable=False),
    Column("master_key_id", String(64), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Per client served by delegation: which office, whether approval-svc's integration allows it now (``active``, at
# ``revision``: older events are ignored), and what the last live check in KSeF said.
delegated_access = Table(
    "delegated_access",
    metadata,
    Column("client_nip", String(10), primary_key=True),
    Column("office_nip", String(10), nullable=False),
    Column("mode", String(8), nullable=False),  # grant
    Column("active", Boolean, nullable=False),
    Column("send_sales", Boolean, nullable=False),
    Column("revision", Integer, nullable=False),  # the integration's revision last applied (0: set through the API)
    Column("state", String(16), nullable=False),  # unverified | verified | lost
    Column("verified_at", UtcDateTime, nullable=True),
    Column("lost_at", UtcDateTime, nullable=True),
    Column("lost_reason", Text, nullable=True),
    Column("ksef_code", Integer, nullable=True),
    Column("permissions", Json, nullable=False),  # what the office held in the client's context at the last check
    Column("checked_at", UtcDateTime, nullable=True),
    Column("check_error", Text, nullable=True),  # the last inconclusive check (KSeF did not answer)
    Column("next_check_at", UtcDateTime, nullable=True),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "next_check_at"),
    Index(None, "office_nip"),
)

# --- sales invoices sent to KSeF (gateway_0008) --------------------------------------------------------------------
# One row per submitted invoice, its state persisted before every KSeF call (sales/domain.py). The XML is the
# client's own document as submitted (what KSeF hashes); the UPO is KSeF's receipt, kept as received. The
# Idempotency-Key is unique per client and bound to the request's fingerprint.
sales_invoice = Table(
    "sales_invoice",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("client_nip", String(10), nullable=False),
    Column("idempotency_key", String(200), nullable=True),
    Column("request_fingerprint", String(64), nullable=False),
    Column("source", String(8), nullable=False),  # xml | json
    Column("xml", LargeBinary, nullable=False),
    Column("invoice_hash", String(44), nullable=False),
    Column("invoice_number", String(256), nullable=False),  # P_2
    Column("issue_date", Date, nullable=False),  # P_1
    Column("seller_nip", String(10), nullable=False),
    Column("buyer_nip", String(10), nullable=True),
    Column("invoice_type", String(8), nullable=False),  # RodzajFaktury
    Column("currency", String(3), nullable=False),
    Column("gross_amount", Numeric(18, 2), nullable=True),  # P_15
    Column("status", String(16), nullable=False),
    Column("session_reference", String(64), nullable=True),
    Column("invoice_reference", String(64), nullable=True),
    Column("ksef_number", String(36), nullable=True),
    Column("acquisition_date", UtcDateTime, nullable=True),
    Column("upo", LargeBinary, nullable=True),
    Column("ksef_code", Integer, nullable=True),
    Column("error", Json, nullable=True),  # {description, details, extensions} of KSeF's last answer that refused
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("submitted_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Issued offline (gateway_0009): the mode (sales/deadlines.py OfflineMode), the legal deadline for sending it
    # (None while the outage it depends on has not ended), and KOD II signed at issue with the Offline certificate.
    Column("offline_mode", String(16), nullable=True),
    Column("offline_deadline", Date, nullable=True),
    Column("kod_ii_url", Text, nullable=True),
    # gateway_0010: a technical correction (REFERENCE.md §8) names the rejected offline invoice it replaces and is
    # sent with its hash; the deadline alerts fire once each; an invoice held by the client's auto-send rules
    # says which rule held it.
    Column("corrects_invoice_id", Uuid, nullable=True),
    Column("hash_of_corrected_invoice", String(44), nullable=True),
    Column("deadline_warned_at", UtcDateTime, nullable=True),
    Column("deadline_missed_at", UtcDateTime, nullable=True),
    Column("held_by_rule", String(120), nullable=True),
    UniqueConstraint("client_nip", "idempotency_key"),
    Index(None, "status", "next_attempt_at"),
    Index(None, "client_nip", "invoice_hash"),
    Index(None, "client_nip", "created_at", "id"),
)

# Every state a sales invoice went through, with KSeF's codes and references: the invoice's full history.
sales_invoice_history = Table(
    "sales_invoice_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("invoice_id", Uuid, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Json, nullable=False),
    Index(None, "invoice_id", "id"),
)

# The client's KSeF certificate of type Offline (gateway_0009), which signs KOD II (REFERENCE.md §11): the certificate
# in the clear, its private key sealed like a credential (vault/envelope.py, associated data bound to (id, NIP)).
offline_certificate = Table(
    "offline_certificate",
    metadata,
    Column("client_nip", String(10), primary_key=True),
    Column("id", Uuid, nullable=False),
    Column("certificate_pem", Text, nullable=False),
    Column("serial", String(16), nullable=False),
    Column("subject", String(500), nullable=False),
    Column("key_type", String(16), nullable=False),  # RSA-PSS | ECDSA-P256
    Column("valid_until", UtcDateTime, nullable=False),
    Column("secret_ciphertext", LargeBinary, nullable=False),
    Column("wrapped_data_key", LargeBinary, nullable=False),
    Column("master_key_id", String(64), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)


# A client's auto-send rules (gateway_0010, sales/rules.py ``AutoSendRules`` as JSON) and the last month its monthly
# backfill sent, so that a backfill missed while the service was down runs the next day, and never twice.
sales_auto_send = Table(
    "sales_auto_send",
    metadata,
    Column("client_nip", String(10), primary_key=True),
    Column("rules", Json, nullable=False),
    Column("last_backfill_month", String(7), nullable=True),  # YYYY-MM
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# KSeF outages as the gateway saw them (gateway_0010, outages/): announced by Latarnia or found by our probes.
# ``open_slot`` holds the source while the outage lasts and NULL after: the unique index lets one replica open an
# outage per source and makes the others' attempts no-ops, so each start and end is announced once.
ksef_outage = Table(
    "ksef_outage",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("kind", String(16), nullable=False),  # MAINTENANCE | FAILURE | TOTAL_FAILURE | UNREACHABLE
    Column("source", String(16), nullable=False),  # latarnia | probe
    Column("latarnia_event_id", Integer, nullable=True),
    Column("message", Text, nullable=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("open_slot", String(16), nullable=True, unique=True),
    Index(None, "started_at"),
)

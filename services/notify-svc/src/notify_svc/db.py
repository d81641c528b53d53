"""The service's tables, all in its own schema ``notify``."""

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, Table, Text, Uuid, text

from notify_svc.settings import SCHEMA
from platform_common.client_access import add_client_access_table
from platform_common.db import UtcDateTime, make_metadata
from platform_common.messaging.tables import Json, add_messaging_tables

metadata = make_metadata(SCHEMA)
messaging_tables = add_messaging_tables(metadata)
# Which office may read which client now (platform_common.client_access, notify_0005): webhooks about a client go
# to an office's subscriptions only while this says so, checked again before every attempt.
client_access = add_client_access_table(metadata)
# SQLite numbers only an INTEGER PRIMARY KEY by itself; PostgreSQL gets a bigint identity.
_Seq = BigInteger().with_variant(Integer, "sqlite")

# --- e-mails to send (notify_0002) --------------------------------------------------------------------------------
# One row per event that asks for an e-mail. The link stays sealed here as in the event: it is opened only to
# check it and, later, to put it into the message, so this table leaks no usable link either.
mail_message = Table(
    "mail_message",
    metadata,
    Column("id", Uuid, primary_key=True),  # the event id
    Column("kind", String(32), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("subject_id", Uuid, nullable=False),  # the invitation, or the user resetting a password
    # Both NULL for a notice that carries no link (a refused consent, notify_0004).
    Column("sealed_link", Text, nullable=True),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # --- delivery (notify_0003) ---
    Column("language", String(2), nullable=False, server_default=text("'pl'")),
    # What the template shows besides the link (an invitation's organisation name and role); no secret.
    Column("details", Json, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # When the next attempt may start (NULL: at once); a claim moves it forward by the lease, so a sender that dies
    # mid-attempt hands the mail to the next pass instead of holding it.
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("sent_at", UtcDateTime, nullable=True),
    Index(None, "status", "created_at"),
    Index(None, "status", "next_attempt_at"),
)

# Every SMTP attempt of a mail, its delivery log: when, how it ended, the server's reply code and text.
mail_attempt = Table(
    "mail_attempt",
    metadata,
    Column("mail_id", Uuid, ForeignKey("mail_message.id", ondelete="CASCADE"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),  # sent | retry | failed
    Column("smtp_code", Integer, nullable=True),
    Column("detail", Text, nullable=True),
)

# --- webhooks (notify_0005) ---------------------------------------------------------------------------------------
# A subscription of one organisation. The signing secret is stored encrypted (platform_common.secret_box, bound to
# the row's id): it must be read back to sign, and it is shown only once, when made or rotated.
webhook_subscription = Table(
    "webhook_subscription",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("organisation_id", Uuid, nullable=False),
    Column("organisation_kind", String(16), nullable=False),  # office | client
    # A client company's own NIPs, taken from its principal when the subscription was made.
    Column("organisation_nips", Json, nullable=False),
    Column("url", Text, nullable=False),
    Column("description", String(200), nullable=True),
    Column("event_types", Json, nullable=False),
    Column("client_nips", Json, nullable=True),  # NULL: every client the organisation may read
    Column("contact_email", String(320), nullable=False),
    Column("language", String(2), nullable=False),
    Column("secret_sealed", Text, nullable=False),
    # During a rotation's overlap both signatures are sent: the previous secret until ``previous_secret_until``.
    Column("previous_secret_sealed", Text, nullable=True),
    Column("previous_secret_until", UtcDateTime, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_at", UtcDateTime, nullable=True),
    Column("disabled_reason", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "organisation_id"),
)

# Every public event notify-svc received, published shape only (platform_common.contracts.public): what a delivery
# sends, and what a replay by type and time range draws from, also for a subscription made after the event.
webhook_event = Table(
    "webhook_event",
    metadata,
    Column("id", Uuid, primary_key=True),  # the envelope id
    Column("event_type", String(64), nullable=False),
    Column("event_version", Integer, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("client_nip", String(10), nullable=True),
    # Whom the event names besides the client: the office of an integration change, the organisation of a
    # subscription's own notice.
    Column("office_id", Uuid, nullable=True),
    Column("organisation_id", Uuid, nullable=True),
    Column("data", Json, nullable=False),
    Column("link", Text, nullable=True),
    Column("test", Boolean, nullable=False, server_default=text("false")),
    Index(None, "event_type", "occurred_at"),
)

# One event to one subscription. ``seq`` orders a subscription's deliveries about one client (``ordering_key``):
# only the oldest pending one of a key is attempted. ``id`` is the Standard Webhooks message id, the same for every
# attempt and replay, so a receiver deduplicates on it.
webhook_delivery = Table(
    "webhook_delivery",
    metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("id", Uuid, nullable=False, unique=True),
    Column("subscription_id", Uuid, ForeignKey("webhook_subscription.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", Uuid, ForeignKey("webhook_event.id", ondelete="CASCADE"), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("ordering_key", String(10), nullable=False),  # the client NIP, "" for an event of no client
    Column("status", String(16), nullable=False),  # pending | delivered | failed | cancelled
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("window_attempts", Integer, nullable=False, server_default=text("0")),  # since the window started
    Column("created_at", UtcDateTime, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    # A claim: an attempt in flight until then; a sender that dies hands the delivery back when it passes.
    Column("lease_until", UtcDateTime, nullable=True),
    # Start of the current retry window (the first attempt, or the last replay or re-enable).
    Column("window_started_at", UtcDateTime, nullable=True),
    Column("last_attempt_at", UtcDateTime, nullable=True),
    Column("delivered_at", UtcDateTime, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Index(None, "subscription_id", "ordering_key", "status", "seq"),
    Index(None, "status", "next_attempt_at"),
    Index(None, "subscription_id", "event_id", unique=True),
)

# The delivery log: every attempt, its HTTP status, latency and a short excerpt of the answer.
webhook_attempt = Table(
    "webhook_attempt",
    metadata,
    Column("delivery_seq", _Seq, ForeignKey("webhook_delivery.seq", ondelete="CASCADE"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("subscription_id", Uuid, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("error", Text, nullable=True),
    Column("response_excerpt", Text, nullable=True),
    Index(None, "subscription_id", "at"),
)

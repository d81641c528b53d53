"""The service's tables, all in its own schema ``notify``."""

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text, Uuid, text

from notify_svc.settings import SCHEMA
from platform_common.db import UtcDateTime, make_metadata
from platform_common.messaging.tables import Json, add_messaging_tables

metadata = make_metadata(SCHEMA)
messaging_tables = add_messaging_tables(metadata)

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

"""The service's tables, all in its own schema ``notify``."""

from sqlalchemy import Column, Index, String, Table, Text, Uuid

from notify_svc.settings import SCHEMA
from platform_common.db import UtcDateTime, make_metadata
from platform_common.messaging.tables import add_messaging_tables

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
    Column("sealed_link", Text, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "status", "created_at"),
)

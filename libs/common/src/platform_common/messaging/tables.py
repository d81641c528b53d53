"""Outbox, inbox and dead-letter tables, added to each service's own metadata (its own schema).

Per-key ordering with several relays: every outbox row belongs to one of ``OUTBOX_LANES`` lanes (a stable
hash of its key). A relay claims whole lanes with ``FOR UPDATE SKIP LOCKED`` on ``outbox_lane`` and
publishes a lane's rows in ``seq`` order, so two relays never publish rows of the same key concurrently.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

OUTBOX_LANES = 16

# SQLite only auto-increments an INTEGER PRIMARY KEY.
SequenceId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


def lane_of(key: str) -> int:
    return zlib.crc32(key.encode()) % OUTBOX_LANES


@dataclass(frozen=True)
class MessagingTables:
    outbox: Table
    outbox_lane: Table
    inbox: Table
    dead_letter: Table


def add_messaging_tables(metadata: MetaData) -> MessagingTables:
    outbox = Table(
        "outbox_message",
        metadata,
        Column("seq", SequenceId, primary_key=True, autoincrement=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("lane", Integer, nullable=False),
        Column("payload", Text, nullable=False),
        Column("headers", Json, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("last_error", Text, nullable=True),
    )
    Index(
        "ix_outbox_message_pending",
        outbox.c.lane,
        outbox.c.seq,
        postgresql_where=outbox.c.published_at.is_(None),
        sqlite_where=outbox.c.published_at.is_(None),
    )
    Index("ix_outbox_message_published_at", outbox.c.published_at)
    outbox_lane = Table(
        "outbox_lane",
        metadata,
        Column("lane", Integer, primary_key=True, autoincrement=False),
    )
    inbox = Table(
        "inbox_message",
        metadata,
        Column("consumer", String(200), primary_key=True),
        Column("event_id", Uuid, primary_key=True),
        Column("topic", String(200), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )
    dead_letter = Table(
        "dead_letter",
        metadata,
        Column("id", SequenceId, primary_key=True, autoincrement=True),
        Column("consumer", String(200), nullable=False),
        Column("topic", String(200), nullable=False),
        # Unparseable messages have no event id; they are keyed by their broker position instead.
        Column("event_id", Uuid, nullable=True),
        Column("message_key", String(200), nullable=True),
        Column("payload", Text, nullable=False),
        Column("reason", Text, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("source", String(200), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("replayed_at", DateTime(timezone=True), nullable=True),
    )
    # One pending letter per (consumer, event); a replayed letter stays as history beside a new failure.
    Index(
        "uq_dead_letter_pending",
        dead_letter.c.consumer,
        dead_letter.c.event_id,
        unique=True,
        postgresql_where=dead_letter.c.replayed_at.is_(None),
        sqlite_where=dead_letter.c.replayed_at.is_(None),
    )
    return MessagingTables(outbox=outbox, outbox_lane=outbox_lane, inbox=inbox, dead_letter=dead_letter)

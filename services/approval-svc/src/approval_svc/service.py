"""Use cases of approval-svc: each one a transaction; they add outgoing events to the outbox."""

"""Use cases of buffer-svc: each one a transaction; they add outgoing events to the outbox."""

"""Use cases of notify-svc: each one a transaction; they add outgoing events to the outbox."""

"""Use cases of auth-svc: each one a transaction; they add outgoing events to the outbox."""

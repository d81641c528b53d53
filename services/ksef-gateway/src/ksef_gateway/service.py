"""Use cases of ksef-gateway: each one a transaction; they add outgoing events to the outbox."""

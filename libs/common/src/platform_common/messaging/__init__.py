"""Event delivery: envelope, outbox, inbox, dead letters and the two transports behind one interface."""

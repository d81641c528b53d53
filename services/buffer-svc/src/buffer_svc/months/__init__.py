"""Month locks: the months approval-svc announced approved, which the buffer closes to the client's edits."""

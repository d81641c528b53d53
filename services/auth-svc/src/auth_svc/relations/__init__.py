"""Office-client relations: which client companies an accounting office works for, and in which state."""

"""Domain rules of approval-svc: pure Python, no I/O."""

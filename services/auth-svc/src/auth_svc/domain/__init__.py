"""Domain rules of auth-svc: pure Python, no I/O."""

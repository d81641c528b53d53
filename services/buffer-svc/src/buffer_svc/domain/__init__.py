"""Domain rules of buffer-svc: pure Python, no I/O."""

"""Domain rules of notify-svc: pure Python, no I/O."""

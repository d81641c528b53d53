"""Domain rules of ksef-gateway: pure Python, no I/O."""

"""Login (password, TOTP, lockout, rate limit), refresh-token rotation, logout, service tokens."""

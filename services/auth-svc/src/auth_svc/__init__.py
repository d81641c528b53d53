"""auth-svc: Organisations, users, roles, API keys and the JWTs every service verifies."""

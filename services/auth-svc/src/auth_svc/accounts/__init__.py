"""The caller's own account: who am I, two-factor authentication, password reset by mail."""

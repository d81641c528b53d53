"""All queries of auth-svc."""

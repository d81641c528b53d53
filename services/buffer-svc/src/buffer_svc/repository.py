"""All queries of buffer-svc."""

"""All queries of approval-svc."""

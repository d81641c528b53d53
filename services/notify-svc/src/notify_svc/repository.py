"""All queries of notify-svc."""

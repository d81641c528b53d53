"""buffer-svc: The purchase buffer per client and month: decisions, descriptions, archive, office import."""

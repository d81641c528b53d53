"""Queries of ksef-gateway live beside the domain they serve, each running in the caller's transaction:
``purchases.py`` (invoices, sync state, rejections), the repository half of ``vault.py`` (credentials),
``communication.py`` (the communication log) and ``ownership.py`` (context leases)."""

"""Use cases of ksef-gateway, one module per domain (the gateway is too big for one file; polar's layout):

- ``vault.Vault`` in ``vault.py``: register/replace/remove a credential (validated in KSeF
  first), status, master-key rotation;
- ``sync.SyncEngine`` / ``sync.SyncScheduler`` in ``sync.py``: purchase-invoice sync runs, each window one
  transaction that stores the invoices, adds their ``invoice.fetched`` events to the outbox and moves the checkpoint;
- ``sessions.SessionManager`` and ``sessions.OnlineSessions`` in ``sessions.py``: KSeF authentication and sessions;
- ``ownership.ContextLeases`` in ``ownership.py``: which replica acts for which context.
"""

"""Context ownership: which gateway replica acts for which KSeF context (leases, fair sharing)."""

"""The access ledger, "who read my invoices": every read of a client's invoice data by another organisation."""

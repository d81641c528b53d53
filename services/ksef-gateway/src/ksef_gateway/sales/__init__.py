"""Sales invoices sent to KSeF: submission, sending, UPO, QR codes, offline mode."""

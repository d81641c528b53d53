"""The purchase invoices the gateway holds: their FA header, stored rows, and the read API."""

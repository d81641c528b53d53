"""The purchase buffer: one entry per purchase invoice, the client's decision on it, and the office's intake."""

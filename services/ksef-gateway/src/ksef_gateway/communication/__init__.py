"""The communication log: every KSeF call per client context, for support and the client's own audit."""

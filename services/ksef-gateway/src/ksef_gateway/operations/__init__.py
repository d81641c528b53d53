"""The operators' overview: per client NIP the gateway knows, its sync, KSeF budget and calls, sessions and sales."""

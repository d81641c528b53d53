"""approval-svc: Office-client consent and activation-code handshake, integration state, month approval."""

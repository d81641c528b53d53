"""ksef-gateway: The only component that talks to KSeF: credentials, sessions, purchase sync, sales sending."""

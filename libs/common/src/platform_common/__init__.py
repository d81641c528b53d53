"""KSeF Hub platform glue shared by every service. Never imports a service."""

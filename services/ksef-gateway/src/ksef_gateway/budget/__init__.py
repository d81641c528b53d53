"""The rate-limit budget per (context, endpoint group) and the circuit breaker per KSeF environment."""

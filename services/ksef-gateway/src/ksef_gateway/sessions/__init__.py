"""KSeF sessions per context: authentication, token refresh, and the pool of online sessions."""

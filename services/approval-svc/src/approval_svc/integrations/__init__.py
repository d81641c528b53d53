"""Office-client integrations: consent request, activation code, lifecycle, KSeF access mode."""

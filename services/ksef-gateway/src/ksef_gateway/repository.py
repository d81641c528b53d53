"""All queries of ksef-gateway."""

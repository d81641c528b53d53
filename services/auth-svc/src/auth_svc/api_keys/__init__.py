"""API keys of an organisation (format: ``platform_common.auth.api_keys``) and introspection for other services."""

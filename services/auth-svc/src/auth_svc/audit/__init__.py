"""The audit log an organisation's admins read: security events and every operator action in the tenant."""

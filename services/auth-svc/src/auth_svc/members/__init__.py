"""Members of an organisation: invitations, roles, client limits, removal, unlocking; what a member may do."""

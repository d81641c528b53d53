"""E-mails the platform sends: invitations and password resets (sending itself comes with the SMTP sender)."""

"""notify-svc: E-mail and outbound webhooks to ERP systems."""

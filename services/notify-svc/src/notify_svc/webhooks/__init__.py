"""Outbound webhooks: subscriptions of ERP systems to the platform's events, signed deliveries and retries."""

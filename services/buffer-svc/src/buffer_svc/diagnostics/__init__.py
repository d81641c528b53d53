"""Diagnostics for ERP integrators: who buffer-svc takes a caller for."""

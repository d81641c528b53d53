"""Accounting offices and client companies, and the rule of who may act on an organisation's resources."""

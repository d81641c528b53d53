"""The webhook event catalogue: the AsyncAPI 3 document built from the public events, and the routes serving it."""

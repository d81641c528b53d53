"""The communication log ("Rejestr komunikacji"): what happened to a client's buffer and to each of its entries."""

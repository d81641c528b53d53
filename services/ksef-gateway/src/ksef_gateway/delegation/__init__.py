"""KSeF access by delegation: the office certificate, and the clients it serves after their grant in KSeF."""

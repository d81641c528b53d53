"""The credential vault: one KSeF credential per context NIP, encrypted at rest, checked in KSeF first."""

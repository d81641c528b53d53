"""KSeF availability: outages announced by Latarnia or found by the gateway's own probes, and the events about them."""

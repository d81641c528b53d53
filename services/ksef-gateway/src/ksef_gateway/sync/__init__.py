"""Purchase-invoice sync: gap-free HWM windows per client and subject type, run in the background."""

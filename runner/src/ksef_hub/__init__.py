"""The embedded runner: the whole platform in one process (``make run``)."""

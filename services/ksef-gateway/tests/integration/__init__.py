"""The gateway's integration tests (a package so that mypy tells its conftest from the simulator's)."""

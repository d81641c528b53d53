"""Test helpers shared by every package's tests (loaded as a pytest plugin from the root config)."""

from platform_common.testing.helpers import wait_until

__all__ = ["wait_until"]

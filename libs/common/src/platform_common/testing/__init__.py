"""Test helpers shared by every package's tests (loaded as a pytest plugin from the root config)."""

from platform_common.testing.helpers import Refusal, time_until_refused, wait_until

__all__ = ["Refusal", "time_until_refused", "wait_until"]

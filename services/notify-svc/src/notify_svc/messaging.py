"""Event consumers of notify-svc. Each subscription's name is its inbox identity: never rename one."""

from collections.abc import Sequence

from platform_common.messaging.dispatch import Subscription
from platform_common.runtime import ServiceRuntime


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    return ()

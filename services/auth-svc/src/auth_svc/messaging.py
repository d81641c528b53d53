"""Event consumers of auth-svc. Each subscription's name is its inbox identity: never rename one."""

from collections.abc import Sequence

from auth_svc.events import AUTH_TOPICS
from platform_common.messaging.dispatch import Subscription
from platform_common.messaging.transport import KafkaTransport
from platform_common.runtime import ServiceRuntime


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    # Called once before the transport starts: the place to declare the topics auth-svc produces to.
    if isinstance(runtime.transport, KafkaTransport):
        runtime.transport.declare_topics(*AUTH_TOPICS)
    return ()

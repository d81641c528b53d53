"""On Kafka, a dead letter is also published to ``<topic>.dlt`` with its reason in the headers."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from platform_common.messaging.dispatch import DLT_SUFFIX
from platform_common.testing import wait_until
from platform_common.testing.contract import MAX_ATTEMPTS, Harness


@pytest.mark.parametrize("harness", ["kafka"], indirect=True)
async def test_dead_letter_topic_message_has_reason_consumer_and_attempts(
    harness: Harness, kafka_bootstrap: str
) -> None:
    (bad,) = await harness.emit([("5260250274", {"idx": 1, "fail_times": -1})])
    await wait_until(harness.dead_letters, what="a dead letter")

    consumer = AIOKafkaConsumer(
        harness.topic + DLT_SUFFIX,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"ops-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        msg = await consumer.getone()
    finally:
        await consumer.stop()

    headers = {k: v.decode() for k, v in msg.headers}
    assert msg.key == b"5260250274"
    assert headers["event_id"] == str(bad.id)
    assert headers["x-dlt-consumer"] == "main"
    assert headers["x-dlt-attempts"] == str(MAX_ATTEMPTS)
    assert "handler exploded" in headers["x-dlt-reason"]
    assert str(bad.id) in msg.value.decode()

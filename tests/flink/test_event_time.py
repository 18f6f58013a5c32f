"""The job's watermark strategy on a MiniCluster: timestamps assigned, watermark moving."""

from __future__ import annotations

import pytest
from pyflink.common import Types

from gridstream import config
from jobs import device_control, environment
from jobs.records import TIMED
from tests.flink.probes import T0, Probe, Slowly

pytestmark = pytest.mark.flink

EVENTS = 3_000


def test_every_event_is_stamped_with_its_own_time_and_the_watermark_moves_during_input() -> None:
    """Element timestamps are the events' `ts_ms` (the job's `event_time` over the decoder's
    pairs); the watermark leaves Long.MIN before the end of input (idleness configured)."""
    env = environment.create(config.load(env={}), {"restart-strategy.type": "none"})
    pairs = [(f"d{i % 7}", T0 + i * 1000) for i in range(EVENTS)]
    probed = env.from_collection(
        pairs, type_info=Types.TUPLE([Types.STRING(), Types.LONG()])
    ).process(Slowly(), output_type=TIMED)
    probed = (
        device_control.event_time(probed, device_control.Policies(), "event-time")
        .key_by(lambda event: event.device_id, key_type=Types.STRING())
        .process(Probe(), output_type=Types.PICKLED_BYTE_ARRAY())
    )
    with probed.execute_and_collect() as results:
        seen = list(results)

    assert all(ts == stamped for ts, stamped, _ in seen)
    moving = [wm for _, _, wm in seen if wm > T0]
    assert len(moving) > EVENTS // 2, "the watermark stayed at Long.MIN_VALUE during the input"

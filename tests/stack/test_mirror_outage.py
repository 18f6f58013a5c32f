"""The Redis mirror through an outage, end to end: the stack's Redis is stopped while the job
runs, readings are played, and Redis is started again (same port, same data folder).

Redis is a convenience, not part of the decision path (state/mirror.py): while it is down the
job keeps the newest reading per device and raises MIRROR_DOWN; once Redis answers, it writes
them and raises MIRROR_RESTORED. Redis is always running again when this module ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gridstream.config import Settings
from gridstream.scenario import Scenario, play
from gridstream.stack import LocalStack
from state import mirror
from tests.stack.scenarios_support import (
    PIPELINE,
    TIMEOUT_S,
    now_ms,
    pipeline_alerts,
    quiet,
    unique,
    until,
)

pytestmark = pytest.mark.stack


@pytest.fixture
def redis_down(local_stack: LocalStack, settings: Settings) -> Iterator[LocalStack]:
    """The stack with its Redis stopped; Redis is started again afterwards, whatever happened."""
    assert local_stack.redis.stop(), "the stack's Redis was not started by this session"
    try:
        yield local_stack
    finally:
        if not local_stack.redis.answers():
            local_stack.redis.start()


def test_redis_down_raises_mirror_down_and_the_newest_readings_land_once_it_is_back(
    settings: Settings, redis_down: LocalStack
) -> None:
    """Readings played while Redis is down give one MIRROR_DOWN alert; once Redis is back,
    one MIRROR_RESTORED and each device's newest reading in the mirror."""
    since = now_ms()
    url = settings.stack.redis_url
    first, second = unique("thermostat-outage"), unique("thermostat-outage")
    readings = Scenario().telemetry_iot(device_id=first, ts_ms="now-2s", power_kw=1.5)
    readings = readings.telemetry_iot(device_id=first, power_kw=2.5)
    play(settings, readings.telemetry_iot(device_id=second, power_kw=4.0), quiet)

    found = until(
        settings,
        [PIPELINE],
        lambda f: bool(pipeline_alerts(f, "MIRROR_DOWN", since)),
        "MIRROR_DOWN alert",
    )
    (down,) = pipeline_alerts(found, "MIRROR_DOWN", since)
    assert down["severity"] == "CRITICAL"
    with pytest.raises(mirror.MirrorUnavailableError):
        mirror.read(url, first)

    redis_down.redis.start()
    found = until(
        settings,
        [PIPELINE],
        lambda f: bool(pipeline_alerts(f, "MIRROR_RESTORED", down["raised_ts_ms"])),
        "MIRROR_RESTORED alert",
    )
    assert len(pipeline_alerts(found, "MIRROR_DOWN", since)) == 1
    (restored,) = pipeline_alerts(found, "MIRROR_RESTORED", down["raised_ts_ms"])
    assert restored["severity"] == "INFO"

    deadline = time.monotonic() + TIMEOUT_S
    while (mirror.read(url, first) is None or mirror.read(url, second) is None) and (
        time.monotonic() < deadline
    ):
        time.sleep(1.0)
    newest, other = mirror.read(url, first), mirror.read(url, second)
    assert newest is not None, "the first device's readings never reached Redis"
    assert other is not None, "the second device's reading never reached Redis"
    assert newest.power_kw == 2.5  # the newer of the two readings, not the older one
    assert other.power_kw == 4.0

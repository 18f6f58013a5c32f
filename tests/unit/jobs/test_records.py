"""The decoders at the job's edge: clock skew bounded, a DR event's end statuses, the device
stage's rows checked against their key."""

from __future__ import annotations

import time
from typing import Any

import pytest

from functions import device, region
from jobs.io import input_row
from jobs.records import (
    DEAD_LETTERS,
    INTERNAL_TOPIC,
    Decode,
    Decoder,
    DeviceRows,
    SchemaAccess,
    event_row,
    events_of,
)
from schemas import models
from schemas.dead_letter import JobInfo
from tests.harness import FakeRuntimeContext, Harness
from tests.vocabulary import MINUTE_MS, SECOND_MS, encoded, record

pytestmark = pytest.mark.unit
CAUSE = models.Cause(source_topic="operator.approvals", source_partition=0, source_offset=1)


def decode(rec: models.TopicRecord, key: str, max_skew_ms: int = 5_000) -> list[Any]:
    decoder = Decode(Decoder(SchemaAccess(), JobInfo("test", "0"), max_skew_ms))
    decoder.open(FakeRuntimeContext(Harness(decoder)))
    row = input_row(rec.TOPIC, 0, 7, 0, key.encode(), encoded(rec), None)
    return list(decoder.process_element(row, None))


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.parametrize(
    ("ahead_ms", "error"),
    [(30 * SECOND_MS, "ClockSkewError"), (10 * MINUTE_MS, "ValidationFailure")],
)
def test_a_reading_stamped_beyond_the_clock_skew_is_dead_lettered(
    ahead_ms: int, error: str
) -> None:
    """A reading 30 s ahead of the job's clock goes to the DLQ naming the skew (10 min ahead
    the record models' own bound refuses it first), and reaches no stage: it cannot move
    anyone's clock."""
    now = now_ms()
    reading = record(models.IotTelemetry, now + ahead_ms, device_id="t-1", ts_ms=now + ahead_ms)
    row = input_row(reading.TOPIC, 0, 7, 0, b"t-1", encoded(reading), None)
    letter = device_rows().events(row, now_ms())  # readings are decoded in the device stage
    assert isinstance(letter, models.DeadLetter)
    assert letter.error_class == error
    if error == "ClockSkewError":
        assert "max clock skew 5000 ms" in letter.error_message


def test_weather_stamped_beyond_the_clock_skew_is_dead_lettered() -> None:
    """An observation from the future would mask the real later ones: dead-lettered."""
    now = now_ms()
    obs = record(models.WeatherObservation, now + MINUTE_MS, region_id="r", ts_ms=now + MINUTE_MS)
    ((tag, _),) = decode(obs, "r")
    assert tag is DEAD_LETTERS


def test_weather_within_the_skew_keeps_its_time_but_stamps_no_later_than_the_clock() -> None:
    """Two seconds ahead: accepted with its own time, but its watermark stamp is the job's
    clock, so it moves no one else's clock ahead (readings are stamped so in SQL)."""
    before = now_ms()
    obs = record(models.WeatherObservation, before + 2_000, region_id="r", ts_ms=before + 2_000)
    ((event, stamp),) = decode(obs, "r")
    assert event.ts_ms == before + 2_000
    assert before <= stamp <= now_ms()


@pytest.mark.parametrize(
    ("status", "ended"),
    [("SCHEDULED", False), ("ACTIVE", False), ("COMPLETED", True), ("CANCELLED", True)],
)
def test_a_completed_or_cancelled_dr_event_lets_its_devices_go(status: str, ended: bool) -> None:
    """COMPLETED ends an event like CANCELLED: its devices are released now."""
    now = now_ms()
    event = record(
        models.DrEvent, now, status=status, target_region_ids=["north", "south"], issued_ts_ms=now
    )
    cause = models.Cause(source_topic="dr.events", event_id="e")
    arrivals = list(events_of(event, cause))
    assert [a.region_id for a in arrivals] == ["north", "south"]
    assert all(isinstance(a, region.EventForRegion) for a in arrivals)
    assert {a.event.cancelled for a in arrivals} == {ended}
    assert {a.event.issued_ts_ms for a in arrivals} == {now}


def test_a_registry_tombstone_is_a_deregistration() -> None:
    """A null value on the compacted registry deletes the device's record."""
    decoder = Decode(Decoder(SchemaAccess(), JobInfo("test", "0")))
    decoder.open(FakeRuntimeContext(Harness(decoder)))
    row = input_row("device.registry", 0, 8, now_ms(), b"t-9", None, None)
    event, _stamp = next(iter(decoder.process_element(row, None)))
    assert isinstance(event, device.Deregistration)


def device_rows() -> DeviceRows:
    reader = DeviceRows(SchemaAccess(), JobInfo("test", "0"))
    reader.open()
    return reader


def test_a_device_record_keyed_by_another_device_is_a_dead_letter() -> None:
    """The device stage is keyed by the Kafka key: a reading of t-1 keyed t-2 (or keyless)
    would reach t-2's state, so it is dead-lettered naming both; keyed right, it decodes."""
    reading = record(models.IotTelemetry, now_ms(), device_id="t-1", ts_ms=now_ms())
    for key in (b"t-2", None):
        row = input_row(reading.TOPIC, 0, 3, now_ms(), key, encoded(reading), None)
        letter = device_rows().events(row, now_ms())
        assert isinstance(letter, models.DeadLetter)
        assert letter.error_class == "KeyMismatchError"
        assert "'t-1'" in letter.error_message
    row = input_row(reading.TOPIC, 0, 3, now_ms(), b"t-1", encoded(reading), None)
    (event,) = device_rows().events(row, now_ms())
    assert (event.device_id, event.ts_ms) == ("t-1", reading.ts_ms)


def test_an_event_made_for_a_device_travels_as_a_row_and_comes_back_equal() -> None:
    """A DR activation or an approval joins the device stage's Kafka rows, keyed by its
    device, and is read back as the very event."""
    approval = device.Approval(
        "t-1", "rec-1", models.ApprovalDecision.APPROVE, "op", "c", CAUSE, now_ms()
    )
    key, row, _ = event_row(approval)
    assert (key, row[0], bytes(row[4])) == ("t-1", INTERNAL_TOPIC, b"t-1")
    assert device_rows().events(row, now_ms()) == (approval,)


def test_a_registry_record_that_does_not_decode_is_dead_lettered_by_the_device_stage_only() -> None:
    """The registry is read by both paths: the control decoder drops a bad record of it
    (nothing out), the device stage's reader letters it; a bad weather record is the control
    decoder's own."""
    decoder = Decode(Decoder(SchemaAccess(), JobInfo("test", "0")))
    decoder.open(FakeRuntimeContext(Harness(decoder)))
    junk = input_row("device.registry", 0, 9, now_ms(), b"t-9", b"\x07junk", None)
    assert list(decoder.process_element(junk, None)) == []
    assert isinstance(device_rows().events(junk, now_ms()), models.DeadLetter)
    weather = input_row("weather.observations", 0, 9, now_ms(), b"r", b"\x07junk", None)
    ((tag, letter),) = decoder.process_element(weather, None)
    assert (tag, letter.error_class) == (DEAD_LETTERS, "BadMagic")


@pytest.mark.parametrize("key", [b"t 9", b"t" * 129, b"\xfft-9"])
def test_a_registry_tombstone_keyed_by_no_device_id_is_a_dead_letter(key: bytes) -> None:
    """A null value on the registry whose key is no device id (a space, too long, not UTF-8)
    deletes nothing: it is dead-lettered (kept as a device, its timer once failed the stage)."""
    row = input_row("device.registry", 0, 8, now_ms(), key, None, None)
    letter = device_rows().events(row, now_ms())
    assert isinstance(letter, models.DeadLetter)
    assert letter.error_class == "TombstoneKeyError"
    assert letter.key == key

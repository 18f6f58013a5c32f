"""Shared by the adversarial scenario modules: job settings this code may not have yet, devices
that keep reporting in the background, and ways to know the job has seen something before the
next step is played (the Redis mirror, a duplicate reading's audit) instead of sleeping blindly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gridstream import config, topics
from gridstream.config import Settings
from gridstream.scenario import Scenario, play
from gridstream.stack import LocalStack
from jobs.device_control import JOB_NAME
from schemas import catalog, models, serde
from schemas.examples import encode_unvalidated, example_data
from schemas.registry import Registry, RegistryConfig
from state import mirror
from tests.stack.scenarios_support import TIMEOUT_S, Records, now_ms, of, quiet, unique, until

LOAD_REDUCING = frozenset(action.value for action in models.LOAD_REDUCING_ACTIONS)
REPORT_EVERY_MS = 2_000  # SCADA points report every ~2 s (their silence timeout is 15 s)
SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS


def supported(**job: Any) -> dict[str, Any]:
    """The job settings among `job` that this code's `config.JobSettings` has (settings a fix
    introduces are passed once it exists, so the module also runs on older code)."""
    known = {field.name for field in dataclasses.fields(config.JobSettings)}
    return {name: value for name, value in job.items() if name in known}


def in_order(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of one key (one partition) in the order the job wrote them."""
    return sorted(records, key=lambda r: (r["_kafka"]["partition"], r["_kafka"]["offset"]))


def actions(found: Records, device_id: str) -> list[str]:
    """The device's commands' actions, in the order they were written."""
    return [c["action"] for c in in_order(of(found, topics.COMMANDS, device_id))]


def audit_trail(found: Records, device_id: str) -> list[tuple[str, str | None]]:
    """The device's audits as (outcome, action), in the order they were written."""
    return [(a["outcome"], a["action"]) for a in in_order(of(found, topics.AUDIT, device_id))]


def corr_of(found: Records, topic: str, correlation_id: str) -> list[dict[str, Any]]:
    """The records of `topic` that carry one correlation id."""
    return [r for r in found[topic] if r.get("correlation_id") == correlation_id]


@dataclasses.dataclass(frozen=True)
class Reading:
    """How one device reports: a SCADA or an IoT reading with these fields over the defaults."""

    scada: bool = False
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def add_to(self, scenario: Scenario, device_id: str, **fields: Any) -> Scenario:
        """`scenario` with one reading of `device_id` appended."""
        method = scenario.telemetry_scada if self.scada else scenario.telemetry_iot
        return method(**{**self.fields, "device_id": device_id, **fields})


IOT = Reading()
FEEDER = Reading(scada=True)  # a closed feeder breaker carrying load
OPEN_FEEDER = Reading(scada=True, fields={"switch_closed": False, "power_kw": 0.0})


def reading_at(device_id: str, ts_ms: int, reading: Reading = IOT, **fields: Any) -> Scenario:
    """A scenario of one reading at an absolute time, with a correlation id of its own."""
    corr = fields.pop("correlation_id", unique(f"corr-{device_id}"))
    return reading.add_to(Scenario(), device_id, ts_ms=ts_ms, correlation_id=corr, **fields)


@contextlib.contextmanager
def reporting(
    settings: Settings, devices: Mapping[str, Reading], every_ms: int = REPORT_EVERY_MS
) -> Iterator[Mapping[str, dict[str, Any]]]:
    """Each device reports every `every_ms` (stamped with the wall clock) in the background
    while the block runs, so it never goes silent and event time keeps up with the wall clock.
    `devices` is read at every round: a test may change how a device reports (not which).

    Yields each device's newest reading played (its fields), e.g. to re-send it as a fence.
    A failure to play is raised when the block ends.
    """
    last: dict[str, dict[str, Any]] = {}
    stop = threading.Event()

    def report() -> None:
        while True:
            ts = now_ms()
            batch, scenario = {}, Scenario()
            for device_id, reading in list(devices.items()):
                fields = {"ts_ms": ts, "correlation_id": unique(f"tick-{device_id}")}
                batch[device_id] = fields
                scenario = reading.add_to(scenario, device_id, **fields)
            play(settings, scenario, quiet)
            last.update(batch)
            if stop.wait(every_ms / 1000):
                return

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(report)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while len(last) < len(devices) and not running.done():
                if time.monotonic() > deadline:
                    pytest.fail(f"the background readings of {list(devices)} were not played")
                time.sleep(0.1)
            yield last
        finally:
            stop.set()
        running.result()  # raises what stopped the readings, if anything did


def mirrored(
    settings: Settings,
    regions: Mapping[str, str],
    again: Mapping[str, Reading] | None = None,
) -> None:
    """Wait until the Redis mirror names each device's region: the device stage has then seen
    both the device's registry record and a good reading of it.

    The record and the reading are on different topics, so the reading may come first and be
    mirrored without a region: a device in `again` then reports once more (stamped now).
    """
    url = settings.stack.redis_url
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        missing = [
            device_id
            for device_id, region_id in regions.items()
            if (good := mirror.read(url, device_id)) is None or good.region_id != region_id
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the mirror never named the region of {missing} within {TIMEOUT_S:.0f}s")
        scenario = Scenario()
        for device_id in missing:
            if again is not None and device_id in again:
                scenario = again[device_id].add_to(scenario, device_id)
        if scenario.steps:
            play(settings, scenario, quiet)
        time.sleep(1.0)


def fence(
    settings: Settings, device_id: str, fields: Mapping[str, Any], reading: Reading = IOT
) -> Records:
    """Re-send a reading the device stage already has (same device and time, a new correlation
    id) and wait for its DUPLICATE audit.

    The device's readings are one partition, decided in order, and outputs are committed per
    checkpoint in the order they were made: once this audit is visible, everything the job did
    for the device's inputs read before it (the commands of the budget stage included) is too.
    """
    corr = unique("fence")
    resent = reading.add_to(Scenario(), device_id, **{**fields, "correlation_id": corr})
    play(settings, resent, quiet)
    return until(
        settings,
        [device_id],
        lambda f: bool(corr_of(f, topics.AUDIT, corr)),
        f"DUPLICATE audit of the re-sent reading of {device_id} (the fence)",
    )


def device_clock_past(settings: Settings, instant_ms: int) -> None:
    """Wait until the device stage's input watermark (its clock, the slowest input partition's)
    has passed `instant_ms`: a record stamped before it is then late for the job."""
    flink = LocalStack(settings, say=quiet).flink
    (job_id,) = [
        j["jid"] for j in flink.jobs() if j["name"] == JOB_NAME and j["state"] == "RUNNING"
    ]
    deadline = time.monotonic() + TIMEOUT_S
    while (clock := flink.input_watermark(job_id, "device stage")) is None or clock <= instant_ms:
        if time.monotonic() > deadline:
            pytest.fail(
                f"the device stage's watermark {clock} did not pass {instant_ms} within "
                f"{TIMEOUT_S:.0f}s (now {now_ms()})"
            )
        time.sleep(0.5)


def future_raw(settings: Settings, model: type[models.TopicRecord], **fields: Any) -> bytes:
    """Wire-format bytes of a record the scenario player would refuse (an event time further
    ahead than the models' own skew bound), encoded with the topic's registered schema."""
    schemas = Registry(RegistryConfig.from_settings(settings)).schemas()
    writer = serde.serializer(model, schemas)
    newest = catalog.default().chain(model.TOPIC).newest
    return encode_unvalidated(newest, writer.schema_id, example_data(model, **fields))


def sleep_until(epoch_ms: int) -> None:
    """Sleep until the wall clock reads `epoch_ms` or later."""
    while (left := epoch_ms - now_ms()) > 0:
        time.sleep(left / 1000)


def until_suspended(settings: Settings, region_id: str, what: str) -> Records:
    """The outputs about `region_id` once its WET_BULB_SUSPEND alert is out."""
    return until(
        settings,
        [region_id],
        lambda f: any(a["kind"] == "WET_BULB_SUSPEND" for a in f[topics.ALERTS]),
        what,
    )


def recommended(settings: Settings, device_id: str) -> dict[str, Any]:
    """The device's one recommendation, once it is out."""
    found = until(
        settings,
        [device_id],
        lambda f: bool(of(f, topics.RECOMMENDATIONS, device_id)),
        "the SWITCH_OPEN recommendation",
    )
    (recommendation,) = of(found, topics.RECOMMENDATIONS, device_id)
    return recommendation

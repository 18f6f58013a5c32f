"""Shared by the end-to-end scenario modules: fresh ids, scenario builders, output polling, and
the device-control job submitted with a module's own settings.

Each scenario plays its own devices, region and program (fresh ids) into Kafka, then polls the
committed outputs until the expected records appear. Alerts about the whole pipeline (lag
freeze, silent source, Redis mirror) have region `*`: ask for `PIPELINE` among the ids and keep
those raised after the scenario began (`pipeline_alerts`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from functions.pipeline import PIPELINE_SCOPE
from gridstream import topics
from gridstream.config import Settings
from gridstream.deploy import ensure_job
from gridstream.scenario import Scenario, dump, play
from gridstream.stack import LocalStack
from gridstream.stack.components import TERMINAL_STATES
from jobs.device_control import JOB_NAME
from state import mirror

Records = dict[str, list[dict[str, Any]]]

OUTPUTS = (topics.AUDIT, topics.COMMANDS, topics.RECOMMENDATIONS, topics.ALERTS, topics.DLQ)
TIMEOUT_S = 60.0
SETTLE_MS = 3_000  # between the set-up records and the DR event (see `add_event`)
PIPELINE = PIPELINE_SCOPE  # the region_id (and Kafka key) of alerts about the whole pipeline


def quiet(line: str) -> None:
    """A progress callback that says nothing."""
    del line


def unique(prefix: str) -> str:
    """`prefix` with a random suffix, so that each scenario owns its ids."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return int(time.time() * 1000)


def mine(record: Mapping[str, Any], ids: set[str]) -> bool:
    """A record about one of `ids`: its device, its region or its Kafka key."""
    return bool(
        {record.get("device_id"), record.get("region_id"), record["_kafka"].get("key")} & ids
    )


def outputs(settings: Settings, ids: set[str]) -> Records:
    """Every committed output record about `ids`, by topic."""
    return {topic: [r for r in dump(settings, topic) if mine(r, ids)] for topic in OUTPUTS}


def partition_of(key: str, partitions: int) -> int:
    """The partition the player's producer gives a record keyed `key` (librdkafka's default
    partitioner: the key's CRC-32 modulo the partition count)."""
    return zlib.crc32(key.encode()) % partitions


def keyed_onto(name: str, partition: int, partitions: int) -> str:
    """`name`, or else `name-<n>` for the least n, whichever the player puts on `partition`."""
    candidates = itertools.chain([name], (f"{name}-{n}" for n in itertools.count()))
    return next(key for key in candidates if partition_of(key, partitions) == partition)


def until(
    settings: Settings, ids: Sequence[str], done: Callable[[Records], bool], what: str
) -> Records:
    """The outputs about `ids` once `done` holds of them; fails after `TIMEOUT_S`."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        found = outputs(settings, set(ids))
        if done(found):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {TIMEOUT_S:.0f}s; outputs about {list(ids)}: {found}")
        time.sleep(1.0)


def of(found: Records, topic: str, device_id: str) -> list[dict[str, Any]]:
    """The records of `topic` about one device."""
    return [r for r in found[topic] if r.get("device_id") == device_id]


def audits(found: Records, device_id: str, outcome: str) -> list[dict[str, Any]]:
    """The device's audit records with one outcome."""
    return [r for r in of(found, topics.AUDIT, device_id) if r["outcome"] == outcome]


def commanded(found: Records, device_id: str) -> bool:
    """The device has a command and the EMITTED audit of it."""
    return bool(of(found, topics.COMMANDS, device_id) and audits(found, device_id, "EMITTED"))


def pipeline_alerts(found: Records, kind: str, since_ms: int) -> list[dict[str, Any]]:
    """The pipeline-wide alerts of one kind raised at or after `since_ms`."""
    return [
        a
        for a in found[topics.ALERTS]
        if a.get("region_id") == PIPELINE and a["kind"] == kind and a["raised_ts_ms"] >= since_ms
    ]


def add_weather(scenario: Scenario, region_id: str, **weather: Any) -> Scenario:
    """The region's weather, observed now."""
    return scenario.weather(region_id=region_id, **weather)


def add_device(
    scenario: Scenario, device_id: str, region_id: str, program: str, **registry: Any
) -> Scenario:
    """A thermostat's registry record (enrolled in `program`) and a reading of it, now."""
    return scenario.registry(
        device_id=device_id, region_id=region_id, programs=[program], **registry
    ).telemetry_iot(device_id=device_id)


def add_event(
    scenario: Scenario, region_id: str, program: str, action: str, **overrides: Any
) -> Scenario:
    """A DR event in `region_id` that started 10 s ago and runs for an hour.

    It starts before it is issued, so a device starts its part as soon as its activation
    arrives (no event-time timer needed). Play the region's weather and the devices' records
    `SETTLE_MS` before it, so they reach the device stage before the activation does.
    """
    fields: dict[str, Any] = {
        "event_id": unique("dr"),
        "program_id": program,
        "target_region_ids": [region_id],
        "action": action,
        "start_ts_ms": "now-10s",
        "end_ts_ms": "now+1h",
        "issued_ts_ms": "now",
        "status": "ACTIVE",
    }
    return scenario.dr_event(**{**fields, **overrides})


@contextlib.contextmanager
def job_running(local_stack: LocalStack, **job: Any) -> Iterator[Settings]:
    """The stack's settings once the device-control job runs, submitted with the `job` settings
    over the stack's, and has processed a first reading; the job is cancelled on exit."""
    settings = dataclasses.replace(
        local_stack.settings, job=dataclasses.replace(local_stack.settings.job, **job)
    )
    running = [j["jid"] for j in local_stack.flink.jobs() if j["state"] == "RUNNING"]
    # ensure_job would reuse a running job, submitted with other settings: refuse that.
    assert not running, f"jobs {running} still run on the session cluster"
    job_id = ensure_job(LocalStack(settings, say=quiet))
    try:
        warm_up = unique("thermostat-warm-up")
        play(settings, Scenario().telemetry_iot(device_id=warm_up), progress=quiet)
        url, secret = settings.stack.redis_url, settings.stack.redis_password_file
        deadline = time.monotonic() + 120
        while mirror.read(url, warm_up, password_file=secret) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the job did not process a first reading within 120s (job {job_id})")
            time.sleep(1.0)
        yield settings
    finally:  # the job, or the one that replaced it (an upgrade through a savepoint)
        for job in local_stack.flink.jobs():
            if job["name"] == JOB_NAME and job["state"] not in TERMINAL_STATES:
                local_stack.flink.cancel(str(job["jid"]))

"""The schema registry down under a running job, end to end: the stack's registry is stopped
(its snapshot keeps every id) and started again while the job runs with a 30 s schema id wait.

Schema ids the job has fetched keep decoding from its cache; a record written with an id the job
has not fetched yet (a compatible version of the IoT schema, registered under a subject of this
test's own just before the outage, so no other test's subjects change) waits for the registry,
and the records behind it in its partition (this test writes to partition 0 only) wait too;
once the registry is back, all of them are processed in order and none is dead-lettered. An id
that never exists is dead-lettered after the window. The registry is always running again when
this module ends.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema

from gridstream import topics
from gridstream.config import Settings, kafka_client_config
from gridstream.scenario import dump, produce
from gridstream.stack import LocalStack
from jobs.device_control import JOB_NAME
from schemas import models, serde
from schemas.dead_letter import CORRELATION_HEADER
from schemas.examples import example_data
from schemas.registry import Registry, RegistryConfig
from state import mirror
from tests.stack.scenarios_support import job_running, now_ms, unique

pytestmark = pytest.mark.stack

WINDOW_MS = 30_000
NEVER_AN_ID = 2**31 - 2  # no registry hands out ids this high
HELD_S = 8.0  # how long the test checks that the records behind a waiting one wait
TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def settings(local_stack: LocalStack) -> Iterator[Settings]:
    """The stack's settings once the job runs with a `WINDOW_MS` schema id wait."""
    with job_running(local_stack, schema_id_wait_ms=WINDOW_MS) as running:
        yield running


@pytest.fixture
def registry(settings: Settings) -> Registry:
    """The stack's registry, through the suite's client."""
    return Registry(RegistryConfig.from_settings(settings))


@pytest.fixture
def restarts_registry(local_stack: LocalStack) -> Iterator[LocalStack]:
    """The stack, whose registry the test stops; started again afterwards, whatever happened."""
    try:
        yield local_stack
    finally:
        if not local_stack.registry.answers():
            local_stack.registry.start()


def reading(device_id: str, ts_ms: int, power_kw: float) -> models.IotTelemetry:
    """A thermostat's reading."""
    data = example_data(models.IotTelemetry, device_id=device_id, ts_ms=ts_ms, power_kw=power_kw)
    return models.validate(models.IotTelemetry, data, now_ms())


def a_new_schema_id(registry: Registry) -> tuple[int, dict[str, Any]]:
    """A new id for a compatible version of the IoT schema (one more optional field),
    registered under a subject of this test's own; the id and the schema."""
    token = unique("probe").replace("-", "_")
    newest = registry.client.get_latest_version(f"{topics.IOT_TELEMETRY}-value").schema
    schema = json.loads(newest.schema_str or "{}")
    schema["fields"].append({"name": token, "type": ["null", "string"], "default": None})
    subject = f"gridstream-test.{token}-value"
    return registry.client.register_schema(subject, Schema(json.dumps(schema), "AVRO")), schema


def played_raw(settings: Settings, *records: tuple[str, bytes, str]) -> int:
    """Produce `(key, bytes, correlation id)` records in order to partition 0 of iot.telemetry,
    without the registry; the wall-clock time (ms) just before."""
    producer = Producer({**kafka_client_config(settings.stack), "enable.idempotence": True})
    before = now_ms()
    for key, value, correlation_id in records:
        headers = {CORRELATION_HEADER: correlation_id}
        produce(producer, topics.IOT_TELEMETRY, key=key, value=value, headers=headers, partition=0)
    assert producer.flush(30) == 0, "kafka did not take the records"
    return before


def mirrored(settings: Settings, device_id: str) -> float | None:
    """The device's last good power in the Redis mirror, or None."""
    good = mirror.read(settings.stack.redis_url, device_id)
    return None if good is None else good.power_kw


def wait_for(what: str, check: Any, timeout_s: float = TIMEOUT_S) -> Any:
    """`check()` once it is truthy; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout_s:.0f}s")
        time.sleep(0.5)
    return found


def logged(stack: LocalStack, text: str) -> int:
    """How many lines of the TaskManagers' logs (PyFlink hands them the job's Python logging)
    hold `text`."""
    logs = (stack.settings.stack.home / "flink" / "log").glob("*taskexecutor*.log*")
    return sum(text in line for log in logs for line in log.read_text().splitlines())


def restarts(stack: LocalStack) -> int:
    """How often the device-control job has restarted (Flink's `numRestarts`)."""
    (job,) = [j for j in stack.flink.jobs() if j["name"] == JOB_NAME and j["state"] == "RUNNING"]
    url = f"{stack.flink.address}/jobs/{job['jid']}/metrics?get=numRestarts"
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(json.load(response)[0]["value"])


def letters(settings: Settings, correlation_ids: set[str]) -> list[dict[str, Any]]:
    """The committed dead letters of records with these correlation ids."""
    return [r for r in dump(settings, topics.DLQ) if r.get("correlation_id") in correlation_ids]


def test_the_registry_down_holds_a_new_schema_id_until_it_is_back_and_loses_nothing(
    settings: Settings, registry: Registry, restarts_registry: LocalStack
) -> None:
    """Registry down: a fetched id still decodes; a record with a new id and the records behind
    it wait; the registry back within the window, they are processed in order, none
    dead-lettered, and the job never restarts. Then an id that never exists is dead-lettered
    after the window, and the record behind it is processed after it."""
    encoder = serde.serializer(models.IotTelemetry, registry.schemas())
    new_id, new_schema = a_new_schema_id(registry)
    new_encoder = serde.Serializer(models.IotTelemetry, new_id, new_schema)
    cached, waiting, behind = (unique("thermostat-outage") for _ in range(3))
    t = now_ms()
    older, newer = reading(waiting, t - 2_000, 1.5), reading(waiting, t - 1_000, 2.5)
    correlations = {unique("outage") for _ in range(3)}
    first, second, third = sorted(correlations)

    restarted = restarts(restarts_registry)
    assert restarts_registry.registry.stop(), "the stack's registry was not started here"
    played_raw(settings, (cached, encoder.encode(reading(cached, t, 4.0)), unique("cached")))
    assert wait_for("reading with a fetched schema id", lambda: mirrored(settings, cached)) == 4.0

    played_raw(
        settings,
        (waiting, new_encoder.encode(older), first),
        (waiting, encoder.encode(newer), second),
        (behind, encoder.encode(reading(behind, t, 3.0)), third),
    )
    time.sleep(HELD_S)
    assert (mirrored(settings, waiting), mirrored(settings, behind)) == (None, None)

    restarts_registry.registry.start()
    wait_for("the record behind the new id", lambda: mirrored(settings, waiting) == 2.5)
    assert wait_for("the other waiting record", lambda: mirrored(settings, behind)) == 3.0

    never = unique("never")
    stray, after = unique("thermostat-stray"), unique("thermostat-after")
    played = played_raw(
        settings,
        (stray, serde.wire_header(NEVER_AN_ID) + encoder.encode(reading(stray, now_ms(), 1))[5:],
         never),
        (after, encoder.encode(reading(after, now_ms(), 2.0)), unique("after")),
    )  # fmt: skip
    time.sleep(WINDOW_MS / 1000 - HELD_S)
    assert letters(settings, {never}) == []  # still asked for: not given up within the window
    assert mirrored(settings, after) is None  # and the record behind it waits
    (letter,) = wait_for("dead letter of the unknown id", lambda: letters(settings, {never}))
    assert now_ms() - played >= WINDOW_MS
    assert (letter["error_class"], letter["schema_id"]) == ("UnknownSchemaId", NEVER_AN_ID)
    assert wait_for("the record behind the unknown id", lambda: mirrored(settings, after)) == 2.0

    assert letters(settings, correlations) == []
    assert restarts(restarts_registry) == restarted  # waited in place, never failed over
    for schema_id, outcome in ((new_id, "found"), (NEVER_AN_ID, "unknown")):  # once per id
        assert logged(restarts_registry, f"schema id {schema_id} not fetched") == 1
        assert logged(restarts_registry, f"schema id {schema_id} {outcome} after") == 1
    audits = [r for r in dump(settings, topics.AUDIT) if r.get("device_id") == waiting]
    assert [a for a in audits if a["outcome"] == "DUPLICATE"] == []  # read in order

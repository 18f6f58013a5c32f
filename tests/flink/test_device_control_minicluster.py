"""The device-control job on a local MiniCluster: encoded records in, decoded outputs out."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from functions.pipeline import PipelinePolicy
from gridstream import config, topics
from jobs import device_control, environment
from jobs.io import CollectingSinks, CollectionSources, input_row
from schemas import models, serde
from tests.vocabulary import MINUTE_MS, catalog_schemas, record
from tests.vocabulary import input_row as encoded_row

pytestmark = pytest.mark.flink

NOW = int(time.time() * 1000)
T0 = NOW - 60 * MINUTE_MS  # an hour of history, played at once
REGION = "north"
ENROLLED = [f"thermostat-{i}" for i in range(4)]
HOSPITAL = "hospital-chiller"
UNREGISTERED = "thermostat-unknown"
DELETED = "thermostat-deleted"  # registered, then its CIS record deleted (a tombstone)


def _registry(device_id: str, priority: str) -> models.DeviceRecord:
    return record(
        models.DeviceRecord, NOW, device_id=device_id, region_id=REGION, priority_level=priority,
        programs=["summer-peak"], updated_ts_ms=T0, correlation_id=f"reg-{device_id}",
    )  # fmt: skip


def _telemetry(device_id: str, ts: int) -> models.IotTelemetry:
    return record(
        models.IotTelemetry, NOW, device_id=device_id, ts_ms=ts, correlation_id=f"{device_id}@{ts}"
    )


def _weather(ts: int) -> models.WeatherObservation:
    return record(
        models.WeatherObservation, NOW, region_id=REGION, ts_ms=ts, dry_bulb_temp_c=30.0,
        relative_humidity_pct=40.0, wbgt_temp_c=None, correlation_id=f"wx-{ts}",
    )  # fmt: skip


def _inputs() -> list[Any]:
    rows = [encoded_row(_registry(d, "STANDARD"), d) for d in [*ENROLLED, DELETED]]
    rows.append(encoded_row(_registry(HOSPITAL, "LIFE_SAFETY"), HOSPITAL))
    dr = record(
        models.DrEvent, NOW, event_id="dr-1", program_id="summer-peak", target_region_ids=[REGION],
        start_ts_ms=T0 + 5 * MINUTE_MS, end_ts_ms=T0 + 20 * MINUTE_MS, issued_ts_ms=T0,
        action="CURTAIL", setpoint_offset_c=None, correlation_id="dr-1",
    )  # fmt: skip
    rows.append(encoded_row(dr, "dr-1"))
    for minute in range(30):  # in event-time order, as a live feed would be
        if minute % 10 == 0:
            rows.append(encoded_row(_weather(T0 + minute * MINUTE_MS), REGION))
        for d in [*ENROLLED, HOSPITAL, UNREGISTERED, DELETED]:
            rows.append(encoded_row(_telemetry(d, T0 + minute * MINUTE_MS), d))
        if minute == 2:  # well after its record (at p2 two decoders share the rows)
            tombstone = (topics.DEVICE_REGISTRY, 0, 99_998, T0 + 2 * MINUTE_MS, DELETED.encode())
            rows.append(input_row(*tombstone, None, "del-1"))
        if minute == 3:  # the same reading again: same msg_id
            rows.append(encoded_row(_telemetry(ENROLLED[0], T0 + 3 * MINUTE_MS), ENROLLED[0]))
    rows.append(
        input_row(topics.IOT_TELEMETRY, 0, 99_999, 0, b"junk", b"\x07garbage-bytes", "bad-1")
    )
    return rows


def _decoded(rows: list[Any]) -> list[dict[str, Any]]:
    source = catalog_schemas()
    out = []
    for topic, _key, value, _corr in rows:
        model = models.MODELS[topic]
        raw = bytes(b & 0xFF for b in value)  # collected as Java's signed bytes
        out.append({"topic": topic, **serde.deserializer(model, source).read(raw)[1]})
    return out


@pytest.mark.parametrize("parallelism", [1, 2])
def test_dr_event_curtails_enrolled_devices_only_and_bad_input_is_dead_lettered(
    parallelism: int,
) -> None:
    """Enrolled devices get CURTAIL at start and RESTORE at end; the hospital, the
    unregistered device and the deleted one get none; the duplicate is audited; junk goes to
    the DLQ (the registry tombstone does not)."""
    overlay = {"parallelism.default": str(parallelism), "restart-strategy.type": "none"}
    env = environment.create(config.load(env={}), overlay)
    sinks = CollectingSinks()
    # History is an hour old: no lag freeze; a short watchdog so the end of input ends the job.
    watchdog = PipelinePolicy(freeze_enabled=False, silence_ms=1_000, tick_ms=500)
    policies = device_control.Policies(pipeline=watchdog)
    device_control.build(env, CollectionSources(_inputs()), sinks, policies=policies)
    outputs = _decoded(sinks.collect())

    commands = Counter(
        (o["device_id"], o["action"]) for o in outputs if o["topic"] == topics.COMMANDS
    )
    expected = {(d, a): 1 for d in ENROLLED for a in ("CURTAIL", "RESTORE")}
    audits = [o for o in outputs if o["topic"] == topics.AUDIT]
    blocked = {o["device_id"] for o in audits if o["outcome"] == "BLOCKED"}
    duplicates = [o["device_id"] for o in audits if o["outcome"] == "DUPLICATE"]
    if parallelism == 1:
        assert commands == expected
        # The deleted device is blocked (UNKNOWN_DEVICE) if the region stage named it to the
        # event before its deletion reached the roster; never commanded either way.
        assert HOSPITAL in blocked
        assert duplicates == [ENROLLED[0]]
    else:
        # One collection source deals rows round robin to the two decoders: a device's records
        # lose their order (Kafka's key partitioning keeps it), so a reading may arrive behind
        # a newer one (audited DUPLICATE like the re-sent one, changing nothing) and the
        # tombstone may overtake the record it deletes. The
        # control stream advances only with its few records on each decoder (weather, registry,
        # a heartbeat a second) and the input is played in about a second, so the budget
        # stage's watermark may pass the event's start and end together when the input ends:
        # a start that reached it before its copy of the weather is held a window, and the
        # event's end withdraws it (seen: held at minute 5, withdrawn at minute 20). What holds
        # whatever the order: commands only for enrolled devices (the deleted one too, if its
        # tombstone came first), one of each, every CURTAIL restored, and every enrolled
        # device's CURTAIL either sent or withdrawn at the end of the event.
        assert {d for d, _ in commands} <= {*ENROLLED, DELETED}
        assert set(commands.values()) == {1}
        assert all((d, "RESTORE") in commands for d, a in commands if a == "CURTAIL")
        for d in ENROLLED:
            outcomes = [
                (o["outcome"], tuple(o["reason_codes"])) for o in audits
                if o["device_id"] == d and o["action"] == "CURTAIL"
            ]  # fmt: skip
            sent = ("EMITTED", ("DR_EVENT",))
            withdrawn = ("BLOCKED", ("DR_EVENT",))
            assert outcomes[-1] in (sent, withdrawn)
            assert (d, "CURTAIL") in commands or withdrawn in outcomes
        assert HOSPITAL in blocked
        assert ENROLLED[0] in duplicates  # and readings that arrive behind a newer one
    dead = [o for o in outputs if o["topic"] == topics.DLQ]
    assert [(d["source_topic"], d["error_class"]) for d in dead] == [
        (topics.IOT_TELEMETRY, "BadMagic")
    ]
    losses = Counter(
        o["device_id"] for o in outputs if o["topic"] == topics.ALERTS
        and o["kind"] == "TELEMETRY_LOSS"
    )  # fmt: skip
    assert losses == {d: 1 for d in [*ENROLLED, HOSPITAL, UNREGISTERED, DELETED]}

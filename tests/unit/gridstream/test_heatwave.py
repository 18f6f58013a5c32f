"""The heatwave demo's scenario has every ingredient and validates; its report counts right."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from functions.wetbulb import stull_wet_bulb_c
from gridstream import heatwave, topics
from gridstream.scenario import (
    RawStep,
    RecordStep,
    SleepStep,
    check,
    steps_of,
    with_correlation_ids,
)
from schemas.examples import EXAMPLE_NOW_MS

pytestmark = pytest.mark.unit

NOW_MS = EXAMPLE_NOW_MS


@pytest.fixture(scope="module")
def steps() -> list[Any]:
    return with_correlation_ids(steps_of(heatwave.build(NOW_MS, devices=300)))


def _records(steps: list[Any], topic: str) -> list[dict[str, Any]]:
    return [dict(s.value) for s in steps if isinstance(s, RecordStep) and s.topic == topic]


def test_every_record_step_validates_when_played_now(steps: list[Any]) -> None:
    records = check(steps, NOW_MS)
    assert sum(r is not None for r in records) == sum(isinstance(s, RecordStep) for s in steps)


def test_fleet_has_iot_scada_and_life_safety_devices() -> None:
    devices = heatwave.fleet(3000)
    assert len(devices) == 3000 + 31
    classes = Counter(d.device_class for d in devices)
    assert {"THERMOSTAT", "EV_CHARGER", "POOL_PUMP", "WATER_HEATER"} <= set(classes)
    assert {"FEEDER_BREAKER", "LINE_SWITCH", "INDUSTRIAL_LOAD"} <= set(classes)
    assert {d.region_id for d in devices} == set(heatwave.REGIONS)
    iot = [d for d in devices if not d.scada]
    common = sum(d.priority_level in {"STANDARD", "DISCRETIONARY"} for d in iot)
    assert common / len(iot) > 0.9
    assert sum(heatwave.PROGRAM in d.programs for d in iot) / len(iot) > 0.75
    assert heatwave.fleet(3000) == devices  # deterministic


def test_registry_comes_first_and_names_the_life_safety_devices(steps: list[Any]) -> None:
    topics_in_order = [s.topic for s in steps if not isinstance(s, SleepStep)]
    registry = _records(steps, topics.DEVICE_REGISTRY)
    assert topics_in_order[: len(registry)] == [topics.DEVICE_REGISTRY] * len(registry)
    life = {r["device_id"]: r for r in registry if r["priority_level"] == "LIFE_SAFETY"}
    assert life[heatwave.HOSPITAL_ID]["device_class"] == "FEEDER_BREAKER"
    assert heatwave.SWITCH_PROGRAM in life[heatwave.HOSPITAL_ID]["programs"]
    assert heatwave.PROGRAM in life[heatwave.MEDICAL_ID]["programs"]


def test_weather_is_fresh_everywhere_then_the_hot_region_passes_28_wet_bulb(
    steps: list[Any],
) -> None:
    weather = _records(steps, topics.WEATHER)
    first = {w["region_id"]: w for w in reversed(weather)}
    assert set(first) == set(heatwave.REGIONS)
    assert all(w["ts_ms"] == NOW_MS for w in first.values())
    assert all(
        stull_wet_bulb_c(w["dry_bulb_temp_c"], w["relative_humidity_pct"]) < 27
        for w in first.values()
    )
    hot = [w for w in weather if w["region_id"] == heatwave.HOT_REGION]
    wet_bulbs = [stull_wet_bulb_c(w["dry_bulb_temp_c"], w["relative_humidity_pct"]) for w in hot]
    assert max(wet_bulbs) > 28
    others = [w for w in weather if w["region_id"] != heatwave.HOT_REGION]
    assert all(
        stull_wet_bulb_c(w["dry_bulb_temp_c"], w["relative_humidity_pct"]) < 27 for w in others
    )


def test_dr_events_start_after_the_first_telemetry_for_every_region(steps: list[Any]) -> None:
    events = {e["event_id"]: e for e in _records(steps, topics.DR_EVENTS)}
    curtail = events[heatwave.CURTAIL_EVENT]
    switching = events[heatwave.SWITCH_EVENT]
    assert (curtail["action"], curtail["program_id"]) == ("CURTAIL", heatwave.PROGRAM)
    assert switching["action"] == "SWITCH_OPEN"
    first_telemetry = min(r["ts_ms"] for r in _records(steps, topics.IOT_TELEMETRY))
    for event in events.values():
        assert set(event["target_region_ids"]) == set(heatwave.REGIONS)
        assert first_telemetry < event["start_ts_ms"] <= first_telemetry + 30_000
        assert event["end_ts_ms"] > event["start_ts_ms"] + 60_000
        # Issued once under way: devices act when the activation arrives, not on a timer.
        assert event["issued_ts_ms"] >= event["start_ts_ms"]


def test_timestamps_stay_near_the_clock_of_their_step(steps: list[Any]) -> None:
    clock = NOW_MS
    for step in steps:
        if isinstance(step, SleepStep):
            clock += step.ms
        elif isinstance(step, RecordStep) and "ts_ms" in step.value:
            assert -60_000 < step.value["ts_ms"] - clock < 300_000


def test_duplicates_malformed_packets_and_a_silent_device(steps: list[Any]) -> None:
    iot = _records(steps, topics.IOT_TELEMETRY)
    keys = Counter((r["device_id"], r["ts_ms"]) for r in iot)
    assert sum(n - 1 for n in keys.values()) == heatwave.DUPLICATES
    raw = [s for s in steps if isinstance(s, RawStep)]
    assert len(raw) == heatwave.MALFORMED
    assert {s.topic for s in raw} >= {topics.IOT_TELEMETRY, topics.SCADA_TELEMETRY}
    scada = _records(steps, topics.SCADA_TELEMETRY)
    silent = [r["ts_ms"] for r in scada if r["device_id"] == heatwave.SILENT_ID]
    others = [r["ts_ms"] for r in scada if r["device_id"] != heatwave.SILENT_ID]
    assert silent
    assert max(others) - max(silent) > 15_000  # longer than the SCADA silence timeout
    assert sum(r["customer_override"] for r in iot) == heatwave.OPT_OUTS


def test_approvals_answer_every_recommendation_once_the_last_rejected() -> None:
    recs = [
        {"recommendation_id": f"rec-{i}", "device_id": f"line-switch-north-0{i}"}
        for i in range(1, 4)
    ]
    scn = with_correlation_ids(steps_of(heatwave.approvals(NOW_MS, [*recs, recs[0]])))
    check(scn, NOW_MS)
    answers = _records(scn, topics.OPERATOR_APPROVALS)
    assert [(a["recommendation_id"], a["decision"]) for a in answers] == [
        ("rec-1", "APPROVE"),
        ("rec-2", "APPROVE"),
        ("rec-3", "REJECT"),
    ]


def test_the_operator_pause_splits_switching_from_curtailment(steps: list[Any]) -> None:
    before, after = heatwave.split(steps)
    assert len(before) + len(after) == len(steps) - 1
    events_before = [e["action"] for e in _records(before, topics.DR_EVENTS)]
    events_after = [e["action"] for e in _records(after, topics.DR_EVENTS)]
    assert (events_before, events_after) == (["SWITCH_OPEN"], ["CURTAIL"])
    assert _records(before, topics.DEVICE_REGISTRY)
    assert any(
        w["region_id"] == heatwave.HOT_REGION and w["dry_bulb_temp_c"] >= 35
        for w in _records(after, topics.WEATHER)
    )


def _kafka(ts: int, corr: str | None = None) -> dict[str, Any]:
    return {"timestamp_ms": ts, "headers": {"correlation_id": corr} if corr else {}}


def test_report_counts_a_hand_made_run() -> None:
    inputs = {
        topics.IOT_TELEMETRY: [
            {"correlation_id": "t1", "_kafka": _kafka(1_000)},
            {"correlation_id": "t2", "_kafka": _kafka(2_000)},
            {"_undecodable": "00", "_error": "x", "_kafka": _kafka(3_000, "bad1")},
        ],
        topics.DR_EVENTS: [{"correlation_id": "dr", "_kafka": _kafka(500)}],
        topics.OPERATOR_APPROVALS: [{"correlation_id": "ap", "_kafka": _kafka(10_000)}],
    }
    outputs = {
        topics.COMMANDS: [
            {"action": "CURTAIL", "correlation_id": "dr", "_kafka": _kafka(20_000)},
            {"action": "CURTAIL", "correlation_id": "dr", "_kafka": _kafka(20_000)},
            {"action": "RESTORE", "correlation_id": "w", "_kafka": _kafka(21_000)},
            {"action": "SWITCH_OPEN", "correlation_id": "ap", "_kafka": _kafka(10_400)},
        ],
        topics.RECOMMENDATIONS: [{"action": "SWITCH_OPEN", "correlation_id": "dr"}],
        topics.AUDIT: [
            {"outcome": "BLOCKED", "reason_codes": ["LIFE_SAFETY_EXCLUSION"]},
            {"outcome": "BLOCKED", "reason_codes": ["WET_BULB_SUSPEND", "SAFETY_FREEZE"]},
            {"outcome": "BLOCKED", "reason_codes": ["WET_BULB_SUSPEND"]},
            {"outcome": "DEFERRED", "reason_codes": ["RATE_LIMITED"]},
            {"outcome": "DUPLICATE", "correlation_id": "t2", "_kafka": _kafka(2_300)},
            {"outcome": "EMITTED", "reason_codes": ["DR_EVENT"]},
        ],
        topics.ALERTS: [{"kind": "TELEMETRY_LOSS"}, {"kind": "WET_BULB_SUSPEND"}],
        topics.DLQ: [
            {
                "correlation_id": "bad1",
                "source_topic": topics.IOT_TELEMETRY,
                "error_class": "DecodeError",
                "_kafka": _kafka(4_000),
            }
        ],
    }
    lines = heatwave.report(inputs, outputs)
    text = "\n".join(lines)
    assert "events in             5" in text
    assert f"  {topics.IOT_TELEMETRY:<20}       3" in lines
    assert "commands              4 (3 load-reducing): CURTAIL 2, RESTORE 1, SWITCH_OPEN 1" in text
    assert "recommendations       1: SWITCH_OPEN 1" in text
    assert "decisions (audit)     6: BLOCKED 3, DEFERRED 1, DUPLICATE 1, EMITTED 1" in text
    assert (
        "blocked, by reason    LIFE_SAFETY_EXCLUSION 1, SAFETY_FREEZE 1, WET_BULB_SUSPEND 2" in text
    )
    assert "alerts                2: TELEMETRY_LOSS 1, WET_BULB_SUSPEND 1" in text
    assert f"dead letters          1: {topics.IOT_TELEMETRY}: DecodeError 1" in text
    # Matched on produce times only: the two CURTAILs of the DR event and the dead letter of
    # the malformed packet; telemetry and approvals are stamped with their event times.
    assert sorted(heatwave.latencies_ms(inputs, outputs)) == [1000.0, 19500.0, 19500.0]
    assert "latency p50 / p99     19,500 / 19,500 ms over 3 outputs" in text


def test_report_of_nothing() -> None:
    lines = heatwave.report({}, {})
    assert "events in             0" in lines
    assert math.isnan(heatwave.percentile([], 50))
    assert any(line.startswith("latency p50 / p99     nan / nan ms") for line in lines)


def test_a_tag_gives_the_run_its_own_devices_regions_and_events() -> None:
    tagged = with_correlation_ids(steps_of(heatwave.build(NOW_MS, devices=60, tag="hw1")))
    check(tagged, NOW_MS)
    for step in tagged:
        if isinstance(step, RecordStep):
            for field in ("device_id", "region_id", "event_id"):
                if field in step.value:
                    assert str(step.value[field]).endswith(".hw1")
            for region in step.value.get("target_region_ids", ()):
                assert region.endswith(".hw1")

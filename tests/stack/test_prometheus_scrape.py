"""The suite's metrics, scraped from the session cluster's Prometheus reporter after a scenario.

One scenario moves every kind of metric by an amount it implies: a CURTAIL event (one command,
one life-safety block), a hot region (one suspension), two junk records (two dead letters), a
silent SCADA point (one stale device), and a known number of readings (the latency histogram).
Counters are compared as differences from a scrape taken once the job had settled.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from functions.metrics import COUNTERS, GAUGES
from gridstream import topics
from gridstream.config import Settings
from gridstream.scenario import Scenario, play
from jobs.device_control import JOB_NAME
from tests.stack.scenarios_support import (
    SETTLE_MS,
    TIMEOUT_S,
    add_device,
    add_event,
    add_weather,
    of,
    quiet,
    unique,
    until,
)

pytestmark = pytest.mark.stack

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]
SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
SUITE_LABELS = {"action", "reason", "topic", "kind", "le"}  # the rest are Flink's own scope


def scrape(settings: Settings) -> Metrics:
    """The suite's metrics of the device-control job on both endpoints (JobManager's and
    TaskManager's), summed over subtasks, by short name and the suite's own labels."""
    found: Metrics = {}
    for port in (settings.stack.metrics_port, settings.stack.metrics_port + 1):
        url = f"http://{settings.stack.host}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for line in text.splitlines():
            match = SAMPLE.match(line)
            if match is None or "_gridstream_" not in match[1]:
                continue
            labels = dict(LABEL.findall(match[2] or ""))
            if labels.get("job_name") != JOB_NAME:
                continue
            name = match[1].rsplit("_gridstream_", 1)[1]
            for key in labels:  # a key-value group names its key in the metric's name too
                if key in SUITE_LABELS:
                    name = name.replace(f"{key}_", "", 1)
            own = frozenset((k, v) for k, v in labels.items() if k in SUITE_LABELS)
            found[name, own] = found.get((name, own), 0.0) + float(match[3])
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def settle(settings: Settings, ready: Callable[[Metrics], bool]) -> Metrics:
    """Scrape until `ready` holds (the device stage hands its histogram over once a second),
    or for `TIMEOUT_S`; the last scrape, for the caller's assertion to show."""
    deadline = time.monotonic() + TIMEOUT_S
    while not ready(metrics := scrape(settings)) and time.monotonic() < deadline:
        time.sleep(1.0)
    return metrics


def test_the_reporter_shows_what_a_scenario_did(settings: Settings) -> None:
    """Commands by action, blocks by reason, dead letters by reason, alerts by kind move by
    what the scenario caused; the suspended-region and stale-device gauges by one each; the
    latency histogram counts every reading; no freeze and a lag under its threshold."""
    warm = settle(settings, lambda m: value(m, "ingestion_latency_ms_count") >= 1)
    assert value(warm, "ingestion_latency_ms_count") >= 1, sorted(warm)
    time.sleep(2.0)  # a flush still on its way would count in `before`'s differences
    before = scrape(settings)

    region, hot, program = unique("region"), unique("hot"), unique("program")
    standard, hospital, feeder = unique("standard"), unique("hospital"), unique("feeder")
    setup = add_weather(Scenario(), region)
    setup = add_weather(setup, hot, dry_bulb_temp_c=35.0, relative_humidity_pct=80.0)
    setup = add_device(setup, hospital, region, program, priority_level="LIFE_SAFETY")
    setup = add_device(setup, standard, region, program, priority_level="STANDARD")
    for junk in (b"not avro", b"\x00\x00\x01"):  # bad magic, truncated
        setup = setup.raw(topics.IOT_TELEMETRY, junk, key=standard)
    setup = setup.registry(device_id=feeder, device_class="FEEDER_BREAKER")
    setup = setup.telemetry_scada(device_id=feeder).sleep(SETTLE_MS)
    scenario = add_event(setup, region, program, "CURTAIL", curtailment_pct=20.0)
    for _ in range(5):  # event time moves on 25 s while the feeder says nothing
        scenario = scenario.sleep(5_000).telemetry_iot(device_id=standard)
    readings = 2 + 1 + 5  # the two thermostats', the feeder's, the five later ones
    play(settings, scenario, quiet)
    until(
        settings,
        [standard, hospital, feeder, hot],
        lambda f: bool(
            of(f, topics.COMMANDS, standard)
            and of(f, topics.AUDIT, hospital)
            and of(f, topics.ALERTS, feeder)
            and len(f[topics.DLQ]) >= 2
        ),
        "the command, the block, the loss alert and the dead letters",
    )

    def moved(after: Metrics, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    expected: dict[tuple[Any, ...], float] = {
        ("commands", ("action", "CURTAIL")): 1,
        ("blocked_decisions", ("reason", "LIFE_SAFETY_EXCLUSION")): 1,
        ("dead_letters", ("reason", "BadMagic"), ("topic", topics.IOT_TELEMETRY)): 1,
        ("dead_letters", ("reason", "Truncated"), ("topic", topics.IOT_TELEMETRY)): 1,
        ("alerts", ("kind", "WET_BULB_SUSPEND")): 1,
        ("alerts", ("kind", "TELEMETRY_LOSS")): 1,
        ("suspended_regions",): 1,
        ("stale_devices",): 1,
        ("ingestion_latency_ms_count",): readings,
    }

    def differences(after: Metrics) -> dict[tuple[Any, ...], float]:
        return {key: moved(after, key[0], **dict(key[1:])) for key in expected}

    after = settle(settings, lambda m: differences(m) == expected)
    assert differences(after) == expected
    assert {name for name, _ in after} <= {*COUNTERS, *GAUGES}  # as `functions.metrics` says
    assert value(after, "freeze") == 0
    assert 0 <= value(after, "processing_lag_ms") < settings.job.freeze_lag_ms
    count = moved(after, "ingestion_latency_ms_count")
    assert 0 < moved(after, "ingestion_latency_ms_sum") / count < 30_000  # ms, on one machine
    assert moved(after, "ingestion_latency_ms_bucket", le="+Inf") == readings

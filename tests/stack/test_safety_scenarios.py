"""One end-to-end scenario per safety rule, through the device-control job on the session cluster.

Each test plays its own devices, region and program (fresh ids) into Kafka, then polls the
committed outputs until the expected records appear. Event times are taken from the wall clock
("now"), so the lag freeze and the models' future-skew check never get in the way.

DR events start a few seconds before they are issued, so a device starts its part as soon as
its activation arrives (no event-time timer needed). The region's weather and the devices'
registry records and telemetry are played a few seconds before the event, so the broadcast
weather and each device's registry record reach the device stage before the activation does.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gridstream import topics
from gridstream.config import Settings
from gridstream.scenario import Scenario, play
from schemas import catalog, models, serde
from schemas.examples import encode_unvalidated, example_data
from schemas.registry import Registry, RegistryConfig
from state import mirror
from tests.stack.scenarios_support import (
    SETTLE_MS,
    TIMEOUT_S,
    add_device,
    add_event,
    add_weather,
    audits,
    commanded,
    of,
    quiet,
    unique,
    until,
)

pytestmark = pytest.mark.stack


def test_life_safety_and_unknown_devices_get_no_curtail_while_a_standard_one_does(
    settings: Settings,
) -> None:
    """Rule 1: in one CURTAIL event the hospital is BLOCKED (LIFE_SAFETY_EXCLUSION), the
    unregistered device gets nothing, the STANDARD device gets its command."""
    region, program = unique("region"), unique("program")
    hospital, unknown, standard = (unique(p) for p in ("hospital", "unknown", "standard"))
    setup = add_weather(Scenario(), region)
    setup = add_device(setup, hospital, region, program, priority_level="LIFE_SAFETY")
    setup = add_device(setup, standard, region, program, priority_level="STANDARD")
    setup = setup.telemetry_iot(device_id=unknown).sleep(SETTLE_MS)
    play(settings, add_event(setup, region, program, "CURTAIL", curtailment_pct=20.0), quiet)

    found = until(
        settings,
        [hospital, unknown, standard],
        lambda f: all(
            (
                of(f, topics.COMMANDS, standard),
                of(f, topics.AUDIT, standard),
                of(f, topics.AUDIT, hospital),
            )
        ),
        "CURTAIL and its audit for the standard device, and an audit for the hospital",
    )

    (command,) = of(found, topics.COMMANDS, standard)
    assert command["action"] == "CURTAIL"
    assert [a["outcome"] for a in of(found, topics.AUDIT, standard)] == ["EMITTED"]
    assert of(found, topics.COMMANDS, hospital) == []
    (blocked,) = of(found, topics.AUDIT, hospital)
    assert (blocked["outcome"], blocked["action"]) == ("BLOCKED", "CURTAIL")
    assert "LIFE_SAFETY_EXCLUSION" in blocked["reason_codes"]
    # An unregistered device is in no region's roster, so no event reaches it: no command, and
    # any decision about it must be a block as UNKNOWN_DEVICE / LIFE_SAFETY_EXCLUSION.
    assert of(found, topics.COMMANDS, unknown) == []
    for audit in of(found, topics.AUDIT, unknown):
        assert audit["outcome"] == "BLOCKED"
        assert {"UNKNOWN_DEVICE", "LIFE_SAFETY_EXCLUSION"} <= set(audit["reason_codes"])


def test_a_deleted_device_is_off_its_region_roster_so_a_later_event_never_reaches_it(
    settings: Settings,
) -> None:
    """Rule 1 and state lifetime: a registry tombstone makes the device unknown again, and the
    roster keeper takes it off its region's roster, so an event issued after the deletion
    neither commands it nor decides anything about it, while its neighbour gets its CURTAIL."""
    region, program = unique("region"), unique("program")
    deleted, kept = unique("deleted"), unique("kept")
    setup = add_weather(Scenario(), region)
    setup = add_device(setup, deleted, region, program, priority_level="STANDARD")
    setup = add_device(setup, kept, region, program, priority_level="STANDARD")
    setup = setup.sleep(SETTLE_MS).deletion(deleted).sleep(SETTLE_MS)
    play(settings, add_event(setup, region, program, "CURTAIL", curtailment_pct=20.0), quiet)

    found = until(
        settings, [deleted, kept], lambda f: commanded(f, kept), "CURTAIL for the kept device"
    )
    # The deleted device's decision, had the event reached it, would come out of the device
    # stage with the kept one's (one hop before the command), so it would be here by now.
    assert of(found, topics.COMMANDS, deleted) == []
    assert of(found, topics.AUDIT, deleted) == []


def test_wet_bulb_at_threshold_suspends_dr_in_the_region_and_alerts(settings: Settings) -> None:
    """Rule 2: 35 °C at 80 % RH (Stull wet-bulb ~32 °C) blocks the DR start WET_BULB_SUSPEND."""
    region, program, device = unique("region"), unique("program"), unique("thermostat")
    setup = add_weather(Scenario(), region, dry_bulb_temp_c=35.0, relative_humidity_pct=80.0)
    setup = add_device(setup, device, region, program).sleep(SETTLE_MS)
    play(settings, add_event(setup, region, program, "SETPOINT_OFFSET"), quiet)

    found = until(
        settings,
        [region, device],
        lambda f: bool(of(f, topics.AUDIT, device) and f[topics.ALERTS]),
        "audit of the device and wet-bulb alert of the region",
    )

    (alert,) = [a for a in found[topics.ALERTS] if a.get("region_id") == region]
    assert (alert["kind"], alert["severity"]) == ("WET_BULB_SUSPEND", "CRITICAL")
    (blocked,) = of(found, topics.AUDIT, device)
    assert (blocked["outcome"], blocked["action"]) == ("BLOCKED", "SETPOINT_OFFSET")
    assert "WET_BULB_SUSPEND" in blocked["reason_codes"]
    assert of(found, topics.COMMANDS, device) == []


def test_the_same_reading_twice_is_one_duplicate_audit(settings: Settings) -> None:
    """Rule 6: a reading played twice (same device and timestamp) is audited DUPLICATE once."""
    device = unique("thermostat")
    ts_ms = int(time.time() * 1000)
    reading: dict[str, Any] = {
        "device_id": device,
        "ts_ms": ts_ms,
        "correlation_id": f"corr-{device}",
    }
    play(settings, Scenario().telemetry_iot(**reading).telemetry_iot(**reading), quiet)

    found = until(
        settings, [device], lambda f: bool(of(f, topics.AUDIT, device)), "DUPLICATE audit"
    )

    (audit,) = of(found, topics.AUDIT, device)
    assert (audit["outcome"], audit["action"]) == ("DUPLICATE", None)
    assert of(found, topics.COMMANDS, device) == []


def test_bad_bytes_and_out_of_range_records_are_dead_letters_and_processing_goes_on(
    settings: Settings,
) -> None:
    """Rule 9: bad magic, a truncated record and a 999 kW thermostat are one dead letter each,
    naming iot.telemetry; a good reading of the same key after them reaches the mirror."""
    device = unique("thermostat")
    schemas = Registry(RegistryConfig.from_settings(settings)).schemas()
    writer = serde.serializer(models.IotTelemetry, schemas)
    newest = catalog.default().chain(topics.IOT_TELEMETRY).newest
    data = example_data(
        models.IotTelemetry, device_id=device, ts_ms=int(time.time() * 1000), power_kw=999.0
    )
    out_of_range = encode_unvalidated(newest, writer.schema_id, data)
    bad = {
        f"{device}-magic": (b'{"device_id": "' + device.encode() + b'"}', "BadMagic"),
        f"{device}-truncated": (b"\x00\x00\x01", "Truncated"),
        f"{device}-range": (out_of_range, "ValidationFailure"),
    }
    scenario = Scenario()
    for corr, (raw, _) in bad.items():
        scenario = scenario.raw(topics.IOT_TELEMETRY, raw, key=device, correlation_id=corr)
    play(settings, scenario.telemetry_iot(device_id=device, power_kw=2.5), quiet)

    found = until(
        settings,
        [device],
        lambda f: len(f[topics.DLQ]) >= len(bad),
        f"{len(bad)} dead letters",
    )

    letters = {d["correlation_id"]: d for d in found[topics.DLQ]}
    assert sorted(letters) == sorted(bad)
    assert len(found[topics.DLQ]) == len(bad)
    for corr, (raw, error_class) in bad.items():
        letter = letters[corr]
        assert letter["source_topic"] == topics.IOT_TELEMETRY
        assert letter["error_class"] == error_class, letter["error_message"]
        assert letter["payload"] == raw.hex()
    url = settings.stack.redis_url
    deadline = time.monotonic() + TIMEOUT_S
    while (good := mirror.read(url, device)) is None and time.monotonic() < deadline:
        time.sleep(1.0)
    assert good is not None, "the good reading after the bad ones never reached the mirror"
    assert good.power_kw == 2.5


def test_scada_switching_waits_for_an_operator_approval(settings: Settings) -> None:
    """Rule 5: SWITCH_OPEN of a feeder breaker is a recommendation, and a command only after
    an APPROVE of that recommendation."""
    region, program, feeder = unique("region"), unique("program"), unique("feeder")
    setup = add_weather(Scenario(), region).registry(
        device_id=feeder,
        device_class="FEEDER_BREAKER",
        region_id=region,
        programs=[program],
        rated_power_kw=8_000.0,
    )
    setup = setup.telemetry_scada(device_id=feeder).sleep(SETTLE_MS)
    play(settings, add_event(setup, region, program, "SWITCH_OPEN"), quiet)

    found = until(
        settings,
        [feeder],
        lambda f: bool(of(f, topics.RECOMMENDATIONS, feeder) and of(f, topics.AUDIT, feeder)),
        "recommendation for the feeder and its audit",
    )

    (recommendation,) = of(found, topics.RECOMMENDATIONS, feeder)
    assert recommendation["action"] == "SWITCH_OPEN"
    assert "HITL_REQUIRED" in recommendation["reason_codes"]
    assert [a["outcome"] for a in of(found, topics.AUDIT, feeder)] == ["RECOMMENDED"]
    assert of(found, topics.COMMANDS, feeder) == []

    # A fresh reading first, so that a 15 s SCADA silence cannot block the approved command.
    fresh = Scenario().telemetry_scada(device_id=feeder).sleep(SETTLE_MS)
    approval = fresh.approval(
        recommendation_id=recommendation["recommendation_id"],
        device_id=feeder,
        correlation_id=recommendation["correlation_id"],
        decision="APPROVE",
    )
    play(settings, approval, quiet)

    found = until(
        settings,
        [feeder],
        lambda f: bool(
            (of(f, topics.COMMANDS, feeder) and audits(f, feeder, "APPROVED"))
            or audits(f, feeder, "BLOCKED")
        ),
        "command and APPROVED audit after the approval",
    )

    assert audits(found, feeder, "BLOCKED") == []
    (command,) = of(found, topics.COMMANDS, feeder)
    assert command["action"] == "SWITCH_OPEN"
    (approved,) = audits(found, feeder, "APPROVED")
    assert approved["recommendation_id"] == recommendation["recommendation_id"]


def test_a_customer_override_after_the_start_opts_the_device_out(settings: Settings) -> None:
    """Rule 7: a reading with customer_override=true during the event is audited OPT_OUT."""
    region, program, device = unique("region"), unique("program"), unique("thermostat")
    setup = add_device(add_weather(Scenario(), region), device, region, program).sleep(SETTLE_MS)
    play(settings, add_event(setup, region, program, "SETPOINT_OFFSET"), quiet)
    until(settings, [device], lambda f: bool(of(f, topics.COMMANDS, device)), "the DR command")

    play(settings, Scenario().telemetry_iot(device_id=device, customer_override=True), quiet)

    found = until(
        settings,
        [device],
        lambda f: bool(audits(f, device, "BLOCKED")),
        "OPT_OUT audit",
    )
    (opt_out,) = audits(found, device, "BLOCKED")
    assert opt_out["reason_codes"] == ["OPT_OUT"]
    assert opt_out["action"] == "SETPOINT_OFFSET"
    assert len(of(found, topics.COMMANDS, device)) == 1  # the start's, nothing after


def test_a_silent_scada_point_raises_one_loss_alert_and_one_restored_when_it_reports(
    settings: Settings,
) -> None:
    """Rule 3: no reading for longer than the SCADA timeout (15 s of event time, carried on by
    another device's readings in real time) gives one TELEMETRY_LOSS; its next reading one
    RESTORED."""
    feeder, other = unique("feeder"), unique("thermostat")
    silent = Scenario().registry(device_id=feeder, device_class="FEEDER_BREAKER")
    silent = silent.telemetry_scada(device_id=feeder)
    for _ in range(5):  # event time moves on, 25 s, while the feeder says nothing
        silent = silent.sleep(5_000).telemetry_iot(device_id=other)
    play(settings, silent, quiet)
    found = until(
        settings, [feeder], lambda f: bool(of(f, topics.ALERTS, feeder)), "TELEMETRY_LOSS alert"
    )
    assert [a["kind"] for a in of(found, topics.ALERTS, feeder)] == ["TELEMETRY_LOSS"]

    play(settings, Scenario().telemetry_scada(device_id=feeder), quiet)
    found = until(
        settings,
        [feeder],
        lambda f: len(of(f, topics.ALERTS, feeder)) >= 2,
        "TELEMETRY_RESTORED alert",
    )
    kinds = [a["kind"] for a in of(found, topics.ALERTS, feeder)]
    assert kinds == ["TELEMETRY_LOSS", "TELEMETRY_RESTORED"]

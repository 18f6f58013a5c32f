"""The heatwave afternoon behind `make run`: a fleet under a DR event while one region overheats.

Three regions, ~3000 consumer IoT devices enrolled in `summer-peak`, ~30 SCADA points, a
hospital feeder and a home with registered medical equipment (both LIFE_SAFETY). The scenario
plays the registry and fresh weather, then telemetry rounds near wall-clock time (the job
freezes on lag and refuses future times), a CURTAIL event for every region and a SWITCH_OPEN
event for the feeder-switching program, duplicates, malformed packets, opt-outs, a SCADA switch
that goes silent and one region's wet-bulb rising past 28 °C.

The DR events are issued a few seconds after they start, so each device acts when its
activation arrives: on the session cluster the job's watermark did not advance (its
Timestamps/Watermarks operator reported Long.MIN_VALUE), so no event-time timer fires there: no
DR start on a timer, no telemetry-loss alert, no release of budget-deferred commands.

The switch recommendations get their ids only when the job makes them (their cause is a Kafka
position), so `run_heatwave` plays the scenario in two parts (`split`, at the operator's pause):
after the first it reads `grid.recommendations` and plays the operator's `approvals`, then the
rest: the curtailment (which fills each region's command budget: the rest is DEFERRED), opt-outs
and the south's wet-bulb rising (WET_BULB_SUSPEND, RESTORE of curtailed thermostats). Each run
tags its device, region and event ids (`tagged`), so a second run meets no state of the first.

`report(inputs, outputs)` is pure: it counts what went in and what came out, from dumped dicts.
"""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gridstream import scenario, topics
from gridstream.config import Settings
from gridstream.roundtrip import percentile
from gridstream.scenario import RawStep, RecordStep, Scenario, SleepStep, Step
from schemas.models import LOAD_REDUCING_ACTIONS

REGIONS = ("region-north", "region-central", "region-south")
HOT_REGION = "region-south"
PROGRAM = "summer-peak"
SWITCH_PROGRAM = "feeder-switching"
CURTAIL_EVENT = "dr-heatwave-curtail"
SWITCH_EVENT = "dr-heatwave-switching"
HOSPITAL_ID = "hospital-feeder-south-01"
MEDICAL_ID = "medical-thermostat-north-01"
SILENT_ID = "line-switch-central-02"
OPERATOR = "operator-demo"
RECOMMENDATION_WAIT_S = 30.0

ROUND_MS = 5_000  # one telemetry round every 5 s of event (and wall-clock) time
ROUNDS = 11  # telemetry rounds
IOT_SHARE = 6  # each round, one IoT device in this many reports (the job is ~300 records/s)
DR_START_MS = 5_000  # the DR events start this long after the first telemetry, and are issued
# once under way: a device acts when its activation arrives, not on an event-time timer
SWITCH_ROUND = 1  # the switching event is issued with this round
APPROVAL_ROUND = 5  # the operator answers before this round, in a pause of this length:
APPROVAL_PAUSE_MS = 20_000
CURTAIL_ROUND = 5  # the curtailment is issued with this round, after the approvals
OPT_OUT_ROUND = 6
HOT_WEATHER = ((7, 33.0, 50.0), (8, 34.0, 58.0), (9, 35.0, 80.0))  # round, °C, RH %: Stull > 28
EVENT_LENGTH_MS = 2 * 3_600_000
SILENT_AFTER_ROUND = 1  # the silent switch reports in rounds 0 and 1 only
DUPLICATES = 25
OPT_OUTS = 10
MALFORMED = 24
DEFAULT_SEED = 20260815

# class, share of the fleet, rated kW, (low, high) reading kW
_IOT_KINDS = (
    ("THERMOSTAT", 0.45, 5.0, (1.5, 4.5)),
    ("EV_CHARGER", 0.20, 11.5, (3.0, 11.0)),
    ("POOL_PUMP", 0.15, 2.2, (0.8, 2.2)),
    ("WATER_HEATER", 0.20, 4.5, (0.0, 4.5)),
)
# class, how many a region, rated kW, (low, high) reading kW
_SCADA_KINDS = (
    ("FEEDER_BREAKER", 3, 12_000.0, (3_000.0, 8_000.0)),
    ("LINE_SWITCH", 4, 8_000.0, (1_000.0, 5_000.0)),
    ("INDUSTRIAL_LOAD", 3, 25_000.0, (500.0, 20_000.0)),
)


@dataclasses.dataclass(frozen=True)
class Device:
    """One device of the fleet: its CIS facts and how much it draws."""

    device_id: str
    device_class: str
    region_id: str
    priority_level: str
    programs: tuple[str, ...]
    rated_kw: float
    low_kw: float
    high_kw: float

    @property
    def scada(self) -> bool:
        return self.device_class in {kind for kind, *_ in _SCADA_KINDS}


def fleet(devices: int = 3000, seed: int = DEFAULT_SEED) -> list[Device]:
    """The fleet, the same for the same arguments: IoT devices, SCADA points, life-safety ones."""
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    out: list[Device] = []
    classes = [kind for kind, *_ in _IOT_KINDS]
    weights = [share for _, share, *_ in _IOT_KINDS]
    specs = {kind: (rated, span) for kind, _, rated, span in _IOT_KINDS}
    for i in range(max(0, devices - 1)):
        region = REGIONS[i % len(REGIONS)]
        kind = rng.choices(classes, weights)[0]
        rated, (low, high) = specs[kind]
        priority = rng.choices(["STANDARD", "DISCRETIONARY", "CRITICAL"], [0.70, 0.25, 0.05])[0]
        programs = (PROGRAM,) if rng.random() < 0.85 else ()
        device_id = f"{kind.lower().replace('_', '-')}-{region.removeprefix('region-')}-{i:05d}"
        out.append(Device(device_id, kind, region, priority, programs, rated, low, high))
    out.append(  # a home with registered medical equipment: never curtailed
        Device(MEDICAL_ID, "THERMOSTAT", "region-north", "LIFE_SAFETY", (PROGRAM,), 5.0, 1.5, 4.5)
    )
    for region in REGIONS:
        short = region.removeprefix("region-")
        for kind, count, rated, (low, high) in _SCADA_KINDS:
            for n in range(1, count + 1):
                device_id = f"{kind.lower().replace('_', '-')}-{short}-{n:02d}"
                programs = (SWITCH_PROGRAM,) if kind == "LINE_SWITCH" else ()
                priority = "CRITICAL" if kind == "FEEDER_BREAKER" else "STANDARD"
                out.append(Device(device_id, kind, region, priority, programs, rated, low, high))
    out.append(  # the hospital's circuit: a switching candidate the interlock must refuse
        Device(
            HOSPITAL_ID,
            "FEEDER_BREAKER",
            HOT_REGION,
            "LIFE_SAFETY",
            (SWITCH_PROGRAM,),
            12_000.0,
            2_000.0,
            4_000.0,
        )
    )
    return out


def tagged(name: str, tag: str) -> str:
    """`name` for the run tagged `tag` (no tag: the name itself).

    The job keeps state per device and per region (budget queues, wet-bulb hold, DR
    participation): a tag per run gives each demo run its own devices and regions."""
    return f"{name}.{tag}" if tag else name


def _iot(
    device: Device, ts_ms: int, rng: random.Random, override: bool = False, tag: str = ""
) -> dict[str, Any]:
    kw = round(rng.uniform(device.low_kw, device.high_kw), 2)
    value: dict[str, Any] = {
        "device_id": tagged(device.device_id, tag),
        "device_class": device.device_class,
        "ts_ms": ts_ms,
        "power_kw": kw,
        "is_on": kw > 0,
        "customer_override": override,
        "firmware_version": "4.2.1",
        "setpoint_c": None,
        "measured_temp_c": None,
        "ev_soc_pct": None,
    }
    if device.device_class == "THERMOSTAT":
        value["setpoint_c"] = 24.0
        value["measured_temp_c"] = round(rng.uniform(24.0, 27.5), 1)
    elif device.device_class == "EV_CHARGER":
        value["ev_soc_pct"] = round(rng.uniform(20.0, 90.0), 1)
    return value


def _scada(device: Device, ts_ms: int, rng: random.Random, tag: str = "") -> dict[str, Any]:
    return {
        "device_id": tagged(device.device_id, tag),
        "device_class": device.device_class,
        "ts_ms": ts_ms,
        "power_kw": round(rng.uniform(device.low_kw, device.high_kw), 1),
        "voltage_kv": 24.9,
        "switch_closed": None if device.device_class == "INDUSTRIAL_LOAD" else True,
        "quality": {
            "invalid": False,
            "not_topical": False,
            "substituted": False,
            "blocked": False,
            "overflow": False,
        },
    }


def _weather(
    region_id: str, ts_ms: int, dry_bulb_c: float, rh_pct: float, tag: str = ""
) -> dict[str, Any]:
    return {
        "region_id": tagged(region_id, tag),
        "ts_ms": ts_ms,
        "dry_bulb_temp_c": dry_bulb_c,
        "relative_humidity_pct": rh_pct,
        "wbgt_temp_c": None,
    }


def malformed(rng: random.Random, count: int = MALFORMED) -> list[tuple[str, bytes]]:
    """(topic, bytes) of packets no decoder accepts: noise, unknown schema ids, text, truncation."""
    kinds = [
        lambda: rng.randbytes(rng.randint(1, 40)),
        lambda: b"\x00\x00\x00\x27\x0f" + rng.randbytes(12),  # magic byte, schema id 9999
        lambda: b'{"device_id": "thermostat-0001", "power_kw": "lots"}',
        lambda: b"\x00\x00\x00",  # a Confluent header cut short
        lambda: b"\x7fELF" + rng.randbytes(8),
        lambda: "ÿ garbled firmware dump ÿ".encode(),
    ]
    targets = (topics.IOT_TELEMETRY, topics.IOT_TELEMETRY, topics.SCADA_TELEMETRY, topics.WEATHER)
    return [(targets[i % len(targets)], kinds[i % len(kinds)]()) for i in range(count)]


def _round(
    scn: Scenario,
    fleet_: Sequence[Device],
    r: int,
    ts_ms: int,
    rng: random.Random,
    silent: bool,
    override_ids: frozenset[str] = frozenset(),
    tag: str = "",
) -> list[dict[str, Any]]:
    """One telemetry round: every SCADA point (but a silent one), a share of the IoT fleet;
    returns the IoT readings played."""
    played = []
    for i, device in enumerate(fleet_):
        if device.scada:
            if not (silent and device.device_id == SILENT_ID):
                scn.telemetry_scada(**_scada(device, ts_ms + i % 1000, rng, tag))
        elif i % IOT_SHARE == r % IOT_SHARE or device.device_id in override_ids:
            override = device.device_id in override_ids
            value = _iot(device, ts_ms + i % 1000, rng, override, tag)
            scn.telemetry_iot(**value)
            played.append(value)
    return played


def _dr_event(
    scn: Scenario, event_id: str, program: str, action: str, priority: int, **extra: Any
) -> Scenario:
    return scn.dr_event(
        event_id=event_id,
        program_id=program,
        action=action,
        priority=priority,
        status="ACTIVE",
        **{"setpoint_offset_c": None, "curtailment_pct": None, **extra},
    )


def build(now_ms: int, devices: int = 3000, seed: int = DEFAULT_SEED, tag: str = "") -> Scenario:
    """The afternoon, every timestamp relative to `now_ms` (epoch ms), every device, region and
    event id `tagged` with `tag`; the operator's answers go in at the `APPROVAL_PAUSE_MS` sleep.

    Both DR events start `DR_START_MS` after the first telemetry and are issued once under way:
    the switching event in round `SWITCH_ROUND`, the curtailment after the approvals.
    """
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    fleet_ = fleet(devices, seed)
    scn = Scenario()
    for device in fleet_:  # the registry first: an unknown device is protected, not curtailed
        scn.registry(
            device_id=tagged(device.device_id, tag),
            device_class=device.device_class,
            region_id=tagged(device.region_id, tag),
            priority_level=device.priority_level,
            programs=list(device.programs),
            rated_power_kw=device.rated_kw,
            updated_ts_ms=now_ms,
        )
    for region in REGIONS:  # fresh, normal weather everywhere: DR may go ahead
        scn.weather(**_weather(region, now_ms, 32.0, 40.0, tag))
    iot = [d for d in fleet_ if not d.scada and d.device_id != MEDICAL_ID]
    enrolled = [d for d in iot if PROGRAM in d.programs]
    opt_outs = frozenset(d.device_id for d in rng.sample(enrolled, min(OPT_OUTS, len(enrolled))))
    bad = malformed(rng)
    hot = {r: (t, rh) for r, t, rh in HOT_WEATHER}
    event = {
        "target_region_ids": [tagged(region, tag) for region in REGIONS],
        "start_ts_ms": now_ms + DR_START_MS,
        "end_ts_ms": now_ms + DR_START_MS + EVENT_LENGTH_MS,
    }
    first: list[dict[str, Any]] = []
    ts = now_ms
    for r in range(ROUNDS):
        if r:
            pause = APPROVAL_PAUSE_MS if r == APPROVAL_ROUND else ROUND_MS
            scn.sleep(pause)
            ts += pause
        overrides = opt_outs if r == OPT_OUT_ROUND else frozenset()  # once DR is on
        readings = _round(scn, fleet_, r, ts, rng, r > SILENT_AFTER_ROUND, overrides, tag)
        if r == 0:
            first = readings
        if r == SWITCH_ROUND:
            _dr_event(
                scn, tagged(SWITCH_EVENT, tag), SWITCH_PROGRAM, "SWITCH_OPEN", 0,
                issued_ts_ms=ts + 900, **event,
            )  # fmt: skip
        if r == CURTAIL_ROUND:
            _dr_event(
                scn, tagged(CURTAIL_EVENT, tag), PROGRAM, "CURTAIL", 1,
                issued_ts_ms=ts + 900, curtailment_pct=50.0, **event,
            )  # fmt: skip
        if r == 2:  # a gateway resends part of round 0
            for value in rng.sample(first, min(DUPLICATES, len(first))):
                scn.telemetry_iot(**value)
        if r in (2, 3):  # a burst of malformed packets
            for topic, data in bad[r % 2 :: 2]:
                scn.raw(topic, data, key=f"bad-{r}")
        for region in REGIONS:
            if r in hot and region == HOT_REGION:
                scn.weather(**_weather(region, ts + 500, *hot[r], tag))
            elif r % 4 == 0 and r:
                scn.weather(**_weather(region, ts + 500, 32.5, 42.0, tag))
    return scn


def split(steps: Sequence[Step]) -> tuple[list[Step], list[Step]]:
    """The steps before the operator's pause, and those after it (the pause itself dropped)."""
    for i, step in enumerate(steps):
        if isinstance(step, SleepStep) and step.ms == APPROVAL_PAUSE_MS:
            return list(steps[:i]), list(steps[i + 1 :])
    return list(steps), []


def approvals(now_ms: int, recommendations: Iterable[Mapping[str, Any]]) -> Scenario:
    """The operator's answers: APPROVE each recommendation, but REJECT the last (of several)."""
    scn = Scenario()
    recs = sorted(
        {str(r["recommendation_id"]): r for r in recommendations}.values(),
        key=lambda r: str(r["device_id"]),
    )
    for i, rec in enumerate(recs):
        decision = "REJECT" if i == len(recs) - 1 and len(recs) > 1 else "APPROVE"
        scn.approval(
            recommendation_id=rec["recommendation_id"],
            device_id=rec["device_id"],
            decision=decision,
            operator_id=OPERATOR,
            ts_ms=now_ms,
            comment="heatwave demo: feeder switching" if decision == "APPROVE" else "crew on site",
        )
    return scn


# --- the report -------------------------------------------------------------------------------


def _correlation(record: Mapping[str, Any]) -> str | None:
    found = record.get("correlation_id")
    if isinstance(found, str) and found:
        return found
    headers = record.get("_kafka", {}).get("headers", {})
    found = headers.get(scenario.CORRELATION_HEADER)
    return found if isinstance(found, str) and found else None


def _kafka_ts(record: Mapping[str, Any]) -> int | None:
    ts = record.get("_kafka", {}).get("timestamp_ms")
    return int(ts) if isinstance(ts, int) and ts > 0 else None


def latencies_ms(
    inputs: Mapping[str, Sequence[Mapping[str, Any]]],
    outputs: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[float]:
    """Output Kafka timestamp minus the Kafka timestamp of the input with its correlation id.

    Only inputs whose Kafka timestamp is the time they were produced count: DR events, registry
    records and undecodable packets (a decodable record of a topic with an event-time field is
    stamped with its event time, `scenario.EVENT_TIME_FIELDS`). Outputs of timers name no input.
    """
    sent: dict[str, int] = {}
    for topic, records in inputs.items():
        for record in records:
            if topic in scenario.EVENT_TIME_FIELDS and "_undecodable" not in record:
                continue
            corr, ts = _correlation(record), _kafka_ts(record)
            if corr is not None and ts is not None:
                sent.setdefault(corr, ts)
    out = []
    for records in outputs.values():
        for record in records:
            corr, ts = _correlation(record), _kafka_ts(record)
            if corr in sent and ts is not None:
                out.append(float(ts - sent[corr]))
    return out


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items())) or "none"


def report(
    inputs: Mapping[str, Sequence[Mapping[str, Any]]],
    outputs: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[str]:
    """What went in and what came out, as lines a person reads (dicts as `scenario.dump` gives)."""
    commands = outputs.get(topics.COMMANDS, ())
    audits = outputs.get(topics.AUDIT, ())
    alerts = outputs.get(topics.ALERTS, ())
    dead = outputs.get(topics.DLQ, ())
    recs = outputs.get(topics.RECOMMENDATIONS, ())
    by_action = Counter(str(c.get("action")) for c in commands)
    reducing = sum(n for action, n in by_action.items() if action in LOAD_REDUCING_ACTIONS)
    outcomes = Counter(str(a.get("outcome")) for a in audits)
    blocked: Counter[str] = Counter()
    for a in audits:
        if a.get("outcome") == "BLOCKED":
            blocked.update(str(code) for code in a.get("reason_codes") or ())
    kinds = Counter(str(a.get("kind")) for a in alerts)
    dead_by = Counter(f"{d.get('source_topic')}: {d.get('error_class')}" for d in dead)
    lat = latencies_ms(inputs, outputs)
    total_in = sum(len(r) for r in inputs.values())
    return [
        f"events in             {total_in}",
        *(f"  {topic:<20} {len(records):>7}" for topic, records in sorted(inputs.items())),
        f"commands              {len(commands)} ({reducing} load-reducing): {_counts(by_action)}",
        f"recommendations       {len(recs)}: "
        + _counts(Counter(str(r.get("action")) for r in recs)),
        f"decisions (audit)     {len(audits)}: {_counts(outcomes)}",
        f"blocked, by reason    {_counts(blocked)}",
        f"alerts                {len(alerts)}: {_counts(kinds)}",
        f"dead letters          {len(dead)}: {_counts(dead_by)}",
        f"latency p50 / p99     {percentile(lat, 50):,.0f} / {percentile(lat, 99):,.0f} ms over "
        f"{len(lat)} outputs (output Kafka timestamp - produce time of the input with the same "
        "correlation_id: DR events and malformed packets; the output is visible to "
        "read_committed consumers at the next checkpoint, up to 5 s later)",
    ]


# --- running it -------------------------------------------------------------------------------


def _correlation_ids(steps: Sequence[Step]) -> set[str]:
    ids: set[str] = set()
    for step in steps:
        if isinstance(step, RecordStep):
            ids.add(str(step.value["correlation_id"]))
        elif isinstance(step, RawStep) and step.correlation_id:
            ids.add(step.correlation_id)
    return ids


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _records(steps: Sequence[Step]) -> int:
    return sum(not isinstance(step, SleepStep) for step in steps)


def _recommendations(settings: Settings, part: Path, tag: str) -> list[dict[str, Any]]:
    """This run's recommendations: those the run collected, else what the topic holds by now."""
    mine = f".{tag}"
    found = [
        r
        for r in _read_jsonl(part / f"{topics.RECOMMENDATIONS}.jsonl")
        if str(r.get("device_id", "")).endswith(mine)
    ]
    deadline = time.monotonic() + RECOMMENDATION_WAIT_S
    while not found and time.monotonic() < deadline:
        time.sleep(2)
        found = [
            r
            for r in scenario.dump(settings, topics.RECOMMENDATIONS)
            if str(r.get("device_id", "")).endswith(mine)
        ]
    return found


def _say(line: str) -> None:
    print(line, flush=True)


def run_heatwave(settings: Settings, devices: int = 3000, seed: int = DEFAULT_SEED) -> int:
    """Play the heatwave against the device-control job on the local stack; print the report."""
    from gridstream.demo import running_job

    running_job(settings)
    tag = f"hw{uuid.uuid4().hex[:6]}"  # this run's own devices, regions and events
    out_dir = Path(tempfile.mkdtemp(prefix=f"gridstream-heatwave-{tag}-"))
    start_ms = int(time.time() * 1000)
    steps = scenario.steps_of(build(start_ms, devices, seed, tag))
    before, after = split(scenario.with_correlation_ids(steps))
    _say(
        f"part 1 (ids tagged .{tag}): {_records(before)} records over "
        f"{APPROVAL_ROUND * ROUND_MS // 1000} s: registry, weather, telemetry, switching event"
    )
    one = scenario.run(settings, before, out_dir / "part1", progress=_say)
    recs = _recommendations(settings, out_dir / "part1", tag)
    answers = scenario.with_correlation_ids(
        scenario.steps_of(approvals(int(time.time() * 1000), recs))
    )
    _say(
        f"part 2: the operator answers {len(recs)} recommendation(s); then {_records(after)} "
        "records: the curtailment, opt-outs, the south's wet-bulb rising"
    )
    # Sit out what is left of the planned pause, so event times keep up with the clock.
    resume_ms = start_ms + (APPROVAL_ROUND - 1) * ROUND_MS + APPROVAL_PAUSE_MS
    pause = SleepStep(max(0, resume_ms - int(time.time() * 1000)), "<operator pause>")
    second = [*answers, pause, *after]
    two = scenario.run(settings, second, out_dir / "part2", progress=_say)
    first = before
    outputs = {
        topic: [
            *_read_jsonl(out_dir / "part1" / f"{topic}.jsonl"),
            *_read_jsonl(out_dir / "part2" / f"{topic}.jsonl"),
        ]
        for topic in topics.OUTPUTS
    }
    mine = _correlation_ids([*first, *second])
    inputs = {
        topic: [r for r in scenario.dump(settings, topic) if _correlation(r) in mine]
        for topic in topics.INPUTS
    }
    inputs = {topic: records for topic, records in inputs.items() if records}
    settled = one.settled and two.settled
    lines = report(inputs, outputs)
    note = "outputs settled" if settled else "outputs still moving at the timeout"
    print("\n".join(["", "GridStream heatwave afternoon", *("  " + line for line in lines)]))
    print(f"  ({note}; every output record in {out_dir}/part1 and part2)")
    return 0 if settled else 1

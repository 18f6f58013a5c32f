"""DESIGN.md's safety rules checked over a whole run's outputs, given its inputs.

Pure functions over decoded records (dicts as `gridstream.scenario.dump` gives them, by topic),
so the fault tests run them on every run and unit tests feed them outputs that break each rule.
Each check returns what it found wrong, one line a violation; `violations` runs them all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gridstream import topics

Records = Mapping[str, Sequence[Mapping[str, Any]]]

LOAD_REDUCING = frozenset({"SHED", "CURTAIL", "SETPOINT_OFFSET", "SWITCH_OPEN"})
SCADA_SWITCHING = frozenset({"SWITCH_OPEN", "SWITCH_CLOSE"})


def _of(records: Records, topic: str) -> Sequence[Mapping[str, Any]]:
    return records.get(topic, ())


def _newest_registry(inputs: Records) -> dict[str, Mapping[str, Any]]:
    """Each device's registry record with the newest `updated_ts_ms`."""
    newest: dict[str, Mapping[str, Any]] = {}
    for record in _of(inputs, topics.DEVICE_REGISTRY):
        held = newest.get(record["device_id"])
        if held is None or record["updated_ts_ms"] >= held["updated_ts_ms"]:
            newest[record["device_id"]] = record
    return newest


def _commands(outputs: Records) -> Iterable[Mapping[str, Any]]:
    return _of(outputs, topics.COMMANDS)


def life_safety_shed(inputs: Records, outputs: Records) -> list[str]:
    """Rule 1: no load-reducing command to a LIFE_SAFETY device, nor to a device the registry
    never named (unknown = protected)."""
    registry = _newest_registry(inputs)
    found = []
    for command in _commands(outputs):
        record = registry.get(command["device_id"])
        if command["action"] in LOAD_REDUCING and (
            record is None or record["priority_level"] == "LIFE_SAFETY"
        ):
            level = "unregistered" if record is None else "LIFE_SAFETY"
            found.append(
                f"life safety: {command['action']} {command['command_id']} to {level} device "
                f"{command['device_id']}"
            )
    return found


def _overrides(inputs: Records) -> dict[str, int]:
    """Each device's first customer override time (from its telemetry)."""
    first: dict[str, int] = {}
    for reading in _of(inputs, topics.IOT_TELEMETRY):
        if reading.get("customer_override"):
            device_id = reading["device_id"]
            first[device_id] = min(first.get(device_id, reading["ts_ms"]), reading["ts_ms"])
    return first


def _event_windows(inputs: Records) -> dict[str, tuple[int, int]]:
    """Each DR event's (start, end) in ms, from its newest issue."""
    return {
        e["event_id"]: (e["start_ts_ms"], e["end_ts_ms"]) for e in _of(inputs, topics.DR_EVENTS)
    }


def opted_out_commanded(inputs: Records, outputs: Records) -> list[str]:
    """Rule 7: no load-reducing command for a DR event to a device issued at or after that
    device's customer override, when the override fell within the event."""
    overrides, events = _overrides(inputs), _event_windows(inputs)
    found = []
    for command in _commands(outputs):
        event_id = (command.get("cause") or {}).get("event_id")
        override_ms = overrides.get(command["device_id"])
        if event_id is None or override_ms is None or command["action"] not in LOAD_REDUCING:
            continue
        start, end = events.get(event_id, (override_ms, override_ms))
        if start <= override_ms < end and command["issued_ts_ms"] >= override_ms:
            found.append(
                f"opt-out: {command['action']} {command['command_id']} to {command['device_id']}"
                f" for {event_id} at {command['issued_ts_ms']}, after its override at "
                f"{override_ms}"
            )
    return found


def unaudited_commands(inputs: Records, outputs: Records) -> list[str]:
    """Every command has an EMITTED audit record with the same command id and device."""
    del inputs
    audited = {
        (a["command_id"], a["device_id"])
        for a in _of(outputs, topics.AUDIT)
        if a["outcome"] == "EMITTED" and a.get("command_id")
    }
    return [
        f"unaudited: command {c['command_id']} ({c['action']} to {c['device_id']}) has no "
        "EMITTED audit with its id"
        for c in _commands(outputs)
        if (c["command_id"], c["device_id"]) not in audited
    ]


def unapproved_switching(inputs: Records, outputs: Records) -> list[str]:
    """Rule 5: SCADA switching goes out as a command only after an operator's APPROVE of a
    recommendation for that device and action (otherwise it stays a recommendation)."""
    recommended = {
        r["recommendation_id"]: (r["device_id"], r["action"])
        for r in _of(outputs, topics.RECOMMENDATIONS)
    }
    approved = {
        recommended[a["recommendation_id"]]
        for a in _of(inputs, topics.OPERATOR_APPROVALS)
        if a["decision"] == "APPROVE" and a["recommendation_id"] in recommended
    }
    return [
        f"unapproved switching: {c['action']} {c['command_id']} to {c['device_id']} without an "
        "approved recommendation"
        for c in _commands(outputs)
        if c["action"] in SCADA_SWITCHING and (c["device_id"], c["action"]) not in approved
    ]


def repeated_command_ids(inputs: Records, outputs: Records) -> list[str]:
    """Rule 6: no command id goes out twice."""
    del inputs
    counts = Counter(c["command_id"] for c in _commands(outputs))
    return [f"repeated: command id {cid} {n} times" for cid, n in counts.items() if n > 1]


CHECKS: Sequence[Callable[[Records, Records], list[str]]] = (
    life_safety_shed,
    opted_out_commanded,
    unaudited_commands,
    unapproved_switching,
    repeated_command_ids,
)


def violations(inputs: Records, outputs: Records) -> list[str]:
    """Every rule broken by `outputs` given the `inputs` that caused them."""
    return [found for check in CHECKS for found in check(inputs, outputs)]

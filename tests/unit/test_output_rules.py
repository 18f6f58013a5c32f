"""The whole-output rule checker of the fault tests finds each kind of violation, and passes
outputs that keep the rules."""

from __future__ import annotations

from typing import Any

import pytest

from gridstream import topics
from tests import output_rules

pytestmark = pytest.mark.unit

START, END = 1_000_000, 5_000_000


def registry(device_id: str, level: str = "STANDARD", updated: int = 1) -> dict[str, Any]:
    return {"device_id": device_id, "priority_level": level, "updated_ts_ms": updated}


def command(device_id: str, action: str = "CURTAIL", **fields: Any) -> dict[str, Any]:
    return {
        "command_id": f"cmd-{device_id}-{action}",
        "device_id": device_id,
        "action": action,
        "issued_ts_ms": START + 10,
        "cause": {"source_topic": topics.DR_EVENTS, "event_id": "dr-1"},
        **fields,
    }


def emitted(cmd: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_id": cmd["device_id"],
        "action": cmd["action"],
        "outcome": "EMITTED",
        "command_id": cmd["command_id"],
    }


INPUTS: dict[str, list[dict[str, Any]]] = {
    topics.DEVICE_REGISTRY: [
        registry("thermostat-1"),
        registry("hospital-1", "LIFE_SAFETY"),
        registry("breaker-1"),
    ],
    topics.DR_EVENTS: [{"event_id": "dr-1", "start_ts_ms": START, "end_ts_ms": END}],
    topics.IOT_TELEMETRY: [
        {"device_id": "thermostat-1", "ts_ms": START + 5, "customer_override": False},
        {"device_id": "opted-1", "ts_ms": START + 500, "customer_override": True},
    ],
}


def outputs_with(*commands: dict[str, Any], audited: bool = True) -> dict[str, Any]:
    return {
        topics.COMMANDS: list(commands),
        topics.AUDIT: [emitted(c) for c in commands] if audited else [],
    }


def test_outputs_that_keep_every_rule_pass() -> None:
    """A curtailment of a standard thermostat, audited, breaks nothing."""
    inputs = {**INPUTS, topics.DEVICE_REGISTRY: [*INPUTS[topics.DEVICE_REGISTRY],
                                                 registry("opted-1")]}  # fmt: skip
    before_override = command("opted-1", issued_ts_ms=START + 499)
    assert (
        output_rules.violations(inputs, outputs_with(command("thermostat-1"), before_override))
        == []
    )


def test_a_curtailed_life_safety_device_is_a_violation() -> None:
    """A load-reducing command to a LIFE_SAFETY device, or to one never registered, is found;
    a RESTORE to it is not."""
    found = output_rules.violations(
        INPUTS,
        outputs_with(command("hospital-1"), command("ghost-1", "SHED"),
                     command("hospital-1", "RESTORE")),
    )  # fmt: skip
    assert len(found) == 2
    assert all(line.startswith("life safety:") for line in found)


def test_the_newest_registry_record_decides_life_safety() -> None:
    """A device re-registered as LIFE_SAFETY later is protected, whatever the order."""
    inputs = {
        topics.DEVICE_REGISTRY: [registry("t-2", "LIFE_SAFETY", 9), registry("t-2", updated=3)]
    }
    assert output_rules.life_safety_shed(inputs, outputs_with(command("t-2"))) != []


def test_a_command_after_the_override_for_the_same_event_is_a_violation() -> None:
    """The opted-out device's curtailment issued at or after its override is found."""
    inputs = {**INPUTS, topics.DEVICE_REGISTRY: [registry("opted-1")]}
    late = command("opted-1", issued_ts_ms=START + 500)
    (found,) = output_rules.violations(inputs, outputs_with(late))
    assert found.startswith("opt-out: CURTAIL cmd-opted-1-CURTAIL to opted-1")


def test_a_command_without_its_audit_is_a_violation() -> None:
    """A command with no EMITTED audit of its id is found."""
    (found,) = output_rules.violations(INPUTS, outputs_with(command("thermostat-1"), audited=False))
    assert found.startswith("unaudited:")


def test_scada_switching_without_an_approval_is_a_violation() -> None:
    """A SWITCH_OPEN command with no approved recommendation is found; with one, it is not."""
    switch = command("breaker-1", "SWITCH_OPEN")
    (found,) = output_rules.violations(INPUTS, outputs_with(switch))
    assert found.startswith("unapproved switching:")
    outputs = {
        **outputs_with(switch),
        topics.RECOMMENDATIONS: [
            {"recommendation_id": "rec-1", "device_id": "breaker-1", "action": "SWITCH_OPEN"}
        ],
    }
    approval = {"recommendation_id": "rec-1", "decision": "APPROVE"}
    assert output_rules.violations({**INPUTS, topics.OPERATOR_APPROVALS: [approval]}, outputs) == []
    rejection = {**approval, "decision": "REJECT"}
    assert output_rules.violations({**INPUTS, topics.OPERATOR_APPROVALS: [rejection]}, outputs)


def test_a_command_id_twice_is_a_violation() -> None:
    """The same command id emitted twice is found once."""
    twice = command("thermostat-1")
    (found,) = output_rules.violations(INPUTS, outputs_with(twice, dict(twice)))
    assert found.startswith("repeated:")

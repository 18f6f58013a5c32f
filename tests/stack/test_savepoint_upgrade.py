"""Upgrade through a savepoint, end to end: stop the running job with a savepoint, start the
current version from it, and the state is intact.

Each stage's state is checked by what it does after the restart: the device stage's dedupe
window (a reading played again is a DUPLICATE) and participation (cancelling the event
restores the device it curtailed), the region stage's roster and events (a second event in
the program reaches the device), and the CLI reports the savepoint it went through. After a
code change the TaskManager is restarted before the new version starts.
"""

from __future__ import annotations

from typing import Any

import pytest

from gridstream import config, topics
from gridstream.cli import main as cli
from gridstream.config import Settings
from gridstream.deploy import ensure_job, upgrade_job
from gridstream.scenario import Scenario, play
from gridstream.stack import ComponentError, LocalStack
from gridstream.stack.components import TERMINAL_STATES
from jobs.device_control import JOB_NAME
from tests.stack.scenarios_support import (
    SETTLE_MS,
    add_device,
    add_event,
    add_weather,
    audits,
    now_ms,
    of,
    quiet,
    unique,
    until,
)

pytestmark = pytest.mark.stack


def test_state_survives_an_upgrade_through_a_savepoint(
    settings: Settings,
    local_stack: LocalStack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After `gridstream job upgrade`: a reading from before is a DUPLICATE, cancelling the
    event from before restores the device, and the roster still enrols it in a new event."""
    region, program, device = unique("region"), unique("program"), unique("thermostat")
    reading: dict[str, Any] = {"device_id": device, "ts_ms": now_ms() - 1_000}  # played twice
    setup = add_device(add_weather(Scenario(), region), device, region, program)
    setup = setup.telemetry_iot(**reading).sleep(SETTLE_MS)
    event = unique("dr")
    play(settings, add_event(setup, region, program, "CURTAIL", event_id=event), quiet)
    until(settings, [device], lambda f: bool(of(f, topics.COMMANDS, device)), "CURTAIL")
    before = {job["jid"] for job in local_stack.flink.jobs()}

    for name, value in config.as_env(settings).items():  # the CLI finds this stack by them
        monkeypatch.setenv(name, value)
    assert cli(["job", "upgrade"]) == 0
    said = capsys.readouterr().out
    assert "upgraded through savepoint" in said
    (running,) = [j for j in local_stack.flink.jobs() if j["state"] == "RUNNING"]
    assert running["jid"] not in before

    again = Scenario().telemetry_iot(**reading).telemetry_iot(device_id=device)
    again = add_weather(again, region).sleep(SETTLE_MS)
    cancel = add_event(again, region, program, "CURTAIL", event_id=event, status="CANCELLED")
    play(settings, cancel, quiet)
    found = until(
        settings,
        [device],
        lambda f: (
            len(audits(f, device, "DUPLICATE")) >= 2 and len(of(f, topics.COMMANDS, device)) >= 2
        ),
        "a DUPLICATE audit and the RESTORE after the upgrade",
    )
    assert [c["action"] for c in of(found, topics.COMMANDS, device)] == ["CURTAIL", "RESTORE"]
    # The reading is older than the device's first one, so already a DUPLICATE when first
    # played (a reading not newer than the newest changes nothing); its re-send after the
    # upgrade is one more only if the upgrade kept the device's state.
    assert len(audits(found, device, "DUPLICATE")) == 2

    play(settings, add_event(Scenario(), region, program, "CURTAIL"), quiet)
    found = until(
        settings,
        [device],
        lambda f: len(of(f, topics.COMMANDS, device)) >= 3,
        "the new event's CURTAIL through the restored roster",
    )
    assert [c["action"] for c in of(found, topics.COMMANDS, device)] == [
        "CURTAIL", "RESTORE", "CURTAIL",
    ]  # fmt: skip


def test_an_upgrade_after_a_code_change_starts_the_new_job_on_a_fresh_taskmanager(
    settings: Settings, local_stack: LocalStack
) -> None:
    """Thread mode keeps a job's modules imported in the TaskManager: once the code changed,
    restarting it under a running job is refused, the running job is kept with a hint, and the
    upgrade replaces the TaskManager after the stop, so the new job imports the new code."""
    flink = local_stack.flink
    flink.code_stamp.write_text("the digest of an older version")  # as after an edit
    with pytest.raises(ComponentError, match="jobs are running"):
        flink.restart_taskmanager()
    said: list[str] = []
    (running,) = [j["jid"] for j in flink.jobs() if j["state"] == "RUNNING"]
    assert ensure_job(LocalStack(settings, say=said.append)) == running  # kept, with a hint
    assert said == [f"{JOB_NAME} runs older code: `gridstream job upgrade` runs this version"]
    before = flink.taskmanager_ids()

    upgrade_job(local_stack)

    assert flink.runs_current_code()
    assert flink.taskmanager_ids().isdisjoint(before)
    assert [j["state"] for j in flink.jobs() if j["state"] not in TERMINAL_STATES] == ["RUNNING"]

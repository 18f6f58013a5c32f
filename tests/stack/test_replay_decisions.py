"""`gridstream replay --with-decisions`: the device-control logic over a replayed range decides
what the live job decided (same devices, ids, outcomes, reasons)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from gridstream import replay, topics
from gridstream.config import Settings
from gridstream.scenario import Scenario, play
from tests.stack.scenarios_support import (
    SETTLE_MS,
    add_device,
    add_event,
    add_weather,
    commanded,
    now_ms,
    of,
    quiet,
    unique,
    until,
)

pytestmark = pytest.mark.stack

DECIDED = ("device_id", "outcome", "action", "command_id", "recommendation_id", "region_id")


def _decision(audit: dict[str, Any]) -> tuple[Any, ...]:
    """What must match between live and replay: who, what, which ids, why."""
    return (*(audit.get(name) for name in DECIDED), tuple(audit["reason_codes"]))


def test_replayed_decisions_equal_the_live_jobs_audit_records(
    settings: Settings, tmp_path: Path
) -> None:
    """A CURTAIL event over two standard thermostats and a hospital, played live; the range
    replayed with decisions gives the live audit records, no more, no fewer."""
    region, program = unique("region"), unique("program")
    hospital, *standard = (unique(p) for p in ("hospital", "standard", "standard"))
    start = now_ms()
    setup = add_weather(Scenario(), region)
    setup = add_device(setup, hospital, region, program, priority_level="LIFE_SAFETY")
    for device in standard:
        setup = add_device(setup, device, region, program, priority_level="STANDARD")
    play(settings, add_event(setup.sleep(SETTLE_MS), region, program, "CURTAIL"), quiet)
    devices = [hospital, *standard]
    found = until(
        settings,
        devices,
        lambda f: all(commanded(f, d) for d in standard) and bool(of(f, topics.AUDIT, hospital)),
        "the standard devices' commands and the hospital's audit",
    )
    end = now_ms()
    live = sorted(_decision(a) for a in found[topics.AUDIT] if a["decided_ts_ms"] < end)

    request = replay.Request(start, end, with_decisions=True)
    manifest = replay.run(settings, request, tmp_path / "dataset", say=quiet)

    rows = ds.dataset(tmp_path / "dataset" / "decisions", format="parquet", partitioning="hive")
    replayed = sorted(
        _decision(r)
        for r in rows.to_table().to_pylist()
        if r["device_id"] in devices and r["decided_ts_ms"] < end
    )
    assert [d[:2] for d in live] == sorted(
        [(hospital, "BLOCKED"), *((d, "EMITTED") for d in standard)]
    )
    assert replayed == live
    assert manifest["rows"]["decisions"] >= len(live)

"""`make bench` cannot rot: its smoke size runs end to end on a private stack of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("readings_per_s", "records_per_s", "cpu_s_per_1k")
JOB_FIGURES = (
    "latency_p50_ms", "latency_p99_ms", "checkpoint_p50_ms", "state_bytes_per_device",
    "savepoint_mb", "restore_s",
)  # fmt: skip


@pytest.mark.timeout(450)
def test_bench_smoke_writes_table_json_and_chart_with_sane_figures(tmp_path: Path) -> None:
    """The smoke run prints the table and writes markdown, JSON and a PNG with non-zero figures:
    the job on the stack (with a restore from its savepoint) and on a MiniCluster, the peers."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--smoke", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=420, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| device-control at-least-once p1 |" in done.stdout
    (md,), (data,), (png,) = (
        sorted(tmp_path.glob(f"bench-*.{ext}")) for ext in ("md", "json", "png")
    )
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "Quix Streams" in md.read_text()
    rows = {row["system"] + row["mode"]: row for row in json.loads(data.read_text())["results"]}
    assert set(rows) == {
        "device-controlat-least-once", "device-controlMiniCluster",
        "Quix Streamsexactly-once", "Python I/O ceiling-", "pure-logic floor-",
    }  # fmt: skip
    for row in rows.values():
        assert all(row[key] > 0 for key in FIGURES), row
    job = rows["device-controlat-least-once"]
    assert all(job[key] > 0 for key in JOB_FIGURES), job
    assert job["commands_back"] > 0.9, job

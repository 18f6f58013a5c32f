"""`make soak`'s short form: two minutes of a fixed fleet on a private stack of its own, judged on
what is bounded whatever the time: the keys are the fleet, the timers a few per device, and the
checkpointed state (timers included: they live in RocksDB) no larger late than early. The slopes
and their verdicts need the long form's 30 minutes: here a verdict may go either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import median

import pytest

from gridstream import flinkconf

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
DEVICES = 600
WARMUP_S = 40.0
MANIFEST_BOUND_KEY = "gridstream.rocksdb.max-manifest-file-size"
TIMERS_PER_DEVICE = 4  # the watch, a DR event's start and end, a recommendation's expiry


@pytest.mark.timeout(780)  # the stack starts in 1-3 min on a busy 2-core machine, then 2 min
def test_a_fixed_fleet_keeps_its_keys_timers_and_state_bounded(tmp_path: Path) -> None:
    """After the warm-up the device keys are exactly the fleet, the timers at most a few per
    device (while silent groups' loss timers fire and clear and DR events come and go), RocksDB's
    cache and the JVM's internals are measured, RocksDB's MANIFESTs are bounded and its files
    uncompressed, and the checkpoints of the second half hold no more state than those of the
    first (medians: RocksDB's files come and go with compaction, so single checkpoints swing)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "2",
        "--max-rate", "800", "--devices", str(DEVICES), "--sample-s", "10",
        "--warmup-s", str(WARMUP_S), "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=750)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]  # 1: a slope
    assert "| device keys (gauge) |" in done.stdout
    (result,) = tmp_path.glob("soak-*.json")
    report = json.loads(result.read_text())
    samples = report["samples"]
    # Every RocksDB instance opened with flink-conf.yaml's MANIFEST bound: the options factory
    # of jvm/src was loaded from the job's jars and applied (RocksDB's default is 1 GB).
    bound = flinkconf.read(flinkconf.PROJECT_FLINK_CONF)[MANIFEST_BOUND_KEY]
    assert report["manifest_limits"] == [int(bound.removesuffix("kb")) * 1024], bound
    # Every column family opened uncompressed, as the soak's `stack.flink_conf_file` says.
    assert report["rocksdb_compression"] == ["kNoCompression"], report["rocksdb_compression"]
    settled = [s for s in samples if s["t_s"] >= WARMUP_S]
    assert len(settled) >= 6, samples
    assert all(s["device_keys"] == DEVICES for s in settled), settled
    assert all(0 < s["device_timers"] <= TIMERS_PER_DEVICE * DEVICES for s in settled), settled
    assert max(s["stale_devices"] for s in settled) > 0  # silent groups did go stale
    # The native memory is split: RocksDB's cache (flink-conf.yaml's native metrics) and the
    # JVM's own (Native Memory Tracking) are read, and so are RocksDB's live data and files.
    assert all(s["rocksdb_cache_mb"] > 0 and s["rocksdb_capacity_mb"] > 0 for s in settled)
    assert all(s["jvm_nmt_mb"] > 0 for s in settled)
    assert all(s["rocksdb_sst_mb"] > 0 and s["rocksdb_live_mb"] > 0 for s in settled)
    half = len(settled) // 2
    early, late = (median(s["state_mb"] for s in part) for part in (settled[:half], settled[half:]))
    assert 0 < late <= early * 1.5, settled

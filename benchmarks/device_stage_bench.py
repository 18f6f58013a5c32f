"""Marginal cost per reading of the device-control job on a local MiniCluster (not a test).

Builds the real job (`jobs.device_control.build(env, sources, sinks)`, default policies, the
project's flink-conf) over a collection source at parallelism 1 in thread mode, as the flink
tests do: `--fleet` thermostats registered in two regions, then N IoT readings, one per device
per minute of event time in event-time order, with each region's weather every ten minutes.
Each (N, 4N) pair runs in a fresh process, after an untimed warm-up job in the same JVM; a
job is timed from submission until the device stage has taken every reading: its first
TELEMETRY_LOSS alert, which only the end of input fires (the job is then cancelled). Marginal
cost = (t(4N) - t(N)) / 3N, so start-up cancels; it is reported in wall time and in the JVM's
CPU time (steadier when others load the machine), as the median and range over `--repeat`
pairs.

Run from the tree to measure, or name trees: each runs its own code (cwd and PYTHONPATH are the
tree) and runs interleave A, B, A, B, ... so a noisy machine affects them alike:

    .venv/bin/python benchmarks/device_stage_bench.py --readings 10000 --repeat 3
    .venv/bin/python benchmarks/device_stage_bench.py --tree /work/before --tree . --readings 10000

The inputs are deterministic; each tree encodes them with its own `schemas/` and `jobs.io`, and
a digest of the rows is compared across trees: a difference is reported.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T0_MS = 1_750_000_000_000  # the event time of the first reading: fixed, so runs are identical
MINUTE_MS = 60_000
REGIONS = ("region-north", "region-south")
RESULT = "RESULT "


def input_rows(fleet: int, readings: int) -> list[Any]:
    """Registry records, then the readings in event-time order with the weather among them."""
    from jobs.io import input_row
    from schemas import catalog, models, serde
    from schemas.examples import example_data

    table = serde.StaticSchemas.from_catalog(catalog.default())
    encoder = functools.cache(lambda model: serde.serializer(model, table))
    now_ms = T0_MS + (readings // fleet + 1) * MINUTE_MS  # validation's clock: after every event
    rows: list[Any] = []

    def add(model: Any, key: str, at_ms: int, **fields: Any) -> None:
        record = models.validate(model, example_data(model, **fields), now_ms)
        value = encoder(model).encode(record)
        corr = record.correlation_id
        rows.append(input_row(model.TOPIC, 0, len(rows), at_ms, key.encode(), value, corr))

    devices = [f"thermostat-{i:04d}" for i in range(fleet)]
    for i, device in enumerate(devices):
        add(
            models.DeviceRecord, device, T0_MS, device_id=device, region_id=REGIONS[i % 2],
            priority_level="STANDARD", updated_ts_ms=T0_MS, correlation_id=f"reg-{device}",
        )  # fmt: skip
    for n in range(readings):
        minute, i = divmod(n, fleet)
        ts = T0_MS + minute * MINUTE_MS + i * MINUTE_MS // fleet
        if i == 0 and minute % 10 == 0:
            for region in REGIONS:
                add(
                    models.WeatherObservation, region, ts, region_id=region, ts_ms=ts,
                    dry_bulb_temp_c=30.0, relative_humidity_pct=40.0, wbgt_temp_c=None,
                    correlation_id=f"wx-{region}-{minute}",
                )  # fmt: skip
        add(
            models.IotTelemetry, devices[i], ts, device_id=devices[i], ts_ms=ts,
            power_kw=round(2.0 + n % 11 * 0.1, 1), correlation_id=f"{devices[i]}@{minute}",
        )  # fmt: skip
    return rows


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds a process (the JVM: every thread of the job) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stopwatch:
    """A filter on the job's outputs (it passes none) that writes the wall-clock time and the
    JVM's CPU time at the first TELEMETRY_LOSS alert to `path`, or "DEAD_LETTER" if an input was
    refused first.

    It runs in the job (thread mode: in the JVM) because `execute_and_collect` shows results only
    once a checkpoint has taken them, seconds later.
    """

    def __init__(self, path: str, alert_topic: str, dead_letter_topic: str) -> None:
        self.path, self.alert_topic, self.dead_letter_topic = path, alert_topic, dead_letter_topic
        self.alerts: Any = None
        self.stopped = False

    def __call__(self, row: Any) -> bool:
        topic, _key, value, _corr = row
        if self.alerts is None:
            from schemas import catalog, models, serde

            schemas = serde.StaticSchemas.from_catalog(catalog.default())
            self.alerts = serde.deserializer(models.Alert, schemas)
        if topic == self.dead_letter_topic:
            self._stop("DEAD_LETTER")
        elif topic == self.alert_topic:
            raw = bytes(b & 0xFF for b in value)
            if self.alerts.read(raw)[1]["kind"] == "TELEMETRY_LOSS":
                self._stop(f"{time.time()} {cpu_seconds()}")
        return False

    def _stop(self, text: str) -> None:
        if not self.stopped:
            self.stopped = True
            Path(self.path + ".tmp").write_text(text)
            os.replace(self.path + ".tmp", self.path)  # the client never reads half of it


class _Outputs:
    """The job's sinks: its output stream goes through `stopwatch` and is discarded."""

    def __init__(self, stopwatch: Stopwatch) -> None:
        self.stopwatch = stopwatch

    def write(self, env: Any, records: Any) -> None:
        records.filter(self.stopwatch).name("stopwatch").print()


def run_once(fleet: int, readings: int) -> dict[str, Any]:
    """One job: wall and CPU seconds to its first TELEMETRY_LOSS alert, its input rows' digest."""
    from pyflink.java_gateway import get_gateway

    from gridstream import config
    from jobs import device_control, environment
    from jobs.io import CollectionSources
    from schemas import models

    if not Path(device_control.__file__).resolve().is_relative_to(Path.cwd().resolve()):
        raise SystemExit(f"jobs comes from {device_control.__file__}, not from {Path.cwd()}")
    rows = input_rows(fleet, readings)
    digest = hashlib.sha256("\n".join(repr(tuple(row)) for row in rows).encode()).hexdigest()
    overlay = {"parallelism.default": "1", "restart-strategy.type": "none"}
    env = environment.create(config.load(env={}), overlay)
    jvm = get_gateway().jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getPid()
    with tempfile.TemporaryDirectory() as tmp:
        mark = Path(tmp) / "stopped"
        stopwatch = Stopwatch(str(mark), models.Alert.TOPIC, models.DeadLetter.TOPIC)
        device_control.build(env, CollectionSources(rows), _Outputs(stopwatch))
        wall, cpu = time.time(), cpu_seconds(jvm)
        job = env.execute_async("device-stage-bench")
        finished = job.get_job_execution_result()
        while not mark.exists() and not finished.done():
            time.sleep(0.05)
        if not finished.done():
            job.cancel().result()
        stopped = mark.read_text() if mark.exists() else "the job ended first"
    if stopped == "DEAD_LETTER":
        raise SystemExit("the job dead-lettered an input: this tree encodes differently")
    if not stopped[:1].isdigit():
        raise SystemExit("no TELEMETRY_LOSS alert (the end of the readings) before the job ended")
    end_wall, end_cpu = map(float, stopped.split())
    return {"wall": end_wall - wall, "cpu": end_cpu - cpu, "digest": digest}


def in_tree(tree: Path, fleet: int, sizes: list[int]) -> list[dict[str, Any]]:
    """`run_once` for each of `sizes` in turn, in one fresh process running `tree`'s own code."""
    python = tree / ".venv" / "bin" / "python"
    command = [str(python if python.exists() else sys.executable), str(Path(__file__).resolve())]
    command += ["--fleet", str(fleet), "--run", *map(str, sizes)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{tree}: run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return list(json.loads(lines[-1][len(RESULT) :]))


def main() -> None:
    """Interleave the runs, then print each tree's median marginal costs and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="a code tree (default: .)")
    parser.add_argument("--readings", type=int, default=10_000, help="N: runs take N and 4N")
    parser.add_argument("--fleet", type=int, default=1_000, help="registered thermostats")
    parser.add_argument("--repeat", type=int, default=3, help="(N, 4N) pairs per tree")
    parser.add_argument("--run", type=int, nargs="+", help=argparse.SUPPRESS)  # in the tree
    args = parser.parse_args()
    if args.run:
        print(RESULT + json.dumps([run_once(args.fleet, size) for size in args.run]), flush=True)
        return
    trees = [tree.resolve() for tree in args.tree or [Path.cwd()]]
    n = args.readings
    runs: dict[tuple[Path, int], list[dict[str, Any]]] = {}
    print(f"fleet {args.fleet}, N = {n:,} readings, {args.repeat} (N, 4N) pairs", flush=True)
    for rep in range(args.repeat):
        sizes = [n, 4 * n] if rep % 2 == 0 else [4 * n, n]  # alternate against drift
        for tree in trees:
            # A first, untimed job takes the JVM's warm-up, whose cost varies by seconds.
            timed = in_tree(tree, args.fleet, [args.fleet, *sizes])[1:]
            for size, run in zip(sizes, timed, strict=True):
                runs.setdefault((tree, size), []).append(run)
                print(
                    f"  {tree} {size:>8,}: {run['wall']:6.1f} s, {run['cpu']:6.1f} CPU s",
                    flush=True,
                )
    if any(len({r["digest"] for t in trees for r in runs[(t, s)]}) > 1 for s in (n, 4 * n)):
        print("WARNING: the trees built different input rows (encoders or row layout differ)")
    print("marginal us per reading, median [min-max]; t = median wall seconds per run")
    print(f"{'tree':<32}{'t(N)':>6}{'t(4N)':>7}{'wall us/reading':>24}{'CPU us/reading':>24}")
    medians: dict[Path, dict[str, float]] = {}
    for tree in trees:
        small, large = runs[(tree, n)], runs[(tree, 4 * n)]
        cells = []
        for key in ("wall", "cpu"):
            us = [(b[key] - a[key]) / (3 * n) * 1e6 for a, b in zip(small, large, strict=True)]
            medians.setdefault(tree, {})[key] = statistics.median(us)
            cells.append(f"{statistics.median(us):.0f} [{min(us):.0f}-{max(us):.0f}]")
        t_small = statistics.median(r["wall"] for r in small)
        t_large = statistics.median(r["wall"] for r in large)
        print(f"{tree!s:<32}{t_small:>6.1f}{t_large:>7.1f}{cells[0]:>24}{cells[1]:>24}")
    base = medians[trees[0]]
    for tree in trees[1:]:
        wall, cpu = (medians[tree][k] / base[k] for k in ("wall", "cpu"))
        print(f"{tree} / {trees[0]}: wall {wall:.2f}x, CPU {cpu:.2f}x per reading")


if __name__ == "__main__":
    main()

"""`make soak`: device-control held at half its measured maximum; memory, state and timers flat.

Starts a private local stack (as `bench.py` does), registers a fixed fleet, and measures the job's
maximum on a backlog of that fleet's readings (or takes it from `--max-rate`). Then, for
`--minutes`, it drives the fleet live at `--load` (half) of that maximum: every device reports
on a cadence, weather renews every minute, a DR event starts every few minutes on a few regions
and ends a minute and a half later, a few SCADA points at a time fall silent for 45 s and come
back (their telemetry-loss timers fire and clear), and a few devices a second are registered
again (registry churn). Before that, each consumer device overrides twice, as in a fleet up for
a day (`Drive.prime`). Every `--sample-s` it samples the TaskManager's RSS, its JVM heap (REST
metrics; in thread mode Python runs inside the TaskManager, so the rest of the RSS is Python and
native memory: RocksDB's block cache from Flink's RocksDB metrics, the JVM's own from its Native
Memory Tracking, the rest Python's and RocksDB's other allocations), the
latest completed checkpoint's state size and duration, the device stage's
`device_keys` and `device_timers` gauges, the `python_blocks` gauge (the interpreter's own
allocations, to tell a Python leak from native growth), the committed input and the lag.

The TaskManager runs with Native Memory Tracking and, by default, on jemalloc as in Flink's
image (`--allocator glibc` for glibc's malloc); both reach the stack's daemons through the
environment (`daemon_env`). Its RocksDB is uncompressed by default (`--compression`, through
`stack.flink_conf_file`), so the state's slope is its raw bytes', not Snappy's drifting ratio's.

At the end: each series' least-squares slope per hour after the warm-up, relative to its mean,
against a stated tolerance; `results/soak-<time>.md` and `.json` (under `--out`); exit 1 if a
series grows beyond its tolerance.

    .venv/bin/python benchmarks/soak.py                                # 30 min, max measured
    .venv/bin/python benchmarks/soak.py --minutes 2 --max-rate 800 --devices 600   # the test's
"""

from __future__ import annotations

import argparse
import ctypes.util
import dataclasses
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bench  # this script's folder: the benchmark's own modules
import fleet
from confluent_kafka import Producer

from gridstream.deploy import start_job
from gridstream.scenario import produce
from gridstream.stack import LocalStack
from gridstream.stack.daemons import TASKMANAGER
from schemas.dead_letter import CORRELATION_HEADER
from schemas.registry import Registry, RegistryConfig

MB = 1 << 20
# A RocksDB instance's folder names its operator: `job_<job>_op_<class>_<operator id>__<n>_<of>__`.
OPERATOR_FOLDER = re.compile(r"_op_[A-Za-z0-9]+_([0-9a-f]{32})__")
MANIFEST_LIMIT = re.compile(r"^\s*max_manifest_file_size=(\d+)", re.MULTILINE)
COMPRESSION = re.compile(r"^\s*compression_per_level=(\S*)", re.MULTILINE)
COMPRESSION_KEY = "state.backend.rocksdb.compression.per.level"
NMT_TOTAL = re.compile(r"Total: reserved=\d+KB, committed=(\d+)KB")
NMT_HEAP = re.compile(r"Java Heap \(reserved=\d+KB, committed=(\d+)KB\)")
# The TaskManager JVM tracks its own native memory (`jcmd <pid> VM.native_memory`), so the soak
# can tell the JVM's internals from the embedded Python's and RocksDB's: a few % of CPU.
TASKMANAGER_JAVA_OPTS = "-XX:NativeMemoryTracking=summary"
JEMALLOC = "libjemalloc.so.2"  # what Flink's image preloads (its entrypoint; DISABLE_JEMALLOC)
SMAPS_RANGE = re.compile(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)")
MAX_CADENCE_S = 8.0  # every device reports at least this often: SCADA goes silent after 15 s
SILENT_S = 45.0  # how long a silent group of SCADA points says nothing
SILENT_EVERY_S = 60.0
WEATHER_EVERY_S = 60.0
DR_EVERY_S = 180.0
DR_LASTS_S = 90.0
DR_REGIONS_AT_ONCE = 4
CHURN_PER_S = 2.0  # devices registered again each second
JVM_METRICS = (
    "Status.JVM.Memory.Heap.Used", "Status.JVM.Memory.NonHeap.Used",
    "Status.JVM.Memory.Direct.MemoryUsed", "Status.JVM.Memory.Mapped.MemoryUsed",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Series:
    """A sampled series and how much it may grow: `tolerance` of its mean per hour (or of
    `base`, when its mean says nothing, as for a lag near zero)."""

    key: str
    heading: str
    tolerance: float | None  # None: reported, not judged
    base: str = "mean"


SERIES = (
    Series("tm_rss_mb", "TaskManager RSS (MB)", 0.10),
    Series("jvm_heap_used_mb", "JVM heap used (MB)", 0.25),
    Series("heap_resident_mb", "JVM heap resident (MB)", 0.25),
    Series("python_native_mb", "Python + RocksDB + JVM internals (MB)", None),
    Series("rocksdb_cache_mb", "RocksDB block cache in use, memtables included (MB)", None),
    Series("jvm_nmt_mb", "JVM internals: NMT committed less the heap (MB)", 0.10),
    Series("python_rocksdb_mb", "Python + RocksDB outside its cache (MB)", 0.10),
    Series("python_blocks", "Python's allocated blocks (gauge)", 0.10),
    Series("state_mb", "checkpoint state size (MB)", None),
    Series("rocksdb_live_mb", "RocksDB's live data, its estimate (MB)", None),
    Series("rocksdb_sst_mb", "RocksDB's SST files (MB)", None),
    Series("manifests_mb", "RocksDB MANIFEST logs (MB)", None),
    Series("largest_manifest_kb", "the largest MANIFEST (KB)", None),
    Series("state_data_mb", "checkpoint state less MANIFESTs (MB)", 0.10),
    Series("checkpoint_ms", "checkpoint duration (ms)", 0.50),
    Series("device_keys", "device keys (gauge)", 0.01),
    Series("device_timers", "device timers (gauge)", 0.10),
    Series("stale_devices", "stale devices (gauge)", None),
    Series("lag_records", "input lag (records)", 1.0, base="one minute of input"),
    Series("processed_per_s", "committed input (records/s)", None),
)


def say(line: str) -> None:
    """Progress, with the time of day."""
    bench.say(line)


class Drive:
    """The fleet, live: readings on a cadence, weather, DR events, silences and churn."""

    def __init__(self, settings: Any, devices: list[str], seed: int = 11) -> None:
        self.encode = fleet.Encoder(Registry(RegistryConfig.from_settings(settings)).schemas())
        self.producer = Producer(
            {"bootstrap.servers": settings.stack.bootstrap_servers, "linger.ms": 20,
             "compression.type": "lz4"}
        )  # fmt: skip
        self.devices = devices
        self.scada = [d for d in devices if fleet.is_scada(d)]
        self.rate = 0.0
        self.rng = random.Random(seed)
        self.sent = 0
        self.events = 0
        self.silenced = 0
        self.silent: set[str] = set()
        self.silent_until = 0.0

    def drive(self, devices: list[str], rate: float) -> None:
        """Drive `devices` (of those registered) at `rate` readings a second."""
        self.devices, self.rate = devices, rate
        self.scada = [d for d in devices if fleet.is_scada(d)]

    def send(self, record: fleet.Record) -> None:
        produce(
            self.producer, record.topic, key=record.key, value=record.value,
            timestamp=record.ts_ms, headers={CORRELATION_HEADER: record.correlation_id},
        )  # fmt: skip
        self.producer.poll(0)

    def register(self, devices: list[str]) -> None:
        """Each device's CIS record, stamped now."""
        for device_id in devices:
            self.send(fleet.registration(self.encode, device_id, now_ms(), self.rng))

    def weather(self) -> None:
        for region in fleet.REGIONS:
            self.send(fleet.weather(self.encode, region, now_ms()))

    def dr_event(self) -> None:
        """A new event on the next few regions, starting in 5 s and over `DR_LASTS_S` later."""
        first = self.events * DR_REGIONS_AT_ONCE
        regions = tuple(
            fleet.REGIONS[(first + n) % len(fleet.REGIONS)] for n in range(DR_REGIONS_AT_ONCE)
        )
        at = now_ms()
        start, end = at + 5_000, at + 5_000 + int(DR_LASTS_S * 1000)
        self.send(fleet.dr_event(self.encode, at, start, end, f"soak-{self.events}", regions))
        self.events += 1

    def silence(self, now: float) -> None:
        """The next group of SCADA points falls silent for `SILENT_S` (the last group is back)."""
        size = max(1, len(self.scada) // 20)
        first = (self.silenced * size) % len(self.scada)
        self.silent = set((self.scada * 2)[first : first + size])
        self.silent_until = now + SILENT_S
        self.silenced += 1

    def prime(self) -> None:
        """Two customer overrides from every consumer device, before the first DR event: the
        override times a device keeps between overrides (`functions.device.kept_overrides`:
        the newest before the watermark and the last one), which a fleet up for a day holds
        already. Left to one override in 500 readings, they would take the first hour to fill
        in, and the state's slope would show that filling rather than a leak. A millisecond apart:
        two stamped alike are one override time (the second a `DUPLICATE`)."""
        for device_id in self.devices:
            if not fleet.is_scada(device_id):
                first = now_ms()
                for at, tag in ((first, "+primed"), (first + 1, "+primed-again")):
                    self.send(fleet.reading(self.encode, device_id, at, tag, self.rng, True))
                    self.sent += 1

    def reading(self, n: int, now: float) -> None:
        """The `n`th reading of the cadence (skipped for a silent device)."""
        device_id = self.devices[n % len(self.devices)]
        if now >= self.silent_until:
            self.silent = set()
        if device_id not in self.silent:
            self.send(fleet.reading(self.encode, device_id, now_ms(), f"+{n}", self.rng))
            self.sent += 1

    def run(self, seconds: float, every: float, sample: Callable[[float], None]) -> None:
        """Drive the fleet for `seconds`, calling `sample` (with the seconds so far) every
        `every` seconds; sends catch up after a slow sample."""
        start = time.monotonic()
        due = {"weather": 0.0, "dr": 10.0, "silence": 20.0, "churn": 0.0, "sample": 0.0}
        n = 0
        while (elapsed := time.monotonic() - start) < seconds:
            if elapsed >= due["weather"]:
                self.weather()
                due["weather"] += WEATHER_EVERY_S
            if elapsed >= due["dr"]:
                self.dr_event()
                due["dr"] += DR_EVERY_S
            if elapsed >= due["silence"]:
                self.silence(elapsed)
                due["silence"] += SILENT_EVERY_S
            if elapsed >= due["churn"]:
                self.register(self.rng.sample(self.devices, max(1, int(CHURN_PER_S))))
                due["churn"] += 1.0
            if elapsed >= due["sample"]:
                sample(elapsed)
                due["sample"] += every
            target = int(elapsed * self.rate)
            while n < target:
                self.reading(n, elapsed)
                n += 1
            time.sleep(0.005)
        self.producer.flush(30)


def now_ms() -> int:
    return int(time.time() * 1000)


def tm_metrics(stack: LocalStack, timeout_s: float = 60.0) -> dict[str, float]:
    """The TaskManager's JVM and managed memory (REST metrics), in MB; waits for the REST
    server's metric fetcher (every 10 s) to have them all."""
    deadline = time.monotonic() + timeout_s
    while True:
        (tm,) = bench.rest(stack, "/taskmanagers")["taskmanagers"]
        path = f"/taskmanagers/{tm['id']}/metrics?get={','.join(JVM_METRICS)}"
        found = {m["id"]: float(m["value"]) / MB for m in bench.rest(stack, path)}
        if len(found) == len(JVM_METRICS):
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"the TaskManager reports only {sorted(found)} of {JVM_METRICS}")
        time.sleep(1.0)


def rss_mb(pid: int) -> float:
    """A process's resident set size, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MB
    raise RuntimeError(f"no VmRSS for process {pid}")


def heap_resident_mb(pid: int) -> float:
    """The resident part of a JVM's Java heap, in MB: the Rss of its heap mapping, the one
    anonymous read-write mapping the size of `-Xmx` (Flink starts it with `-Xms` = `-Xmx`, so
    it is committed whole and resident as far as it is touched)."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    (xmx,) = (int(a[4:]) for a in args if a.startswith(b"-Xmx") and a[4:].isdigit())
    found, size, perm, path = [], 0, "", ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if match := SMAPS_RANGE.match(line):
            size = int(match[2], 16) - int(match[1], 16)
            perm, path = match[3], match[4]
        elif line.startswith("Rss:") and perm == "rw-p" and not path and abs(size - xmx) < 8 * MB:
            found.append(int(line.split()[1]) * 1024 / MB)
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} mappings of process {pid} look like its -Xmx {xmx} heap")
    return found[0]


def daemon_env(allocator: str) -> dict[str, str]:
    """The environment the stack's daemons get: Native Memory Tracking in the TaskManager and,
    for `jemalloc`, jemalloc preloaded into every daemon, as in Flink's image."""
    env = {"FLINK_ENV_JAVA_OPTS_TM": TASKMANAGER_JAVA_OPTS}  # read by taskmanager.sh
    if allocator == "jemalloc":
        if not ctypes.util.find_library("jemalloc"):
            sys.exit(f"{JEMALLOC} not found: `make jemalloc` (or apt-get install libjemalloc2)")
        env["LD_PRELOAD"] = JEMALLOC
    return env


def allocator_of(pid: int) -> str:
    """The malloc process `pid` runs on: jemalloc if mapped, else glibc's."""
    return "jemalloc" if "jemalloc" in Path(f"/proc/{pid}/maps").read_text() else "glibc"


def jvm_internals_mb(pid: int) -> float:
    """What the JVM `pid` allocated for itself outside the Java heap (Native Memory Tracking's
    committed total less the heap: metaspace, code cache, threads, GC, direct buffers), MB;
    what Python and RocksDB allocate through their own mallocs is not in it."""
    jcmd = Path(os.readlink(f"/proc/{pid}/exe")).with_name("jcmd")
    report = subprocess.run(
        [str(jcmd), str(pid), "VM.native_memory", "summary", "scale=KB"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    total, heap = NMT_TOTAL.search(report), NMT_HEAP.search(report)
    if not (total and heap):
        raise RuntimeError(f"no Native Memory Tracking summary from process {pid}: {report[:300]}")
    return (int(total[1]) - int(heap[1])) * 1024 / MB


def rocksdb_files(home: Path, prefix: str) -> Iterator[Path]:
    """The files named `prefix...` of the TaskManager's RocksDB instances, not of the local
    copies a checkpoint makes (`chk-<n>`), which come and go while the folders are walked."""
    for folder, subfolders, names in os.walk(home / "flink" / "tmp"):  # skips vanished folders
        subfolders[:] = [name for name in subfolders if not name.startswith("chk-")]
        yield from (Path(folder, name) for name in names if name.startswith(prefix))


def manifest_sizes(home: Path) -> dict[Path, int]:
    """The RocksDB MANIFEST logs under the TaskManager's local state, and their sizes (one
    rolled over and deleted meanwhile is left out).

    RocksDB appends to an instance's MANIFEST at every flush and compaction (Flink flushes at
    every checkpoint) and starts a new one when the instance reopens or the file passes
    `max_manifest_file_size` (`gridstream.rocksdb.max-manifest-file-size`); an incremental
    checkpoint uploads it whole with its state.
    """
    sizes = {}
    for path in rocksdb_files(home, "MANIFEST-"):
        try:
            sizes[path] = path.stat().st_size
        except FileNotFoundError:
            continue
    return sizes


def manifests_mb(sizes: dict[Path, int]) -> dict[str, float]:
    """The MANIFESTs' size in MB by operator id (a chain's is its vertex id)."""
    found: dict[str, float] = {}
    for path, size in sizes.items():
        operator = OPERATOR_FOLDER.search(str(path))
        key = operator.group(1) if operator else ""
        found[key] = found.get(key, 0.0) + size / MB
    return found


def rocksdb_options(home: Path, option: re.Pattern[str]) -> set[str]:
    """The values of `option` (its group) in each RocksDB instance's newest OPTIONS file, where
    RocksDB writes the options it opened with (those of each column family, for one of theirs)."""
    newest: dict[Path, Path] = {}
    for path in rocksdb_files(home, "OPTIONS-"):
        if path.name > newest.get(path.parent, Path("")).name:  # zero-padded numbers
            newest[path.parent] = path
    values: set[str] = set()
    for path in newest.values():
        try:
            values.update(option.findall(path.read_text()))
        except FileNotFoundError:
            continue
    return values


def write_rocksdb_conf(home: Path, compression: str) -> Path:
    """The soak's keys over flink-conf.yaml (`stack.flink_conf_file`): RocksDB's compression."""
    path = home / "soak-flink-conf.yaml"
    path.write_text(f"{COMPRESSION_KEY}: {compression}\n")
    return path


def state_by_operator(
    stack: LocalStack, job_id: str, checkpoint: dict[str, Any], manifests: dict[str, float]
) -> dict[str, float]:
    """A completed checkpoint's state size per operator chain (by the start of its name) less
    its MANIFEST logs, MB."""
    if not checkpoint:
        return {}
    names = {v["id"]: v["name"][:48] for v in bench.rest(stack, f"/jobs/{job_id}")["vertices"]}
    details = bench.rest(stack, f"/jobs/{job_id}/checkpoints/details/{checkpoint['id']}")
    return {
        names[v]: task["state_size"] / MB - manifests.get(v, 0.0)
        for v, task in details["tasks"].items()
    }


def named_slopes(
    samples: list[dict[str, float]], named: list[dict[str, float]], warmup_s: float, unit: str
) -> list[str]:
    """Each name's figure (each sample's in `named`) after the warm-up: first, last, slope/h."""
    lines = []
    for name in sorted({n for sample in named for n in sample}):
        points = [
            (sample["t_s"], values[name])
            for sample, values in zip(samples, named, strict=True)
            if sample["t_s"] >= warmup_s and name in values
        ]
        if len(points) >= 3:
            lines.append(f"{name}: {points[0][1]:,.3f} -> {points[-1][1]:,.3f} {unit}, "
                         f"{slope_per_hour(points):+,.3f} {unit}/h")  # fmt: skip
    return lines


def subtask_metrics(
    stack: LocalStack, job_id: str, name_of: Callable[[str], str | None], agg: str
) -> Iterator[tuple[str, float]]:
    """(name, value) of each vertex's metric whose id `name_of` names, aggregated over the
    vertex's subtasks by `agg` (`sum`, `max`)."""
    for vertex in bench.rest(stack, f"/jobs/{job_id}")["vertices"]:
        base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
        wanted = {m["id"]: name for m in bench.rest(stack, base) if (name := name_of(m["id"]))}
        if wanted:
            for metric in bench.rest(stack, f"{base}?get={','.join(wanted)}&agg={agg}"):
                yield wanted[metric["id"]], float(metric[agg])


def ending(names: tuple[str, ...], prefix: str) -> Callable[[str], str | None]:
    """The one of `names` a metric id ends with (after `prefix`), or None."""
    return lambda metric: next((n for n in names if metric.endswith(prefix + n)), None)


def gauges(stack: LocalStack, job_id: str, names: tuple[str, ...]) -> dict[str, float]:
    """The suite's gauges `names`, summed over subtasks (0 before a task sets one)."""
    totals = dict.fromkeys(names, 0.0)
    for name, value in subtask_metrics(stack, job_id, ending(names, "gridstream."), "sum"):
        totals[name] += value
    return totals


def rocksdb_cache_mb(stack: LocalStack, job_id: str) -> dict[str, float]:
    """The RocksDB block cache's `usage` and `capacity`, MB, from Flink's RocksDB native metrics
    (`flink-conf.yaml`). With managed memory every RocksDB instance of a slot shares one cache,
    and its write buffers are charged to it, so each column family reports the same slot-wide
    figures: the largest is the slot's (the soak runs at parallelism 1, one slot)."""
    found = {"usage": 0.0, "capacity": 0.0}
    kinds = ending(tuple(found), "block-cache-")
    for kind, value in subtask_metrics(stack, job_id, kinds, "max"):
        found[kind] = max(found[kind], value / MB)
    return found


KEYS = ".rocksdb_estimate-num-keys"
ROCKSDB_FIGURES = ("estimate-live-data-size", "total-sst-files-size", KEYS)


def rocksdb_figures(stack: LocalStack, job_id: str) -> dict[str, float]:
    """Flink's RocksDB native metrics (`flink-conf.yaml`) of every column family of every
    operator, by metric id (`<operator>.<state>.rocksdb_<figure>`; sizes in MB): its live
    data, its SST files and its keys. Files growing while the live data is flat are versions
    compaction has not merged yet; a state's keys growing and not falling back is a leak."""

    def rocksdb(metric: str) -> str | None:
        return metric if metric.endswith(ROCKSDB_FIGURES) else None

    return {
        name: value if name.endswith(KEYS) else value / MB
        for name, value in subtask_metrics(stack, job_id, rocksdb, "sum")
    }


def rocksdb_total_mb(figures: dict[str, float], figure: str) -> float:
    """One of `rocksdb_figures`'s sizes summed over every column family."""
    return sum(value for name, value in figures.items() if name.endswith(figure))


class Sampler:
    """Takes one sample of every series, and prints a progress line."""

    def __init__(self, stack: LocalStack, job_id: str, drive: Drive, seconds: float) -> None:
        self.stack, self.job_id, self.drive, self.seconds = stack, job_id, drive, seconds
        self.samples: list[dict[str, float]] = []
        self.by_operator: list[dict[str, float]] = []  # each sample's state per operator
        self.rocksdb: list[dict[str, float]] = []  # each sample's `rocksdb_figures`
        self.pids: set[int] = set()
        self.allocators: set[str] = set()
        self.manifest_limits: set[int] = set()  # every RocksDB instance's, as it opened
        self.compression: set[str] = set()  # every column family's, as it opened
        self.last: tuple[float, int] | None = None

    def __call__(self, elapsed: float) -> None:
        stack = self.stack
        (pid,) = stack.flink.daemons(TASKMANAGER).live()
        self.pids.add(pid)
        self.allocators.add(allocator_of(pid))
        jvm = tm_metrics(stack)
        checkpoints = bench.rest(stack, f"/jobs/{self.job_id}/checkpoints")
        latest = checkpoints["latest"]["completed"] or {}
        servers = stack.settings.stack.bootstrap_servers
        ends = bench.input_ends(servers)
        done = sum(bench.committed(servers, list(ends)).values())
        now = time.monotonic()
        since = self.last or (now, done)
        self.last = (now, done)
        rss = rss_mb(pid)
        home = stack.settings.stack.home
        sizes = manifest_sizes(home)
        by_operator = manifests_mb(sizes)
        manifests = sum(by_operator.values())
        self.manifest_limits |= {int(n) for n in rocksdb_options(home, MANIFEST_LIMIT)}
        self.compression |= rocksdb_options(home, COMPRESSION)
        parts = ("NonHeap.Used", "Direct.MemoryUsed", "Mapped.MemoryUsed")
        jvm_native = sum(jvm[f"Status.JVM.Memory.{part}"] for part in parts)
        heap_resident = heap_resident_mb(pid)
        names = ("device_keys", "device_timers", "stale_devices", "python_blocks")
        cache = rocksdb_cache_mb(stack, self.job_id)
        jvm_internals = jvm_internals_mb(pid)
        rocksdb = rocksdb_figures(stack, self.job_id)
        sample = {
            "t_s": elapsed,
            "tm_rss_mb": rss,
            "jvm_heap_used_mb": jvm["Status.JVM.Memory.Heap.Used"],
            "heap_resident_mb": heap_resident,
            "python_native_mb": rss - heap_resident - jvm_native,
            "rocksdb_cache_mb": cache["usage"],
            "rocksdb_capacity_mb": cache["capacity"],
            "jvm_nmt_mb": jvm_internals,
            "python_rocksdb_mb": rss - heap_resident - jvm_internals - cache["usage"],
            "state_mb": float(latest.get("state_size", 0)) / MB,
            "rocksdb_live_mb": rocksdb_total_mb(rocksdb, "estimate-live-data-size"),
            "rocksdb_sst_mb": rocksdb_total_mb(rocksdb, "total-sst-files-size"),
            "manifests_mb": manifests,
            "largest_manifest_kb": max(sizes.values(), default=0) / 1024,
            "state_data_mb": float(latest.get("state_size", 0)) / MB - manifests,
            "checkpoint_ms": float(latest.get("end_to_end_duration", 0)),
            "checkpoints": float(checkpoints["counts"]["completed"]),
            "checkpoints_failed": float(checkpoints["counts"]["failed"]),
            **gauges(stack, self.job_id, names),
            "lag_records": float(sum(ends.values()) - done),
            "sent": float(self.drive.sent),
        }
        if now > since[0]:  # from the second sample on
            sample["processed_per_s"] = (done - since[1]) / (now - since[0])
        self.samples.append(sample)
        self.by_operator.append(state_by_operator(stack, self.job_id, latest, by_operator))
        self.rocksdb.append(rocksdb)
        say(
            f"{clock(elapsed)} / {clock(self.seconds)}  sent {self.drive.sent:,}  "
            f"committed {sample.get('processed_per_s', 0):,.0f}/s  "
            f"lag {sample['lag_records']:,.0f}  RSS {rss:,.0f} MB "
            f"(heap {sample['jvm_heap_used_mb']:,.0f} used, {heap_resident:,.0f} resident; "
            f"JVM internals {jvm_internals:,.0f}, "
            f"Python+RocksDB {sample['python_rocksdb_mb']:,.0f}, "
            f"RocksDB cache {cache['usage']:,.0f} of {cache['capacity']:,.0f})  "
            f"state {sample['state_mb']:.2f} MB  "
            f"checkpoint {sample['checkpoint_ms']:,.0f} ms  keys {sample['device_keys']:,.0f}  "
            f"timers {sample['device_timers']:,.0f}  stale {sample['stale_devices']:,.0f}  "
            f"Python blocks {sample['python_blocks']:,.0f}"
        )


def clock(seconds: float) -> str:
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, value) points, per hour."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600


def verdicts(samples: list[dict[str, float]], warmup_s: float, rate: float) -> list[dict[str, Any]]:
    """Each series after the warm-up: first, last, mean, slope per hour (and relative to its
    base), tolerance and verdict."""
    rows = []
    for series in SERIES:
        points = [
            (s["t_s"], s[series.key]) for s in samples if s["t_s"] >= warmup_s and series.key in s
        ]
        if len(points) < 3:
            raise RuntimeError(f"only {len(points)} samples after the warm-up: run longer")
        values = [v for _, v in points]
        mean = sum(values) / len(values)
        slope = slope_per_hour(points)
        base = rate * 60 if series.base != "mean" else abs(mean)
        relative = slope / base if base else (0.0 if slope == 0 else math.inf)
        ok = series.tolerance is None or relative <= series.tolerance
        rows.append({
            "series": series.key, "heading": series.heading, "first": values[0],
            "last": values[-1], "mean": mean, "slope_per_h": slope, "relative_per_h": relative,
            "tolerance_per_h": series.tolerance, "base": series.base,
            "verdict": "-" if series.tolerance is None else ("flat" if ok else "GROWS"),
        })  # fmt: skip
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The verdict table, with what was run."""
    lines = [
        f"GridStream soak, {meta['when']}: {meta['minutes']:g} min at {meta['rate']:,.0f} "
        f"readings/s ({meta['load']:.0%} of {meta['max_rate']:,.0f}/s, {meta['max_source']}), "
        f"{meta['devices']:,} devices, {meta['cpus']} CPUs shared with other work; slopes "
        f"after a {meta['warmup_s']:.0f} s warm-up over {meta['samples']} samples. "
        f"`soak.py {meta['command']}`",
        "",
        "| series | first | last | mean | slope / h | slope / h of base | tolerance | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        tolerance = row["tolerance_per_h"]
        base = "" if row["base"] == "mean" else f" of {row['base']}"
        wanted = "-" if tolerance is None else f"≤ {tolerance:.0%}{base}"
        lines.append(
            f"| {row['heading']} | {row['first']:,.1f} | {row['last']:,.1f} | {row['mean']:,.1f} "
            f"| {row['slope_per_h']:+,.2f} | {row['relative_per_h']:+.1%} | {wanted} "
            f"| {row['verdict']} |"
        )
    lines += ["", *(f"- {note}" for note in meta["notes"])]
    return "\n".join(lines) + "\n"


def measure_max(stack: LocalStack, devices: int, timeout_s: float) -> float:
    """The job's readings/s on a backlog of the fleet's own readings (every device every 2 s
    over 60 s, with the bench fleet's bursts, duplicates, junk, weather and DR event; the event
    ends a minute after the backlog, so the soak's own events are the only ones after it)."""
    encode = fleet.Encoder(Registry(RegistryConfig.from_settings(stack.settings)).schemas())
    shape = fleet.Shape(
        devices, span_s=60, iot_interval_s=2, scada_interval_s=2, dr_runs_on_ms=60_000
    )
    workload = fleet.generate(shape, encode, say)
    took = fleet.load(stack.settings.stack.bootstrap_servers, workload.records, say)
    say(f"loaded {len(workload.records):,} backlog records in {took:.1f} s")
    ends = bench.input_ends(stack.settings.stack.bootstrap_servers)
    return bench.throughput(stack, ends, timeout_s, say)["readings_per_s"]


def main() -> None:
    """Start the stack, find the rate, drive the fleet, judge the slopes, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--devices", type=int, default=2_000, help="the fixed fleet")
    parser.add_argument("--max-rate", type=float, help="readings/s; measured when not given")
    parser.add_argument("--load", type=float, default=0.5, help="of the maximum")
    parser.add_argument("--sample-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, help="left out of the slopes (default: "
                        "a fifth of the run, at most 180 s)")  # fmt: skip
    parser.add_argument(
        "--allocator", choices=("jemalloc", "glibc"), default="jemalloc",
        help="the daemons' malloc: jemalloc as in Flink's image, or glibc",
    )  # fmt: skip
    parser.add_argument(
        "--compression", choices=("NO_COMPRESSION", "SNAPPY_COMPRESSION"), default="NO_COMPRESSION",
        help="RocksDB's, at every level: none, so the state's verdict judges its raw bytes; "
        "Snappy is Flink's default",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=bench.ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    seconds = args.minutes * 60
    warmup = args.warmup_s if args.warmup_s is not None else min(180.0, seconds / 5)
    notes: list[str] = []
    os.environ.update(daemon_env(args.allocator))
    with tempfile.TemporaryDirectory(prefix="gridstream-soak-") as home:
        settings = bench.private_settings(Path(home))
        conf_file = write_rocksdb_conf(Path(home), args.compression)
        settings = dataclasses.replace(
            settings, stack=dataclasses.replace(settings.stack, flink_conf_file=str(conf_file))
        )
        stack = LocalStack(settings, say=lambda line: say(f"  {line}"))
        say(f"starting a private stack in {home}")
        try:
            stack.up()
            devices = fleet.device_ids(fleet.Shape(args.devices))
            drive = Drive(stack.settings, devices)
            if args.max_rate:
                max_rate, source = args.max_rate, "given by --max-rate"
                drive.register(devices)
                drive.producer.flush(60)
                job_id = start_job(stack)
                ends = bench.input_ends(stack.settings.stack.bootstrap_servers)
                bench.throughput(stack, ends, 600.0, say)  # until the fleet is registered
            else:
                job_id = start_job(stack)
                say(f"measuring the maximum: a backlog of {args.devices:,} devices' readings")
                max_rate, source = measure_max(stack, args.devices, 1_800.0), "measured"
            rate = max_rate * args.load
            say(f"maximum {max_rate:,.0f} readings/s ({source}); soaking at {rate:,.0f}/s")
            cadence = args.devices / rate
            if cadence > MAX_CADENCE_S:  # SCADA points would go silent between readings
                devices = devices[: max(20, int(rate * MAX_CADENCE_S))]
                notes.append(f"fleet cut to {len(devices):,} devices so each reports every "
                             f"{MAX_CADENCE_S:g} s at most")  # fmt: skip
                cadence = len(devices) / rate
            drive.drive(devices, rate)
            drive.prime()
            sampler = Sampler(stack, job_id, drive, seconds)
            say(f"{len(devices):,} devices each reporting every {cadence:.1f} s for "
                f"{args.minutes:g} min; a sample every {args.sample_s:g} s")  # fmt: skip
            drive.run(seconds, args.sample_s, sampler)
            sampler(seconds)
            if len(sampler.pids) > 1:
                notes.append(f"the TaskManager was restarted: pids {sorted(sampler.pids)}")
            restarts = bench.rest(stack, f"/jobs/{job_id}")
            notes.append(f"job state at the end: {restarts['state']}")
        finally:
            say("stopping the stack")
            if stack.flink.answers():
                bench.cancel_jobs(stack)
            stack.down()
    last = sampler.samples[-1]
    peak_cache = max(s["rocksdb_cache_mb"] for s in sampler.samples)
    capacity = max(s["rocksdb_capacity_mb"] for s in sampler.samples)
    notes += [
        f"the TaskManager's malloc: {', '.join(sorted(sampler.allocators))} "
        f"(`--allocator {args.allocator}`)",
        f"{drive.sent:,} readings sent; {drive.events} DR events; {drive.silenced} silent "
        f"groups of {max(1, len(drive.scada) // 20)} SCADA points for {SILENT_S:g} s each",
        f"checkpoints: {last['checkpoints']:,.0f} completed, {last['checkpoints_failed']:,.0f} "
        "failed",
        "Python + RocksDB + JVM internals = TaskManager RSS - the Java heap's resident pages "
        "(its mapping in /proc/<pid>/smaps) - JVM non-heap used (metaspace, code cache) - "
        "direct and mapped buffers: in thread mode the embedded Python's memory, RocksDB's "
        "(bounded by Flink's managed memory) and the JVM's own (thread stacks, GC)",
        "RocksDB block cache: the slot's shared cache in use (write buffers charged to it), "
        f"from Flink's RocksDB native metrics; at most {peak_cache:,.1f} MB of its "
        f"{capacity:,.1f} MB capacity",
        "JVM internals: Native Memory Tracking's committed total less the Java heap (the "
        f"TaskManager runs with `{TASKMANAGER_JAVA_OPTS}`); Python + RocksDB outside its cache "
        "= RSS - the heap's resident pages - JVM internals - RocksDB's cache: the embedded "
        "Python's mallocs, RocksDB's own (iterators, table readers) and the allocator's slack. "
        "Committed is not all resident (thread stacks), so this one is a floor",
        "state less MANIFESTs: the checkpoint's state size minus the RocksDB MANIFEST logs "
        "on the TaskManager at the sample (each grows with every flush until it passes "
        "`max_manifest_file_size` or its instance reopens, and every incremental checkpoint "
        "uploads it whole)",
        "RocksDB's max_manifest_file_size, from its OPTIONS files: "
        f"{', '.join(f'{n:,} bytes' for n in sorted(sampler.manifest_limits)) or 'none read'}; "
        f"the largest MANIFEST seen {max(s['largest_manifest_kb'] for s in sampler.samples):,.1f}"
        " KB",
        f"RocksDB's compression: `--compression {args.compression}` (`{COMPRESSION_KEY}` by "
        "`stack.flink_conf_file`); its OPTIONS files' compression_per_level: "
        f"{', '.join(sorted(sampler.compression)) or 'none read'}. Uncompressed by default so the "
        "state's verdict judges its raw bytes: Snappy's ratio drifts as the fleet's values grow "
        "apart, and the compressed bytes rise with it while the raw state is flat",
        "timers live in RocksDB with the keyed state (Flink 2.2's "
        "`state.backend.rocksdb.timer-service.factory` defaults to ROCKSDB), so the checkpoint "
        "state size covers them; `device_timers` counts them directly",
    ]
    notes += [
        f"state less MANIFESTs of {line}"
        for line in named_slopes(sampler.samples, sampler.by_operator, warmup, "MB")
    ]
    held = {n for n, v in sampler.rocksdb[-1].items() if n.endswith(KEYS) and v > 0}
    keys = [{n.removesuffix(KEYS): v for n, v in f.items() if n in held} for f in sampler.rocksdb]
    notes += [
        f"RocksDB's estimate of the keys (versions not compacted yet count too) of {line}"
        for line in named_slopes(sampler.samples, keys, warmup, "keys")
    ]
    rows = verdicts(sampler.samples, warmup, rate)
    meta = {
        "minutes": args.minutes, "rate": rate, "load": args.load, "max_rate": max_rate,
        "max_source": source, "devices": len(devices), "warmup_s": warmup,
        "samples": len(sampler.samples), "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv[1:]),
        "notes": notes,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    text = markdown(rows, meta)
    stem.with_suffix(".md").write_text(text)
    result = {
        "meta": meta, "verdicts": rows, "samples": sampler.samples,
        "state_mb_by_operator": sampler.by_operator,
        "rocksdb_by_column_family": sampler.rocksdb,
        "manifest_limits": sorted(sampler.manifest_limits),
        "rocksdb_compression": sorted(sampler.compression),
    }  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    say(f"written: {stem}.md, {stem}.json")
    grows = [row["series"] for row in rows if row["verdict"] == "GROWS"]
    if grows:
        say(f"beyond tolerance: {', '.join(grows)}")
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The benchmark's report: a markdown table (each figure with its ratio to device-control), the
figures as JSON, and a PNG chart."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

COLUMNS = (  # (key, heading, format)
    ("readings_per_s", "readings/s", "{:,.0f}"),
    ("records_per_s", "records/s", "{:,.0f}"),
    ("cpu_s_per_1k", "CPU-s / 1k records", "{:.3f}"),
    ("latency_p50_ms", "p50 ms", "{:,.0f}"),
    ("latency_p99_ms", "p99 ms", "{:,.0f}"),
    ("checkpoint_p50_ms", "checkpoint p50 ms", "{:,.0f}"),
    ("state_bytes_per_device", "state B/device", "{:,.0f}"),
)
CHECKPOINT_INTERVAL_MS = 5_000  # flink-conf.yaml
MINICLUSTER = "MiniCluster"  # the mode of the job's row measured without Kafka


def label(row: dict[str, Any]) -> str:
    """A row's name: the system, with mode and parallelism for the job."""
    if row["system"] != "device-control":
        return str(row["system"])
    return f"device-control {row['mode']} p{row['parallelism']}"


def _cell(row: dict[str, Any], base: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    ratio = value / base[key] if base.get(key) else math.nan
    return f"{fmt.format(value)} ({ratio:.2f}x)"


def targets(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets that this run measures, each with the figure measured."""
    jobs = [r for r in results if r["system"] == "device-control"]
    quix = next((r for r in results if r["system"] == "Quix Streams"), None)
    lines = []
    for row in jobs:
        name = label(row)
        per_slot = row["readings_per_s"] / row["parallelism"]
        if row["mode"] == MINICLUSTER:
            lines.append(f"| {name}: readings/s per slot | ≥ 40,000 | {per_slot:,.0f} |")
            continue
        if not math.isnan(row.get("loss_alert_p99_ms", math.nan)):
            lines.append(f"| {name}: p99 telemetry-loss alert after the timeout | ≤ 2,000 ms | "
                         f"{row['loss_alert_p99_ms']:,.0f} ms |")  # fmt: skip
        if "restore_s" in row:
            lines.append(f"| {name}: savepoint restore, 1M devices (from {row['restore_s']:.1f} s "
                         f"for this fleet, its state's part scaled) | ≤ 60 s | "
                         f"{row['restore_s_per_1m_devices']:,.0f} s |")  # fmt: skip
        if row["mode"] == "exactly-once":
            lines.append(f"| {name}: readings/s per slot | ≥ 20,000 | {per_slot:,.0f} |")
            budget = CHECKPOINT_INTERVAL_MS + 250
            lines.append(f"| {name}: p99 event → command | ≤ {budget:,} ms | "
                         f"{row['latency_p99_ms']:,.0f} ms |")  # fmt: skip
        else:
            lines.append(f"| {name}: p99 event → command | ≤ 250 ms | "
                         f"{row['latency_p99_ms']:,.0f} ms |")  # fmt: skip
        if quix:
            times = row["readings_per_s"] / quix["readings_per_s"]
            cpu = row["cpu_s_per_1k"] / quix["cpu_s_per_1k"]
            lines.append(f"| {name}: throughput vs Quix Streams | ≥ 4x | {times:.2f}x |")
            lines.append(f"| {name}: CPU per record vs Quix Streams | ≤ 1x | {cpu:.2f}x |")
        lines.append(f"| {name}: state per device | ≤ 256 B | "
                     f"{row['state_bytes_per_device']:,.0f} B |")  # fmt: skip
    return lines


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The table, with each figure's ratio to the first device-control row, and the targets."""
    base = next((r for r in results if r["system"] == "device-control"), results[0])
    head = ["system", *(heading for _, heading, _ in COLUMNS)]
    lines = [
        f"GridStream benchmark, {meta['when']}: {meta['devices']:,} devices "
        f"({meta['registered']:,} registered), {meta['readings']:,} readings in "
        f"{meta['records']:,} input records ({meta['span_s']} s of event time), "
        f"{meta['cpus']} CPUs. Ratios are to {label(base)}. `bench.py {meta['command']}`",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in results:
        cells = [label(row), *(_cell(row, base, k, f) for k, _, f in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| target | wanted | measured |", "|---|---|---|", *targets(results)]
    return "\n".join(lines) + "\n"


def chart(results: list[dict[str, Any]], path: Path) -> None:
    """Readings/s (log scale) and CPU per 1,000 records, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [label(r) for r in results]
    figure, (rates, cpu) = plt.subplots(1, 2, figsize=(13, 0.5 * len(names) + 2))
    rates.barh(names, [r["readings_per_s"] for r in results], color="tab:blue")
    rates.set_xscale("log")
    rates.set_xlabel("readings/s (log scale)")
    cpu.barh(names, [r["cpu_s_per_1k"] for r in results], color="tab:orange")
    cpu.set_xlabel("CPU-s per 1,000 records")
    cpu.set_yticks([])
    for axes in (rates, cpu):
        axes.invert_yaxis()
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle("GridStream device-control and its peers, same broker, data and cores")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> dict[str, Path]:
    """The report's markdown, JSON and PNG files under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = {kind: stem.with_suffix(f".{kind}") for kind in ("md", "json", "png")}
    paths["md"].write_text(markdown(results, meta))
    paths["json"].write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    chart(results, paths["png"])
    return paths

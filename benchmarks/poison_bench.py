"""Poison-pill throughput: the device-control job over clean telemetry and over telemetry with a
tenth junk, side by side in one run.

Starts a private local stack on free loopback ports in a temporary folder, submits the job,
warms it up, and runs `--rounds` rounds of a clean and a junk run (in turn clean first and
junk first, so a drift in speed weighs on both alike) of `--events` readings, each sent twice,
into one partition of `iot.telemetry`; in a junk run `--junk` of the partition's records are
poison pills of every kind in turn (`gridstream.roundtrip.JUNK_KINDS`). A run's rate is its
records over the time from its first record sent to its last output read (read_committed).
Prints each run, the rate of each kind over all its runs and junk/clean (the target is at
least 0.8), and whether every junk record was dead-lettered exactly once.

The sink is at-least-once by default: its output shows as the job makes it, where exactly-once
shows it at each checkpoint (every 5 s), which would round every run up to the interval.

    .venv/bin/python benchmarks/poison_bench.py
    .venv/bin/python benchmarks/poison_bench.py --events 20000 --rounds 3 --mode exactly-once
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from bench import cancel_jobs, private_settings, say  # this script's folder

from gridstream import roundtrip
from gridstream.deploy import ensure_job
from gridstream.stack import LocalStack

MODES = ("at-least-once", "exactly-once")  # at-least-once first: see the module doc


def main() -> None:
    """Start the stack and the job, run clean and junk rounds in turn, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="readings a run")
    parser.add_argument("--rounds", type=int, default=2, help="clean and junk runs each")
    parser.add_argument("--junk", type=float, default=0.1, help="share of junk records")
    parser.add_argument(
        "--mode", default="at-least-once", choices=["at-least-once", "exactly-once"]
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gridstream-poison-") as home:
        base = private_settings(Path(home))
        settings = dataclasses.replace(
            base, job=dataclasses.replace(base.job, delivery_guarantee=args.mode)
        )
        stack = LocalStack(settings, say=lambda line: say(f"  {line}"))
        say(f"starting a private stack in {home}")
        try:
            stack.up()
            ensure_job(stack)
            # The warm-up has junk too: the job waits `job.schema_id_wait_ms` once for the
            # junk's unknown schema id (jobs/DISCUSSION.md), and the rounds measure what junk
            # costs after that.
            roundtrip.run(
                settings, args.events // 2, progress=say, junk_share=args.junk, partition=0
            )
            totals = {"clean": [0.0, 0.0], "junk": [0.0, 0.0]}  # records, seconds
            print(f"{'run':<8} {'records':>8} {'junk':>6} {'records/s':>10} {'unlettered':>10}")
            kinds = (("clean", 0.0), ("junk", args.junk))
            for round_no in range(args.rounds):  # clean first, then junk first: drift cancels
                for kind, share in kinds if round_no % 2 == 0 else kinds[::-1]:
                    report = roundtrip.run(
                        settings, args.events, progress=lambda line: None, junk_share=share,
                        partition=0,
                    )  # fmt: skip
                    lost = report.missing + len(report.junk_unlettered) + report.duplicates
                    if lost or report.good_lettered:
                        raise SystemExit(f"{kind} run {round_no}: {report.lines()}")
                    records = 2 * report.sent + len(report.junk)
                    totals[kind][0] += records
                    totals[kind][1] += report.seconds
                    print(
                        f"{kind:<8} {records:>8} {len(report.junk):>6} "
                        f"{report.records_per_s:>10,.0f} {len(report.junk_unlettered):>10}",
                        flush=True,
                    )
        finally:
            say("stopping the stack")
            if stack.flink.answers():
                cancel_jobs(stack)
            stack.down()
    clean, junk = (records / seconds for records, seconds in totals.values())
    print(f"clean {clean:,.0f} records/s, {args.junk:.0%} junk {junk:,.0f} records/s")
    print(f"junk / clean = {junk / clean:.2f} (target >= 0.80), {args.mode}, one partition")


if __name__ == "__main__":
    main()

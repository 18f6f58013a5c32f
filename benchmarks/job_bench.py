"""Throughput and latency of the device-control job on the local stack, in both sink modes.

Run on demand (not a test): `gridstream stack up`, then

    .venv/bin/python benchmarks/job_bench.py --events 20000
    .venv/bin/python benchmarks/job_bench.py --events 6000 --rate 300   # latency below capacity

For each sink mode it (re)submits the job, plays `--events` readings twice each (the job answers
each second copy with one DUPLICATE audit), and prints readings/s end to end and the
produce -> committed-output latency percentiles. Settings (ports, parallelism) come from the
usual file and environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from gridstream import config, roundtrip
from gridstream.deploy import ensure_job
from gridstream.stack import LocalStack
from gridstream.stack.components import TERMINAL_STATES
from jobs.device_control import JOB_NAME

MODES = ("exactly-once", "at-least-once")


def _cancel_running(stack: LocalStack) -> None:
    for job in stack.flink.jobs():  # a job failing over (RESTARTING) too: it would compete
        if job["name"] == JOB_NAME and job["state"] not in TERMINAL_STATES:
            stack.flink.cancel(str(job["jid"]))


def main() -> None:
    """Measure each sink mode in turn and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="readings per mode")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--rate", type=float, help="readings a second (paced: latency below capacity)"
    )
    args = parser.parse_args()
    base = config.load()
    pace = f"{args.rate:,.0f} readings/s" if args.rate else "as fast as they can be sent"
    print(f"{args.events} readings per mode ({pace}), parallelism {base.job.parallelism}")
    print(f"{'mode':<14} {'readings/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'missing':>8} {'dup':>5}")
    for mode in args.modes:
        settings = config.Settings(
            stack=base.stack, job=dataclasses.replace(base.job, delivery_guarantee=mode)
        )
        stack = LocalStack(settings, say=lambda line: None)
        _cancel_running(stack)
        ensure_job(stack)
        time.sleep(3)  # the source's first partition discovery
        roundtrip.run(settings, 500, progress=lambda line: None)  # warm-up
        report = roundtrip.run(settings, args.events, progress=lambda line: None, rate=args.rate)
        print(
            f"{mode:<14} {report.events_per_s:>11,.0f} {report.percentile(50):>8,.0f} "
            f"{report.percentile(99):>8,.0f} {report.missing:>8} {report.duplicates:>5}"
        )
        _cancel_running(stack)


if __name__ == "__main__":
    main()

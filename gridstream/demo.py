"""`make run`: the main job on the local stack, fed a heatwave afternoon (or, with
`gridstream demo --roundtrip`, a burst of telemetry), and what happened."""

from __future__ import annotations

import time

from gridstream import roundtrip
from gridstream.config import Settings
from gridstream.deploy import ensure_job
from gridstream.stack import ComponentError, LocalStack
from jobs.device_control import JOB_NAME


def running_job(settings: Settings) -> str:
    """Check the local stack answers, make sure the job runs on it, say so; its job id."""
    stack = LocalStack(settings)
    down = [s.name for s in stack.status() if not s.answers]
    if down:
        raise ComponentError(f"the local stack is not up ({', '.join(down)}): run `make stack-up`")
    job_id = ensure_job(stack)
    print(f"job {JOB_NAME} running as {job_id} (Flink UI: {settings.stack.flink_rest_url})")
    time.sleep(2)  # let the source's first partition discovery finish
    return job_id


def run_demo(settings: Settings, events: int, roundtrip_only: bool = False) -> int:
    """The heatwave afternoon (gridstream/heatwave.py); with `roundtrip_only`, the round trip:
    submit the job if needed, play `events` records, print the round trip's report."""
    if not roundtrip_only:
        from gridstream.heatwave import run_heatwave

        return run_heatwave(settings)
    running_job(settings)
    report = roundtrip.run(settings, events)
    print("\n".join(["", "GridStream round trip", *("  " + line for line in report.lines())]))
    return 0 if report.missing == 0 and report.duplicates == 0 else 1

"""The `gridstream` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gridstream import config
from gridstream.models.cli import add_commands as add_model_commands
from gridstream.replay import ReplayError
from gridstream.replay import add_commands as add_replay_commands
from gridstream.scenario import ScenarioError
from gridstream.scenario import add_commands as add_scenario_commands
from gridstream.stack import ComponentError, LocalStack
from schemas.cli import add_commands as add_schema_commands


def _stack(args: argparse.Namespace, settings: config.Settings) -> int:
    stack = LocalStack(settings)
    if args.action == "up":
        stack.up()
    elif args.action == "down":
        stack.down()
    else:
        statuses = stack.status()
        for s in statuses:
            print(f"{s.name:<10} {s.address:<28} {'answers' if s.answers else 'DOWN'}")
        return 0 if all(s.answers for s in statuses) else 1
    return 0


def _doctor(args: argparse.Namespace, settings: config.Settings) -> int:
    from gridstream.doctor import run_checks

    problems = 0
    for check in run_checks(settings):
        mark = "ok  " if check.ok else "FAIL"
        print(f"{mark} {check.name}: {check.detail}")
        if not check.ok:
            problems += 1
            print(f"     fix: {check.fix}")
    return 1 if problems else 0


def _demo(args: argparse.Namespace, settings: config.Settings) -> int:
    from gridstream.demo import run_demo

    return run_demo(settings, events=args.events, roundtrip_only=args.roundtrip)


def _job(args: argparse.Namespace, settings: config.Settings) -> int:
    from gridstream import deploy

    stack = LocalStack(settings)
    if args.action == "start":
        job_id = deploy.start_job(stack, args.from_savepoint, args.allow_non_restored_state)
        print(f"running as {job_id}")
    elif args.action == "stop":
        print(f"stopped; savepoint {deploy.stop_job(stack)}")
    else:
        savepoint, job_id = deploy.upgrade_job(stack, args.allow_non_restored_state)
        print(f"upgraded through savepoint {savepoint}; running as {job_id}")
    return 0


def _state(args: argparse.Namespace, settings: config.Settings) -> int:
    import dataclasses
    import json

    from state.mirror import MirrorUnavailableError, read, without_credentials

    url = settings.stack.redis_url
    try:
        last = read(url, args.device_id, password_file=settings.stack.redis_password_file)
    except MirrorUnavailableError as err:
        print(f"gridstream: {err}\n     fix: start it with `gridstream stack up`", file=sys.stderr)
        return 2
    if last is None:
        print(
            f"gridstream: no last known good reading for {args.device_id!r} in "
            f"{without_credentials(url)}",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(dataclasses.asdict(last)))
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per task."""
    top = argparse.ArgumentParser(prog="gridstream", description=__doc__)
    top.add_argument(
        "--config", help="settings file (default: gridstream.yaml or $GRIDSTREAM_CONFIG)"
    )
    sub = top.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="start, stop or check the local stack")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.set_defaults(run=_stack)

    doctor = sub.add_parser("doctor", help="check the machine and print the fix for each problem")
    doctor.set_defaults(run=_doctor)

    add_schema_commands(sub)
    add_scenario_commands(sub)
    add_replay_commands(sub)
    add_model_commands(sub)

    demo = sub.add_parser("demo", help="run the demo on the local stack and print what happened")
    demo.add_argument(
        "--roundtrip",
        action="store_true",
        help="the telemetry round trip (exactly-once check) instead of the heatwave afternoon",
    )
    demo.add_argument(
        "--events", type=int, default=2000, help="telemetry records to play (--roundtrip)"
    )
    demo.set_defaults(run=_demo)

    job = sub.add_parser(
        "job",
        help="start the device-control job on the stack's cluster, stop it with a savepoint, "
        "or upgrade it (stop with a savepoint, start this version from it)",
    )
    job.add_argument("action", choices=["start", "stop", "upgrade"])
    job.add_argument("--from-savepoint", help="start: restore this savepoint (a path or URI)")
    job.add_argument(
        "--allow-non-restored-state",
        action="store_true",
        help="start, upgrade: leave out the savepoint's state for operators this version lacks",
    )
    job.set_defaults(run=_job)

    state = sub.add_parser("state", help="print a device's last known good reading from Redis")
    state.add_argument("device_id")
    state.set_defaults(run=_state)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gridstream` console script."""
    args = parser().parse_args(argv)
    try:
        settings = config.load(None if args.config is None else Path(args.config))
        return int(args.run(args, settings))
    except (ComponentError, config.ConfigError, ScenarioError, ReplayError) as err:
        print(f"gridstream: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

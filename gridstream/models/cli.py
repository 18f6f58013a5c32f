"""`gridstream train` and `gridstream evaluate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _train_command(args: argparse.Namespace, settings: Any) -> int:
    from gridstream.models import dataset, train

    del settings
    try:
        meta = train.train(args.data, args.out, args.holdout, args.threshold, progress=_say)
    except dataset.DatasetError as err:
        print(f"gridstream: {err}", file=sys.stderr)
        return 2
    start, split = meta["training_range_ms"]
    print(f"trained on {sum(meta['rows'].values())} readings from {start} to {split}")
    for cls, rows in meta["rows"].items():
        print(f"  {cls:<16} {rows} readings")
    print(f"model in {args.out}")
    return 0


def _evaluate_command(args: argparse.Namespace, settings: Any) -> int:
    from gridstream.models import dataset, evaluate, files

    del settings
    faults = evaluate.Faults(args.faulty_share, args.fault_rate, args.seed)
    try:
        result = evaluate.evaluate(args.data, args.model, faults, args.plot, progress=_say)
    except (dataset.DatasetError, files.ModelError) as err:
        print(f"gridstream: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    if args.plot is not None:
        print(f"plot in {args.plot}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add `train` and `evaluate` to the `gridstream` CLI."""
    cmd = subparsers.add_parser(
        "train", help="train the per-class anomaly model on a replay dataset"
    )
    cmd.add_argument("--data", type=Path, required=True, metavar="DIR", help="the replay dataset")
    cmd.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="output folder")
    cmd.add_argument(
        "--holdout", type=float, default=0.2, metavar="F",
        help="the latest share of the time range left out of training, for `evaluate` (0.2)",
    )  # fmt: skip
    cmd.add_argument(
        "--threshold", type=float, default=1.0, metavar="W",
        help="band widths outside training's band that make a reading anomalous (1.0)",
    )  # fmt: skip
    cmd.set_defaults(run=_train_command)

    cmd = subparsers.add_parser(
        "evaluate",
        help="score the window a model held out, with a faulty firmware rollout injected",
    )
    cmd.add_argument("--data", type=Path, required=True, metavar="DIR", help="the replay dataset")
    cmd.add_argument("--model", type=Path, required=True, metavar="MODEL_DIR")
    cmd.add_argument("--plot", type=Path, metavar="PNG", help="write the scores over time here")
    cmd.add_argument(
        "--faulty-share", type=float, default=0.1, metavar="F",
        help="share of IoT devices given the faulty firmware (0.1)",
    )  # fmt: skip
    cmd.add_argument(
        "--fault-rate", type=float, default=0.05, metavar="P",
        help="chance a faulty device's reading starts a fault (0.05)",
    )  # fmt: skip
    cmd.add_argument("--seed", type=int, default=7, help="the injection's random seed")
    cmd.set_defaults(run=_evaluate_command)

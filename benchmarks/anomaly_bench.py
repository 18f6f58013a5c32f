"""The anomaly model's figures: fences against an IsolationForest, same features, same faults.

Writes a synthetic replay dataset (`tests.datasets.fleet`), trains the fences
(`gridstream.models.train`), fits scikit-learn IsolationForests per class on the same training
features, and scores the same held-out window with the same injected faulty-firmware readings.
Prints precision, recall and the cost of scoring one reading live (features included for the
fences: `functions.anomaly.judge`).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/anomaly_bench.py [--devices 200 --hours 24]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import timeit
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest

from functions import anomaly, device
from gridstream.models import dataset, evaluate, train
from schemas.models import Cause
from state.device import DeviceState, LastGood, PowerStats
from tests import datasets

CAUSE = Cause(source_topic="bench", event_id="bench")


def _per_reading_us(fn: Callable[[], object], number: int) -> float:
    """The best of five runs (the machine is shared), in µs a call."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    """Run the comparison and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--trees", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, model_dir = Path(tmp, "data"), Path(tmp, "model")
        readings, registry = datasets.fleet(devices=args.devices, hours=args.hours)
        datasets.write(data, readings, registry)
        started = time.perf_counter()
        meta = train.train(data, model_dir)
        train_s = time.perf_counter() - started
        model = train.load(model_dir)
        window_ms, window = evaluate.held_out(data, model, evaluate.Faults())
        rows = dataset.read(data)
        norms = {cls: m.norms for cls, m in model.classes.items()}
        training = [s for s in train.replay(rows, norms) if s.ts_ms < window_ms[0]]

    fences = [model.classes[s.device_class].scorer for s in window]
    flags = [f.score(s.features) > f.threshold for f, s in zip(fences, window, strict=True)]
    print(f"{len(readings)} readings, {sum(meta['rows'].values())} for training ({train_s:.1f} s)")
    print(
        "fences         ", evaluate.tally(window_ms, window, flags).summary().replace("\n", "\n  ")
    )

    by_class = defaultdict(list)
    for s in training:
        by_class[s.device_class].append(s.features)
    for contamination in ("auto", 0.001):
        forests = {
            cls: IsolationForest(
                n_estimators=args.trees, contamination=contamination, random_state=0
            ).fit(np.array(x))
            for cls, x in by_class.items()
        }
        predicted: dict[int, bool] = {}
        for cls, forest in forests.items():
            idx = [i for i, s in enumerate(window) if s.device_class == cls]
            marks = forest.predict(np.array([window[i].features for i in idx])) == -1
            predicted.update(zip(idx, marks.tolist(), strict=True))
        result = evaluate.tally(window_ms, window, [predicted[i] for i in range(len(window))])
        print(f"iforest {contamination!s:<6}", result.summary().replace("\n", "\n  "))

    cls = "THERMOSTAT"
    sample = next(s for s in window if s.device_class == cls)
    forest = forests[cls]
    state = DeviceState(
        last_seen_ms=sample.ts_ms - 60_000,
        last_good=LastGood(sample.ts_ms - 60_000, 3.3, True),
        stats=PowerStats(500, 1.8, 800.0),
    )
    reading = device.Telemetry("d", sample.ts_ms, 3.4, True, True, False, "c", CAUSE)
    judged = _per_reading_us(lambda: anomaly.judge(state, reading, model.classes[cls]), 20_000)
    print(f"fences: features + score of one reading (functions.anomaly.judge): {judged:.1f} µs")
    scored = _per_reading_us(lambda: model.classes[cls].scorer.score(sample.features), 20_000)
    print(f"fences: score only: {scored:.1f} µs")
    one = _per_reading_us(lambda: forest.score_samples(np.array([sample.features])), 200)
    print(f"iforest ({args.trees} trees) score_samples of one row: {one:.0f} µs")
    batch = np.array([s.features for s in window if s.device_class == cls][:1000])
    batched = _per_reading_us(lambda: forest.score_samples(batch), 5) / len(batch)
    print(f"iforest score_samples in batches of {len(batch)}: {batched:.1f} µs a row")


if __name__ == "__main__":
    main()

"""Evaluate a model on a held-out window with a faulty firmware rollout injected.

A share of the IoT devices is "upgraded" to `FAULTY_FIRMWARE` at the window's start; from then
on each of their readings starts a fault with some chance: a power spike, a value stuck at the
last reading's for a few readings, or a burst (an extra report seconds after one). The faulty
readings are labelled; the whole dataset is replayed through the device stage's transition (so
the window's state is warm) and the window's readings scored. Precision and recall are over
readings; a PNG shows the scores over time.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from functions import anomaly, device
from gridstream.models import dataset, files, train
from schemas.models import POWER_LIMITS_KW, DeviceClass
from state.rollout import RolloutState

FAULTY_FIRMWARE = "9.9.9-faulty"
FAULT_KINDS = ("spike", "stuck", "burst")
STUCK_RUN = 5  # readings a stuck value lasts
BURST_GAP_MS = 2_000  # the extra report of a burst comes this soon after the real one


@dataclasses.dataclass(frozen=True)
class Faults:
    """Which devices get the faulty firmware (a share of the IoT fleet) and how often a fault
    starts on one of their readings."""

    device_share: float = 0.1
    rate: float = 0.05
    seed: int = 7


@dataclasses.dataclass(frozen=True)
class Result:
    """The evaluation's counts over the window's readings, and its figures."""

    window_ms: tuple[int, int]
    readings: int
    true_positives: int
    false_positives: int
    false_negatives: int
    recall_by_kind: Mapping[str, float]
    faulty_devices: int
    false_positives_on_faulty: int  # mostly the reading after a spike: its ramp back down
    rollout_alerts: Mapping[str, int]  # firmware version: when its faulty-rollout alert rose

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 0.0

    @property
    def recall(self) -> float:
        faulty = self.true_positives + self.false_negatives
        return self.true_positives / faulty if faulty else 0.0

    def summary(self) -> str:
        """The figures as a few printable lines."""
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.recall_by_kind.items()))
        rollouts = ", ".join(
            f"{version} {(ts - self.window_ms[0]) / 60_000:.0f} min into the window"
            for version, ts in sorted(self.rollout_alerts.items())
        )
        return (
            f"window {self.window_ms[0]}..{self.window_ms[1]}: {self.readings} readings, "
            f"{self.faulty_devices} devices on {FAULTY_FIRMWARE}, "
            f"{self.true_positives + self.false_negatives} faulty\n"
            f"precision {self.precision:.3f}  recall {self.recall:.3f}  "
            f"(TP {self.true_positives}, FP {self.false_positives}, FN {self.false_negatives})\n"
            f"recall by fault: {kinds}; {self.false_positives_on_faulty} of the false positives "
            f"are on {FAULTY_FIRMWARE} devices (such as the reading after a spike, ramping back)\n"
            f"faulty-rollout alerts: {rollouts or 'none'}"
        )


def _faulty(event: device.Telemetry, **changes: Any) -> device.Telemetry:
    return dataclasses.replace(event, **changes)


def _inject_device(
    rows: list[dataset.Row], cls: str, from_ms: int, rng: random.Random, rate: float
) -> list[dataset.Row]:
    """One device's rows with the faulty firmware from `from_ms` on, faults injected."""
    spike_kw = POWER_LIMITS_KW[DeviceClass(cls)][1] * 0.9
    out: list[dataset.Row] = []
    stuck_left, last_kw = 0, 0.0
    for row in rows:
        event = row.event
        if not isinstance(event, device.Telemetry) or event.ts_ms < from_ms:
            out.append(row)
            if isinstance(event, device.Telemetry):
                last_kw = event.power_kw
            continue
        row = dataclasses.replace(row, firmware=FAULTY_FIRMWARE)
        if stuck_left == 0 and rng.random() < rate:
            kind = rng.choice(FAULT_KINDS)
            if kind == "spike":
                row = dataclasses.replace(row, event=_faulty(event, power_kw=spike_kw), fault=kind)
            elif kind == "stuck" and last_kw != 0.0:
                stuck_left = STUCK_RUN
            elif kind == "burst":
                kafka_ts, kind_order, partition, offset = row.arrival
                extra = _faulty(event, ts_ms=event.ts_ms + BURST_GAP_MS)
                arrival = (kafka_ts + BURST_GAP_MS, kind_order, partition, offset)
                out.append(row)
                row = dataclasses.replace(row, arrival=arrival, event=extra, fault=kind)
        if stuck_left:
            stuck_left -= 1
            row = dataclasses.replace(row, event=_faulty(event, power_kw=last_kw), fault="stuck")
        assert isinstance(row.event, device.Telemetry)
        last_kw = row.event.power_kw
        out.append(row)
    return out


def inject(
    rows: Mapping[str, list[dataset.Row]], from_ms: int, faults: Faults
) -> dict[str, list[dataset.Row]]:
    """`rows` with `faults.device_share` of the IoT devices on the faulty firmware from
    `from_ms` on, their faulty readings labelled with the fault's kind."""
    rng = random.Random(faults.seed)  # noqa: S311 - which readings go wrong, not a secret
    iot = sorted(d for d, r in rows.items() if any(row.firmware for row in r))
    chosen = set(rng.sample(iot, max(1, round(len(iot) * faults.device_share)))) if iot else set()
    out = dict(rows)
    for device_id in sorted(chosen):
        cls = train.class_of(rows[device_id])
        out[device_id] = _inject_device(rows[device_id], cls, from_ms, rng, faults.rate)
    return out


def held_out(
    data_dir: Path,
    model: files.LoadedModel,
    faults: Faults,
    progress: train.Progress | None = None,
) -> tuple[tuple[int, int], list[train.Scored]]:
    """The window after the model's training range, and its readings' features with `faults`
    injected (the dataset replayed from its start, so the window's state is warm)."""
    _, split = model.metadata["training_range_ms"]
    rows = dataset.read(data_dir)
    end = train.time_range(rows)[1]
    if split > end:
        raise dataset.DatasetError(
            f"{data_dir} has no readings after the model's training range (ends {split}): "
            "train with a holdout (`gridstream train --holdout 0.2`) or evaluate on newer data"
        )
    norms = {cls: m.norms for cls, m in model.classes.items()}
    scored = train.replay(inject(rows, split, faults), norms, progress)
    return (split, end), [s for s in scored if s.ts_ms >= split]


def rollout_alerts(
    window: list[train.Scored], flags: list[bool], policy: anomaly.RolloutPolicy
) -> dict[str, int]:
    """When each firmware version's faulty-rollout alert first rose over the window's verdicts
    (`functions.anomaly.track_rollout`, per version, in event time)."""
    states: dict[str, RolloutState] = {}
    raised: dict[str, int] = {}
    for s, flagged in sorted(zip(window, flags, strict=True), key=lambda pair: pair[0].ts_ms):
        if s.firmware is None:
            continue
        step = anomaly.track_rollout(states.get(s.firmware), flagged, s.ts_ms, policy)
        states[s.firmware] = step.state
        if step.alert:
            raised.setdefault(s.firmware, s.ts_ms)
    return raised


def tally(
    window_ms: tuple[int, int],
    window: list[train.Scored],
    flags: list[bool],
    policy: anomaly.RolloutPolicy | None = None,
) -> Result:
    """Precision and recall of `flags` (one per reading of `window`) against the faults, and
    the faulty-rollout alerts they raise."""
    counts: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    tp = fp = fn = fp_faulty = 0
    for s, flagged in zip(window, flags, strict=True):
        if s.fault is not None:
            counts[s.fault] += 1
            hits[s.fault] += flagged
        tp += flagged and s.fault is not None
        fp += flagged and s.fault is None
        fn += not flagged and s.fault is not None
        fp_faulty += flagged and s.fault is None and s.firmware == FAULTY_FIRMWARE
    faulty_devices = len({s.device_id for s in window if s.firmware == FAULTY_FIRMWARE})
    return Result(
        window_ms, len(window), tp, fp, fn, {k: hits[k] / n for k, n in counts.items()},
        faulty_devices, fp_faulty, rollout_alerts(window, flags, policy or anomaly.RolloutPolicy()),
    )  # fmt: skip


def evaluate(
    data_dir: Path,
    model_dir: Path,
    faults: Faults | None = None,
    plot: Path | None = None,
    progress: train.Progress | None = None,
) -> Result:
    """Inject `faults` into the window the model held out, score it, count hits and misses."""
    model = train.load(model_dir)
    window_ms, window = held_out(data_dir, model, faults or Faults(), progress)
    scorers = [model.classes[s.device_class].scorer for s in window]
    scores = [scorer.score(s.features) for scorer, s in zip(scorers, window, strict=True)]
    flags = [v > scorer.threshold for v, scorer in zip(scores, scorers, strict=True)]
    result = tally(window_ms, window, flags)
    if plot is not None:
        _plot(window, scores, plot, result, model.metadata["params"]["threshold"])
    return result


def _plot(
    window: list[train.Scored], scores: list[float], path: Path, result: Result, threshold: float
) -> None:
    """Scores over time: normal readings grey, injected faults red, the threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = result.window_ms[0]
    fig, ax = plt.subplots(figsize=(11, 5))
    for label, color, pick in (
        ("normal readings", "0.6", lambda s: s.fault is None),
        ("injected faults", "tab:red", lambda s: s.fault is not None),
    ):
        xs = [(s.ts_ms - start) / 3_600_000 for s in window if pick(s)]
        ys = [v for s, v in zip(window, scores, strict=True) if pick(s)]
        ax.scatter(xs, ys, s=4, c=color, label=label, alpha=0.7)
    ax.axhline(threshold, color="k", linestyle="--", linewidth=1, label="threshold")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(-0.1, max([threshold, *scores]) * 2)  # the strangest points inside the frame
    ax.set_xlabel("hours into the held-out window")
    ax.set_ylabel("anomaly score (band widths outside)")
    ax.set_title(
        f"Held-out window, {FAULTY_FIRMWARE} on {result.faulty_devices} devices: "
        f"precision {result.precision:.2f}, recall {result.recall:.2f}"
    )
    ax.legend(loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)

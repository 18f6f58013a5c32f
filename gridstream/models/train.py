"""Train the per-class anomaly model on a replay dataset, save it with skops, load it back.

The model of each device class is a `Fences` estimator over the features of
`functions.anomaly`: per feature, the band between two extreme quantiles of training, and a
reading is anomalous when a feature lies more than `threshold` band widths outside. It is
chosen over an IsolationForest on numbers (`benchmarks/anomaly_bench.py`, the figures in
`docs/dataset.md`): it finds the injected stuck values and bursts the forest misses, with far
fewer false alarms, and scores a reading live in a few µs where the forest's `score_samples`
takes milliseconds for one row.

`load(model_dir)` reads the skops file through the allow-list and returns the scorers, or
raises a `ModelError` subclass that says what is wrong. `train` also writes each class's fitted
bands as plain numbers (`fences.json`), which is what the live job reads
(`gridstream.models.files.load_fences`): scikit-learn's import hangs in PyFlink's thread-mode
workers (see that module).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin

from functions import anomaly, device
from functions.wetbulb import RegionMode
from gridstream.models import dataset
from gridstream.models.files import (
    FENCES_FILE,
    METADATA_FILE,
    MODEL_FILE,
    LoadedModel,
    ModelError,
    ModelUnreadableError,
    UntrustedModelError,
    norms_of,
    read_metadata,
)
from state.device import DeviceState

FORMAT = 1
DEFAULT_HOLDOUT = 0.2
LOW_QUANTILE, HIGH_QUANTILE = 0.001, 0.999
DEFAULT_THRESHOLD = 1.0
# The only types a model file may hold beyond what skops trusts by default.
TRUSTED_TYPES = frozenset({"gridstream.models.train.Fences"})

Progress = Callable[[str], None]


class Fences(OutlierMixin, BaseEstimator):
    """Per-feature bands between two quantiles of training, widened to `min_widths`; scikit-
    learn's outlier API (`score_samples`: higher is more normal) over `functions.anomaly.Fence`."""

    def __init__(
        self,
        low_quantile: float = LOW_QUANTILE,
        high_quantile: float = HIGH_QUANTILE,
        min_widths: tuple[float, ...] = anomaly.MIN_WIDTHS,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.low_quantile = low_quantile
        self.high_quantile = high_quantile
        self.min_widths = min_widths
        self.threshold = threshold

    def fit(self, x: Any, y: Any = None) -> Fences:
        """Learn each feature's band from the rows of `x`."""
        del y
        data = np.asarray(x, dtype=np.float64)
        self.low_ = np.quantile(data, self.low_quantile, axis=0)
        self.high_ = np.quantile(data, self.high_quantile, axis=0)
        self.width_ = np.maximum(self.high_ - self.low_, np.asarray(self.min_widths))
        self.n_features_in_ = data.shape[1]
        return self

    def fence(self) -> anomaly.Fence:
        """The fitted bands as the live scorer (plain tuples, no numpy on the hot path)."""
        return anomaly.Fence(
            tuple(float(v) for v in self.low_),
            tuple(float(v) for v in self.high_),
            tuple(float(v) for v in self.width_),
            float(self.threshold),
        )

    def score_samples(self, x: Any) -> Any:
        """Minus each row's score (scikit-learn's sign: lower is stranger)."""
        fence = self.fence()
        return np.array([-fence.score(row) for row in np.asarray(x, dtype=np.float64).tolist()])

    def decision_function(self, x: Any) -> Any:
        """Negative for an anomaly."""
        return self.score_samples(x) + self.threshold

    def predict(self, x: Any) -> Any:
        """-1 for an anomaly, 1 for a normal row."""
        return np.where(self.decision_function(x) < 0, -1, 1)


@dataclasses.dataclass(frozen=True)
class Scored:
    """One reading's features, as the replay computed them, with what evaluation needs."""

    device_id: str
    device_class: str
    firmware: str | None
    ts_ms: int
    features: anomaly.Features
    fault: str | None


def _readings(rows: Mapping[str, list[dataset.Row]]) -> Iterator[dataset.Row]:
    for device_rows in rows.values():
        for row in device_rows:
            if isinstance(row.event, device.Telemetry):
                yield row


def class_of(device_rows: list[dataset.Row]) -> str:
    """A device's class as its newest reading gives it (a tombstone carries none)."""
    return next(
        r.device_class for r in reversed(device_rows) if isinstance(r.event, device.Telemetry)
    )


def learn_norms(rows: Mapping[str, list[dataset.Row]], until_ms: int) -> dict[str, anomaly.Norms]:
    """Each class's median power (overall and per region, over good readings) and nominal
    reporting interval (the median gap between a device's readings), from before `until_ms`."""
    region_of = {
        device_id: row.event.info.region_id
        for device_id, device_rows in rows.items()
        for row in device_rows
        if isinstance(row.event, device.RegistryUpdate)
    }  # the newest record of each device (rows are in arrival order)
    power: dict[str, list[float]] = defaultdict(list)
    regional: dict[tuple[str, str], list[float]] = defaultdict(list)
    gaps: dict[str, list[int]] = defaultdict(list)
    for device_id, device_rows in rows.items():
        times = []
        for row in device_rows:
            event = row.event
            if not isinstance(event, device.Telemetry) or event.ts_ms >= until_ms:
                continue
            times.append(event.ts_ms)
            if event.good:
                power[row.device_class].append(event.power_kw)
                if device_id in region_of:
                    regional[(row.device_class, region_of[device_id])].append(event.power_kw)
        if times:
            times.sort()
            gaps[class_of(device_rows)] += [b - a for a, b in itertools.pairwise(times) if b > a]
    norms = {}
    for cls, values in power.items():
        medians = {r: statistics.median(v) for (c, r), v in regional.items() if c == cls}
        interval = statistics.median(gaps[cls]) if gaps[cls] else 60_000.0
        norms[cls] = anomaly.Norms(statistics.median(values), medians, float(interval))
    return norms


def replay(
    rows: Mapping[str, list[dataset.Row]],
    norms: Mapping[str, anomaly.Norms],
    progress: Progress | None = None,
) -> list[Scored]:
    """Every reading's features, each device's inputs run through the device stage's own
    transition (`functions.device.step`) so the state is the one live scoring sees. A reading
    of a device with no registry record, of a class without norms, or a duplicate, has none."""
    out: list[Scored] = []
    for done, (device_id, device_rows) in enumerate(rows.items(), 1):
        state: DeviceState | None = None
        for row in device_rows:
            event = row.event
            if isinstance(event, device.Telemetry) and state is not None and state.info:
                norm = norms.get(state.info.device_class.value)
                x = None if norm is None else anomaly.features(state, event, norm)
                if x is not None:
                    cls = state.info.device_class.value
                    out.append(Scored(device_id, cls, row.firmware, event.ts_ms, x, row.fault))
            ctx = device.Context(now_ms=event.ts_ms, region=RegionMode.NORMAL)
            state = device.step(state, event, ctx).state
        if progress is not None and (done % max(1, len(rows) // 10) == 0 or done == len(rows)):
            progress(f"features: {done}/{len(rows)} devices, {len(out)} readings")
    return out


def time_range(rows: Mapping[str, list[dataset.Row]]) -> tuple[int, int]:
    """The earliest and latest reading time in `rows`."""
    times = [row.event.ts_ms for row in _readings(rows)]
    if not times:
        raise dataset.DatasetError("the dataset holds no readings")
    return min(times), max(times)


def _libraries() -> dict[str, str]:
    names = ("scikit-learn", "skops", "numpy", "pyarrow")
    return {name: importlib_metadata.version(name) for name in names}


def train(
    data_dir: Path,
    out_dir: Path,
    holdout: float = DEFAULT_HOLDOUT,
    threshold: float = DEFAULT_THRESHOLD,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit one model per device class on the earliest `1 - holdout` of the dataset's time
    range and save it with its metadata in `out_dir`; returns the metadata."""
    import skops.io as sio

    say = progress or (lambda _: None)
    say(f"reading {data_dir}")
    rows = dataset.read(data_dir)
    start, end = time_range(rows)
    split = end + 1 if holdout <= 0 else start + int((end - start) * (1.0 - holdout))
    count = sum(len(r) for r in rows.values())
    say(f"read {count} rows of {len(rows)} devices; training on readings before {split}")
    norms = learn_norms(rows, split)
    scored = [s for s in replay(rows, norms, say) if s.ts_ms < split]
    by_class: dict[str, list[anomaly.Features]] = defaultdict(list)
    for s in scored:
        by_class[s.device_class].append(s.features)
    models = {cls: Fences(threshold=threshold).fit(x) for cls, x in sorted(by_class.items())}
    out_dir.mkdir(parents=True, exist_ok=True)
    sio.dump(models, out_dir / MODEL_FILE)
    meta = {
        "format": FORMAT,
        "model": "fences",
        "features": {"names": list(anomaly.FEATURE_NAMES), "version": anomaly.FEATURES_VERSION},
        "params": {
            "low_quantile": LOW_QUANTILE,
            "high_quantile": HIGH_QUANTILE,
            "threshold": threshold,
        },
        "training_range_ms": [start, split],
        "data_range_ms": [start, end],
        "schema_ids_seen": sorted(
            {r.schema_id for r in _readings(rows) if r.schema_id is not None}
        ),
        "manifest": _manifest_summary(dataset.manifest(data_dir)),
        "rows": {cls: len(x) for cls, x in sorted(by_class.items())},
        "libraries": _libraries(),
        "norms": {cls: dataclasses.asdict(n) for cls, n in sorted(norms.items())},
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    fences = {cls: dataclasses.asdict(est.fence()) for cls, est in models.items()}
    (out_dir / FENCES_FILE).write_text(json.dumps(fences, indent=2, sort_keys=True) + "\n")
    say(f"saved {len(models)} class models to {out_dir}")
    return meta


def _manifest_summary(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The replay manifest's time range and schema versions, when there is a manifest."""
    if manifest is None:
        return None
    keep = ("from", "to", "from_ms", "to_ms", "schemas")
    return {k: v for k, v in manifest.items() if k in keep}


def load(model_dir: Path) -> LoadedModel:
    """The model in `model_dir`, or a `ModelError` saying why it cannot be used."""
    import skops.io as sio

    meta = read_metadata(model_dir)
    path = model_dir / MODEL_FILE
    try:
        untrusted = set(sio.get_untrusted_types(file=path))
        extra = untrusted - TRUSTED_TYPES
        if extra:
            raise UntrustedModelError(
                f"{path} holds types outside the allow-list: {sorted(extra)}; it is not loaded "
                "(retrain it with `gridstream train`, or review and add the types to TRUSTED_TYPES)"
            )
        fitted = sio.load(path, trusted=sorted(untrusted))
    except ModelError:
        raise
    except Exception as err:  # skops raises many kinds on a corrupt file
        raise ModelUnreadableError(
            f"cannot read {path}: {err!r}; retrain it with `gridstream train`"
        ) from err
    try:
        classes = {
            cls: anomaly.ClassModel(norms_of(meta["norms"][cls]), est.fence())
            for cls, est in fitted.items()
        }
    except (AttributeError, KeyError, TypeError) as err:
        raise ModelUnreadableError(f"{model_dir} is not a GridStream model: {err!r}") from err
    return LoadedModel(classes, meta)

"""The model folder as the live job reads it, without scikit-learn: the metadata and each
class's fitted bands as plain numbers (`fences.json`, written by `train` beside the skops file
from the same estimators).

The device stage cannot load the skops file: unpickling `Fences` imports scikit-learn, whose
import of SciPy's extension modules hangs in PyFlink's thread-mode workers (seen in a
MiniCluster: the task thread stuck in `scipy.spatial`'s import, for good). Numbers in JSON
are also the least a worker has to trust. `gridstream evaluate` and data scientists use the
skops file (`gridstream.models.train.load`, with its allow-list).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from functions import anomaly

MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
FENCES_FILE = "fences.json"


class ModelError(Exception):
    """A model that cannot be used: the live job runs on rules only, and alerts."""


class ModelUnreadableError(ModelError):
    """The model folder or one of its files is missing or cannot be read."""


class UntrustedModelError(ModelError):
    """The model file holds types outside the allow-list: it is not loaded."""


class FeatureMismatchError(ModelError):
    """The model was trained on other features (names or version) than this code computes."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready to score: one `ClassModel` per device class, and its metadata."""

    classes: Mapping[str, anomaly.ClassModel]
    metadata: Mapping[str, Any]

    def for_class(self, device_class: str) -> anomaly.ClassModel | None:
        """The class's model, or None for a class the model was not trained on."""
        return self.classes.get(device_class)


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """The model's metadata, refused when it was trained on other features than this code's."""
    path = model_dir / METADATA_FILE
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelUnreadableError(
            f"cannot read {path}: {err}; "
            f"train a model with `gridstream train --data DIR --out {model_dir}`"
        ) from err
    features = meta.get("features", {})
    names, version = features.get("names"), features.get("version")
    if names != list(anomaly.FEATURE_NAMES) or version != anomaly.FEATURES_VERSION:
        raise FeatureMismatchError(
            f"{model_dir} was trained on features v{version} {names}; this code computes "
            f"v{anomaly.FEATURES_VERSION} {list(anomaly.FEATURE_NAMES)}: "
            "retrain it with `gridstream train`"
        )
    return meta


def norms_of(raw: Mapping[str, Any]) -> anomaly.Norms:
    """A class's norms as the metadata holds them."""
    return anomaly.Norms(
        float(raw["median_kw"]),
        {str(k): float(v) for k, v in raw["region_median_kw"].items()},
        float(raw["interval_ms"]),
    )


def _fence(raw: Mapping[str, Any]) -> anomaly.Fence:
    fence = anomaly.Fence(
        tuple(map(float, raw["low"])),
        tuple(map(float, raw["high"])),
        tuple(map(float, raw["width"])),
        float(raw["threshold"]),
    )
    if not len(fence.low) == len(fence.high) == len(fence.width) == len(anomaly.FEATURE_NAMES):
        raise ValueError(f"bands for {len(fence.low)} features, not {len(anomaly.FEATURE_NAMES)}")
    return fence


def load_fences(model_dir: Path) -> LoadedModel:
    """The model in `model_dir` from its metadata and `fences.json`, or a `ModelError`."""
    meta = read_metadata(model_dir)
    path = model_dir / FENCES_FILE
    try:
        raw = json.loads(path.read_text())
        classes = {
            cls: anomaly.ClassModel(norms_of(meta["norms"][cls]), _fence(fence))
            for cls, fence in raw.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelUnreadableError(
            f"cannot read {path}: {err!r}; retrain with `gridstream train --out {model_dir}`"
        ) from err
    return LoadedModel(classes, meta)

"""Fuzzer bytes as a record any producer of the topic could write: valid Avro, any values.

Mutating raw wire bytes rarely keeps the Avro intact, so the validation behind it (the models'
ranges, the telemetry fast path) is reached only by luck. `value_of` instead reads the bytes
with atheris' `FuzzedDataProvider` to pick a schema version of the topic and a value for every
field of it: the topic's valid example's value for most fields (the bytes run out: all of
them), for the others values leaning towards what range checks turn on (limits, NaN, odd
whitespace, enum symbols, ids). The project's own encoder writes the record.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import atheris

from gridstream import topics
from schemas import catalog, models, serde
from schemas.examples import EXAMPLE_NOW_MS, encode_unvalidated, example_data

KEY_FIELDS: Mapping[str, str] = {  # the field a topic is keyed by (DESIGN.md "Topics")
    topics.SCADA_TELEMETRY: "device_id",
    topics.IOT_TELEMETRY: "device_id",
    topics.DEVICE_REGISTRY: "device_id",
    topics.WEATHER: "region_id",
    topics.DR_EVENTS: "event_id",
    topics.OPERATOR_APPROVALS: "recommendation_id",
}

ODD_TEXT = ("\u00a0", "\u0085", "\u001c", "\u3000", "\u2028", "\u180e", " ", "\t", "")
_ENUMS = (
    models.DeviceClass, models.PriorityLevel, models.Action, models.EventStatus,
    models.ApprovalDecision,
)  # fmt: skip
_AT_LIMITS = ("x" * models.ID_CHARS, "x" * (models.ID_CHARS + 1), "x" * models.LABEL_CHARS)
_TEXT = tuple(sorted({m.value for e in _ENUMS for m in e} | {*ODD_TEXT, "4.2.1", *_AT_LIMITS}))
_LONGS = (
    models.MIN_TS_MS, models.MAX_TS_MS, EXAMPLE_NOW_MS, EXAMPLE_NOW_MS + models.MAX_FUTURE_SKEW_MS,
    EXAMPLE_NOW_MS + 5_000, EXAMPLE_NOW_MS + 5_001, 0, -1, 2**31 - 1, 2**63 - 1, -(2**63),
)  # fmt: skip
_LIMITS = {x for pair in models.POWER_LIMITS_KW.values() for x in pair} | {
    x for r in (models.PERCENT_RANGE, models.TEMP_C_RANGE, models.VOLTAGE_KV_RANGE) for x in r
}
_DOUBLES = (*sorted(_LIMITS), math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e308)


def _pick(fdp: Any, options: Sequence[Any]) -> Any:
    return options[fdp.ConsumeIntInRange(0, len(options) - 1)]


def _text(fdp: Any, examples: Sequence[str]) -> str:
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return str(_pick(fdp, examples))
    if kind == 1:
        return str(_pick(fdp, _TEXT))
    if kind == 2:  # an example with odd characters around or inside it
        example, odd = str(_pick(fdp, examples)), str(_pick(fdp, ODD_TEXT))
        cut = fdp.ConsumeIntInRange(0, len(example))
        return example[:cut] + odd + example[cut:]
    return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 140)))


def _value(fdp: Any, schema: Any, examples: Sequence[str]) -> Any:
    """A value of Avro type `schema` (JSON), within what the type can encode."""
    if isinstance(schema, list):  # a union: pick a branch
        return _value(fdp, _pick(fdp, schema), examples)
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind == "record":
        return {f["name"]: _value(fdp, f["type"], examples) for f in schema["fields"]}
    if kind == "array":
        return [_value(fdp, schema["items"], examples) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    chosen: Any
    if kind == "null":
        chosen = None
    elif kind == "boolean":
        chosen = fdp.ConsumeBool()
    elif kind in ("int", "long"):
        bits = 32 if kind == "int" else 64
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        chosen = _pick(fdp, _LONGS) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(low, high)
        chosen = min(max(chosen, low), high)
    elif kind in ("float", "double"):
        chosen = _pick(fdp, _DOUBLES) if fdp.ConsumeBool() else fdp.ConsumeFloat()
    elif kind == "bytes":
        chosen = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32))
    else:  # string (enums travel as strings)
        chosen = _text(fdp, examples)
    return chosen


@functools.cache
def _ids() -> serde.StaticSchemas:
    return serde.StaticSchemas.from_catalog(catalog.default())


def value_of(topic: str, data: bytes) -> tuple[bytes, dict[str, Any]]:
    """A wire-format record of `topic` made from `data`, and the fields it holds."""
    fdp = atheris.FuzzedDataProvider(data)
    chain = catalog.default().chain(topic)
    version = _pick(fdp, chain.versions)
    schema_id = _ids().schema_id(chain.subject, version.text)
    example = example_data(models.MODELS[topic])
    examples = [v for v in example.values() if isinstance(v, str)] or ["x"]
    record = {  # most fields kept from the valid example, so the others decide the outcome
        f["name"]: example[f["name"]]
        if f["name"] in example and fdp.ConsumeIntInRange(0, 3) < 3
        else _value(fdp, f["type"], examples)
        for f in version.schema["fields"]
    }
    return encode_unvalidated(version, schema_id, record), record

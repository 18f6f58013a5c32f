"""A compiled check of decoded telemetry: the models' physical ranges as plain comparisons.

A reading is the one record every device sends every interval, so the decoder does not build
a Pydantic model for it: the Avro reader schema already gives each field its type, and
`passes(model, record, now_ms)` says, in a few comparisons over the decoded dict, that
`models.validate` would accept it. It is conservative: anything it is not sure of (a range
missed, NaN or infinity, an unexpected type, whitespace in an id) is False, and the caller
then validates with Pydantic, which rejects with its own message (the dead letter's reason)
or, rarely, accepts. So the check can only send a record down the slow path, never let
through what the models refuse; `tests/unit/schemas/test_telemetry_check.py` holds both
to the same answers on a corpus.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from schemas.models import (
    ID_CHARS,
    LABEL_CHARS,
    MAX_FUTURE_SKEW_MS,
    MAX_TS_MS,
    MIN_TS_MS,
    PERCENT_RANGE,
    POWER_LIMITS_KW,
    SETPOINT_C_RANGE,
    TEMP_C_RANGE,
    VOLTAGE_KV_RANGE,
    DeviceClass,
    IotTelemetry,
    ScadaTelemetry,
    TopicRecord,
)

# What Pydantic's `^\S+$` (Rust regex: Unicode White_Space) refuses in an id; Python's own
# \s would also refuse U+001C-U+001F, which the models accept.
_SPACE = re.compile(
    r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
).search
_SCADA_LIMITS = {
    c.value: POWER_LIMITS_KW[c]
    for c in (DeviceClass.FEEDER_BREAKER, DeviceClass.LINE_SWITCH, DeviceClass.INDUSTRIAL_LOAD)
}
_IOT_LIMITS = {
    c.value: POWER_LIMITS_KW[c]
    for c in (
        DeviceClass.THERMOSTAT,
        DeviceClass.EV_CHARGER,
        DeviceClass.POOL_PUMP,
        DeviceClass.WATER_HEATER,
    )
}
_SCADA_FIELDS = frozenset(ScadaTelemetry.model_fields)
_IOT_FIELDS = frozenset(IotTelemetry.model_fields)
_QUALITY_FIELDS = frozenset(("invalid", "not_topical", "substituted", "blocked", "overflow"))


def _id(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= ID_CHARS and _SPACE(value) is None


def _event_time(value: Any, now_ms: int) -> bool:
    return type(value) is int and MIN_TS_MS <= value <= min(MAX_TS_MS, now_ms + MAX_FUTURE_SKEW_MS)


def _optional(value: Any, limits: tuple[float, float]) -> bool:
    """None, or a float within `limits` (False for NaN and infinity: no comparison holds)."""
    return value is None or (type(value) is float and limits[0] <= value <= limits[1])


def _reading(
    record: Mapping[str, Any],
    fields: frozenset[str],
    limits: Mapping[str, tuple[float, float]],
    now_ms: int,
) -> bool:
    """The fields every reading has: the record's shape, ids, event time, power in class."""
    bounds = limits.get(record["device_class"])
    kw = record["power_kw"]
    return (
        record.keys() == fields
        and _id(record["device_id"])
        and _id(record["correlation_id"])
        and _event_time(record["ts_ms"], now_ms)
        and bounds is not None
        and type(kw) is float
        and bounds[0] <= kw <= bounds[1]
    )


def _scada(record: Mapping[str, Any], now_ms: int) -> bool:
    quality = record["quality"]
    return (
        _reading(record, _SCADA_FIELDS, _SCADA_LIMITS, now_ms)
        and _optional(record["voltage_kv"], VOLTAGE_KV_RANGE)
        and (record["switch_closed"] is None or type(record["switch_closed"]) is bool)
        and type(quality) is dict
        and quality.keys() == _QUALITY_FIELDS
        and all(type(bit) is bool for bit in quality.values())
    )


def _iot(record: Mapping[str, Any], now_ms: int) -> bool:
    firmware = record["firmware_version"]
    return (
        _reading(record, _IOT_FIELDS, _IOT_LIMITS, now_ms)
        and type(record["is_on"]) is bool
        and type(record["customer_override"]) is bool
        and type(firmware) is str
        and 0 < len(firmware) <= LABEL_CHARS
        and _optional(record["setpoint_c"], SETPOINT_C_RANGE)
        and _optional(record["measured_temp_c"], TEMP_C_RANGE)
        and _optional(record["ev_soc_pct"], PERCENT_RANGE)
    )


_CHECKS: Mapping[type[TopicRecord], Callable[[Mapping[str, Any], int], bool]] = {
    ScadaTelemetry: _scada,
    IotTelemetry: _iot,
}


def passes(model: type[TopicRecord], record: Mapping[str, Any], now_ms: int) -> bool:
    """True when `models.validate(model, record, now_ms)` certainly accepts `record`, a dict
    as the Avro reader schema decodes it; False when it may not (validate to know)."""
    check = _CHECKS.get(model)
    try:
        return check is not None and check(record, now_ms)
    except (KeyError, TypeError, AttributeError):  # not shaped as the schema says: ask Pydantic
        return False

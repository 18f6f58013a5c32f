"""The Pydantic models: they mirror the newest schemas and refuse physically absurd records."""

from __future__ import annotations

import enum
import io
import types
import typing
from typing import Any

import fastavro
import pydantic
import pytest

from gridstream import topics
from schemas import catalog, ids, models, serde
from schemas.examples import EXAMPLE_NOW_MS, example, example_data
from schemas.models import MAX_FUTURE_SKEW_MS, MODELS, TopicRecord

pytestmark = pytest.mark.unit

TOPIC_MODELS = [pytest.param(model, id=topic) for topic, model in MODELS.items()]
PRIMITIVES: dict[str, type] = {
    "string": str,
    "long": int,
    "int": int,
    "double": float,
    "float": float,
    "boolean": bool,
    "bytes": bytes,
}


def unwrap(annotation: Any) -> tuple[bool, Any]:
    """(whether None is allowed, the annotation without Annotated and None)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return True, unwrap(rest[0])[1]
    return False, annotation


def agrees(avro_type: Any, annotation: Any) -> bool:
    """Whether a non-null Avro type and a Python annotation describe the same values."""
    annotation = unwrap(annotation)[1]
    if isinstance(avro_type, str):
        python = PRIMITIVES[avro_type]
        if typing.get_origin(annotation) is typing.Literal:
            return python is str and all(isinstance(a, str) for a in typing.get_args(annotation))
        is_enum = isinstance(annotation, type) and issubclass(annotation, enum.StrEnum)
        return annotation is python or (python is str and is_enum)
    if avro_type["type"] == "array":
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        return origin is tuple and args[1] is Ellipsis and agrees(avro_type["items"], args[0])
    if avro_type["type"] == "record":
        return isinstance(annotation, type) and fields_agree(avro_type, annotation) == []
    return agrees(avro_type["type"], annotation)  # a logical type annotates its base type


def fields_agree(schema: dict[str, Any], model: type[pydantic.BaseModel]) -> list[str]:
    """Every disagreement between a record schema and a model, field by field."""
    problems = []
    if [f["name"] for f in schema["fields"]] != list(model.model_fields):
        problems.append(f"{model.__name__}: field names or order differ")
    for field in schema["fields"]:
        info = model.model_fields.get(field["name"])
        if info is None:
            continue
        avro_type = field["type"]
        nullable = isinstance(avro_type, list) and "null" in avro_type
        branches = (
            [t for t in avro_type if t != "null"] if isinstance(avro_type, list) else [avro_type]
        )
        if unwrap(info.annotation)[0] != nullable:
            problems.append(f"{field['name']}: optional in one, required in the other")
        if len(branches) != 1 or not agrees(branches[0], info.annotation):
            problems.append(f"{field['name']}: {avro_type} vs {info.annotation}")
        if ("default" in field) == info.is_required():
            problems.append(f"{field['name']}: a default in one only")
        elif "default" in field:
            default = info.default
            if (list(default) if isinstance(default, tuple) else default) != field["default"]:
                problems.append(f"{field['name']}: defaults {field['default']} vs {default}")
    return problems


@pytest.mark.parametrize("model", TOPIC_MODELS)
def test_each_model_agrees_with_its_newest_schema_field_by_field(
    model: type[TopicRecord],
) -> None:
    """Names, order, optionality, defaults and types match the newest `.avsc`."""
    schema = dict(catalog.default().chain(model.TOPIC).newest.schema)

    assert fields_agree(schema, model) == []


def test_every_topic_has_one_model() -> None:
    """MODELS covers exactly the topics that have schemas."""
    assert set(MODELS) == set(catalog.default().chains)


@pytest.mark.parametrize("model", TOPIC_MODELS)
def test_each_example_round_trips_through_fastavro(model: type[TopicRecord]) -> None:
    """model -> dict -> Avro binary -> dict -> model gives the same record."""
    record = example(model)
    parsed = serde.parse(catalog.default().chain(model.TOPIC).newest.schema)
    buffer = io.BytesIO()

    fastavro.schemaless_writer(buffer, parsed, record.model_dump())
    buffer.seek(0)
    back = models.validate(model, fastavro.schemaless_reader(buffer, parsed, None), EXAMPLE_NOW_MS)

    assert back == record


@pytest.mark.parametrize(
    ("model", "overrides", "field"),
    [
        (models.WeatherObservation, {"relative_humidity_pct": 100.5}, "relative_humidity_pct"),
        (models.WeatherObservation, {"relative_humidity_pct": -1.0}, "relative_humidity_pct"),
        (models.WeatherObservation, {"dry_bulb_temp_c": float("nan")}, "dry_bulb_temp_c"),
        (models.WeatherObservation, {"wbgt_temp_c": float("inf")}, "wbgt_temp_c"),
        (models.IotTelemetry, {"power_kw": float("-inf")}, "power_kw"),
        (models.IotTelemetry, {"power_kw": 30.0}, "power_kw"),
        (models.IotTelemetry, {"device_class": "EV_CHARGER", "power_kw": -25.0}, "power_kw"),
        (models.IotTelemetry, {"device_class": "FEEDER_BREAKER"}, "device_class"),
        (models.IotTelemetry, {"ev_soc_pct": 101.0}, "ev_soc_pct"),
        (models.IotTelemetry, {"device_id": ""}, "device_id"),
        (models.IotTelemetry, {"device_id": "thermo stat"}, "device_id"),
        (models.IotTelemetry, {"ts_ms": EXAMPLE_NOW_MS + MAX_FUTURE_SKEW_MS + 1}, "ts_ms"),
        (models.IotTelemetry, {"ts_ms": 0}, "ts_ms"),
        (models.ScadaTelemetry, {"power_kw": 30_000.5}, "power_kw"),
        (models.ScadaTelemetry, {"device_class": "THERMOSTAT"}, "device_class"),
        (models.DeviceRecord, {"rated_power_kw": 0.0}, "rated_power_kw"),
        (models.DeviceRecord, {"rated_power_kw": 40.0}, "rated_power_kw"),
        (models.DeviceRecord, {"priority_level": "VIP"}, "priority_level"),
        (models.DrEvent, {"end_ts_ms": EXAMPLE_NOW_MS}, "end_ts_ms"),
        (models.DrEvent, {"target_region_ids": []}, "target_region_ids"),
        (models.DrEvent, {"priority": -1}, "priority"),
        (models.DrEvent, {"action": "EXPLODE"}, "action"),
        (models.Recommendation, {"expires_ts_ms": EXAMPLE_NOW_MS}, "expires_ts_ms"),
        (models.Alert, {"device_id": None, "region_id": None}, "device_id"),
        (models.AuditDecision, {"reason_codes": ["BECAUSE"]}, "reason_codes"),
        (
            models.DeviceCommand,
            {"cause": {"source_topic": "dr.events", "source_partition": 0}},
            "source_offset",
        ),
        (models.DeviceCommand, {"cause": {"source_topic": "dr.events"}}, "event_id"),
    ],
)
def test_physically_absurd_or_malformed_records_are_refused(
    model: type[TopicRecord], overrides: dict[str, Any], field: str
) -> None:
    """Each bad value fails validation with an error that names its field."""
    with pytest.raises(pydantic.ValidationError, match=field):
        example(model, **overrides)


def test_event_times_within_the_clock_skew_are_accepted() -> None:
    """A reading up to MAX_FUTURE_SKEW_MS ahead of now is still valid."""
    record = example(models.IotTelemetry, ts_ms=EXAMPLE_NOW_MS + MAX_FUTURE_SKEW_MS)

    assert record.ts_ms == EXAMPLE_NOW_MS + MAX_FUTURE_SKEW_MS


def test_scheduled_times_may_lie_far_in_the_future() -> None:
    """A DR event may start days from now; only its issue time is an event time."""
    week = 7 * 86_400_000
    event = example(
        models.DrEvent, start_ts_ms=EXAMPLE_NOW_MS + week, end_ts_ms=EXAMPLE_NOW_MS + 2 * week
    )

    assert event.start_ts_ms - EXAMPLE_NOW_MS == week


def test_without_a_clock_only_the_absolute_bounds_apply() -> None:
    """Building a model directly checks 2000..2100, not the skew (no clock is read)."""
    data = example_data(models.IotTelemetry, ts_ms=EXAMPLE_NOW_MS + 86_400_000)

    assert models.IotTelemetry(**data).ts_ms == EXAMPLE_NOW_MS + 86_400_000


def test_records_are_immutable() -> None:
    """A validated record cannot be changed afterwards, so it stays valid."""
    record = example(models.IotTelemetry)

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        record.power_kw = 999.0  # type: ignore[misc]


def test_enumerations_use_the_names_of_the_design() -> None:
    """Actions, outcomes, reason codes and priority levels are DESIGN.md's stable names."""
    assert [a.value for a in models.Action] == [
        "SHED", "CURTAIL", "SETPOINT_OFFSET", "RESTORE", "SWITCH_OPEN", "SWITCH_CLOSE"
    ]  # fmt: skip
    assert {"SHED", "CURTAIL", "SETPOINT_OFFSET", "SWITCH_OPEN"} == models.LOAD_REDUCING_ACTIONS
    assert len(models.AuditOutcome) == 8
    assert len(models.ReasonCode) == 11
    assert [p.value for p in models.PriorityLevel] == [
        "LIFE_SAFETY", "CRITICAL", "STANDARD", "DISCRETIONARY"
    ]  # fmt: skip


def test_every_device_class_has_power_limits() -> None:
    """POWER_LIMITS_KW covers each class with min < max."""
    assert set(models.POWER_LIMITS_KW) == set(models.DeviceClass)
    assert all(low < high for low, high in models.POWER_LIMITS_KW.values())


def test_command_ids_are_deterministic_and_depend_on_device_action_and_purpose() -> None:
    """Same inputs, same id; another device, action, purpose or kind, another id."""
    shed = ids.command_id("thermostat-0001", models.Action.SHED, "dr-1#1")

    assert shed == ids.command_id("thermostat-0001", models.Action.SHED, "dr-1#1")
    assert len({
        shed,
        ids.command_id("thermostat-0002", models.Action.SHED, "dr-1#1"),
        ids.command_id("thermostat-0001", models.Action.RESTORE, "dr-1#1"),
        ids.command_id("thermostat-0001", models.Action.SHED, "dr-1#2"),
        ids.recommendation_id("thermostat-0001", models.Action.SHED, "dr-1#1"),
    }) == 5  # fmt: skip
    assert example(models.DeviceCommand, command_id=shed).command_id == shed


def test_topics_of_the_models_are_the_contract_topics() -> None:
    """Each model's TOPIC is a topic of gridstream.topics."""
    assert set(MODELS) == set(topics.INPUTS) | set(topics.OUTPUTS)

"""Pydantic models of every record, one per topic, mirroring the newest `.avsc` field by field.

Models are frozen and validate physical ranges: finite numbers only, relative humidity 0-100 %,
power within the device class's limits (`POWER_LIMITS_KW`), timestamps between 2000 and 2100 and
event times at most `MAX_FUTURE_SKEW_MS` ahead of the `now_ms` given to `validate`, non-empty ids
without whitespace. Enumerations travel as Avro strings and are checked here (see README.md).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

from gridstream import topics

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: nothing this suite reads is older.
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
MAX_FUTURE_SKEW_MS = 5 * 60_000  # device clocks drift; five minutes ahead of now is already a fault
MAX_INT = 2**31 - 1  # Avro int
MAX_LONG = 2**63 - 1  # Avro long
MAX_PAYLOAD_BYTES = 10 * 1024  # dead letters keep this much of the original value
MAX_KEY_BYTES = 1024  # ... of the original key
MAX_HEADERS = 32  # ... this many headers
MAX_HEADER_KEY_CHARS = 256
MAX_HEADER_VALUE_BYTES = 1024
MAX_ERROR_CHARS = 4096


class DeviceClass(enum.StrEnum):
    """What a device is; SCADA classes first, then consumer IoT."""

    FEEDER_BREAKER = "FEEDER_BREAKER"
    LINE_SWITCH = "LINE_SWITCH"
    INDUSTRIAL_LOAD = "INDUSTRIAL_LOAD"
    THERMOSTAT = "THERMOSTAT"
    EV_CHARGER = "EV_CHARGER"
    POOL_PUMP = "POOL_PUMP"
    WATER_HEATER = "WATER_HEATER"


ScadaClass = Literal[
    DeviceClass.FEEDER_BREAKER, DeviceClass.LINE_SWITCH, DeviceClass.INDUSTRIAL_LOAD
]
IotClass = Literal[
    DeviceClass.THERMOSTAT, DeviceClass.EV_CHARGER, DeviceClass.POOL_PUMP, DeviceClass.WATER_HEATER
]

# (min, max) real power in kW; negative is export. Sources of the bounds, with margin:
POWER_LIMITS_KW: Mapping[DeviceClass, tuple[float, float]] = {
    DeviceClass.FEEDER_BREAKER: (-30_000.0, 30_000.0),  # 25 kV feeder ~20 MW, reverse DER flow
    DeviceClass.LINE_SWITCH: (-30_000.0, 30_000.0),  # sits on such a feeder
    DeviceClass.INDUSTRIAL_LOAD: (-50_000.0, 100_000.0),  # sub-transmission plant, own generation
    DeviceClass.THERMOSTAT: (0.0, 25.0),  # residential central AC plus strip heat
    DeviceClass.EV_CHARGER: (-20.0, 20.0),  # Level 2, 80 A at 240 V = 19.2 kW; V2G exports
    DeviceClass.POOL_PUMP: (0.0, 5.0),  # 3 hp pump ~2.2 kW
    DeviceClass.WATER_HEATER: (0.0, 15.0),  # two 5.5 kW resistive elements
}


class Action(enum.StrEnum):
    """A command's action."""

    SHED = "SHED"
    CURTAIL = "CURTAIL"
    SETPOINT_OFFSET = "SETPOINT_OFFSET"
    RESTORE = "RESTORE"
    SWITCH_OPEN = "SWITCH_OPEN"
    SWITCH_CLOSE = "SWITCH_CLOSE"


LOAD_REDUCING_ACTIONS = frozenset(
    {Action.SHED, Action.CURTAIL, Action.SETPOINT_OFFSET, Action.SWITCH_OPEN}
)


class AuditOutcome(enum.StrEnum):
    """What became of a decision."""

    EMITTED = "EMITTED"
    BLOCKED = "BLOCKED"
    RECOMMENDED = "RECOMMENDED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    DEFERRED = "DEFERRED"
    DUPLICATE = "DUPLICATE"


class ReasonCode(enum.StrEnum):
    """Why a decision went the way it did."""

    LIFE_SAFETY_EXCLUSION = "LIFE_SAFETY_EXCLUSION"
    WET_BULB_SUSPEND = "WET_BULB_SUSPEND"
    WEATHER_UNKNOWN = "WEATHER_UNKNOWN"
    TELEMETRY_STALE = "TELEMETRY_STALE"
    SAFETY_FREEZE = "SAFETY_FREEZE"
    GRID_FOLLOW = "GRID_FOLLOW"
    OPT_OUT = "OPT_OUT"
    HITL_REQUIRED = "HITL_REQUIRED"
    RATE_LIMITED = "RATE_LIMITED"
    UNKNOWN_DEVICE = "UNKNOWN_DEVICE"
    DR_EVENT = "DR_EVENT"


class PriorityLevel(enum.StrEnum):
    """The CIS priority of a device; LIFE_SAFETY is never shed."""

    LIFE_SAFETY = "LIFE_SAFETY"
    CRITICAL = "CRITICAL"
    STANDARD = "STANDARD"
    DISCRETIONARY = "DISCRETIONARY"


class EventStatus(enum.StrEnum):
    """Lifecycle of a DR event."""

    SCHEDULED = "SCHEDULED"
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class ApprovalDecision(enum.StrEnum):
    """An operator's answer to a recommendation."""

    APPROVE = "APPROVE"
    REJECT = "REJECT"


class AlertKind(enum.StrEnum):
    """What an alert reports."""

    TELEMETRY_LOSS = "TELEMETRY_LOSS"
    TELEMETRY_RESTORED = "TELEMETRY_RESTORED"
    SAFETY_FREEZE = "SAFETY_FREEZE"
    SAFETY_FREEZE_CLEARED = "SAFETY_FREEZE_CLEARED"
    GRID_FOLLOW = "GRID_FOLLOW"
    GRID_FOLLOW_CLEARED = "GRID_FOLLOW_CLEARED"
    WET_BULB_SUSPEND = "WET_BULB_SUSPEND"
    WET_BULB_RESUME = "WET_BULB_RESUME"
    ANOMALY = "ANOMALY"
    MODEL_DEGRADED = "MODEL_DEGRADED"
    MIRROR_DOWN = "MIRROR_DOWN"
    MIRROR_RESTORED = "MIRROR_RESTORED"


class Severity(enum.StrEnum):
    """How urgent an alert is."""

    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


def _not_in_future(value: int, info: ValidationInfo) -> int:
    context = info.context
    if context is not None and value > context["now_ms"] + MAX_FUTURE_SKEW_MS:
        ahead_s = (value - context["now_ms"]) / 1000
        raise ValueError(
            f"{value} is {ahead_s:.0f} s in the future (max skew {MAX_FUTURE_SKEW_MS // 1000} s)"
        )
    return value


# Limits shared with the compiled telemetry check (`schemas.telemetry`), which must agree.
ID_CHARS = 128
LABEL_CHARS = 64
PERCENT_RANGE = (0.0, 100.0)
TEMP_C_RANGE = (-90.0, 100.0)
VOLTAGE_KV_RANGE = (0.0, 800.0)
SETPOINT_C_RANGE = (0.0, 95.0)

Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_CHARS, pattern=r"^\S+$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=LABEL_CHARS)]
Text = Annotated[str, StringConstraints(max_length=1024)]
TimestampMs = Annotated[int, Field(ge=MIN_TS_MS, le=MAX_TS_MS)]
EventTimeMs = Annotated[TimestampMs, AfterValidator(_not_in_future)]
Partition = Annotated[int, Field(ge=0, le=MAX_INT)]
Offset = Annotated[int, Field(ge=0, le=MAX_LONG)]
Percent = Annotated[float, Field(ge=PERCENT_RANGE[0], le=PERCENT_RANGE[1])]
TempC = Annotated[float, Field(ge=TEMP_C_RANGE[0], le=TEMP_C_RANGE[1])]
VoltageKv = Annotated[float, Field(ge=VOLTAGE_KV_RANGE[0], le=VOLTAGE_KV_RANGE[1])]
SetpointC = Annotated[float, Field(ge=SETPOINT_C_RANGE[0], le=SETPOINT_C_RANGE[1])]


def _check_power(device_class: DeviceClass, field: str, kw: float) -> None:
    low, high = POWER_LIMITS_KW[device_class]
    if not low <= kw <= high:
        raise ValueError(f"{field}={kw} is outside [{low}, {high}] kW for {device_class}")


class Record(BaseModel):
    """Base of every model: frozen, no unknown fields, no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TopicRecord(Record):
    """A record written to one topic, whose newest schema it mirrors."""

    TOPIC: ClassVar[str]


class IecQuality(Record):
    """IEC 60870-5-101/104 quality bits; all false is a good reading."""

    invalid: bool = False
    not_topical: bool = False
    substituted: bool = False
    blocked: bool = False
    overflow: bool = False


class ScadaTelemetry(TopicRecord):
    """One SCADA reading."""

    TOPIC: ClassVar[str] = topics.SCADA_TELEMETRY

    device_id: Id
    device_class: ScadaClass
    ts_ms: EventTimeMs
    correlation_id: Id
    power_kw: float
    voltage_kv: VoltageKv | None = None
    switch_closed: bool | None = None
    quality: IecQuality

    @model_validator(mode="after")
    def _power_in_class_limits(self) -> Self:
        _check_power(self.device_class, "power_kw", self.power_kw)
        return self


class IotTelemetry(TopicRecord):
    """One consumer IoT reading (schema v2)."""

    TOPIC: ClassVar[str] = topics.IOT_TELEMETRY

    device_id: Id
    device_class: IotClass
    ts_ms: EventTimeMs
    correlation_id: Id
    power_kw: float
    is_on: bool
    setpoint_c: SetpointC | None = None
    customer_override: bool
    firmware_version: Label
    measured_temp_c: TempC | None = None
    ev_soc_pct: Percent | None = None

    @model_validator(mode="after")
    def _power_in_class_limits(self) -> Self:
        _check_power(self.device_class, "power_kw", self.power_kw)
        return self


class DeviceRecord(TopicRecord):
    """The CIS record of one device."""

    TOPIC: ClassVar[str] = topics.DEVICE_REGISTRY

    device_id: Id
    correlation_id: Id
    device_class: DeviceClass
    region_id: Id
    priority_level: PriorityLevel
    programs: tuple[Id, ...] = ()
    rated_power_kw: Annotated[float, Field(gt=0.0)]
    updated_ts_ms: EventTimeMs

    @model_validator(mode="after")
    def _rating_in_class_limits(self) -> Self:
        _check_power(self.device_class, "rated_power_kw", self.rated_power_kw)
        return self


class WeatherObservation(TopicRecord):
    """A regional weather observation."""

    TOPIC: ClassVar[str] = topics.WEATHER

    region_id: Id
    ts_ms: EventTimeMs
    correlation_id: Id
    dry_bulb_temp_c: Annotated[float, Field(ge=-90.0, le=60.0)]
    relative_humidity_pct: Percent
    wbgt_temp_c: Annotated[float, Field(ge=-90.0, le=60.0)] | None = None


class DrEvent(TopicRecord):
    """A demand-response event (OpenADR 3 shaped); a lower `priority` number ranks higher."""

    TOPIC: ClassVar[str] = topics.DR_EVENTS

    event_id: Id
    correlation_id: Id
    program_id: Id
    target_region_ids: Annotated[tuple[Id, ...], Field(min_length=1)]
    start_ts_ms: TimestampMs
    end_ts_ms: TimestampMs
    action: Action
    setpoint_offset_c: Annotated[float, Field(ge=-10.0, le=10.0)] | None = None
    curtailment_pct: Percent | None = None
    priority: Annotated[int, Field(ge=0, le=MAX_INT)]
    status: EventStatus
    issued_ts_ms: EventTimeMs

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.end_ts_ms <= self.start_ts_ms:
            raise ValueError(f"end_ts_ms={self.end_ts_ms} is not after start_ts_ms")
        return self


class OperatorApproval(TopicRecord):
    """An operator's APPROVE or REJECT of a recommendation."""

    TOPIC: ClassVar[str] = topics.OPERATOR_APPROVALS

    recommendation_id: Id
    device_id: Id
    correlation_id: Id
    decision: ApprovalDecision
    operator_id: Id
    ts_ms: EventTimeMs
    comment: Text | None = None


class Cause(Record):
    """The input that caused an output: a Kafka position, an event id, or both."""

    source_topic: Id
    source_partition: Partition | None = None
    source_offset: Offset | None = None
    event_id: Id | None = None

    @model_validator(mode="after")
    def _names_an_input(self) -> Self:
        if (self.source_partition is None) != (self.source_offset is None):
            raise ValueError("source_partition and source_offset are set together")
        if self.source_offset is None and self.event_id is None:
            raise ValueError("a cause needs a source position or an event_id")
        return self


class DeviceCommand(TopicRecord):
    """A command to one device; `command_id` comes from `schemas.ids.command_id`."""

    TOPIC: ClassVar[str] = topics.COMMANDS

    command_id: Id
    device_id: Id
    correlation_id: Id
    action: Action
    setpoint_offset_c: Annotated[float, Field(ge=-10.0, le=10.0)] | None = None
    curtailment_pct: Percent | None = None
    issued_ts_ms: EventTimeMs
    cause: Cause


class Recommendation(TopicRecord):
    """A high-impact action awaiting an operator's approval until `expires_ts_ms`."""

    TOPIC: ClassVar[str] = topics.RECOMMENDATIONS

    recommendation_id: Id
    device_id: Id
    correlation_id: Id
    action: Action
    created_ts_ms: EventTimeMs
    expires_ts_ms: TimestampMs
    reason_codes: tuple[ReasonCode, ...] = ()
    rationale: Text = ""
    cause: Cause

    @model_validator(mode="after")
    def _expires_after_creation(self) -> Self:
        if self.expires_ts_ms <= self.created_ts_ms:
            raise ValueError(f"expires_ts_ms={self.expires_ts_ms} is not after created_ts_ms")
        return self


class AuditDecision(TopicRecord):
    """One decision about one device, emitted or not, with its reason codes and cause."""

    TOPIC: ClassVar[str] = topics.AUDIT

    device_id: Id
    correlation_id: Id
    decided_ts_ms: EventTimeMs
    action: Action | None = None
    outcome: AuditOutcome
    reason_codes: tuple[ReasonCode, ...] = ()
    region_id: Id | None = None
    command_id: Id | None = None
    recommendation_id: Id | None = None
    cause: Cause


class Alert(TopicRecord):
    """An alert about a device or, when `device_id` is None, a region."""

    TOPIC: ClassVar[str] = topics.ALERTS

    kind: AlertKind
    severity: Severity
    device_id: Id | None = None
    region_id: Id | None = None
    correlation_id: Id
    raised_ts_ms: EventTimeMs
    message: Text
    cause: Cause

    @model_validator(mode="after")
    def _names_a_device_or_region(self) -> Self:
        if self.device_id is None and self.region_id is None:
            raise ValueError("an alert names a device_id, a region_id or both")
        return self


class KafkaHeader(Record):
    """One Kafka header of a dead-lettered record."""

    key: Annotated[str, StringConstraints(max_length=MAX_HEADER_KEY_CHARS)]
    value: Annotated[bytes, Field(max_length=MAX_HEADER_VALUE_BYTES)] | None = None


class DeadLetter(TopicRecord):
    """An input that failed to decode or validate; build it with `schemas.dead_letter`."""

    TOPIC: ClassVar[str] = topics.DLQ

    correlation_id: Id
    failed_ts_ms: TimestampMs
    error_class: Label
    error_message: Annotated[str, StringConstraints(max_length=MAX_ERROR_CHARS)]
    schema_id: Annotated[int, Field(ge=-(2**31), le=MAX_INT)] | None = None
    source_topic: Id
    source_partition: Partition | None = None
    source_offset: Offset | None = None
    source_ts_ms: TimestampMs | None = None
    key: Annotated[bytes, Field(max_length=MAX_KEY_BYTES)] | None = None
    headers: Annotated[tuple[KafkaHeader, ...], Field(max_length=MAX_HEADERS)] = ()
    payload: Annotated[bytes, Field(max_length=MAX_PAYLOAD_BYTES)]
    payload_length: Offset
    job_name: Id
    job_version: Label


MODELS: Mapping[str, type[TopicRecord]] = {
    model.TOPIC: model
    for model in (
        ScadaTelemetry,
        IotTelemetry,
        DeviceRecord,
        WeatherObservation,
        DrEvent,
        OperatorApproval,
        DeviceCommand,
        Recommendation,
        AuditDecision,
        Alert,
        DeadLetter,
    )
}

M = TypeVar("M", bound=TopicRecord)


def validate(model: type[M], data: Mapping[str, Any], now_ms: int) -> M:
    """Validate `data` as `model`, refusing event times more than the max skew after `now_ms`.

    Raises:
        pydantic.ValidationError: naming each bad field and its value.
    """
    return model.model_validate(data, context={"now_ms": now_ms})

"""One valid example of every record, the shared vocabulary of tests, benchmarks and demos.

`example_data(model, **overrides)` gives the plain dict (what a producer would hand over);
`example(model, **overrides)` validates it into the model.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import fastavro

from gridstream import topics
from schemas import models, serde
from schemas.catalog import SchemaVersion
from schemas.models import M, TopicRecord

EXAMPLE_NOW_MS = 1_750_000_000_000  # 2025-06-15T15:06:40Z, the clock every example is read at

_CAUSE = {
    "source_topic": topics.DR_EVENTS,
    "source_partition": 1,
    "source_offset": 42,
    "event_id": "dr-2025-0615-a",
}

_EXAMPLES: Mapping[type[TopicRecord], Mapping[str, Any]] = {
    models.ScadaTelemetry: {
        "device_id": "feeder-0001",
        "device_class": "FEEDER_BREAKER",
        "ts_ms": EXAMPLE_NOW_MS,
        "correlation_id": "corr-scada-0001",
        "power_kw": 4200.5,
        "voltage_kv": 24.9,
        "switch_closed": True,
        "quality": {
            "invalid": False,
            "not_topical": False,
            "substituted": False,
            "blocked": False,
            "overflow": False,
        },
    },
    models.IotTelemetry: {
        "device_id": "thermostat-0001",
        "device_class": "THERMOSTAT",
        "ts_ms": EXAMPLE_NOW_MS,
        "correlation_id": "corr-iot-0001",
        "power_kw": 3.2,
        "is_on": True,
        "setpoint_c": 23.5,
        "customer_override": False,
        "firmware_version": "4.2.1",
        "measured_temp_c": 24.1,
        "ev_soc_pct": None,
    },
    models.DeviceRecord: {
        "device_id": "thermostat-0001",
        "correlation_id": "corr-cis-0001",
        "device_class": "THERMOSTAT",
        "region_id": "region-north",
        "priority_level": "STANDARD",
        "programs": ["summer-peak"],
        "rated_power_kw": 5.0,
        "updated_ts_ms": EXAMPLE_NOW_MS - 86_400_000,
    },
    models.WeatherObservation: {
        "region_id": "region-north",
        "ts_ms": EXAMPLE_NOW_MS,
        "correlation_id": "corr-wx-0001",
        "dry_bulb_temp_c": 34.0,
        "relative_humidity_pct": 40.0,
        "wbgt_temp_c": 29.5,
    },
    models.DrEvent: {
        "event_id": "dr-2025-0615-a",
        "correlation_id": "corr-dr-0001",
        "program_id": "summer-peak",
        "target_region_ids": ["region-north"],
        "start_ts_ms": EXAMPLE_NOW_MS + 3_600_000,
        "end_ts_ms": EXAMPLE_NOW_MS + 3 * 3_600_000,
        "action": "SETPOINT_OFFSET",
        "setpoint_offset_c": 2.0,
        "curtailment_pct": None,
        "priority": 1,
        "status": "SCHEDULED",
        "issued_ts_ms": EXAMPLE_NOW_MS,
    },
    models.OperatorApproval: {
        "recommendation_id": "9f2c4a0d1b7e4e6f8a3c5d7e9f1a2b3c",
        "device_id": "feeder-12-breaker-3",
        "correlation_id": "corr-op-0001",
        "decision": "APPROVE",
        "operator_id": "operator-7",
        "ts_ms": EXAMPLE_NOW_MS,
        "comment": "feeder load confirmed",
    },
    models.DeviceCommand: {
        "command_id": "0d6f3b9a2c1e4f5a8b7c6d5e4f3a2b1c",
        "device_id": "thermostat-0001",
        "correlation_id": "corr-dr-0001",
        "action": "SETPOINT_OFFSET",
        "setpoint_offset_c": 2.0,
        "curtailment_pct": None,
        "issued_ts_ms": EXAMPLE_NOW_MS,
        "cause": _CAUSE,
    },
    models.Recommendation: {
        "recommendation_id": "9f2c4a0d1b7e4e6f8a3c5d7e9f1a2b3c",
        "device_id": "feeder-0001",
        "correlation_id": "corr-dr-0001",
        "action": "SWITCH_OPEN",
        "created_ts_ms": EXAMPLE_NOW_MS,
        "expires_ts_ms": EXAMPLE_NOW_MS + 600_000,
        "reason_codes": ["HITL_REQUIRED", "DR_EVENT"],
        "rationale": "open feeder-0001 for DR event dr-2025-0615-a",
        "cause": _CAUSE,
    },
    models.AuditDecision: {
        "device_id": "thermostat-0001",
        "correlation_id": "corr-dr-0001",
        "decided_ts_ms": EXAMPLE_NOW_MS,
        "action": "SETPOINT_OFFSET",
        "outcome": "EMITTED",
        "reason_codes": ["DR_EVENT"],
        "region_id": "region-north",
        "command_id": "0d6f3b9a2c1e4f5a8b7c6d5e4f3a2b1c",
        "recommendation_id": None,
        "cause": _CAUSE,
    },
    models.Alert: {
        "kind": "TELEMETRY_LOSS",
        "severity": "WARNING",
        "device_id": "feeder-0001",
        "region_id": "region-north",
        "correlation_id": "corr-scada-0001",
        "raised_ts_ms": EXAMPLE_NOW_MS,
        "message": "no reading from feeder-0001 for 15 s",
        "cause": {
            "source_topic": topics.SCADA_TELEMETRY,
            "source_partition": None,
            "source_offset": None,
            "event_id": "timer:telemetry-loss",
        },
    },
    models.DeadLetter: {
        "correlation_id": "corr-iot-0002",
        "failed_ts_ms": EXAMPLE_NOW_MS,
        "error_class": "BadMagic",
        "error_message": "first byte is 0x7b, not the wire-format magic byte 0x00",
        "schema_id": None,
        "source_topic": topics.IOT_TELEMETRY,
        "source_partition": 0,
        "source_offset": 17,
        "source_ts_ms": EXAMPLE_NOW_MS,
        "key": b"thermostat-0002",
        "headers": [{"key": "correlation_id", "value": b"corr-iot-0002"}],
        "payload": b'{"device_id": "thermostat-0002"}',
        "payload_length": 32,
        "job_name": "device_control",
        "job_version": "0.1.0",
    },
}


def example_data(model: type[TopicRecord], **overrides: Any) -> dict[str, Any]:
    """A valid plain-dict record of `model`, with `overrides` applied (not validated)."""
    return {**_EXAMPLES[model], **overrides}


def example(model: type[M], **overrides: Any) -> M:
    """A record of `model` with `overrides`, validated as read at `EXAMPLE_NOW_MS`."""
    return models.validate(model, example_data(model, **overrides), EXAMPLE_NOW_MS)


def encode_unvalidated(version: SchemaVersion, schema_id: int, data: Mapping[str, Any]) -> bytes:
    """Wire-format bytes of `data` as a producer of `version` wrote it, without validation.

    Fields `version` lacks are left out. For tests of historic and out-of-range data only:
    producers use `schemas.serde.Serializer`.
    """
    names = {field["name"] for field in version.schema["fields"]}
    out = io.BytesIO(serde.wire_header(schema_id))
    out.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(
        out, serde.parse(version.schema), {k: v for k, v in data.items() if k in names}
    )
    return out.getvalue()

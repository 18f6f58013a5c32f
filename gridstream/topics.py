"""The Kafka topics of DESIGN.md; the names are part of the contract."""

from __future__ import annotations

from collections.abc import Mapping

SCADA_TELEMETRY = "scada.telemetry"
IOT_TELEMETRY = "iot.telemetry"
DEVICE_REGISTRY = "device.registry"
WEATHER = "weather.observations"
DR_EVENTS = "dr.events"
OPERATOR_APPROVALS = "operator.approvals"
COMMANDS = "grid.commands"
RECOMMENDATIONS = "grid.recommendations"
AUDIT = "grid.audit"
ALERTS = "grid.alerts"
DLQ = "gridstream.dlq"

INPUTS = (SCADA_TELEMETRY, IOT_TELEMETRY, DEVICE_REGISTRY, WEATHER, DR_EVENTS, OPERATOR_APPROVALS)
OUTPUTS = (COMMANDS, RECOMMENDATIONS, AUDIT, ALERTS, DLQ)
TELEMETRY = (SCADA_TELEMETRY, IOT_TELEMETRY)
# Keyed by device_id: the device-control job keys them by their Kafka key before decoding.
DEVICE_KEYED_INPUTS = (*TELEMETRY, DEVICE_REGISTRY)
# The rest, and the registry again (for the regions' rosters): decoded before they are keyed.
CONTROL_INPUTS = (DEVICE_REGISTRY, WEATHER, DR_EVENTS, OPERATOR_APPROVALS)

# Per-topic Kafka configs beyond the broker defaults.
TOPIC_CONFIGS: Mapping[str, Mapping[str, str]] = {
    DEVICE_REGISTRY: {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
    DLQ: {"retention.ms": str(30 * 24 * 3600 * 1000)},
    AUDIT: {"retention.ms": str(30 * 24 * 3600 * 1000)},
}

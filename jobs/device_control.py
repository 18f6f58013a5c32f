"""The device-control job: telemetry keyed by device id through the keyed stages, out to Kafka.

Foundation version: every telemetry record is counted per device (audited to `grid.audit`)
and a device silent past its timeout raises one `TELEMETRY_LOSS` alert. The safety interlocks
of DESIGN.md build on this topology.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pyflink.common import Duration, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import StreamExecutionEnvironment

from functions.operators import TelemetryWatch
from gridstream import config, topics
from jobs import environment
from jobs.io import OUTPUT_RECORD, KafkaConnection, KafkaSinks, KafkaSources, Sinks, Sources

JOB_NAME = "gridstream-device-control"
TELEMETRY_TOPICS = (topics.SCADA_TELEMETRY, topics.IOT_TELEMETRY)
SILENCE_MS = 15 * 60 * 1000
RETENTION_MS = 7 * 24 * 3600 * 1000


class _RecordTime(TimestampAssigner):  # type: ignore[misc]
    def extract_timestamp(self, value, record_timestamp: int) -> int:  # type: ignore[no-untyped-def]
        return int(value[3])


def build(env: StreamExecutionEnvironment, sources: Sources, sinks: Sinks) -> None:
    """Wire sources → watermarks → keyed telemetry watch → sinks."""
    watermarks = (
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(5))
        .with_timestamp_assigner(_RecordTime())
        .with_idleness(Duration.of_seconds(30))
    )
    outputs = (
        sources.records(env)
        .assign_timestamps_and_watermarks(watermarks)
        .uid("telemetry-watermarks")
        .key_by(lambda record: bytes(record[4] or b"").decode("utf-8", "replace"))
        .process(TelemetryWatch(SILENCE_MS, RETENTION_MS), output_type=OUTPUT_RECORD)
        .name("telemetry watch")
        .uid("telemetry-watch")
    )
    sinks.write(env, outputs)


def main(argv: Sequence[str] | None = None) -> None:
    """Run against the Kafka of the settings (file + environment)."""
    args = argparse.ArgumentParser(description=__doc__).parse_args(argv)
    del args
    settings = config.load()
    env = environment.create(settings)
    connection = KafkaConnection(
        bootstrap_servers=settings.stack.bootstrap_servers,
        group_id=JOB_NAME,
        delivery_guarantee=settings.job.delivery_guarantee,
        transactional_id_prefix=JOB_NAME,
        transaction_timeout_ms=settings.job.transaction_timeout_ms,
    )
    build(env, KafkaSources(connection, TELEMETRY_TOPICS), KafkaSinks(connection, topics.OUTPUTS))
    env.execute(JOB_NAME)


if __name__ == "__main__":
    main(sys.argv[1:])

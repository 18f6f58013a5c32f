"""The device-control job: every input topic through the safety interlocks to the output topics.

    control topics ─ decode ─┬─ dead letters ──────────────────────────────────────────┐
                             └─ event time ─┬─ region stage (by region) ─┬─ activations ─┐
      heartbeats (SQL) ─────────────────────┤   weather, roster, DR       └─ context ─┐   │
                                            ├─ pipeline watch ───────────── context ─┤   │
                                            └─ approvals ─────────────────────────────┼───┤
    device-keyed topics (SQL: key, event time) ── device stage (by device) ◄─ broadcast ┘ ◄─┘
                                                   ├─ requests ─ budget (by region) ─────┤
                                                   └─ firmware tallies ─ rollouts ───────┤
                                                                           encode ─ sinks

Telemetry and registry records are keyed by their Kafka key in Java and decoded in the device
stage: a reading crosses into Python once. Registry records also reach the region stage's
roster through the roster keeper (keyed by device), which tells a device's old region when the
device moves or is deleted. With an anomaly model, the device stage scores each reading and
tallies the scores per firmware version for the rollout stage (by version), which raises the
faulty-firmware-rollout alert. The trade-offs are in jobs/DISCUSSION.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pyflink.common import TypeInformation, Types
from pyflink.datastream import DataStream, KeyedStream, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway

from functions import budget, device, operators, pipeline
from functions.anomaly import ClassModel, RolloutPolicy
from functions.wetbulb import WetBulbPolicy
from gridstream import config, topics
from jobs import environment
from jobs.io import (
    DEVICE_ROW,
    INPUT_RECORD,
    OUTPUT_RECORD,
    EventTime,
    KafkaConnection,
    KafkaSinks,
    KafkaSources,
    Sinks,
    Sources,
)
from jobs.records import (
    DEAD_LETTERS,
    MAX_CLOCK_SKEW_MS,
    TIMED,
    Decode,
    Decoder,
    DeviceRows,
    Encode,
    SchemaAccess,
    event_row,
    heartbeat,
    is_approval,
    is_heartbeat,
    is_region_input,
    is_registry_record,
    region_of,
)
from schemas.dead_letter import JobInfo

JOB_NAME = "gridstream-device-control"
JOB_VERSION = "0.10.0"
PICKLED = operators.PICKLED


@dataclasses.dataclass(frozen=True)
class Policies:
    """Every tunable of the decisions, with DESIGN.md's defaults."""

    device: device.DevicePolicy = dataclasses.field(default_factory=device.DevicePolicy)
    wetbulb: WetBulbPolicy = dataclasses.field(default_factory=WetBulbPolicy)
    pipeline: pipeline.PipelinePolicy = dataclasses.field(default_factory=pipeline.PipelinePolicy)
    budget: budget.BudgetPolicy = dataclasses.field(default_factory=budget.BudgetPolicy)
    timing: EventTime = dataclasses.field(default_factory=EventTime)
    max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS
    device_cache_entries: int = operators.DEVICE_CACHE_ENTRIES
    rollout: RolloutPolicy = dataclasses.field(default_factory=RolloutPolicy)
    model_dir: str = ""  # none: rules only


def policies_from(job: config.JobSettings) -> Policies:
    """The policies the settings choose (file and environment)."""
    return Policies(
        device=device.DevicePolicy(recommendation_ttl_ms=job.recommendation_ttl_ms),
        wetbulb=WetBulbPolicy(threshold_c=job.wet_bulb_threshold_c),
        pipeline=pipeline.PipelinePolicy(
            freeze_lag_ms=job.freeze_lag_ms,
            clear_lag_ms=job.freeze_lag_ms // 2,
            silence_ms=job.source_silence_ms,
            freeze_enabled=job.freeze_enabled,
        ),
        budget=budget.BudgetPolicy(job.commands_per_window, job.budget_window_ms),
        timing=EventTime(job.out_of_orderness_ms, job.idleness_ms, job.registry_idleness_ms),
        max_clock_skew_ms=job.max_clock_skew_ms,
        device_cache_entries=job.device_cache_entries,
        model_dir=job.model_dir,
    )


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """The anomaly model in a folder (`gridstream train`), its bands loaded on the worker."""

    path: str

    def load(self) -> Callable[[str], ClassModel | None]:
        """The model of each device class; raises a `ModelError` saying why it cannot be used."""
        from gridstream.models.files import load_fences  # no scikit-learn: see that module

        return load_fences(Path(self.path)).for_class


def event_time(
    timed: DataStream, policies: Policies, uid: str, value_type: TypeInformation = PICKLED
) -> DataStream:
    """`(value, ts_ms)` pairs to values (of `value_type`) stamped with `ts_ms`, watermarks
    following them.

    PyFlink's own `assign_timestamps_and_watermarks` with a Python assigner adds one more
    Python operator that sees every record; the decoder already knows each event's time, so
    it emits pairs and this uses the same Java assigner and projection PyFlink uses behind it.
    """
    python_eventtime = get_gateway().jvm.org.apache.flink.streaming.api.functions.python.eventtime
    strategy = policies.timing.strategy()._j_watermark_strategy.withTimestampAssigner(
        python_eventtime.CustomTimestampAssigner()
    )
    stamped = timed._j_data_stream.assignTimestampsAndWatermarks(strategy).uid(uid)
    return DataStream(
        stamped.map(python_eventtime.RemoveTimestampMapFunction(), value_type.get_java_type_info())
    )


def by_device(rows: DataStream) -> KeyedStream:
    """`DEVICE_ROW`s keyed in Java on their first field; the stage is handed the second.

    This is what PyFlink's `key_by` does after its Python key selector, without that Python
    operator on every record: SQL already put the Kafka key in the row.
    """
    key_type = Types.ROW([Types.STRING()]).get_java_type_info()
    j_keyed = rows._j_data_stream.keyBy(get_gateway().jvm.KeyByKeySelector(), key_type)
    return KeyedStream(j_keyed, INPUT_RECORD, rows)


def build(
    env: StreamExecutionEnvironment,
    sources: Sources,
    sinks: Sinks,
    schemas: SchemaAccess | None = None,
    policies: Policies | None = None,
    redis_url: str | None = None,
    redis_password_file: str = "",
) -> None:
    """Wire the stages between `sources` and `sinks` (the drawing in the module docstring).

    Without `schemas` the catalog's own numbering is used; without `redis_url`, no mirror (its
    password, if any, is read on the worker: `state.mirror.password`).
    """
    schemas = schemas or SchemaAccess()
    policies = policies or Policies()
    job = JobInfo(JOB_NAME, JOB_VERSION)
    inputs = sources.inputs(env, policies.timing)
    decoded = (
        inputs.control.process(
            Decode(Decoder(schemas, job, policies.max_clock_skew_ms)), output_type=TIMED
        )
        .name("decode")
        .uid("decode")
    )
    beats = inputs.heartbeats.map(heartbeat, output_type=TIMED).name("heartbeats")
    control = event_time(decoded.union(beats), policies, "control-time")
    roster_changes = (
        control.filter(is_registry_record)
        .key_by(lambda record: record.device_id, key_type=Types.STRING())
        .process(operators.RosterKeeper(), output_type=PICKLED)
        .name("roster keeper")
        .uid("roster-keeper")
    )
    regions = (
        control.filter(is_region_input)
        .union(roster_changes)
        .key_by(region_of, key_type=Types.STRING())
        .process(operators.RegionStage(policies.wetbulb), output_type=PICKLED)
        .name("region stage")
        .uid("region-stage")
    )
    watch = (
        control.filter(is_heartbeat)
        .key_by(lambda beat: 0, key_type=Types.INT())
        .process(operators.PipelineWatch(policies.pipeline), output_type=PICKLED)
        .name("pipeline watch")
        .uid("pipeline-watch")
    )
    context = regions.union(watch).filter(operators.is_context).broadcast(operators.CONTEXT)
    made = control.filter(is_approval).union(regions.filter(operators.is_device_event))
    reader = DeviceRows(schemas, job, policies.max_clock_skew_ms)
    devices = (
        by_device(inputs.devices.union(made.map(event_row, output_type=DEVICE_ROW)))
        .connect(context)
        .process(
            operators.DeviceStage(
                reader,
                policies.device,
                policies.wetbulb,
                redis_url,
                cache_entries=policies.device_cache_entries,
                model=ModelFile(policies.model_dir) if policies.model_dir else None,
                redis_password_file=redis_password_file,
            ),
            output_type=PICKLED,
        )
        .name("device stage")
        .uid("device-stage")
    )
    commands = (
        devices.filter(operators.is_request)
        .key_by(lambda request: request.region_id, key_type=Types.STRING())
        .connect(context)
        .process(operators.BudgetStage(policies.budget, policies.wetbulb), output_type=PICKLED)
        .name("region budget")
        .uid("region-budget")
    )
    rollouts = (
        devices.filter(operators.is_tally)
        .key_by(lambda tally: tally.firmware_version, key_type=Types.STRING())
        .process(operators.RolloutStage(policies.rollout), output_type=PICKLED)
        .name("firmware rollouts")
        .uid("firmware-rollouts")
    )
    outputs = [decoded.get_side_output(DEAD_LETTERS), regions, watch, devices, commands, rollouts]
    records = (
        outputs[0]
        .union(*outputs[1:])
        .filter(operators.is_output)
        .map(Encode(schemas), output_type=OUTPUT_RECORD)
        .name("encode")
        .uid("encode")
    )
    sinks.write(env, records)


def main(argv: Sequence[str] | None = None) -> None:
    """Run against the Kafka, registry and Redis of the settings (file + environment)."""
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    settings = config.load()
    env = environment.create(settings)
    connection = KafkaConnection(
        bootstrap_servers=settings.stack.bootstrap_servers,
        group_id=JOB_NAME,
        delivery_guarantee=settings.job.delivery_guarantee,
        transactional_id_prefix=JOB_NAME,
        transaction_timeout_ms=settings.job.transaction_timeout_ms,
        client_properties=tuple(config.kafka_client_properties(settings.job).items()),
    )
    build(
        env,
        KafkaSources(connection),
        KafkaSinks(connection, topics.OUTPUTS),
        SchemaAccess(settings.stack.registry_url, settings.job.schema_id_wait_ms),
        policies_from(settings.job),
        redis_url=settings.stack.redis_url,
        redis_password_file=settings.stack.redis_password_file,
    )
    env.execute(JOB_NAME)


if __name__ == "__main__":
    main(sys.argv[1:])

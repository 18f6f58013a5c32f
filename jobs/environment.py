"""The StreamExecutionEnvironment every job starts from: flink-conf.yaml plus the connector jars."""

from __future__ import annotations

from collections.abc import Iterable

from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment

from gridstream import flinkconf
from gridstream.config import Settings, worker_python_path

# Metric reporters are the cluster's (its config.yaml): in a job's own environment they would
# start a Prometheus endpoint in every local MiniCluster (replay, tests), on one fixed port.
CLUSTER_ONLY_PREFIX = "metrics.reporter."


# What `make jvm` puts in `.jvm/flink/`: the Kafka connector, and jvm/src's RocksDB options
# factory (flink-conf.yaml's `state.backend.rocksdb.options-factory`).
JOB_JARS = ("flink-sql-connector-kafka-*.jar", "gridstream-flink-*.jar")


class MissingJarError(RuntimeError):
    """A jar every job ships is not where the settings say."""


def job_jars(settings: Settings) -> list[str]:
    """`file://` URLs of the jars a job ships: those of `make jvm`, and flink-python.

    The PyPI distribution keeps flink-python in `opt/`, off a session cluster's classpath, so a
    job carries it itself (without it the JobManager cannot load the embedded Python operators).
    """
    folder = settings.job.jvm_dir / "flink"
    missing = [pattern for pattern in JOB_JARS if not any(folder.glob(pattern))]
    if missing:
        raise MissingJarError(f"no {' or '.join(missing)} in {folder}: run `make jvm`")
    jars = sorted(folder.glob("*.jar"))
    jars += sorted((flinkconf.flink_home() / "opt").glob("flink-python-*.jar"))
    return [jar.as_uri() for jar in jars]


def create(
    settings: Settings, overlay: dict[str, str] | None = None, without: Iterable[str] = ()
) -> StreamExecutionEnvironment:
    """An environment configured from `flink-conf.yaml` less the keys `without` and the
    metric reporters, the settings and `overlay`."""
    conf = Configuration()
    values = flinkconf.read(flinkconf.PROJECT_FLINK_CONF)
    for key in [*without, *(k for k in values if k.startswith(CLUSTER_ONLY_PREFIX))]:
        values.pop(key, None)
    values.update(
        {
            "python.executable": settings.job.python_executable,
            "python.client.executable": settings.job.python_executable,
            "python.pythonpath": worker_python_path(settings.job.python_executable),
            "pipeline.jars": ";".join(job_jars(settings)),
            "parallelism.default": str(settings.job.parallelism),
        }
    )
    values.update(overlay or {})
    for key, value in values.items():
        conf.set_string(key, value)
    return StreamExecutionEnvironment.get_execution_environment(conf)

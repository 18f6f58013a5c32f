"""GridStream settings: defaults, overlaid by a YAML file, overlaid by the environment.

The file is `gridstream.yaml` in the working directory, or the path in `GRIDSTREAM_CONFIG`.
Every setting can also be given as `GRIDSTREAM_<SECTION>_<NAME>` (for example
`GRIDSTREAM_STACK_KAFKA_PORT=29092`).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclasses.dataclass(frozen=True)
class StackSettings:
    """Where the local stack lives and listens."""

    home: Path = PROJECT_ROOT / ".stack"
    host: str = "127.0.0.1"
    kafka_port: int = 29092
    kafka_controller_port: int = 29093
    registry_port: int = 28081
    redis_port: int = 26379
    flink_rest_port: int = 28082
    flink_rpc_port: int = 26123
    # The Flink cluster's JobManager high availability: a ZooKeeper of the stack's own on
    # `zookeeper_port`, so a JobManager that dies is started again and resumes its jobs from
    # their latest checkpoints. False: no ZooKeeper, and a dead JobManager's jobs are gone.
    flink_ha: bool = True
    zookeeper_port: int = 22181
    registry_binary: Path = PROJECT_ROOT / ".tools" / "bin" / "schema-registry"
    metrics_port: int = 29249  # the JobManager's Prometheus endpoint; the TaskManager's is next
    # A YAML file of Flink keys laid over flink-conf.yaml for the local stack's cluster (the
    # soak's uncompressed RocksDB); the keys the stack sets itself (ports, paths) are refused.
    flink_conf_file: str = ""
    partitions: int = 2
    start_timeout_s: float = 120.0
    # Services outside the local stack (a Kubernetes deployment's: k8s/): when set, each wins
    # over `host` and its port. Give the Redis URL without a password (it travels in the job
    # graph): the password comes by `redis_password_file` or $GRIDSTREAM_REDIS_PASSWORD.
    external_kafka: str = ""  # host:port,host:port
    external_registry: str = ""  # https://...
    external_redis: str = ""  # rediss://...
    # The Python clients' (the CLI's, scenario play's) Kafka settings in librdkafka's names
    # (security.protocol, sasl.mechanism, sasl.username, ssl.ca.location), a properties file;
    # the password from the file named by `kafka_password_file` or $GRIDSTREAM_KAFKA_PASSWORD,
    # never from a settings file. Empty: plaintext, as the local stack.
    kafka_client_config: str = ""
    kafka_password_file: str = ""
    # Redis's password: this file's content, else $GRIDSTREAM_REDIS_PASSWORD (state.mirror);
    # neither: no password. The local stack's Redis requires it when given.
    redis_password_file: str = ""

    @property
    def bootstrap_servers(self) -> str:
        return self.external_kafka or f"{self.host}:{self.kafka_port}"

    @property
    def registry_url(self) -> str:
        return self.external_registry or f"http://{self.host}:{self.registry_port}"

    @property
    def redis_url(self) -> str:
        return self.external_redis or f"redis://{self.host}:{self.redis_port}/0"

    @property
    def flink_rest_url(self) -> str:
        return f"http://{self.host}:{self.flink_rest_port}"


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """How the jobs run: sink guarantee, parallelism, the artifacts the workers need, and the
    decision thresholds that differ between deployments (the rest are DESIGN.md's defaults)."""

    delivery_guarantee: str = "exactly-once"
    parallelism: int = 1
    python_executable: str = str(PROJECT_ROOT / ".venv" / "bin" / "python")
    jvm_dir: Path = PROJECT_ROOT / ".jvm"
    transaction_timeout_ms: int = 600_000
    out_of_orderness_ms: int = 5_000
    # A telemetry partition with no record this long stops holding event time back (jobs/io.py):
    # the watermark bound, so a quiet partition, or a late record on one, stalls event time no
    # longer than the bound already delays it. A broker away longer may cost false loss alerts.
    idleness_ms: int = 5_000
    registry_idleness_ms: int = 1_000
    wet_bulb_threshold_c: float = 28.0
    freeze_lag_ms: int = 60_000
    freeze_enabled: bool = True
    source_silence_ms: int = 60_000
    commands_per_window: int = 200
    budget_window_ms: int = 10_000
    recommendation_ttl_ms: int = 600_000
    max_clock_skew_ms: int = 5_000
    # A schema id the registry lacks or cannot give (a replica behind, the registry down) is
    # asked again this long, its partition waiting, before its record is dead-lettered (or, the
    # registry down, the job fails and restarts); 0: at once. Keep it well under
    # execution.checkpointing.timeout (flink-conf.yaml): a checkpoint waits behind it.
    schema_id_wait_ms: int = 30_000
    device_cache_entries: int = 50_000
    model_dir: str = ""
    # A Java properties file of Kafka client settings (security.protocol, sasl.*, ssl.*) that
    # every Kafka table of the jobs passes to its clients; empty: plaintext, as the local stack.
    kafka_client_properties: str = ""


# Kafka client settings the jobs set themselves: exactly-once depends on them, so a client
# properties file may not change them.
JOB_OWNED_KAFKA_PROPERTIES = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "isolation.level",
        "auto.offset.reset",
        "transaction.timeout.ms",
        "transactional.id",
        "enable.auto.commit",
        "key.deserializer",
        "value.deserializer",
        "key.serializer",
        "value.serializer",
    }
)


def read_properties(path: Path, setting: str) -> dict[str, str]:
    """A Java properties file (`key=value` or `key: value` lines, `#`/`!` comments, `\\`
    continuing a line) as a dict; `setting` names where the path came from, for errors."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{setting}: cannot read {path}: {err}") from err
    properties: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.strip() if not logical else raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical += line[:-1]
            continue
        logical += line
        separator = min((i for i in (logical.find("="), logical.find(":")) if i > 0), default=-1)
        if separator < 0:
            raise ConfigError(f"{path}: {logical!r} is not key=value")
        key, value = logical[:separator].strip(), logical[separator + 1 :].strip()
        logical = ""
        properties[key] = value
    if logical:
        raise ConfigError(f"{path}: the last line continues past the end of the file")
    return properties


def kafka_client_properties(job: JobSettings) -> dict[str, str]:
    """The settings in `job.kafka_client_properties`; none without one."""
    if not job.kafka_client_properties:
        return {}
    path = Path(job.kafka_client_properties)
    properties = read_properties(path, "job.kafka_client_properties")
    for key in properties:
        if key in JOB_OWNED_KAFKA_PROPERTIES:
            raise ConfigError(f"{path}: {key} is set by the jobs themselves; remove it")
    return properties


KAFKA_PASSWORD_ENV = "GRIDSTREAM_KAFKA_PASSWORD"  # noqa: S105 (the variable's name, not a password)


def kafka_client_config(
    stack: StackSettings, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The Python Kafka clients' settings: the bootstrap servers, `stack.kafka_client_config`'s
    and the SASL password (from `stack.kafka_password_file`, else $GRIDSTREAM_KAFKA_PASSWORD)."""
    env = os.environ if env is None else env
    settings = {"bootstrap.servers": stack.bootstrap_servers}
    if stack.kafka_client_config:
        path = Path(stack.kafka_client_config)
        found = read_properties(path, "stack.kafka_client_config")
        if "sasl.password" in found:
            raise ConfigError(
                f"{path}: a password does not belong in a settings file: remove sasl.password "
                f"and give it by stack.kafka_password_file or ${KAFKA_PASSWORD_ENV}"
            )
        settings.update(found)
    if stack.kafka_password_file:
        try:
            settings["sasl.password"] = Path(stack.kafka_password_file).read_text().strip()
        except OSError as err:
            raise ConfigError(f"stack.kafka_password_file: cannot read it: {err}") from err
    elif KAFKA_PASSWORD_ENV in env:
        settings["sasl.password"] = env[KAFKA_PASSWORD_ENV]
    return settings


def worker_python_path(python_executable: str) -> str:
    """What the Flink workers' embedded Python must add to `sys.path` (`python.pythonpath`).

    Thread mode embeds the interpreter in the JVM, which neither activates the venv nor reads
    its `.pth` files: the venv's site-packages and the project root are added explicitly.
    """
    probe = subprocess.run(
        [python_executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise ConfigError(f"job.python_executable {python_executable} does not run: make venv")
    return os.pathsep.join([probe.stdout.strip(), str(PROJECT_ROOT)])


@dataclasses.dataclass(frozen=True)
class Settings:
    """All settings."""

    stack: StackSettings = dataclasses.field(default_factory=StackSettings)
    job: JobSettings = dataclasses.field(default_factory=JobSettings)


def _coerce(section: str, field: dataclasses.Field[Any], raw: Any) -> Any:
    kind: type[Any] = type(field.default)
    # YAML gives bools and floats; refuse those silently truncated into an int.
    if kind is int and (isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer())):
        raise ConfigError(f"{section}.{field.name}: {raw!r} is not a whole number")
    try:
        if issubclass(kind, Path):
            return Path(str(raw)).expanduser()
        if kind is bool:
            return str(raw).lower() in {"1", "true", "yes", "on"}
        return kind(raw)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{section}.{field.name}: cannot read {raw!r} as {kind.__name__}"
        ) from err


def _section(
    cls: type[Any], name: str, from_file: Mapping[str, Any], env: Mapping[str, str]
) -> Any:
    values: dict[str, Any] = {}
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(from_file) - set(known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in section {name!r}: {', '.join(sorted(unknown))}")
    for field_name, field in known.items():
        env_key = f"GRIDSTREAM_{name}_{field_name}".upper()
        if env_key in env:
            values[field_name] = _coerce(name, field, env[env_key])
        elif field_name in from_file:
            values[field_name] = _coerce(name, field, from_file[field_name])
    return cls(**values)


def as_env(settings: Settings) -> dict[str, str]:
    """Every setting as `GRIDSTREAM_*` variables, so a submitted job sees these settings."""
    env: dict[str, str] = {}
    for name in ("stack", "job"):
        section = getattr(settings, name)
        for field in dataclasses.fields(section):
            env[f"GRIDSTREAM_{name}_{field.name}".upper()] = str(getattr(section, field.name))
    return env


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the file (if any) and the environment."""
    env = os.environ if env is None else env
    named = path is not None or "GRIDSTREAM_CONFIG" in env
    path = path or Path(env.get("GRIDSTREAM_CONFIG", "gridstream.yaml"))
    data: dict[str, Any] = {}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (stack:, job:)")
        unknown = set(data) - {"stack", "job"}
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    elif named:
        raise ConfigError(f"settings file {path} does not exist")
    return Settings(
        stack=_section(StackSettings, "stack", data.get("stack") or {}, env),
        job=_section(JobSettings, "job", data.get("job") or {}, env),
    )

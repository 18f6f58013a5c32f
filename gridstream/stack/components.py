"""The servers of the local stack: Kafka (KRaft), Redis, the schema registry, Flink."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import yaml

from gridstream import config, flinkconf
from gridstream.config import Settings, worker_python_path
from gridstream.stack.daemons import JOBMANAGER, TASKMANAGER, DaemonPids, exclusive
from gridstream.stack.process import (
    ComponentError,
    ManagedProcess,
    pid_alive,
    terminate,
    wait_until,
)
from gridstream.stack.security import BrokerSecurity


class Component(Protocol):
    """What the stack needs of each server."""

    name: str

    @property
    def address(self) -> str: ...

    def answers(self) -> bool: ...

    def started_here(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> bool: ...


def _http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


def _missing(what: str, fix: str) -> ComponentError:
    return ComponentError(f"{what} is missing: run `{fix}`")


def _jvm_classpath(settings: Settings, folder: str, marker: str) -> str:
    """The classpath of the jars `make jvm` put in `.jvm/<folder>` (one of them `marker`)."""
    jars = settings.job.jvm_dir / folder
    if not any(jars.glob(marker)):
        raise _missing(f"the {folder} jars in {jars}", "make jvm")
    return f"{jars}/*"


def _write_log4j2(path: Path, levels: dict[str, str]) -> Path:
    """A log4j2 configuration: INFO to the console (the process's log file), except the
    loggers named in `levels` (logger: level)."""
    lines = [
        "rootLogger.level = INFO", "rootLogger.appenderRef.out.ref = out",
        "appender.out.type = Console", "appender.out.name = out",
        "appender.out.layout.type = PatternLayout",
        "appender.out.layout.pattern = [%d] %p %m (%c)%n",
    ]  # fmt: skip
    for i, (logger, level) in enumerate(levels.items()):
        lines += [f"logger.l{i}.name = {logger}", f"logger.l{i}.level = {level}"]
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _java(
    classpath: str, log4j2: Path, heap_mb: tuple[int, int], main: str, *args: str
) -> list[str]:
    """The command line of a JVM server: `main` on `classpath`, logging by `log4j2`, with an
    initial and a maximum heap of `heap_mb`."""
    return [
        "java", f"-Xms{heap_mb[0]}m", f"-Xmx{heap_mb[1]}m",
        f"-Dlog4j2.configurationFile={log4j2}", "-cp", classpath, main, *args,
    ]  # fmt: skip


class Kafka:
    """A single-node Kafka 4 broker in KRaft combined mode, from the jars in `.jvm/kafka`;
    plaintext, or with `security` a TLS + SCRAM listener and ACLs only (`stack.security`)."""

    name = "kafka"

    def __init__(self, settings: Settings, security: BrokerSecurity | None = None) -> None:
        self.settings = settings
        self.security = security
        self.home = settings.stack.home / "kafka"
        self.process = ManagedProcess(self.name, settings.stack.home)

    @property
    def address(self) -> str:
        return self.settings.stack.bootstrap_servers

    @property
    def classpath(self) -> str:
        return _jvm_classpath(self.settings, "kafka", "kafka_2.13-*.jar")

    def answers(self) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({**self.admin_config(), "socket.timeout.ms": 2000, "log_level": 0})
        try:
            admin.list_topics(timeout=2)
        except Exception:  # noqa: BLE001 (any failure means "not answering")
            return False
        return True

    def admin_config(self) -> dict[str, str]:
        """librdkafka settings for this broker's admin (its super user when secured)."""
        secured = self.security.client_config(self.security.admin) if self.security else {}
        return {"bootstrap.servers": self.address, **secured}

    def _write_properties(self) -> Path:
        s = self.settings.stack
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{s.host}:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://{s.host}:{s.kafka_port},"
            f"CONTROLLER://{s.host}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "num.partitions": str(s.partitions),
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            # The Flink exactly-once sink's transaction timeout must stay below this.
            "transaction.max.timeout.ms": "900000",
            "group.initial.rebalance.delay.ms": "0",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
        }
        if self.security is not None:
            props.update(
                self.security.broker_properties(s.host, s.kafka_port, s.kafka_controller_port)
            )
        path = self.home / "server.properties"
        path.touch(mode=0o600)  # it may hold the admin's password
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        _write_log4j2(
            self.home / "log4j2.properties", {"kafka": "WARN", "org.apache.kafka": "WARN"}
        )
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        log4j2 = self.home / "log4j2.properties"
        return _java(self.classpath, log4j2, (256, 768), main, *args)

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        properties = self._write_properties()
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            fmt = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",  # an id may start with "-": not a separate arg
                    "-c",
                    str(properties),
                    "--standalone",
                    *(self.security.format_arguments() if self.security else []),
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                detail = fmt.stderr or fmt.stdout
                if self.security is not None:  # the tool may echo its --add-scram arguments
                    detail = self.security.redact(detail)
                raise ComponentError(f"kafka storage format failed: {detail}")
        self.process.start(self._java("kafka.Kafka", str(properties)))
        self.process.wait_ready(self.answers, self.settings.stack.start_timeout_s)

    def started_here(self) -> bool:
        return self.process.pid is not None

    def stop(self) -> bool:
        return self.process.stop()


class Redis:
    """`redis-server` on loopback, its snapshot in the stack's folder."""

    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack.home / "redis"
        self.process = ManagedProcess(self.name, settings.stack.home)

    @property
    def address(self) -> str:
        return self.settings.stack.redis_url

    def answers(self) -> bool:
        import redis

        from state import mirror

        secret = mirror.password(self.settings.stack.redis_password_file)
        try:
            client = redis.Redis.from_url(self.address, socket_timeout=2, password=secret)
            return bool(client.ping())
        except redis.RedisError:
            return False

    def _write_config(self) -> Path:
        """redis.conf: its password (`requirepass`) when one is configured, so it is on no
        command line; mode 0600."""
        from state import mirror

        path = self.home / "redis.conf"
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        secret = mirror.password(self.settings.stack.redis_password_file)
        if secret is not None:
            quoted = secret.replace("\\", "\\\\").replace('"', '\\"')
            path.write_text(f'requirepass "{quoted}"\n')
        return path

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise _missing("redis-server", "make redis")
        self.home.mkdir(parents=True, exist_ok=True)
        s = self.settings.stack
        self.process.start(
            [server, str(self._write_config()), "--bind", s.host, "--port", str(s.redis_port),
             "--dir", str(self.home), "--daemonize", "no", "--save", "60 1", "--appendonly", "no"]
        )  # fmt: skip
        self.process.wait_ready(self.answers, s.start_timeout_s)

    def started_here(self) -> bool:
        return self.process.pid is not None

    def stop(self) -> bool:
        return self.process.stop()


SNAPSHOT_KEYS = ("subject", "version", "id", "schemaType", "schema")


class Registry:
    """AxonOps Schema Registry (the Confluent REST API) on loopback, with in-memory storage.

    Memory storage forgets every schema when the server stops, while Kafka keeps records that
    carry their schema's id. So `stop` writes what the registry holds to a snapshot file and
    `start` imports it again with the same ids and versions (Confluent's IMPORT mode) before
    anyone else can ask: a record in Kafka decodes after any number of restarts, even when a
    schema file was added in between (registering the files again in order would shift ids).
    """

    name = "registry"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack.home / "registry"
        self.process = ManagedProcess(self.name, settings.stack.home)

    @property
    def address(self) -> str:
        return self.settings.stack.registry_url

    @property
    def snapshot_file(self) -> Path:
        """Every subject's versions with their ids, written by `snapshot`, read by `start`."""
        return self.home / "schemas.json"

    def answers(self) -> bool:
        return _http_ok(f"{self.address}/subjects")

    def _write_config(self) -> Path:
        """The server's YAML: this stack's address, memory storage, BACKWARD_TRANSITIVE."""
        s = self.settings.stack
        conf = {
            "server": {"host": s.host, "port": s.registry_port},
            "storage": {"type": "memory"},
            "compatibility": {"default_level": "BACKWARD_TRANSITIVE"},
        }
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "config.yaml"
        path.write_text(yaml.safe_dump(conf, sort_keys=False))
        return path

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call; the decoded JSON answer."""
        request = urllib.request.Request(
            f"{self.address}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def snapshot(self) -> int:
        """Write every live version (subject, version, id, schema) to `snapshot_file`; the count."""
        versions = []
        for subject in self._call("GET", "/subjects") or []:  # AxonOps answers null for none
            path = f"/subjects/{quote(subject, safe='')}/versions"
            for number in self._call("GET", path):
                held = self._call("GET", f"{path}/{number}")
                versions.append({key: held.get(key) for key in SNAPSHOT_KEYS})
        versions.sort(key=lambda v: (v["id"], v["subject"]))
        self.home.mkdir(parents=True, exist_ok=True)
        partial = self.snapshot_file.with_suffix(".tmp")
        partial.write_text(json.dumps(versions, indent=1) + "\n")
        partial.replace(self.snapshot_file)
        return len(versions)

    def _restore(self) -> None:
        """Import the snapshot into the empty server, each schema under its old id and version."""
        if not self.snapshot_file.exists():
            return
        try:
            versions = json.loads(self.snapshot_file.read_text())
            self._call("PUT", "/mode", {"mode": "IMPORT"})
            for v in versions:
                self._call(
                    "POST",
                    f"/subjects/{quote(v['subject'], safe='')}/versions",
                    {"schema": v["schema"], "schemaType": v["schemaType"] or "AVRO",
                     "id": v["id"], "version": v["version"]},
                )  # fmt: skip
            self._call("PUT", "/mode", {"mode": "READWRITE"})
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ComponentError(
                f"registry: restoring {self.snapshot_file} failed ({err}): see "
                f"{self.process.log_file}; move the file away to start empty (records already "
                "in Kafka then dead-letter as unknown schema ids)"
            ) from err

    def start(self) -> None:
        binary = self.settings.stack.registry_binary
        if not binary.exists():
            raise _missing(f"the schema registry {binary}", "make registry")
        # The server lets SCHEMA_REGISTRY_* variables override its file (its address included):
        # it gets none of the caller's environment, so the file written here is all it reads.
        self.process.start([str(binary), "-config", str(self._write_config())], inherit_env=False)
        self.process.wait_ready(self.answers, self.settings.stack.start_timeout_s)
        try:
            self._restore()
        except ComponentError:
            self.process.stop()  # not a second snapshot: an empty registry would overwrite it
            raise

    def started_here(self) -> bool:
        return self.process.pid is not None

    def stop(self) -> bool:
        """Snapshot what the registry holds (if this stack runs it), then stop it."""
        try:
            if self.process.pid is not None and self.answers():
                self.snapshot()
        finally:
            stopped = self.process.stop()
        return stopped


class ZooKeeper:
    """A standalone ZooKeeper on loopback, from the jars in `.jvm/zookeeper`, its data in the
    stack's folder: the Flink cluster's leader election and the pointers to its jobs and
    checkpoints when `stack.flink_ha` is on."""

    name = "zookeeper"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack.home / "zookeeper"
        self.process = ManagedProcess(self.name, settings.stack.home)

    @property
    def address(self) -> str:
        return f"{self.settings.stack.host}:{self.settings.stack.zookeeper_port}"

    def answers(self) -> bool:
        """Serving requests: the `srvr` command then names the server's mode."""
        s = self.settings.stack
        reply = b""
        try:
            with socket.create_connection((s.host, s.zookeeper_port), timeout=2) as conn:
                conn.sendall(b"srvr")
                while chunk := conn.recv(4096):
                    reply += chunk
        except OSError:
            return False
        return b"Mode: " in reply

    def _write_config(self) -> Path:
        s = self.settings.stack
        conf = {
            # Sessions are checked every tick: a dead JobManager's leadership ends within half
            # a second of its session timeout (`Flink.high_availability`).
            "tickTime": "500",
            "maxSessionTimeout": "60000",
            "dataDir": str(self.home / "data"),
            "clientPort": str(s.zookeeper_port),
            "clientPortAddress": s.host,
            "admin.enableServer": "false",  # an HTTP server on port 8080 otherwise
            "4lw.commands.whitelist": "srvr",  # what `answers` asks
            "autopurge.purgeInterval": "1",  # hours; old snapshots and logs are removed
        }
        path = self.home / "zoo.cfg"
        path.write_text("".join(f"{key}={value}\n" for key, value in conf.items()))
        return path

    def start(self) -> None:
        classpath = _jvm_classpath(self.settings, "zookeeper", "zookeeper-3.*.jar")
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        config_file = self._write_config()
        log4j2 = _write_log4j2(self.home / "log4j2.properties", {})
        main = "org.apache.zookeeper.server.ZooKeeperServerMain"
        self.process.start(_java(classpath, log4j2, (32, 128), main, str(config_file)))
        self.process.wait_ready(self.answers, self.settings.stack.start_timeout_s)

    def started_here(self) -> bool:
        return self.process.pid is not None

    def stop(self) -> bool:
        return self.process.stop()


HEARTBEAT_MAX_AGE_S = 15.0  # the supervisor touches its heartbeat every second or so
TERMINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED"})
NO_WATERMARK = -(2**63)  # Long.MIN_VALUE: a subtask that has had no watermark yet
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gridstream", "jobs", "functions", "state", "schemas")  # as pyproject.toml installs


def code_digest() -> str:
    """A digest of the project's Python sources: what a job's workers import."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


# How long ZooKeeper keeps a silent JobManager's session, and so its leadership: a new
# JobManager leads (and resumes the jobs) no sooner than this after the old one died. Flink's
# 60 s default is for networks; on loopback a live JobManager pings every 3 s or so.
ZOOKEEPER_SESSION_TIMEOUT_S = 10


class Flink:
    """A standalone session cluster (one JobManager, one TaskManager) from the PyPI distribution;
    with `stack.flink_ha`, highly available through the stack's ZooKeeper."""

    name = "flink"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack.home / "flink"

    @property
    def address(self) -> str:
        return self.settings.stack.flink_rest_url

    @property
    def env(self) -> dict[str, str]:
        """What `bin/flink` and the cluster scripts need to find this cluster's conf, logs, pids."""
        return {
            "FLINK_LIB_DIR": str(self.home / "lib"),
            "FLINK_CONF_DIR": str(self.home / "conf"),
            "FLINK_LOG_DIR": str(self.home / "log"),
            "FLINK_PID_DIR": str(self.home / "pid"),
        }

    def overlay(self) -> dict[str, str]:
        """The keys laid over `flink-conf.yaml` for this cluster: its environment's (ports,
        paths) and `stack.flink_conf_file`'s, which may not set those."""
        s, job = self.settings.stack, self.settings.job
        if not Path(job.python_executable).exists():
            raise _missing(f"the workers' Python {job.python_executable}", "make venv")
        environment = {
            "rest.port": str(s.flink_rest_port),
            "rest.address": s.host,
            "rest.bind-address": s.host,
            "jobmanager.rpc.port": str(s.flink_rpc_port),
            "metrics.reporter.prom.port": f"{s.metrics_port}-{s.metrics_port + 1}",
            "python.executable": job.python_executable,
            "python.client.executable": job.python_executable,
            "python.pythonpath": worker_python_path(job.python_executable),
            "execution.checkpointing.dir": (self.home / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (self.home / "savepoints").as_uri(),
            "io.tmp.dirs": str(self.home / "tmp"),
            # pemja (the embedded interpreter) loads libpython once per JVM: from the cluster's
            # own classpath, not from each job's class loader (see `_link_lib`).
            "classloader.parent-first-patterns.additional": "pemja.",
            # A dead TaskManager is noticed after 2 failed heartbeat RPCs (a refused connection
            # on loopback): 4 s instead of 20 s, so a job fails over to the TaskManager the
            # supervisor starts soon after. The timeout for a live but silent one is unchanged.
            "heartbeat.interval": "2 s",
            **(self.high_availability() if s.flink_ha else {}),
        }
        return flinkconf.with_conf_file(s.flink_conf_file, environment)

    @property
    def cluster_id(self) -> str:
        """This stack's cluster in ZooKeeper and in the HA folder: one per stack folder."""
        digest = hashlib.sha256(str(self.settings.stack.home.resolve()).encode()).hexdigest()
        return f"/gridstream-{digest[:12]}"

    def high_availability(self) -> dict[str, str]:
        """The keys of ZooKeeper high availability: the leader's address and each job's graph
        and latest checkpoints are kept in ZooKeeper and `ha/`, so a new JobManager resumes
        the jobs of one that died."""
        s = self.settings.stack
        return {
            "high-availability.type": "zookeeper",
            "high-availability.zookeeper.quorum": f"{s.host}:{s.zookeeper_port}",
            "high-availability.storageDir": (self.home / "ha").as_uri(),
            "high-availability.cluster-id": self.cluster_id,
            "high-availability.zookeeper.client.session-timeout": (
                f"{ZOOKEEPER_SESSION_TIMEOUT_S} s"
            ),
            # A connection that drops (a busy machine) revokes leadership only when its session
            # is lost, not at once: fewer needless job restarts.
            "high-availability.zookeeper.client.tolerate-suspended-connections": "true",
            # With HA the JobManager's RPC port is this one, not `jobmanager.rpc.port`.
            "high-availability.jobmanager.port": str(s.flink_rpc_port),
        }

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/overview", timeout=2) as response:
                return int(json.load(response).get("taskmanagers", 0)) > 0
        except (OSError, ValueError):
            return False

    def _script(self, name: str, *args: str) -> None:
        """Run one of the distribution's cluster scripts on this cluster's folders.

        In a new session: a daemon it starts then belongs to no terminal or process group of
        the caller's (the supervisor's own stop must not take a TaskManager it started with it).
        """
        script = flinkconf.flink_home() / "bin" / name
        result = subprocess.run(
            ["bash", str(script), *args], env={**os.environ, **self.env}, capture_output=True,
            text=True, check=False, start_new_session=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise ComponentError(f"flink {name} failed: {result.stderr or result.stdout}")

    def submit(
        self,
        module: str,
        *args: str,
        extra_env: dict[str, str] | None = None,
        savepoint: str | None = None,
        skip_unmapped_state: bool = False,
    ) -> str:
        """Submit a Python job module detached with `bin/flink run` (from `savepoint` if given,
        leaving out its state for operators the job no longer has if `skip_unmapped_state`);
        return its job id."""
        python = self.settings.job.python_executable
        restore = ["--fromSavepoint", savepoint] if savepoint else []
        if savepoint and skip_unmapped_state:
            restore.append("--allowNonRestoredState")
        argv = [
            "bash", str(flinkconf.flink_home() / "bin" / "flink"), "run", "--detached", *restore,
            "-pym", module, "-pyexec", python, "-pyclientexec", python, *args,
        ]  # fmt: skip
        env = {**os.environ, **self.env, **config.as_env(self.settings), **(extra_env or {})}
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        match = re.search(r"JobID ([0-9a-f]{32})", result.stdout)
        if result.returncode != 0 or match is None:
            raise ComponentError(f"flink run {module} failed:\n{result.stdout}\n{result.stderr}")
        return match.group(1)

    def jobs(self) -> list[dict[str, Any]]:
        """The cluster's jobs (id, name, state), newest first."""
        found: list[dict[str, Any]] = self._get("/jobs/overview")["jobs"]
        return sorted(found, key=lambda job: -int(job.get("start-time", 0)))

    def job_state(self, job_id: str) -> str:
        """RUNNING, FINISHED, FAILED, ... for one job."""
        return str(self._get(f"/jobs/{job_id}")["state"])

    def input_watermark(self, job_id: str, operator: str) -> int | None:
        """The input watermark (epoch ms) of the job's vertex that starts with `operator`: the
        lowest over its subtasks, None while one of them has none yet."""
        vertices = self._get(f"/jobs/{job_id}")["vertices"]
        (vertex,) = [v for v in vertices if str(v["name"]).startswith(operator)]
        metrics = self._get(f"/jobs/{job_id}/vertices/{vertex['id']}/watermarks")
        found = [int(m["value"]) for m in metrics if m["id"].endswith(".currentInputWatermark")]
        return min(found) if found and min(found) > NO_WATERMARK else None

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.address}{path}", timeout=5) as response:
            return json.load(response)

    def cancel(self, job_id: str) -> None:
        """Cancel a job and wait until it is no longer running."""
        request = urllib.request.Request(
            f"{self.address}/jobs/{job_id}?mode=cancel", method="PATCH"
        )
        urllib.request.urlopen(request, timeout=5).close()
        if not wait_until(lambda: self.job_state(job_id) in TERMINAL_STATES, 60, 0.5):
            raise ComponentError(f"flink job {job_id} did not stop after cancel")

    def stop_with_savepoint(self, job_id: str, timeout_s: float = 120.0) -> str:
        """Stop a job with a savepoint in the cluster's savepoint folder; the savepoint's path."""
        body = json.dumps(
            {"drain": False, "targetDirectory": (self.home / "savepoints").as_uri()}
        ).encode()
        request = urllib.request.Request(
            f"{self.address}/jobs/{job_id}/stop",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            trigger = json.load(response)["request-id"]
        status: dict[str, Any] = {}

        def completed() -> bool:
            nonlocal status
            url = f"{self.address}/jobs/{job_id}/savepoints/{trigger}"
            with urllib.request.urlopen(url, timeout=10) as response:
                status = json.load(response)
            return bool(status.get("status", {}).get("id") == "COMPLETED")

        if not wait_until(completed, timeout_s, 0.5):
            raise ComponentError(f"flink job {job_id}: no savepoint within {timeout_s:.0f}s")
        operation = status.get("operation", {})
        if "location" not in operation:
            raise ComponentError(
                f"flink job {job_id}: the savepoint failed: {operation.get('failure-cause')}"
            )
        if not wait_until(lambda: self.job_state(job_id) in TERMINAL_STATES, 60, 0.5):
            raise ComponentError(f"flink job {job_id} did not stop after its savepoint")
        return str(operation["location"])

    @property
    def code_stamp(self) -> Path:
        """Where `start` and `restart_taskmanager` note the code the TaskManager imports."""
        return self.home / "code.sha256"

    def runs_current_code(self) -> bool:
        """Whether the TaskManager started with the project's code as it is now.

        In thread mode the workers' Python lives in the TaskManager's JVM, one interpreter for
        the process's life: a module a job imported stays imported, so after the code changes
        a new job would run the old modules (or a mix of old and new).
        """
        return self.code_stamp.exists() and self.code_stamp.read_text() == code_digest()

    def taskmanager_ids(self) -> set[str]:
        return {str(tm["id"]) for tm in self._get("/taskmanagers")["taskmanagers"]}

    def daemons(self, daemon: str) -> DaemonPids:
        """The pid files of this cluster's JobManager (`JOBMANAGER`) or TaskManagers."""
        return DaemonPids(self.home / "pid", daemon, self.home / "conf")

    @property
    def lock_file(self) -> Path:
        """Held around every look-then-start or stop of a daemon (`daemons.exclusive`)."""
        return self.home / "daemons.lock"

    def _start_daemon(self, daemon: str) -> int:
        """Start one daemon with its cluster script (the caller holds the lock); its pid."""
        pids = self.daemons(daemon)
        before = set(pids.prune())
        script = "jobmanager.sh" if daemon == JOBMANAGER else "taskmanager.sh"
        self._script(script, "start")
        fresh = [pid for pid in pids.listed() if pid not in before]
        # The script lists the pid of a forked shell that then execs java: until it has, the
        # pid's command line is the shell's, and pruning then would drop a starting daemon.
        wait_until(lambda: all(pids.owns(p) or not pid_alive(p) for p in fresh), 10, 0.05)
        new = [pid for pid in pids.prune() if pid in fresh]
        if not new:
            raise ComponentError(
                f"flink {script} start: no {daemon} process stayed up: see {self.home / 'log'}"
            )
        if daemon == TASKMANAGER:
            self.code_stamp.write_text(code_digest())
        return new[-1]

    def revive(self, daemon: str) -> int | None:
        """Start this cluster's `daemon` if none runs (a TaskManager only beside a running
        JobManager); the new one's pid, or None when nothing was needed or allowed."""
        with exclusive(self.lock_file):
            if self.daemons(daemon).prune():
                return None
            if daemon == TASKMANAGER and not self.daemons(JOBMANAGER).prune():
                return None
            return self._start_daemon(daemon)

    def restart_taskmanager(self) -> None:
        """A fresh TaskManager process, which imports the project's code as it is now.

        Refused while jobs run on the cluster: restarting would fail them over.
        """
        running = [job["name"] for job in self.jobs() if job["state"] not in TERMINAL_STATES]
        if running:
            raise ComponentError(
                f"the TaskManager runs older code and jobs are running on it ({running}): "
                "stop them (`gridstream job stop`), or `gridstream stack down` and up again"
            )
        old = self.taskmanager_ids()
        with exclusive(self.lock_file):
            for pid in self.daemons(TASKMANAGER).prune():
                terminate(pid, "flink taskmanager")
            self._start_daemon(TASKMANAGER)
        timeout = self.settings.stack.start_timeout_s
        if not wait_until(lambda: (ids := self.taskmanager_ids()) and not ids & old, timeout, 0.5):
            raise ComponentError(
                f"no fresh TaskManager registered within {timeout:.0f}s: see {self.home / 'log'}"
            )

    def _link_lib(self) -> None:
        """The cluster's `lib/`: the distribution's, plus `flink-python` from its `opt/`.

        A job that brings pemja in its own jars loads libpython in its own class loader; the
        JVM refuses a native library to a second loader, so the next job submitted to the same
        session cluster failed (`NoSuchFieldException: loadedLibraryNames` on Java 17).
        """
        lib = self.home / "lib"
        lib.mkdir(parents=True, exist_ok=True)
        for old in lib.iterdir():  # links to a previous venv's distribution
            old.unlink()
        dist = flinkconf.flink_home()
        for jar in [*(dist / "lib").glob("*.jar"), *(dist / "opt").glob("flink-python-*.jar")]:
            (lib / jar.name).symlink_to(jar)

    def start(self) -> None:
        """Start whichever of the JobManager and the TaskManager is not running, never a second
        one of either (a second JobManager dies on the taken ports), and wait until it answers.
        """
        zookeeper = ZooKeeper(self.settings)
        if self.settings.stack.flink_ha and not zookeeper.answers():
            raise ComponentError(
                f"flink: high availability needs ZooKeeper at {zookeeper.address}, which does "
                "not answer: `gridstream stack up` starts it (or set stack.flink_ha to false)"
            )
        with exclusive(self.lock_file):
            jobmanager = self.daemons(JOBMANAGER).prune()
            taskmanager = self.daemons(TASKMANAGER).prune()
            if not jobmanager and not taskmanager:  # nothing runs on lib/ and conf/: rewrite them
                for folder in ("log", "pid", "tmp", "checkpoints", "savepoints", "ha"):
                    (self.home / folder).mkdir(parents=True, exist_ok=True)
                self._link_lib()
                flinkconf.write_conf_dir(self.home / "conf", self.overlay())
            if not jobmanager:
                self._start_daemon(JOBMANAGER)
            if not taskmanager:
                self._start_daemon(TASKMANAGER)
        timeout = self.settings.stack.start_timeout_s
        if not wait_until(self.answers, timeout, 0.5):
            raise ComponentError(
                f"flink did not become ready within {timeout:.0f}s: see {self.home / 'log'}"
            )
        if not self.daemons(JOBMANAGER).prune():
            raise ComponentError(
                f"flink answers at {self.address} but this stack's JobManager is not running "
                f"(another process holds its ports?): see {self.home / 'log'}"
            )

    def started_here(self) -> bool:
        return bool(self.daemons(JOBMANAGER).live() or self.daemons(TASKMANAGER).live())

    def stop(self) -> bool:
        """Stop this cluster's own TaskManagers, then its JobManager (by their pid files)."""
        with exclusive(self.lock_file):
            stopped = False
            for daemon in (TASKMANAGER, JOBMANAGER):
                pids = self.daemons(daemon)
                for pid in pids.prune():
                    terminate(pid, f"flink {daemon}")
                    stopped = True
                pids.forget()
        return stopped


class Supervisor:
    """Brings a dead JobManager or TaskManager of the stack's Flink cluster back
    (`gridstream.stack.supervisor`).

    A separate small process, because nothing else is there when a daemon dies: a standalone
    session cluster never replaces a lost one, and the stack's commands run only when someone
    types them. Started after Flink by `up`, stopped before it by `down`.
    """

    name = "supervisor"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess(self.name, settings.stack.home)
        self.heartbeat = settings.stack.home / "supervisor" / "heartbeat"

    @property
    def address(self) -> str:
        return str(self.process.log_file)

    def answers(self) -> bool:
        """Alive, and looked at the daemons within the last few seconds."""
        if self.process.pid is None:
            return False
        try:
            age_s = time.time() - self.heartbeat.stat().st_mtime
        except FileNotFoundError:
            return False
        return age_s < HEARTBEAT_MAX_AGE_S

    def start(self) -> None:
        """Start the supervisor; one that is alive but stopped checking is replaced (stopped
        first, so that two never watch the same cluster)."""
        if self.process.pid is not None:
            self.process.stop()
        self.heartbeat.unlink(missing_ok=True)
        self.process.start(
            [sys.executable, "-m", "gridstream.stack.supervisor"],
            env=config.as_env(self.settings),
            cwd=PROJECT_ROOT,  # this checkout's code, whatever the venv's editable path says
        )
        self.process.wait_ready(self.answers, self.settings.stack.start_timeout_s)

    def started_here(self) -> bool:
        return self.process.pid is not None

    def stop(self) -> bool:
        return self.process.stop()

"""`gridstream doctor`: what this machine lacks for the suite, and the command that fixes it."""

from __future__ import annotations

import dataclasses
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator

from gridstream.config import Settings
from gridstream.stack import LocalStack


@dataclasses.dataclass(frozen=True)
class Check:
    """One check's outcome and its fix."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _java() -> Check:
    java = shutil.which("java")
    if java is None:
        return Check("java", False, "not on PATH", "apt-get install openjdk-17-jre-headless")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    major = int(match.group(1)) if match else 0
    ok = major >= 17
    return Check("java", ok, f"{java} (Java {major})", "install Java 17 or newer")


def _artifacts(settings: Settings) -> Iterator[Check]:
    jvm = settings.job.jvm_dir
    broker = sorted((jvm / "kafka").glob("kafka_2.13-*.jar"))
    yield Check("kafka broker jars", bool(broker), str(broker[0] if broker else jvm), "make jvm")
    zookeeper = sorted((jvm / "zookeeper").glob("zookeeper-3.*.jar"))
    found = str(zookeeper[0] if zookeeper else jvm / "zookeeper")
    yield Check("zookeeper jars", bool(zookeeper), found, "make jvm")
    connector = sorted((jvm / "flink").glob("flink-sql-connector-kafka-*.jar"))
    found = str(connector[0] if connector else jvm / "flink")
    yield Check("flink kafka connector", bool(connector), found, "make jvm")
    own = sorted((jvm / "flink").glob("gridstream-flink-*.jar"))
    found = str(own[0] if own else jvm / "flink")
    yield Check("gridstream jar (RocksDB options)", bool(own), found, "make jvm")


def _python(settings: Settings) -> Check:
    python = settings.job.python_executable
    probe = subprocess.run(
        [python, "-c", "import pyflink, pemja; print(pyflink.__file__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    ok = probe.returncode == 0
    detail = f"{python} imports pyflink and pemja" if ok else f"{python} cannot import pyflink"
    return Check("worker python", ok, detail, "make venv")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ports(settings: Settings) -> Iterator[Check]:
    s = settings.stack
    stack = LocalStack(settings)
    for name, port, owner in (
        ("kafka", s.kafka_port, stack.kafka),
        ("kafka controller", s.kafka_controller_port, stack.kafka),
        ("registry", s.registry_port, stack.registry),
        ("redis", s.redis_port, stack.redis),
        ("zookeeper", s.zookeeper_port, stack.zookeeper),
        ("flink rest", s.flink_rest_port, stack.flink),
        ("flink rpc", s.flink_rpc_port, stack.flink),
        ("metrics", s.metrics_port, stack.flink),
        ("metrics", s.metrics_port + 1, stack.flink),
    ):
        if _port_free(s.host, port):
            yield Check(f"port {port} ({name})", True, "free")
            continue
        ours = owner.started_here()
        yield Check(
            f"port {port} ({name})",
            ours,
            "used by this stack's " + owner.name if ours else "in use by another program",
            f"stop what listens there, or set GRIDSTREAM_STACK_{name.upper().replace(' ', '_')}"
            "_PORT",
        )


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order a new user would fix them."""
    redis = shutil.which("redis-server")
    registry = settings.stack.registry_binary
    return [
        _java(),
        Check("maven", shutil.which("mvn") is not None, "mvn on PATH", "apt-get install maven"),
        *_artifacts(settings),
        Check("redis-server", redis is not None, redis or "not on PATH", "make redis"),
        Check("schema registry", registry.exists(), str(registry), "make registry (needs Go)"),
        _python(settings),
        *_ports(settings),
    ]

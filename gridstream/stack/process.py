"""A server process the stack owns: started detached, tracked by a pid file, logged to a file."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gridstream.config import StackSettings


class ComponentError(RuntimeError):
    """A stack component failed to start or stop; the message names it and its log."""


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live (non-zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in {"Z", "X"}


def wait_until(probe: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll `probe` until it is true or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(interval_s)
    return probe()


def terminate(pid: int, name: str, timeout_s: float = 30.0) -> None:
    """SIGTERM one process, SIGKILL it after `timeout_s`; `name` says what it was in errors."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_until(lambda: not pid_alive(pid), timeout_s):
            return
    raise ComponentError(f"{name} (pid {pid}) did not stop")


class ManagedProcess:
    """One detached child process with `<home>/<name>.pid` and `<home>/logs/<name>.log`."""

    def __init__(self, name: str, home: Path) -> None:
        self.name = name
        self.pid_file = home / "pids" / f"{name}.pid"
        self.log_file = home / "logs" / f"{name}.log"

    @property
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        inherit_env: bool = True,
    ) -> int:
        """Start the process in its own session, output appended to its log file.

        Its environment is this process's overlaid with `env`, or only `env` if not `inherit_env`.
        """
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**(os.environ if inherit_env else {}), **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def wait_ready(self, probe: Callable[[], bool], timeout_s: float) -> None:
        """Wait for `probe`; fail naming the log as soon as the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if probe():
                return
            if self.pid is None:
                raise ComponentError(f"{self.name} exited during start-up: see {self.log_file}")
            time.sleep(0.25)
        raise ComponentError(
            f"{self.name} did not become ready within {timeout_s:.0f}s: see {self.log_file}"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the process group, SIGKILL after `timeout_s`; False if it was not running."""
        pid = self.pid
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return True
            if wait_until(lambda: not pid_alive(pid), timeout_s):
                return True
        raise ComponentError(f"{self.name} (pid {pid}) did not stop")


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nothing listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port_pair(attempts: int = 100) -> int:
    """A loopback port that is free with the next one (a Prometheus range for a JobManager and
    its TaskManager)."""
    for _ in range(attempts):
        (port,) = free_ports(1)
        if port < 65535:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise ComponentError(f"no two adjacent free loopback ports in {attempts} tries")


def on_free_ports(stack: StackSettings, home: Path) -> StackSettings:
    """`stack` moved to `home` with every server on a free loopback port: a stack of its own
    for a test or a benchmark, beside any other on the machine."""
    kafka, controller, registry, redis, rest, rpc, zookeeper = free_ports(7)
    return dataclasses.replace(
        stack, home=home, kafka_port=kafka, kafka_controller_port=controller,
        registry_port=registry, redis_port=redis, flink_rest_port=rest, flink_rpc_port=rpc,
        zookeeper_port=zookeeper, metrics_port=free_port_pair(),
    )  # fmt: skip

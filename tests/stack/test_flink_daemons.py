"""The stack's Flink cluster on its own (no Kafka; its ZooKeeper): after its TaskManager dies,
starting the cluster again starts only a TaskManager, never a second JobManager, and stopping it
stops exactly the processes it started, whatever the pid files held. Without its ZooKeeper a
highly available cluster does not start."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridstream import config
from gridstream.stack.components import Flink, ZooKeeper
from gridstream.stack.daemons import JOBMANAGER, TASKMANAGER, command_line
from gridstream.stack.process import ComponentError, on_free_ports, pid_alive, wait_until

pytestmark = pytest.mark.stack


def cluster_processes(conf_dir: Path) -> set[int]:
    """Every java process on the machine whose command line names this cluster's conf dir."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and pid_alive(int(entry.name)):
            argv = command_line(int(entry.name))
            if argv and argv[0].endswith("java") and str(conf_dir) in argv:
                found.add(int(entry.name))
    return found


@pytest.fixture
def flink_settings(tmp_path: Path) -> config.Settings:
    """The default settings with a stack folder and ports of the test's own."""
    base = config.load(env={})
    return dataclasses.replace(base, stack=on_free_ports(base.stack, tmp_path / "stack"))


@pytest.fixture
def flink(flink_settings: config.Settings) -> Iterator[Flink]:
    """A Flink cluster of its own (home, ports, the ZooKeeper of its high availability),
    stopped after the test whatever happened."""
    zookeeper = ZooKeeper(flink_settings)
    zookeeper.start()
    cluster = Flink(flink_settings)
    try:
        yield cluster
    finally:
        cluster.stop()
        for pid in cluster_processes(cluster.home / "conf"):  # never leave one behind
            os.kill(pid, signal.SIGKILL)
        zookeeper.stop()


def a_dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_a_second_start_adds_only_a_taskmanager_and_stop_stops_exactly_what_started(
    flink: Flink,
) -> None:
    """A killed TaskManager's stale pid is dropped and the second start adds one TaskManager,
    keeping the one JobManager (a second one would die on the taken ports, listed last, where
    the scripts' `stop` looks); `stop` then ends both, even with a dead pid listed after the
    JobManager's, and leaves no pid file."""
    flink.start()
    (jobmanager,) = flink.daemons(JOBMANAGER).listed()
    (taskmanager,) = flink.daemons(TASKMANAGER).listed()

    os.kill(taskmanager, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(taskmanager), 10)
    flink.start()

    assert flink.daemons(JOBMANAGER).listed() == [jobmanager]
    (fresh,) = flink.daemons(TASKMANAGER).listed()
    assert fresh != taskmanager
    assert cluster_processes(flink.home / "conf") == {jobmanager, fresh}

    (jm_file,) = flink.daemons(JOBMANAGER).files
    jm_file.write_text(f"{jm_file.read_text()}{a_dead_pid()}\n")

    assert flink.stop() is True

    assert cluster_processes(flink.home / "conf") == set()
    assert not pid_alive(jobmanager)
    assert not pid_alive(fresh)
    assert list((flink.home / "pid").glob("*.pid")) == []
    assert flink.stop() is False


def test_a_highly_available_cluster_does_not_start_without_its_zookeeper(
    flink_settings: config.Settings,
) -> None:
    """With `stack.flink_ha` on and no ZooKeeper answering, `start` starts no daemon and says
    what starts ZooKeeper, instead of a JobManager that waits for it until the timeout."""
    cluster = Flink(flink_settings)

    try:
        with pytest.raises(ComponentError, match=r"needs ZooKeeper at .*`gridstream stack up`"):
            cluster.start()
        assert cluster_processes(cluster.home / "conf") == set()
    finally:
        cluster.stop()

"""The Redis last-known-good mirror against a real `redis-server` this module starts and stops."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from gridstream import cli
from state.mirror import LastGood, MirrorEvent, RedisMirror, read

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RedisServer:
    """One `redis-server` on a fixed loopback port that a test can kill and start again."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.folder = folder
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # No persistence: a restarted server is empty, so anything found after it came from
        # the mirror's catch-up.
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(
            ["redis-server", *args, "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self._process.poll() is not None:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for this module, always stopped."""
    srv = RedisServer(_free_port(), tmp_path_factory.mktemp("redis"))
    try:
        srv.start()
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def url(server: RedisServer) -> str:
    """The server's URL, running and empty."""
    if not server.running:
        server.start()
    with redis.Redis.from_url(server.url) as client:
        client.flushdb()
    return server.url


def _reading(
    device: str = "dev-1", ts_ms: int = 1_000, power_kw: float = 1.5, region: str | None = "r-1"
) -> LastGood:
    return LastGood(device, ts_ms, power_kw, power_kw > 0, region)


def _stored(url: str, device: str = "dev-1") -> LastGood | None:
    return read(url, device)


def test_newer_write_wins_and_later_stale_write_is_ignored_across_batches(url: str) -> None:
    """A stale reading flushed after a newer one leaves the newer one in Redis."""
    mirror = RedisMirror(url, batch_size=1)
    newer, stale = _reading(ts_ms=2_000, power_kw=2.0), _reading(ts_ms=1_000, power_kw=1.0)
    assert mirror.offer(newer) == []
    assert mirror.offer(stale) == []
    assert mirror.pending == 0
    assert _stored(url) == newer


def test_stale_write_in_the_same_batch_is_ignored(url: str) -> None:
    """Within one batch the newest reading per device wins, whatever the order of offers."""
    mirror = RedisMirror(url, batch_size=10)
    newer = _reading(ts_ms=2_000, power_kw=2.0)
    mirror.offer(newer)
    mirror.offer(_reading(ts_ms=1_000, power_kw=1.0))
    assert mirror.pending == 1
    mirror.flush()
    assert _stored(url) == newer


def test_stale_batch_from_another_writer_never_overwrites(url: str) -> None:
    """A batch that arrives late (another writer, a replay) cannot move a device back in time."""
    late, early = RedisMirror(url), RedisMirror(url)
    newer = _reading(ts_ms=2_000, power_kw=2.0, region=None)
    late.offer(_reading(ts_ms=1_000, power_kw=1.0))
    early.offer(newer)
    early.flush()
    late.flush()
    late.flush()
    assert _stored(url) == newer
    assert _stored(url).region_id is None  # type: ignore[union-attr]


def test_replay_of_the_stored_reading_changes_nothing(url: str) -> None:
    """A reading with the stored ts_ms (a replay) does not rewrite the hash."""
    mirror = RedisMirror(url, batch_size=1)
    first = _reading(ts_ms=5_000, power_kw=3.0)
    mirror.offer(first)
    mirror.offer(_reading(ts_ms=5_000, power_kw=9.9))
    assert _stored(url) == first


def test_nothing_reaches_redis_before_the_batch_fills(url: str) -> None:
    """Readings wait in the buffer until `batch_size` devices are pending, then all go at once."""
    mirror = RedisMirror(url, batch_size=3, max_delay_s=3600, clock=FakeClock())
    mirror.offer(_reading("a"))
    mirror.offer(_reading("b"))
    mirror.offer(_reading("a", ts_ms=2_000))  # same device: still two pending
    assert mirror.pending == 2
    assert _stored(url, "a") is None
    assert _stored(url, "b") is None
    mirror.offer(_reading("c"))
    assert mirror.pending == 0
    assert [_stored(url, d).ts_ms for d in "abc"] == [2_000, 1_000, 1_000]  # type: ignore[union-attr]


def test_nothing_reaches_redis_before_the_delay_passes(url: str) -> None:
    """A partial batch is written once the oldest pending reading has waited `max_delay_s`."""
    clock = FakeClock()
    mirror = RedisMirror(url, batch_size=100, max_delay_s=1.0, clock=clock)
    mirror.offer(_reading("a"))
    clock.now += 0.6
    mirror.offer(_reading("b"))
    assert _stored(url, "a") is None
    clock.now += 0.4
    assert mirror.poll() == []
    assert mirror.pending == 0
    assert _stored(url, "a") is not None
    assert _stored(url, "b") is not None


def test_redis_outage_buffers_reports_once_and_catches_up(server: RedisServer, url: str) -> None:
    """Redis killed mid-stream: offers go on, one REDIS_DOWN, then catch-up and one RESTORED."""
    clock = FakeClock()
    mirror = RedisMirror(url, batch_size=2, max_delay_s=1.0, retry_s=2.0, clock=clock)
    mirror.offer(_reading("before"))
    mirror.offer(_reading("before-2"))
    assert _stored(url, "before") is not None

    server.kill()
    events: list[MirrorEvent] = []
    started = time.monotonic()
    for i in range(200):
        events += mirror.offer(_reading(f"dev-{i % 20}", ts_ms=10_000 + i))
        clock.now += 0.05  # 10 s of fake time: several retries while down
    assert time.monotonic() - started < 5, "a dead Redis must not stall the stream"
    assert [e.kind for e in events] == ["REDIS_DOWN"]
    assert str(server.port) in events[0].message
    assert mirror.is_down
    assert mirror.pending == 20

    server.start()
    events = mirror.flush()
    assert [e.kind for e in events] == ["REDIS_RESTORED"]
    assert mirror.pending == 0
    for d in range(20):
        stored = _stored(url, f"dev-{d}")
        assert stored is not None
        assert stored.ts_ms == 10_000 + 180 + d  # the newest offered for that device
    assert mirror.flush() == []


def test_retries_no_more_often_than_retry_interval(server: RedisServer, url: str) -> None:
    """While Redis is down, offers do not try to write again before `retry_s` has passed."""
    clock = FakeClock()
    mirror = RedisMirror(url, batch_size=1, retry_s=2.0, clock=clock)
    server.kill()
    assert [e.kind for e in mirror.offer(_reading("a"))] == ["REDIS_DOWN"]
    server.start()
    clock.now += 1.9
    assert mirror.offer(_reading("b")) == []
    assert mirror.pending == 2  # not retried yet, although Redis is back
    clock.now += 0.1
    assert [e.kind for e in mirror.offer(_reading("c"))] == ["REDIS_RESTORED"]
    assert mirror.pending == 0


def test_cli_state_prints_last_good_reading_as_json(
    url: str,
    server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """`gridstream state DEVICE_ID` prints the mirrored reading as JSON and exits 0."""
    _use_port(monkeypatch, server.port, tmp_path)
    mirror = RedisMirror(url)
    mirror.offer(_reading("meter-7", ts_ms=42_000, power_kw=3.25, region="north"))
    mirror.close()
    assert cli.main(["state", "meter-7"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "device_id": "meter-7",
        "ts_ms": 42_000,
        "power_kw": 3.25,
        "is_on": True,
        "region_id": "north",
    }


def test_cli_state_of_unknown_device_says_none_and_exits_1(
    url: str,
    server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """A device with nothing mirrored gets a clear message and exit code 1."""
    _use_port(monkeypatch, server.port, tmp_path)
    assert cli.main(["state", "nobody"]) == 1
    assert "no last known good reading for 'nobody'" in capsys.readouterr().err


def test_cli_state_without_redis_says_how_to_start_it_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With nothing listening on the Redis port the CLI names `gridstream stack up`, exit 2."""
    _use_port(monkeypatch, _free_port(), tmp_path)
    assert cli.main(["state", "meter-7"]) == 2
    assert "gridstream stack up" in capsys.readouterr().err


def _use_port(monkeypatch: pytest.MonkeyPatch, port: int, folder: Path) -> None:
    monkeypatch.chdir(folder)  # no stray gridstream.yaml
    monkeypatch.delenv("GRIDSTREAM_CONFIG", raising=False)
    monkeypatch.delenv("GRIDSTREAM_STACK_HOST", raising=False)
    monkeypatch.setenv("GRIDSTREAM_STACK_REDIS_PORT", str(port))


_DEVICES = ("a", "b", "c")


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_redis_holds_the_greatest_ts_per_device_whatever_the_order(
    server: RedisServer, data: st.DataObject
) -> None:
    """Any order of offers, replays, batch sizes and writers ends with the newest reading each."""
    if not server.running:
        server.start()
    with redis.Redis.from_url(server.url) as client:
        client.flushdb()
    # One reading per (device, ts): a repeated ts is a replay of the same reading.
    readings = data.draw(
        st.dictionaries(
            st.tuples(st.sampled_from(_DEVICES), st.integers(0, 50)),
            st.floats(-50, 50, allow_nan=False),
            min_size=1,
            max_size=15,
        )
    )
    offers = data.draw(st.lists(st.sampled_from(sorted(readings)), min_size=1, max_size=40))
    # Two writers with their own batch sizes stand for batches arriving in any order.
    mirrors = [
        RedisMirror(server.url, batch_size=data.draw(st.integers(1, 4)), max_delay_s=3600)
        for _ in range(2)
    ]
    for key in offers:
        writer = mirrors[data.draw(st.integers(0, 1))]
        writer.offer(LastGood(key[0], key[1], readings[key], readings[key] > 0, None))
        if data.draw(st.booleans()):
            mirrors[data.draw(st.integers(0, 1))].flush()
    for writer in data.draw(st.permutations(mirrors)):
        writer.close()

    for device in _DEVICES:
        newest = max((k[1] for k in offers if k[0] == device), default=None)
        stored = read(server.url, device)
        if newest is None:
            assert stored is None
        else:
            power = readings[(device, newest)]
            assert stored == LastGood(device, newest, power, power > 0, None)

"""The Redis last-known-good mirror: each device's newest good reading, readable by anyone.

Writes are buffered (newest per device), sent in pipelined batches, and applied by a Lua script
only when their `ts_ms` is newer than the stored one, so replays, restarts and batches that
arrive out of order never move a device back in time. Redis is a convenience, not part of the
decision path: when it is down the job keeps running, the buffer keeps the newest reading per
device (bounded by the fleet size), and everything is written once Redis answers again.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

DEFAULT_PREFIX = "gridstream:lkg:"
SOCKET_TIMEOUT_S = 1.0
PASSWORD_ENV = "GRIDSTREAM_REDIS_PASSWORD"  # noqa: S105 (the variable's name, not a password)

# KEYS[1] the device hash; ARGV ts_ms, power_kw, is_on, has_region ("1"/"0"), region_id.
# Equal ts_ms is a replay of the same reading (msg_id = device + time), so it is ignored too.
_WRITE_IF_NEWER = """
local stored = redis.call('HGET', KEYS[1], 'ts_ms')
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'ts_ms', ARGV[1], 'power_kw', ARGV[2], 'is_on', ARGV[3])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'region_id', ARGV[5])
else
  redis.call('HDEL', KEYS[1], 'region_id')
end
return 1
"""


@dataclasses.dataclass(frozen=True)
class LastGood:
    """A device's newest good-quality reading, as mirrored to Redis."""

    device_id: str
    ts_ms: int
    power_kw: float
    is_on: bool
    region_id: str | None


@dataclasses.dataclass(frozen=True)
class MirrorEvent:
    """A change in the mirror's health, for the caller to turn into an alert."""

    kind: Literal["REDIS_DOWN", "REDIS_RESTORED"]
    message: str


class MirrorUnavailableError(ConnectionError):
    """Redis did not answer; the message names the address."""


def password(password_file: str = "", env: Mapping[str, str] | None = None) -> str | None:
    """Redis's password: the content of `password_file`, else $GRIDSTREAM_REDIS_PASSWORD, else
    none. Read where the client is made (on a Flink worker, at the operator's open), so it never
    travels in a URL, a job graph or a log line."""
    if password_file:
        try:
            return Path(password_file).read_text().strip()
        except OSError as err:
            raise MirrorUnavailableError(
                f"the Redis password file {password_file} cannot be read: {err}"
            ) from err
    return (os.environ if env is None else env).get(PASSWORD_ENV) or None


def _client(url: str, password_file: str = "") -> redis.Redis:
    # Short timeouts and no client-side retries: the mirror has its own retry schedule, and a
    # dead Redis must cost at most about a second, not redis-py's default backoff.
    secret = password(password_file)
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        **({} if secret is None else {"password": secret}),
    )


def without_credentials(url: str) -> str:
    """The URL without credentials, fit for a log line or an alert."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


class RedisMirror:
    """Batched, newest-wins writes of last-good readings to Redis that survive a Redis outage.

    Not thread-safe: one instance per operator instance (Flink calls it from one thread).
    """

    def __init__(
        self,
        url: str,
        *,
        password_file: str = "",
        batch_size: int = 500,
        max_delay_s: float = 1.0,
        retry_s: float = 2.0,
        key_prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Connects lazily; nothing is sent before the first flush.

        Args:
            url: the Redis URL, for example `redis://127.0.0.1:26379/0`.
            password_file: where Redis's password is (see `password`).
            batch_size: flush once this many devices have a pending reading.
            max_delay_s: flush once the oldest pending reading has waited this long.
            retry_s: while Redis is down, the least time between two write attempts.
            key_prefix: prepended to the device id to make the hash key.
            clock: monotonic seconds, injected so tests control time.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._address = without_credentials(url)
        self._redis = _client(url, password_file)
        self._script = self._redis.register_script(_WRITE_IF_NEWER)
        self._batch_size = batch_size
        self._max_delay_s = max_delay_s
        self._retry_s = retry_s
        self._prefix = key_prefix
        self._clock = clock
        self._pending: dict[str, LastGood] = {}
        self._oldest_s: float | None = None
        self._down_since_s: float | None = None
        self._retry_at_s = 0.0

    @property
    def pending(self) -> int:
        """How many devices have a reading not yet written."""
        return len(self._pending)

    @property
    def is_down(self) -> bool:
        """Whether the last write attempt failed."""
        return self._down_since_s is not None

    def offer(self, reading: LastGood) -> list[MirrorEvent]:
        """Buffers a reading (older than the buffered one for its device: dropped), then polls."""
        held = self._pending.get(reading.device_id)
        if held is None or reading.ts_ms > held.ts_ms:
            self._pending[reading.device_id] = reading
        if self._oldest_s is None:
            self._oldest_s = self._clock()
        return self.poll()

    def poll(self) -> list[MirrorEvent]:
        """Flushes if the batch is full or the oldest pending reading is due; for timers too."""
        if not self._pending or self._oldest_s is None:
            return []
        now = self._clock()
        if self.is_down and now < self._retry_at_s:
            return []
        if len(self._pending) >= self._batch_size or now - self._oldest_s >= self._max_delay_s:
            return self.flush()
        return []

    def flush(self) -> list[MirrorEvent]:
        """Writes everything pending now, in pipelines of `batch_size`; an outage never raises."""
        if not self._pending:
            return []
        items = list(self._pending.values())
        try:
            for start in range(0, len(items), self._batch_size):
                chunk = items[start : start + self._batch_size]
                self._write(chunk)
                # Only what was written leaves the buffer: a failure later keeps the rest.
                for reading in chunk:
                    del self._pending[reading.device_id]
        except redis.RedisError as err:
            # Any Redis error (refused, timeout, an error reply) keeps the batch: rewriting is
            # harmless because the script only ever moves a device forward in time.
            return self._failed(err)
        self._oldest_s = None
        return self._restored(written=len(items))

    def close(self) -> None:
        """Tries one last flush, then releases the connections."""
        try:
            self.flush()
        finally:
            self._redis.close()

    def _write(self, chunk: list[LastGood]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for r in chunk:
            self._script(
                keys=[self._prefix + r.device_id],
                args=[
                    r.ts_ms,
                    repr(r.power_kw),
                    int(r.is_on),
                    "0" if r.region_id is None else "1",
                    r.region_id or "",
                ],
                client=pipe,
            )
        pipe.execute()

    def _failed(self, err: redis.RedisError) -> list[MirrorEvent]:
        now = self._clock()
        self._retry_at_s = now + self._retry_s
        if self._down_since_s is not None:
            return []
        self._down_since_s = now
        return [
            MirrorEvent(
                kind="REDIS_DOWN",
                message=(
                    f"Redis at {self._address} failed ({err}); keeping the last good reading of "
                    f"{len(self._pending)} device(s) and retrying every {self._retry_s:g} s"
                ),
            )
        ]

    def _restored(self, *, written: int) -> list[MirrorEvent]:
        if self._down_since_s is None:
            return []
        down_s = self._clock() - self._down_since_s
        self._down_since_s = None
        return [
            MirrorEvent(
                kind="REDIS_RESTORED",
                message=(
                    f"Redis at {self._address} answers again after {down_s:.1f} s; "
                    f"wrote {written} buffered reading(s)"
                ),
            )
        ]


def read(
    url: str, device_id: str, key_prefix: str = DEFAULT_PREFIX, *, password_file: str = ""
) -> LastGood | None:
    """The device's mirrored last good reading, or None if it has none.

    Raises:
        MirrorUnavailableError: Redis did not answer, or refused the password.
    """
    client = _client(url, password_file)
    try:
        fields: dict[str, str] = client.hgetall(key_prefix + device_id)  # type: ignore[assignment]
    except redis.AuthenticationError as err:
        raise MirrorUnavailableError(
            f"Redis at {without_credentials(url)} refused this client ({err}): give its password "
            f"by stack.redis_password_file or ${PASSWORD_ENV}"
        ) from err
    except (redis.ConnectionError, redis.TimeoutError) as err:
        raise MirrorUnavailableError(
            f"Redis at {without_credentials(url)} does not answer: {err}"
        ) from err
    finally:
        client.close()
    if "ts_ms" not in fields:
        return None
    return LastGood(
        device_id=device_id,
        ts_ms=int(fields["ts_ms"]),
        power_kw=float(fields["power_kw"]),
        is_on=fields["is_on"] == "1",
        region_id=fields.get("region_id"),
    )

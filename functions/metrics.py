"""What the suite reports to Prometheus, as pure tallies; `functions.operators.Meters` hands
them to Flink's metric groups.

Counters count what the job emitted (commands by action, blocked decisions by reason, dead
letters by reason and topic, alerts by kind) and the decoders' waits for a new schema id (by
how they ended); gauges say what is in force now (stale devices, suspended and Grid-Follow
regions, the lag freeze, the processing lag, the device keys and timers held, so a soak can
tell a leak from a steady fleet); the ingestion latency
(a reading's device time to its processing) is a Prometheus-style histogram of cumulative
buckets. `docs/operations.md` says what each means to an operator.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Hashable

from schemas.models import (
    Alert,
    AuditDecision,
    AuditOutcome,
    DeadLetter,
    DeviceCommand,
    Recommendation,
    TopicRecord,
)
from schemas.serde import Waited

# Every suite metric and the keys of its labels, as `Meters` makes them; Prometheus names each
# `PROMETHEUS_SCOPE` + its label keys + its name (`prometheus_name`).
COUNTERS: dict[str, tuple[str, ...]] = {
    "commands": ("action",),
    "recommendations": ("action",),
    "blocked_decisions": ("reason",),
    "alerts": ("kind",),
    "dead_letters": ("reason", "topic"),
    "schema_waits": ("outcome",),
    "ingestion_latency_ms_bucket": ("le",),
    "ingestion_latency_ms_sum": (),
    "ingestion_latency_ms_count": (),
}
GAUGES = (
    "stale_devices",
    "suspended_regions",
    "grid_follow_regions",
    "freeze",
    "source_silent",
    "processing_lag_ms",
    "device_keys",
    "device_timers",
    "python_blocks",
)
PROMETHEUS_SCOPE = "flink_taskmanager_job_task_operator_gridstream_"

# Upper bounds (ms) of the ingestion-latency buckets; the last bucket (`+Inf`) takes the rest.
LATENCY_BOUNDS_MS: tuple[int, ...] = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000)


@dataclasses.dataclass(frozen=True)
class Tally:
    """One counter to move: its name and its labels (a short, fixed set of values each)."""

    metric: str
    labels: tuple[tuple[str, str], ...]


def output_tallies(record: TopicRecord) -> tuple[Tally, ...]:
    """The counters one output record moves."""
    if isinstance(record, DeviceCommand):
        return (Tally("commands", (("action", record.action.value),)),)
    if isinstance(record, Recommendation):
        return (Tally("recommendations", (("action", record.action.value),)),)
    if isinstance(record, AuditDecision) and record.outcome is AuditOutcome.BLOCKED:
        reasons = record.reason_codes or ()
        return tuple(Tally("blocked_decisions", (("reason", r.value),)) for r in reasons)
    if isinstance(record, Alert):
        return (Tally("alerts", (("kind", record.kind.value),)),)
    if isinstance(record, DeadLetter):
        labels = (("reason", record.error_class), ("topic", record.source_topic))
        return (Tally("dead_letters", labels),)
    return ()


def wait_tally(waited: Waited) -> Tally:
    """The counter a decoder's wait for a new schema id moves when it ends."""
    return Tally("schema_waits", (("outcome", waited.outcome),))


class Members:
    """The keys a gauge counts (stale devices, suspended regions): `update` says whether the
    count changed, so the adapter sets the gauge only then."""

    def __init__(self) -> None:
        self.keys: set[Hashable] = set()

    def update(self, key: Hashable, member: bool) -> bool:
        """Count `key` in or out; True when that changed the count."""
        if member == (key in self.keys):
            return False
        if member:
            self.keys.add(key)
        else:
            self.keys.discard(key)
        return True

    def __len__(self) -> int:
        return len(self.keys)


class Held:
    """The device keys with state and the event-time timers a task holds, kept as the net of
    what it added and removed since it started (no per-device memory): flat under a fixed
    fleet, rising steadily if keys or timers leak."""

    def __init__(self) -> None:
        self.keys = 0
        self.timers = 0

    def update(self, had_state: bool, has_state: bool) -> bool:
        """Count a key in or out as its state appears or is cleared; True when that changed."""
        self.keys += int(has_state) - int(had_state)
        return had_state != has_state

    def move_timers(self, added: int) -> bool:
        """Count `added` timers (negative: removed); True when that changed the count."""
        self.timers += added
        return added != 0


class Histogram:
    """Observations counted into `LATENCY_BOUNDS_MS` buckets between two `drain`s."""

    def __init__(self, bounds: tuple[int, ...] = LATENCY_BOUNDS_MS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0

    def observe(self, value: int) -> None:
        """Count one observation (a value on a bound falls in that bound's bucket)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def drain(self) -> tuple[list[int], int, int]:
        """Since the last drain: the cumulative count per bucket (`le` each bound, then
        `+Inf`), the sum and the count of the observations; starts over."""
        cumulative, running = [], 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        total = self.total
        self.counts = [0] * len(self.counts)
        self.total = 0
        return cumulative, total, running


def prometheus_name(metric: str) -> str:
    """A suite metric's name in Prometheus (its label keys are part of it: Flink puts each
    key-value group in the scope)."""
    keys = COUNTERS.get(metric, ())
    return PROMETHEUS_SCOPE + "".join(f"{key}_" for key in keys) + metric

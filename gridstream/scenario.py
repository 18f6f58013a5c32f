"""Scenarios: JSONL files of steps played into Kafka, and the decoded dump of what came out.

A scenario file holds one step a line, in order (blank lines are skipped):

- `{"topic": T, "value": {...}}`: a record, validated with the topic's model, then encoded with
  the topic's newest schema (its id from the registry);
- `{"topic": T, "raw_hex": "00ff..."}`: raw bytes, for bad input;
- `{"topic": "device.registry", "key": ID, "value": null}`: the deletion of a device's record
  (a tombstone on the compacted registry; DESIGN.md's format has no way to write one);
- `{"sleep_ms": N}`: a wall-clock pause (records before it are flushed to Kafka first).

A record or raw step may add `"key"` (a string, or null for no key); otherwise a record's key is
its topic's key field (`KEY_FIELDS`, from DESIGN.md) and a raw step has none. A raw step may add
`"correlation_id"`. Every produced record carries a `correlation_id` header: the value's own, else
one minted at play time (and written into the value, which requires the field).

A time field (`ts_ms`, or any name ending in `_ts_ms`) may be written relative to the moment its
step is played: `"now"`, `"now+90s"`, `"now-15m"` (units ms, s, m, h), so a file stays valid
whenever it runs (the models refuse event times too far ahead). Every step is validated before
anything is produced, with "now" projected forward over the sleeps before it.

Decisions: the Kafka timestamp of a record is its event time where the topic has one
(`EVENT_TIME_FIELDS`, as `roundtrip` does for telemetry), else the time it is produced. Any
contract topic may be written, outputs included, so tests can stage a recommendation without the
job. `dump` adds each record's Kafka coordinates under `"_kafka"`; `run` writes only the output
records that appeared after its play began.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import ValidationError

from gridstream import topics
from gridstream.config import Settings, kafka_client_config
from schemas import examples, models, serde
from schemas.models import TopicRecord
from schemas.registry import Registry, RegistryConfig

KEY_FIELDS: Mapping[str, tuple[str, ...]] = {
    topics.SCADA_TELEMETRY: ("device_id",),
    topics.IOT_TELEMETRY: ("device_id",),
    topics.DEVICE_REGISTRY: ("device_id",),
    topics.WEATHER: ("region_id",),
    topics.DR_EVENTS: ("event_id",),
    topics.OPERATOR_APPROVALS: ("recommendation_id",),
    topics.COMMANDS: ("device_id",),
    topics.RECOMMENDATIONS: ("device_id",),
    topics.AUDIT: ("device_id",),
    topics.ALERTS: ("device_id", "region_id"),  # the first one set
    topics.DLQ: ("key",),  # the source record's key
}
EVENT_TIME_FIELDS: Mapping[str, str] = {
    topics.SCADA_TELEMETRY: "ts_ms",
    topics.IOT_TELEMETRY: "ts_ms",
    topics.WEATHER: "ts_ms",
    topics.OPERATOR_APPROVALS: "ts_ms",
}
CORRELATION_HEADER = "correlation_id"
SETTLE_S = 8.0  # outputs are transactional and appear at checkpoints, every 5 s
RUN_TIMEOUT_S = 300.0
DUMP_TIMEOUT_S = 60.0
PROGRESS_EVERY_S = 2.0

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}
_PLACEHOLDER = re.compile(r"^\s*now\s*(?:([+-])\s*(\d+)\s*(ms|s|m|h))?\s*$")
_STEP_SHAPES = '{"topic": T, "value": {...}}, {"topic": T, "raw_hex": "00ff.."} or {"sleep_ms": N}'
_TOPIC_LIST = ", ".join(sorted(models.MODELS))
_TIME_FIX = 'an epoch-millisecond integer or "now", "now+90s", "now-15m" (units ms, s, m, h)'


class ScenarioError(Exception):
    """A scenario, dump or run that cannot go on; the message says what to do."""


class StepError(ScenarioError):
    """A step that is malformed or invalid, named by file and line (or step number) and field.

    Attributes:
        where: `file:line` of the step.
        field: The offending field, dotted (`value.ts_ms`), or None for the whole line.
    """

    def __init__(self, where: str, field: str | None, problem: str) -> None:
        self.where = where
        self.field = field
        super().__init__(f"{where}: {f'field `{field}`: ' if field else ''}{problem}")


class StackDown(ScenarioError):
    """The local stack does not answer."""


class UnknownRecommendation(ScenarioError):
    """No recommendation with the given id is in `grid.recommendations`."""


# --- steps ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RecordStep:
    """Produce `value` to `topic`, validated and encoded with the topic's newest schema."""

    topic: str
    value: Mapping[str, Any]
    key: str | None
    where: str
    relative: bool = False  # some `_ts_ms` field is written relative to "now"


@dataclasses.dataclass(frozen=True)
class RawStep:
    """Produce `data` to `topic` as it is (None: a tombstone)."""

    topic: str
    data: bytes | None
    key: str | None
    where: str
    correlation_id: str | None = None


@dataclasses.dataclass(frozen=True)
class SleepStep:
    """Pause for `ms` milliseconds of wall-clock time."""

    ms: int
    where: str


Step: TypeAlias = RecordStep | RawStep | SleepStep


def parse_time(text: str) -> int:
    """The offset from now, in ms, of a placeholder such as `now-15m`; ValueError if not one."""
    match = _PLACEHOLDER.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time")
    sign, amount, unit = match.groups()
    if amount is None:
        return 0
    return (-1 if sign == "-" else 1) * int(amount) * _UNITS_MS[unit]


def _is_time(name: object) -> bool:
    """Whether a field holds epoch milliseconds: `ts_ms` or a name ending in `_ts_ms`."""
    return name == "ts_ms" or str(name).endswith("_ts_ms")


def _time_fields(value: Any, path: str = "value") -> Iterable[tuple[str, str]]:
    """(dotted path, text) of each string in a field ending `_ts_ms`, at any depth."""
    if isinstance(value, Mapping):
        for name, item in value.items():
            where = f"{path}.{name}"
            if isinstance(item, str) and _is_time(name):
                yield where, item
            else:
                yield from _time_fields(item, where)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _time_fields(item, f"{path}[{i}]")


def resolve_times(value: Any, now_ms: int) -> Any:
    """`value` with every `_ts_ms` placeholder replaced by epoch ms relative to `now_ms`."""
    if isinstance(value, Mapping):
        return {
            name: now_ms + parse_time(item)
            if isinstance(item, str) and _is_time(name)
            else resolve_times(item, now_ms)
            for name, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [resolve_times(item, now_ms) for item in value]
    return value


def key_for(topic: str, value: Mapping[str, Any]) -> str | None:
    """The Kafka key DESIGN.md gives a record of `topic`: its first key field that is set."""
    for name in KEY_FIELDS.get(topic, ()):
        found = value.get(name)
        if isinstance(found, str) and found:
            return found
        if isinstance(found, bytes) and found:
            return found.decode("utf-8", "backslashreplace")
    return None


def _topic(obj: Mapping[str, Any], where: str) -> str:
    topic = obj.get("topic")
    if topic not in models.MODELS:
        raise StepError(where, "topic", f"{topic!r} is not a topic: use one of {_TOPIC_LIST}")
    return str(topic)


def _key(obj: Mapping[str, Any], where: str, derived: str | None) -> str | None:
    if "key" not in obj:
        return derived
    key = obj["key"]
    if key is not None and not isinstance(key, str):
        raise StepError(where, "key", f"{key!r} is not a string: write a string, or null for none")
    return key


def parse_step(obj: Any, where: str) -> Step:
    """One step from its JSON object.

    Raises:
        StepError: naming `where`, the field and what to write instead.
    """
    if not isinstance(obj, Mapping):
        raise StepError(where, None, f"{type(obj).__name__} is not a step: write {_STEP_SHAPES}")
    kinds = [k for k in ("value", "raw_hex", "sleep_ms") if k in obj]
    if len(kinds) != 1:
        found = " and ".join(kinds) or "none of value, raw_hex, sleep_ms"
        problem = f"a step has exactly one of value, raw_hex, sleep_ms, this has {found}"
        raise StepError(where, None, f"{problem}: write {_STEP_SHAPES}")
    allowed = {
        "value": {"topic", "value", "key"},
        "raw_hex": {"topic", "raw_hex", "key", "correlation_id"},
        "sleep_ms": {"sleep_ms"},
    }[kinds[0]]
    extras = sorted(set(obj) - allowed)
    if extras:
        fields = ", ".join(sorted(allowed))
        raise StepError(where, str(extras[0]), f"is not a field of a {kinds[0]} step: use {fields}")
    if "sleep_ms" in obj:
        ms = obj["sleep_ms"]
        if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
            raise StepError(where, "sleep_ms", f"{ms!r} is not a whole number of ms >= 0")
        return SleepStep(ms, where)
    topic = _topic(obj, where)
    if "value" in obj and obj["value"] is None:
        key = obj.get("key")
        if topic != topics.DEVICE_REGISTRY or not (isinstance(key, str) and key):
            raise StepError(
                where, "value", f"null (a deletion) needs the device id as key and topic "
                f"{topics.DEVICE_REGISTRY!r}, the compacted one: write a record instead",
            )  # fmt: skip
        return RawStep(topic, None, key, where)
    if "raw_hex" in obj:
        text = obj["raw_hex"]
        try:
            data = bytes.fromhex(text) if isinstance(text, str) else None
        except ValueError:
            data = None
        if data is None:
            raise StepError(
                where, "raw_hex", f"{text!r:.60} is not hex: write two hex digits a byte, '00ff..'"
            )
        correlation_id = obj.get("correlation_id")
        if correlation_id is not None and not (isinstance(correlation_id, str) and correlation_id):
            raise StepError(where, "correlation_id", f"{correlation_id!r} is not a non-empty id")
        return RawStep(topic, data, _key(obj, where, None), where, correlation_id)
    value = obj["value"]
    if not isinstance(value, Mapping):
        raise StepError(
            where, "value", f"{type(value).__name__} is not a record: write a JSON object of fields"
        )
    relative = False
    for field, text in _time_fields(value):
        try:
            parse_time(text)
        except ValueError:
            raise StepError(where, field, f"{text!r} is not a time: write {_TIME_FIX}") from None
        relative = True
    return RecordStep(topic, dict(value), _key(obj, where, key_for(topic, value)), where, relative)


def parse_lines(lines: Iterable[str], source: str) -> list[Step]:
    """The steps of JSONL text; `source` names the file in errors."""
    steps: list[Step] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise StepError(
                where, None, f"not JSON ({err.msg} at column {err.colno}): write {_STEP_SHAPES}"
            ) from None
        steps.append(parse_step(obj, where))
    return steps


def load(path: str | Path) -> list[Step]:
    """The steps of a scenario file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(f"cannot read scenario {path}: {err}") from None
    return parse_lines(text.splitlines(), str(path))


def steps_of(source: str | Path | Scenario | Iterable[Mapping[str, Any] | Step]) -> list[Step]:
    """Steps from a file path, a `Scenario`, or step objects (dicts as in a file, or steps)."""
    if isinstance(source, str | Path):
        return load(source)
    if isinstance(source, Scenario):
        source = source.steps
    return [
        item
        if isinstance(item, RecordStep | RawStep | SleepStep)
        else parse_step(item, f"<step {i}>")
        for i, item in enumerate(source, start=1)
    ]


def mint_correlation_id() -> str:
    """A fresh correlation id for a record that brought none."""
    return f"scn-{uuid.uuid4().hex}"


def with_correlation_ids(steps: Iterable[Step]) -> list[Step]:
    """`steps` with a correlation id minted for each record or raw step that has none."""
    out: list[Step] = []
    for step in steps:
        if isinstance(step, RecordStep) and not step.value.get("correlation_id"):
            step = dataclasses.replace(
                step, value={**step.value, "correlation_id": mint_correlation_id()}
            )
        elif isinstance(step, RawStep) and step.correlation_id is None:
            step = dataclasses.replace(step, correlation_id=mint_correlation_id())
        out.append(step)
    return out


def validated(step: RecordStep, now_ms: int) -> TopicRecord:
    """The step's record, placeholders resolved at `now_ms`, validated as its topic's model.

    Raises:
        StepError: naming each bad field and its value.
    """
    model = models.MODELS[step.topic]
    try:
        return models.validate(model, resolve_times(step.value, now_ms), now_ms)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        problems = []
        for e in errors:
            field = ".".join(map(str, e["loc"]))
            if not field:  # a cross-field rule: its message names the fields
                problems.append(str(e["msg"]).removeprefix("Value error, "))
                continue
            got = "" if e["type"] == "missing" else f" (got {e.get('input')!r:.80})"
            hint = f": write {_TIME_FIX}" if _is_time(field.rsplit(".", 1)[-1]) else ""
            problems.append(f"{field}: {e['msg']}{got}{hint}")
        first = ".".join(map(str, errors[0]["loc"])) if errors else ""
        raise StepError(
            step.where,
            f"value.{first}" if first else "value",
            f"not a valid {model.__name__} record ({'; '.join(problems)}); fix the value "
            "(schemas/models.py says what each field allows)",
        ) from None


def check(steps: Sequence[Step], now_ms: int) -> list[TopicRecord | None]:
    """Validate every record step as if played from `now_ms`; the records, None for other steps.

    "now" is projected forward over the sleeps before each step.
    """
    out: list[TopicRecord | None] = []
    for step in steps:
        if isinstance(step, SleepStep):
            now_ms += step.ms
            out.append(None)
        elif isinstance(step, RecordStep):
            out.append(validated(step, now_ms))
        else:
            out.append(None)
    return out


# --- the builder ------------------------------------------------------------------------------


class _Key(enum.Enum):
    DERIVED = "derived"


DERIVED = _Key.DERIVED  # the key is the topic's key field


def _defaults(model: type[TopicRecord], **times: str) -> dict[str, Any]:
    """The example record with relative times and no correlation id (minted when played)."""
    data = examples.example_data(model, **times)
    del data["correlation_id"]
    return data


class Scenario:
    """Builds a scenario step by step; each record method takes field overrides on defaults.

    Defaults are `schemas.examples` records with times relative to "now"; absolute timestamps
    may be given (for tests that know their clock). Methods return the scenario, to chain.
    """

    def __init__(self) -> None:
        self._steps: list[dict[str, Any]] = []

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The steps as JSON objects, one per line of the file."""
        return [dict(step) for step in self._steps]

    def record(
        self, topic: str, value: Mapping[str, Any], key: str | _Key | None = DERIVED
    ) -> Scenario:
        """A record of any topic, as given."""
        step: dict[str, Any] = {"topic": topic, "value": dict(value)}
        if key is not DERIVED:
            step["key"] = key
        self._steps.append(step)
        return self

    def _model(
        self,
        model: type[TopicRecord],
        key: str | _Key | None,
        defaults: Mapping[str, Any],
        overrides: Mapping[str, Any],
    ) -> Scenario:
        return self.record(model.TOPIC, {**defaults, **overrides}, key)

    def telemetry_iot(self, key: str | _Key | None = DERIVED, **overrides: Any) -> Scenario:
        """A consumer IoT reading (default: a thermostat drawing 3.2 kW, read now)."""
        defaults = _defaults(models.IotTelemetry, ts_ms="now")
        return self._model(models.IotTelemetry, key, defaults, overrides)

    def telemetry_scada(self, key: str | _Key | None = DERIVED, **overrides: Any) -> Scenario:
        """A SCADA reading (default: a closed feeder breaker at 4.2 MW, read now)."""
        defaults = _defaults(models.ScadaTelemetry, ts_ms="now")
        return self._model(models.ScadaTelemetry, key, defaults, overrides)

    def registry(self, key: str | _Key | None = DERIVED, **overrides: Any) -> Scenario:
        """A CIS record (default: a STANDARD thermostat in region-north, updated now)."""
        defaults = _defaults(models.DeviceRecord, updated_ts_ms="now")
        return self._model(models.DeviceRecord, key, defaults, overrides)

    def deletion(self, device_id: str) -> Scenario:
        """The CIS deleting a device's record (a tombstone on the registry)."""
        self._steps.append({"topic": topics.DEVICE_REGISTRY, "key": device_id, "value": None})
        return self

    def weather(self, key: str | _Key | None = DERIVED, **overrides: Any) -> Scenario:
        """A weather observation (default: region-north, 34 °C at 40 % RH, observed now)."""
        defaults = _defaults(models.WeatherObservation, ts_ms="now")
        return self._model(models.WeatherObservation, key, defaults, overrides)

    def dr_event(self, key: str | _Key | None = DERIVED, **overrides: Any) -> Scenario:
        """A DR event (default: +2 °C setpoint offset in region-north from now+1h to now+3h)."""
        defaults = _defaults(
            models.DrEvent, start_ts_ms="now+1h", end_ts_ms="now+3h", issued_ts_ms="now"
        )
        return self._model(models.DrEvent, key, defaults, overrides)

    def approval(self, key: str | _Key | None = DERIVED, **overrides: Any) -> Scenario:
        """An operator's decision (default: APPROVE of the example recommendation, now)."""
        defaults = _defaults(models.OperatorApproval, ts_ms="now")
        return self._model(models.OperatorApproval, key, defaults, overrides)

    def raw(
        self, topic: str, data: bytes, key: str | None = None, correlation_id: str | None = None
    ) -> Scenario:
        """Raw bytes, for bad input."""
        step: dict[str, Any] = {"topic": topic, "raw_hex": data.hex()}
        if key is not None:
            step["key"] = key
        if correlation_id is not None:
            step["correlation_id"] = correlation_id
        self._steps.append(step)
        return self

    def sleep(self, ms: int) -> Scenario:
        """A wall-clock pause."""
        self._steps.append({"sleep_ms": ms})
        return self

    def lines(self) -> list[str]:
        """The scenario file's lines."""
        return [json.dumps(step, separators=(", ", ": ")) for step in self._steps]

    def write(self, path: str | Path) -> Path:
        """Write the scenario file; return its path."""
        path = Path(path)
        path.write_text("".join(f"{line}\n" for line in self.lines()), encoding="utf-8")
        return path


# --- Kafka ------------------------------------------------------------------------------------


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _schemas(settings: Settings) -> serde.SchemaSource:
    return Registry(RegistryConfig.from_settings(settings)).schemas()


def _serializers(
    settings: Settings, wanted: Iterable[str]
) -> dict[str, serde.Serializer[TopicRecord]]:
    source = _schemas(settings)
    try:
        return {topic: serde.serializer(models.MODELS[topic], source) for topic in sorted(wanted)}
    except (LookupError, serde.RegistryUnavailable) as err:
        raise ScenarioError(str(err)) from None


def watermarks(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) offsets of `topic`; high is the last stable one when the
    consumer reads committed records only."""
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    except KafkaException as err:
        raise ScenarioError(f"kafka does not answer ({err}): run `gridstream stack up`") from None
    if metadata.error is not None or not metadata.partitions:
        raise ScenarioError(f"topic {topic} does not exist: run `gridstream stack up`")
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        for p in metadata.partitions
    }


# The group coordinator is not ready yet: a fresh broker still loading its offsets, or a busy one.
GROUP_COORDINATOR_NOT_READY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
    }
)


def committed_offsets(
    consumer: Consumer, partitions: list[TopicPartition], timeout_s: float = 60.0
) -> list[TopicPartition]:
    """`consumer.committed(partitions)`, asked again while the group coordinator is not ready."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.committed(partitions, timeout=10)
        except KafkaException as err:
            if err.args[0].code() not in GROUP_COORDINATOR_NOT_READY:
                raise
            if time.monotonic() > deadline:
                raise ScenarioError(f"kafka's group coordinator is not ready: {err}") from None
            time.sleep(0.5)


def end_offsets(consumer: Consumer, topic: str) -> list[TopicPartition]:
    """Each partition of `topic` at its end offset (as `watermarks` reads it)."""
    return [TopicPartition(topic, p, high) for p, (_, high) in watermarks(consumer, topic).items()]


def produce(producer: Producer, topic: str, **kwargs: Any) -> None:
    """`producer.produce`, waiting for deliveries to drain while the local queue is full."""
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            producer.poll(0.1)


def _consumer(settings: Settings, purpose: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            **kafka_client_config(settings.stack),
            "group.id": f"gridstream-{purpose}-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            **extra,
        }
    )


@dataclasses.dataclass(frozen=True)
class PlayReport:
    """What a play produced."""

    counts: Mapping[str, int]
    slept_ms: int
    seconds: float

    @property
    def records(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        """The report as a person reads it."""
        return [
            *(f"{topic:<22} {n:>8} records" for topic, n in sorted(self.counts.items())),
            f"played {self.records} records in {self.seconds:.1f}s "
            f"({self.slept_ms / 1000:.1f}s of it asleep)",
        ]


class Player:
    """Plays scenarios into Kafka with one idempotent producer and each topic's encoder, kept
    from one play to the next.

    A player outlives outages: an encoder is built once (the registry is asked for its topic's
    schema id only the first time the topic is played), a topic is checked only the first
    time, and a record waits in the producer, retried, for up to `message_timeout_ms` while
    the broker is away. With `wait_for_delivery=False` neither a sleep nor the end of a play
    waits for Kafka to take the records (so a broker outage delays no record's time): `flush`
    does, and reports what Kafka did not take.
    """

    def __init__(
        self,
        settings: Settings,
        message_timeout_ms: int = 30_000,
        wait_for_delivery: bool = True,
    ) -> None:
        self.settings = settings
        self.message_timeout_ms = message_timeout_ms
        self.wait_for_delivery = wait_for_delivery
        self._encoders: dict[str, serde.Serializer[TopicRecord]] = {}
        self._checked: set[str] = set()
        self._failures: list[str] = []  # delivery errors since the last `flush`
        self._producer = Producer(
            {
                **kafka_client_config(settings.stack),
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": message_timeout_ms,
            }
        )

    def _check_topics(self, used: set[str]) -> None:
        """Refuse to play into topics the broker does not have (asked once per topic)."""
        unchecked = used - self._checked
        if not unchecked:
            return
        servers = self.settings.stack.bootstrap_servers
        try:
            known = self._producer.list_topics(timeout=10).topics
        except KafkaException as err:
            raise ScenarioError(
                f"kafka at {servers} does not answer ({err}): run `gridstream stack up`"
            ) from None
        missing = sorted(t for t in unchecked if t not in known or known[t].error is not None)
        if missing:
            names = ", ".join(missing)
            raise ScenarioError(f"topic(s) {names} missing at {servers}: run `gridstream stack up`")
        self._checked |= unchecked

    def play(
        self,
        source: str | Path | Scenario | Iterable[Mapping[str, Any] | Step],
        progress: Callable[[str], None] = _say,
    ) -> PlayReport:
        """Validate every step, then produce them in order, and flush (if `wait_for_delivery`).

        Raises:
            StepError: a step is malformed or invalid; nothing was produced.
            ScenarioError: the registry or Kafka cannot be reached or refused records.
        """
        steps = with_correlation_ids(steps_of(source))
        started = time.time()
        records = check(steps, int(started * 1000))
        wanted = {s.topic for s in steps if isinstance(s, RecordStep)} - set(self._encoders)
        if wanted:
            self._encoders.update(_serializers(self.settings, wanted))
        self._check_topics({s.topic for s in steps if not isinstance(s, SleepStep)})
        producer = self._producer

        def delivered(err: KafkaError | None, _message: Message) -> None:
            if err is not None:
                self._failures.append(str(err))

        counts: Counter[str] = Counter()
        slept_ms = 0
        last_report = started
        for i, (step, record) in enumerate(zip(steps, records, strict=True), start=1):
            if isinstance(step, SleepStep):
                if self.wait_for_delivery:
                    producer.flush(30)
                producer.poll(0)
                time.sleep(step.ms / 1000)
                slept_ms += step.ms
                continue
            if isinstance(step, RecordStep):
                if step.relative or record is None:
                    record = validated(step, int(time.time() * 1000))
                field = EVENT_TIME_FIELDS.get(step.topic)
                produce(
                    producer,
                    step.topic,
                    key=step.key,
                    value=self._encoders[step.topic].encode(record),
                    timestamp=int(getattr(record, field)) if field else 0,
                    headers={CORRELATION_HEADER: str(getattr(record, "correlation_id", ""))},
                    on_delivery=delivered,
                )
            else:
                produce(
                    producer,
                    step.topic,
                    key=step.key,
                    value=step.data,
                    headers={CORRELATION_HEADER: step.correlation_id or mint_correlation_id()},
                    on_delivery=delivered,
                )
            counts[step.topic] += 1
            producer.poll(0)
            if time.time() - last_report >= PROGRESS_EVERY_S:
                last_report = time.time()
                progress(f"played {i}/{len(steps)} steps ({sum(counts.values())} records)")
        if self.wait_for_delivery:
            self.flush()
        return PlayReport(dict(counts), slept_ms, time.time() - started)

    def flush(self) -> None:
        """Wait until Kafka took every record played (at most the message timeout, and a bit).

        Raises:
            ScenarioError: naming how many records Kafka did not take, and the first error.
        """
        remaining = self._producer.flush(max(60.0, self.message_timeout_ms / 1000 + 10))
        failures, self._failures = self._failures, []
        if remaining or failures:
            first = f" (first: {failures[0]})" if failures else ""
            raise ScenarioError(
                f"kafka at {self.settings.stack.bootstrap_servers} did not take "
                f"{remaining + len(failures)} record(s){first}: check `gridstream stack status`"
            )


def play(
    settings: Settings,
    source: str | Path | Scenario | Iterable[Mapping[str, Any] | Step],
    progress: Callable[[str], None] = _say,
) -> PlayReport:
    """Play a scenario with a `Player` of its own (see `Player.play`)."""
    return Player(settings).play(source, progress)


def _jsonable(value: Any) -> Any:
    """Bytes as hex, enumerations as their names, tuples as lists."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _kafka_fields(message: Message) -> dict[str, Any]:
    key = message.key()
    fields: dict[str, Any] = {
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp_ms": message.timestamp()[1],
        "key": None,
    }
    if key is not None:
        try:
            fields["key"] = key.decode("utf-8")
        except UnicodeDecodeError:
            fields["key_hex"] = key.hex()
    headers: Any = message.headers() or []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    fields["headers"] = {
        str(name): raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
        for name, raw in pairs
    }
    return fields


class _Decoder:
    """Decodes messages of any topic into JSON-able dicts, through the registry."""

    def __init__(self, settings: Settings) -> None:
        self._source = _schemas(settings)
        self._deserializers: dict[str, serde.Deserializer[TopicRecord]] = {}

    def __call__(self, message: Message) -> dict[str, Any]:
        topic = str(message.topic())
        if topic not in self._deserializers:
            self._deserializers[topic] = serde.deserializer(models.MODELS[topic], self._source)
        data = message.value() or b""
        try:
            record = self._deserializers[topic].decode(data, int(time.time() * 1000))
            decoded: dict[str, Any] = _jsonable(record.model_dump())
        except serde.DecodeError as err:
            decoded = {"_undecodable": data.hex(), "_error": f"{type(err).__name__}: {err}"}
        except serde.RegistryUnavailable as err:
            raise ScenarioError(str(err)) from None
        decoded["_kafka"] = _kafka_fields(message)
        return decoded


def _order(message: Message) -> tuple[int, int, int]:
    return (message.timestamp()[1], message.partition() or 0, message.offset() or 0)


def dump(settings: Settings, topic: str, timeout_s: float = DUMP_TIMEOUT_S) -> list[dict[str, Any]]:
    """Every committed record of `topic` up to its end offsets now, decoded, oldest first.

    Each dict is the record's fields (bytes as hex, enumerations as names) plus `"_kafka"`
    (partition, offset, timestamp_ms, key, headers); a record that does not decode is
    `{"_undecodable": hex, "_error": why, "_kafka": ...}`.
    """
    if topic not in models.MODELS:
        raise ScenarioError(f"{topic!r} is not a topic: use one of {_TOPIC_LIST}")
    consumer = _consumer(settings, "dump", **{"enable.partition.eof": True})
    messages: list[Message] = []
    try:
        ends = {p: high for p, (low, high) in watermarks(consumer, topic).items() if high > low}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise ScenarioError(
                    f"{topic}: partitions {sorted(ends)} did not reach their end offsets within "
                    f"{timeout_s:.0f}s: check `gridstream stack status`"
                )
            message = consumer.poll(0.5)
            if message is None:
                continue
            p, offset = message.partition(), message.offset() or 0
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if p in ends and offset >= ends[p]:
                        del ends[p]
                    continue
                if error.fatal():
                    raise ScenarioError(f"kafka: {error}")
                continue
            if p not in ends or offset >= ends[p]:
                continue
            messages.append(message)
            if offset + 1 >= ends[p]:
                del ends[p]
    finally:
        consumer.close()
    decode = _Decoder(settings)
    return [decode(m) for m in sorted(messages, key=_order)]


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write records as JSONL, one a line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, sort_keys=True) + "\n")
    return path


# --- run and approvals ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What a run played and what came out of each output topic."""

    played: PlayReport
    outputs: Mapping[str, int]
    out_dir: Path
    settled: bool

    def lines(self) -> list[str]:
        """The report as a person reads it."""
        quiet = "outputs settled" if self.settled else "outputs still moving at the timeout"
        return [
            *self.played.lines(),
            f"{quiet}; written to {self.out_dir}/:",
            *(f"  {topic:<22} {n:>8} records" for topic, n in self.outputs.items()),
        ]


def run(
    settings: Settings,
    path: str | Path,
    out_dir: str | Path,
    settle_s: float = SETTLE_S,
    timeout_s: float = RUN_TIMEOUT_S,
    progress: Callable[[str], None] = _say,
) -> RunReport:
    """Play a scenario against the device-control job; write each output topic as JSONL.

    Outputs are the records that appeared after the play began, collected until every output
    topic has been quiet for `settle_s` (or `timeout_s` has passed), to `out_dir/<topic>.jsonl`.
    """
    from gridstream.stack import LocalStack

    steps = steps_of(path)  # a bad file fails before anything starts
    stack = LocalStack(settings, say=progress)
    down = [s.name for s in stack.status() if not s.answers]
    if down:
        raise StackDown(f"the local stack is not up ({', '.join(down)}): run `gridstream stack up`")
    from gridstream import demo  # loads the job module, and pyflink with it

    demo.ensure_job(stack)
    consumer = _consumer(settings, "run")
    try:
        consumer.assign([tp for topic in topics.OUTPUTS for tp in end_offsets(consumer, topic)])
        played = play(settings, steps, progress)
        collected: dict[str, list[Message]] = {topic: [] for topic in topics.OUTPUTS}
        last = time.monotonic()
        deadline = last + timeout_s
        while time.monotonic() - last < settle_s and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            collected[str(message.topic())].append(message)
            last = time.monotonic()
        settled = time.monotonic() - last >= settle_s
    finally:
        consumer.close()
    if not settled:
        progress(f"outputs did not settle for {settle_s:.0f}s within {timeout_s:.0f}s")
    decode = _Decoder(settings)
    out = Path(out_dir)
    counts: dict[str, int] = {}
    for topic, messages in collected.items():
        write_jsonl((decode(m) for m in sorted(messages, key=_order)), out / f"{topic}.jsonl")
        counts[topic] = len(messages)
    return RunReport(played, counts, out, settled)


def decide(
    settings: Settings,
    recommendation_id: str,
    decision: models.ApprovalDecision,
    operator_id: str,
    comment: str | None = None,
) -> dict[str, Any]:
    """Play an operator's decision on a recommendation found in `grid.recommendations`.

    Returns:
        The approval record played.

    Raises:
        UnknownRecommendation: the topic holds no recommendation with that id.
    """
    held = dump(settings, topics.RECOMMENDATIONS)
    found = [r for r in held if r.get("recommendation_id") == recommendation_id]
    if not found:
        raise UnknownRecommendation(
            f"no recommendation {recommendation_id} in {topics.RECOMMENDATIONS}: list them with "
            f"`gridstream dump {topics.RECOMMENDATIONS}`"
        )
    recommendation = found[-1]
    value = {
        "recommendation_id": recommendation_id,
        "device_id": recommendation["device_id"],
        "correlation_id": recommendation["correlation_id"],
        "decision": decision.value,
        "operator_id": operator_id,
        "ts_ms": int(time.time() * 1000),
        "comment": comment,
    }
    play(settings, [{"topic": topics.OPERATOR_APPROVALS, "value": value}])
    return value


# --- command line -----------------------------------------------------------------------------


def _play_command(args: argparse.Namespace, settings: Settings) -> int:
    print("\n".join(play(settings, args.file).lines()))
    return 0


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    report = run(settings, args.file, args.out, settle_s=args.settle, timeout_s=args.timeout)
    print("\n".join(report.lines()))
    return 0 if report.settled else 1


def _dump_command(args: argparse.Namespace, settings: Settings) -> int:
    records = dump(settings, args.topic)
    if args.out is None:
        for record in records:
            print(json.dumps(record, sort_keys=True))
    else:
        write_jsonl(records, args.out)
        _say(f"{len(records)} records of {args.topic} written to {args.out}")
    return 0


def _decide_command(args: argparse.Namespace, settings: Settings) -> int:
    decision = models.ApprovalDecision(args.decision)
    value = decide(settings, args.recommendation_id, decision, args.operator, args.comment)
    sent = f"{decision.value} of {value['recommendation_id']} for {value['device_id']}"
    print(f"{sent} sent to {topics.OPERATOR_APPROVALS}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add `scenario play|run`, `dump`, `approve` and `reject` to the `gridstream` CLI."""
    scenario = subparsers.add_parser("scenario", help="play a scenario, or run it against the job")
    actions = scenario.add_subparsers(dest="scenario_command", required=True)
    play_cmd = actions.add_parser("play", help="validate a scenario file and produce it to Kafka")
    play_cmd.add_argument("file", type=Path, help="the scenario (JSONL)")
    play_cmd.set_defaults(run=_play_command)
    run_cmd = actions.add_parser(
        "run", help="play a scenario against the job and write each output topic as JSONL"
    )
    run_cmd.add_argument("file", type=Path, help="the scenario (JSONL)")
    run_cmd.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    run_cmd.add_argument(
        "--settle", type=float, default=SETTLE_S, metavar="S", help="quiet time of the outputs"
    )
    run_cmd.add_argument(
        "--timeout", type=float, default=RUN_TIMEOUT_S, metavar="S", help="wait at most this"
    )
    run_cmd.set_defaults(run=_run_command)

    dump_cmd = subparsers.add_parser("dump", help="print a topic's committed records as JSONL")
    dump_cmd.add_argument("topic", choices=sorted(models.MODELS), metavar="TOPIC")
    dump_cmd.add_argument("--out", type=Path, metavar="FILE", help="write here, not to stdout")
    dump_cmd.set_defaults(run=_dump_command)

    for name, decision in (("approve", "APPROVE"), ("reject", "REJECT")):
        cmd = subparsers.add_parser(name, help=f"{name} a recommendation as an operator")
        cmd.add_argument("recommendation_id", metavar="REC_ID")
        cmd.add_argument("--operator", required=True, metavar="NAME", help="your operator id")
        cmd.add_argument("--comment", metavar="TEXT", help="why, for the audit trail")
        cmd.set_defaults(run=_decide_command, decision=decision)

"""A new schema id waits for the registry: asked again with backoff for a window, then the
record is dead-lettered (the registry says no) or the job fails (the registry never answered).

Time is a fake clock that the decoder's pauses advance; the registry is a fake whose ids appear
at given instants and which is down over a given span.
"""

from __future__ import annotations

import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridstream import topics
from jobs.records import SchemaAccess
from schemas import catalog, dead_letter, serde
from schemas.dead_letter import JobInfo, SourceRecord
from schemas.examples import EXAMPLE_NOW_MS, example
from schemas.models import DeadLetter, IotTelemetry
from schemas.serde import IdWait, RegistryUnavailable, StaticSchemas, UnknownSchemaId, Waited

pytestmark = pytest.mark.unit

TABLE = StaticSchemas.from_catalog(catalog.default())
IOT = catalog.default().chain(topics.IOT_TELEMETRY)
GOOD = serde.serializer(IotTelemetry, TABLE).encode(example(IotTelemetry))
KNOWN_ID = int.from_bytes(GOOD[1:5], "big")
NEW_ID = 10_000  # the topic's newest schema, registered again elsewhere: a new id for it
WINDOW_S = 30.0
JOB = JobInfo("device_control", "0.1.0")


class FakeClock:
    """Seconds that pass only when the decoder pauses."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Pause: time moves on by `seconds`."""
        self.pauses.append(seconds)
        self.now += seconds


class LateRegistry:
    """The catalog's ids, `NEW_ID` from `new_at` on (never when None), none answered in
    [`down_from`, `down_until`); every ask is recorded with its time."""

    def __init__(
        self,
        clock: FakeClock,
        new_at: float | None = 0.0,
        down_from: float = math.inf,
        down_until: float = math.inf,
    ) -> None:
        self.clock = clock
        self.new_at = new_at
        self.down = (down_from, down_until)
        self.asks: list[tuple[int, float]] = []

    def writer_schema(self, schema_id: int) -> str:
        """The schema of `schema_id` as of the clock's time."""
        now = self.clock()
        self.asks.append((schema_id, now))
        if self.down[0] <= now < self.down[1]:
            raise RegistryUnavailable("the fake registry does not answer")
        if schema_id != NEW_ID:
            return TABLE.writer_schema(schema_id)
        if self.new_at is None or now < self.new_at:
            raise UnknownSchemaId(f"no schema with id {schema_id} yet", schema_id)
        return IOT.newest.text

    def schema_id(self, subject: str, schema_text: str) -> int:
        """The catalog's id."""
        return TABLE.schema_id(subject, schema_text)


def written_with(schema_id: int) -> bytes:
    """The good reading's bytes under another schema id."""
    return serde.wire_header(schema_id) + GOOD[5:]


def reader(
    registry: LateRegistry, waits: list[Waited] | None = None, window_s: float = WINDOW_S
) -> serde.Deserializer[IotTelemetry]:
    """A decoder on `registry` and its clock, waiting `window_s` for a new id."""
    clock = registry.clock
    return serde.Deserializer(
        IotTelemetry,
        registry,
        IOT.newest.schema,
        clock=clock,
        wait=IdWait(window_s=window_s),
        sleep=clock.sleep,
        on_waited=None if waits is None else waits.append,
    )


def letter_or_record(decoder: serde.Deserializer[IotTelemetry], value: bytes) -> object:
    """What the job makes of `value`: a record or a dead letter."""
    source = SourceRecord(topics.IOT_TELEMETRY, 0, 7, EXAMPLE_NOW_MS, b"k", value)
    return dead_letter.decode_or_dead_letter(decoder, source, JOB, EXAMPLE_NOW_MS)


def test_an_id_registered_within_the_window_decodes_after_backoff() -> None:
    """The id appears 10 s after its record: the record decodes once it is there, asked at
    pauses doubling from 0.25 s up to 5 s, and the wait is reported found, once."""
    clock, waits = FakeClock(), []
    registry = LateRegistry(clock, new_at=10.0)
    decoder = reader(registry, waits)

    assert letter_or_record(decoder, written_with(NEW_ID)) == example(IotTelemetry)

    assert clock.pauses == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0]
    assert clock.now == 12.75  # the first ask at or after 10 s
    assert waits == [Waited(NEW_ID, serde.WAIT_FOUND, 12.75, 7)]
    letter_or_record(decoder, written_with(NEW_ID))
    assert len(registry.asks) == 7  # fetched once: the next record asks no one


@pytest.mark.parametrize(
    ("new_at", "decoded"),
    [(WINDOW_S, True), (WINDOW_S + 0.001, False), (None, False)],
    ids=["at the window's end", "just after it", "never"],
)
def test_the_last_ask_falls_on_the_windows_end(new_at: float | None, decoded: bool) -> None:
    """An id there at the window's end decodes; one later is dead-lettered as UnknownSchemaId
    at the window's end, after the last ask."""
    clock, waits = FakeClock(), []
    registry = LateRegistry(clock, new_at=new_at)

    result = letter_or_record(reader(registry, waits), written_with(NEW_ID))

    assert registry.asks[-1] == (NEW_ID, WINDOW_S)
    assert clock.now == WINDOW_S
    if decoded:
        assert result == example(IotTelemetry)
        assert [w.outcome for w in waits] == [serde.WAIT_FOUND]
    else:
        assert isinstance(result, DeadLetter)
        assert (result.error_class, result.schema_id) == ("UnknownSchemaId", NEW_ID)
        assert [w.outcome for w in waits] == [serde.WAIT_UNKNOWN]


def test_an_id_given_up_on_is_not_waited_for_again() -> None:
    """After its window, an unknown id fails at once (no ask) for UNKNOWN_ID_RETRY_S, then is
    asked once per record, without waiting: each id stalls its partition once at most."""
    clock, waits = FakeClock(), []
    registry = LateRegistry(clock, new_at=None)
    decoder = reader(registry, waits)
    with pytest.raises(UnknownSchemaId):
        decoder.read(written_with(NEW_ID))  # the decoder's fast path, then its full path:
    asks = len(registry.asks)
    with pytest.raises(UnknownSchemaId):
        decoder.decode(written_with(NEW_ID), EXAMPLE_NOW_MS)  # no second wait
    assert len(registry.asks) == asks

    clock.now += serde.UNKNOWN_ID_RETRY_S
    slept = len(clock.pauses)
    with pytest.raises(UnknownSchemaId):
        decoder.read(written_with(NEW_ID))

    assert len(registry.asks) == asks + 1
    assert len(clock.pauses) == slept
    assert len(waits) == 1


@pytest.mark.parametrize(
    ("value", "error_class"),
    [
        (written_with(0), "UnknownSchemaId"),
        (written_with(-5), "UnknownSchemaId"),
        (b"\x01" + GOOD[1:], "BadMagic"),
        (GOOD[:3], "Truncated"),
    ],
    ids=["id 0", "negative id", "bad magic", "no header"],
)
def test_what_is_no_registry_id_is_dead_lettered_at_once(value: bytes, error_class: str) -> None:
    """Ids <= 0, a wrong magic byte or a short header: dead-lettered without asking or waiting."""
    clock = FakeClock()
    registry = LateRegistry(clock)

    letter = letter_or_record(reader(registry), value)

    assert isinstance(letter, DeadLetter)
    assert letter.error_class == error_class
    assert (registry.asks, clock.pauses) == ([], [])


def test_the_registry_down_leaves_fetched_ids_decoding_from_the_cache() -> None:
    """Once fetched, an id decodes while the registry is down, without asking it."""
    clock = FakeClock()
    registry = LateRegistry(clock, down_from=1.0)
    decoder = reader(registry)
    letter_or_record(decoder, GOOD)
    clock.now = 5.0

    assert letter_or_record(decoder, GOOD) == example(IotTelemetry)
    assert registry.asks == [(KNOWN_ID, 0.0)]
    assert clock.pauses == []


def test_a_new_id_waits_for_the_registry_to_come_back_within_the_window() -> None:
    """The registry down for 20 s from the record's arrival: the record decodes once it
    answers, and is never dead-lettered."""
    clock, waits = FakeClock(), []
    registry = LateRegistry(clock, down_from=0.0, down_until=20.0)

    assert letter_or_record(reader(registry, waits), written_with(NEW_ID)) == example(IotTelemetry)
    assert [w.outcome for w in waits] == [serde.WAIT_FOUND]
    assert 20.0 <= clock.now <= 25.0


def test_the_registry_down_past_the_window_fails_the_job_instead_of_dead_lettering() -> None:
    """Down for longer than the window: RegistryUnavailable (the job restarts from its
    checkpoint), never a dead letter."""
    clock, waits = FakeClock(), []
    registry = LateRegistry(clock, down_from=0.0)

    with pytest.raises(RegistryUnavailable):
        letter_or_record(reader(registry, waits), written_with(NEW_ID))
    assert clock.now == WINDOW_S
    assert [w.outcome for w in waits] == [serde.WAIT_UNAVAILABLE]


def test_a_window_of_zero_keeps_the_behaviour_without_waiting() -> None:
    """Window 0: one ask, then the dead letter (registry says no) or the failure (down)."""
    clock, waits = FakeClock(), []
    lacking = LateRegistry(clock, new_at=None)
    letter = letter_or_record(reader(lacking, waits, window_s=0.0), written_with(NEW_ID))
    assert isinstance(letter, DeadLetter)
    down = LateRegistry(clock, down_from=0.0)
    with pytest.raises(RegistryUnavailable):
        letter_or_record(reader(down, waits, window_s=0.0), written_with(NEW_ID))

    assert (len(lacking.asks), len(down.asks)) == (1, 1)
    assert (clock.pauses, waits) == ([], [])


def test_a_wait_is_logged_when_it_starts_and_when_it_ends_not_per_ask(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two log lines name the id whatever the number of asks; the record after says nothing."""
    clock = FakeClock()
    decoder = reader(LateRegistry(clock, new_at=25.0))

    with caplog.at_level(logging.WARNING, logger="schemas.serde"):
        letter_or_record(decoder, written_with(NEW_ID))
        letter_or_record(decoder, written_with(NEW_ID))

    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert all(f"schema id {NEW_ID}" in line for line in lines)
    assert "asking again for up to 30 s" in lines[0]
    assert "found after 27.8 s and 10 asks" in lines[1]


def test_only_a_registry_is_waited_for() -> None:
    """The job's setting reaches the decoders when they use a registry; a fixed table never
    learns a new id, so it never waits."""
    assert SchemaAccess("http://127.0.0.1:1", 20_000).wait == IdWait(window_s=20.0)
    assert SchemaAccess(None, 20_000).wait == IdWait()
    assert SchemaAccess("http://127.0.0.1:1").wait.window_s == 0


@settings(deadline=None)  # a window of hundreds of asks takes a while on a loaded machine
@given(
    window_s=st.floats(0.0, 90.0),
    first=st.floats(0.1, 2.0),
    most=st.floats(0.1, 10.0),
    new_at=st.none() | st.floats(0.0, 150.0),
)
def test_the_wait_is_bounded_and_finds_any_id_there_by_its_last_ask(
    window_s: float, first: float, most: float, new_at: float | None
) -> None:
    """Whatever the window and pauses: no pause is longer than the longest, the asks end at
    the window's end, an id is found if it is there by the last ask (at most one pause after
    it appeared) and dead-lettered otherwise."""
    clock, waits = FakeClock(), []
    registry = LateRegistry(clock, new_at=new_at)
    decoder = serde.Deserializer(
        IotTelemetry,
        registry,
        IOT.newest.schema,
        clock=clock,
        wait=IdWait(window_s, first, max(first, most)),
        sleep=clock.sleep,
        on_waited=waits.append,
    )

    result = letter_or_record(decoder, written_with(NEW_ID))

    last_ask = registry.asks[-1][1]
    assert all(0 < pause <= max(first, most) for pause in clock.pauses)
    assert last_ask <= window_s + 1e-9
    if new_at is not None and new_at <= last_ask:
        assert result == example(IotTelemetry)
        assert last_ask - new_at <= max(first, most) + 1e-9
    else:
        assert isinstance(result, DeadLetter)
        assert last_ask >= window_s - 1e-9
    assert len(waits) == (1 if clock.pauses else 0)

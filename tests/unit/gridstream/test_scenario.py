"""Scenario files and the builder: parsing, time placeholders, keys, validation (no servers)."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from gridstream import cli, topics
from gridstream.config import Settings, StackSettings
from gridstream.scenario import (
    RawStep,
    RecordStep,
    Scenario,
    SleepStep,
    StackDown,
    StepError,
    check,
    committed_offsets,
    key_for,
    load,
    parse_lines,
    parse_time,
    resolve_times,
    run,
    steps_of,
    with_correlation_ids,
)
from schemas import models
from schemas.examples import EXAMPLE_NOW_MS, example_data

pytestmark = pytest.mark.unit

NOW_MS = EXAMPLE_NOW_MS
MINUTE_MS = 60_000


def _line(obj: object) -> str:
    return json.dumps(obj)


def _error(lines: list[str], source: str = "demo.jsonl") -> StepError:
    with pytest.raises(StepError) as caught:
        parse_lines(lines, source)
    return caught.value


@pytest.mark.parametrize(
    ("text", "offset_ms"),
    [
        ("now", 0),
        ("now+90s", 90_000),
        ("now-15m", -15 * MINUTE_MS),
        ("now+2h", 2 * 3_600_000),
        ("now-250ms", -250),
        (" now + 5s ", 5_000),
    ],
)
def test_placeholders_are_offsets_from_now_in_each_unit(text: str, offset_ms: int) -> None:
    """`now`, `now+90s`, `now-15m` ... are ms, s, m and h offsets from the moment of playing."""
    assert parse_time(text) == offset_ms


@pytest.mark.parametrize("text", ["today", "now+5", "now+5d", "now*2", "now+-5s", ""])
def test_anything_else_is_not_a_placeholder(text: str) -> None:
    """Only `now[+-]N(ms|s|m|h)` is a time."""
    with pytest.raises(ValueError, match="is not a time"):
        parse_time(text)


def test_resolve_times_replaces_placeholders_in_time_fields_at_any_depth_only() -> None:
    """`ts_ms` and `*_ts_ms` fields resolve, nested too; other strings and ints stay as they are."""
    value = {
        "ts_ms": "now",
        "start_ts_ms": "now+90s",
        "issued_ts_ms": NOW_MS - 5,
        "comment": "now",
        "inner": {"end_ts_ms": "now-1m"},
        "items": [{"created_ts_ms": "now+1h"}],
    }

    resolved = resolve_times(value, NOW_MS)

    assert resolved == {
        "ts_ms": NOW_MS,
        "start_ts_ms": NOW_MS + 90_000,
        "issued_ts_ms": NOW_MS - 5,
        "comment": "now",
        "inner": {"end_ts_ms": NOW_MS - MINUTE_MS},
        "items": [{"created_ts_ms": NOW_MS + 3_600_000}],
    }


@pytest.mark.parametrize(
    ("topic", "value", "key"),
    [
        (topics.IOT_TELEMETRY, example_data(models.IotTelemetry), "thermostat-0001"),
        (topics.SCADA_TELEMETRY, example_data(models.ScadaTelemetry), "feeder-0001"),
        (topics.DEVICE_REGISTRY, example_data(models.DeviceRecord), "thermostat-0001"),
        (topics.WEATHER, example_data(models.WeatherObservation), "region-north"),
        (topics.DR_EVENTS, example_data(models.DrEvent), "dr-2025-0615-a"),
        (
            topics.OPERATOR_APPROVALS,
            example_data(models.OperatorApproval),
            "9f2c4a0d1b7e4e6f8a3c5d7e9f1a2b3c",
        ),
        (topics.RECOMMENDATIONS, example_data(models.Recommendation), "feeder-0001"),
        (topics.ALERTS, example_data(models.Alert, device_id=None), "region-north"),
    ],
)
def test_record_keys_are_the_topics_key_field_from_the_design(
    topic: str, value: dict[str, object], key: str
) -> None:
    """device_id for devices, region_id for weather, event_id, recommendation_id for approvals."""
    assert key_for(topic, value) == key
    (step,) = parse_lines([_line({"topic": topic, "value": value})], "s.jsonl")
    assert isinstance(step, RecordStep)
    assert step.key == key


def test_explicit_key_overrides_the_derived_one_and_null_means_no_key() -> None:
    """`"key"` wins over the key field; `"key": null` sends no key."""
    value = example_data(models.IotTelemetry)
    given, none = parse_lines(
        [
            _line({"topic": topics.IOT_TELEMETRY, "value": value, "key": "other"}),
            _line({"topic": topics.IOT_TELEMETRY, "value": value, "key": None}),
        ],
        "s.jsonl",
    )
    assert (given.key, none.key) == ("other", None)  # type: ignore[union-attr]


def test_raw_steps_carry_bytes_and_have_no_key_unless_given() -> None:
    """`raw_hex` becomes the bytes as written; a key only when the step names one."""
    bare, keyed = parse_lines(
        [
            _line({"topic": topics.IOT_TELEMETRY, "raw_hex": "00ff10"}),
            _line({"topic": topics.IOT_TELEMETRY, "raw_hex": "7b7d", "key": "dev-1"}),
        ],
        "s.jsonl",
    )
    assert bare == RawStep(topics.IOT_TELEMETRY, b"\x00\xff\x10", None, "s.jsonl:1")
    assert keyed == RawStep(topics.IOT_TELEMETRY, b"{}", "dev-1", "s.jsonl:2")


def test_a_null_registry_value_is_the_deletion_of_the_keyed_device() -> None:
    """`"value": null` on the registry with the device id as key is a tombstone; the builder's
    `deletion` writes exactly that line."""
    line = Scenario().deletion("dev-7").lines()[0]
    assert json.loads(line) == {"topic": topics.DEVICE_REGISTRY, "key": "dev-7", "value": None}
    (step,) = parse_lines([line], "s.jsonl")
    assert step == RawStep(topics.DEVICE_REGISTRY, None, "dev-7", "s.jsonl:1")


def test_a_file_parses_into_steps_in_order_skipping_blank_lines(tmp_path: Path) -> None:
    """Lines become record, raw and sleep steps in file order; `where` names file and line."""
    path = tmp_path / "s.jsonl"
    value = example_data(models.WeatherObservation, ts_ms="now-1m")
    path.write_text(
        "\n".join(
            [
                _line({"topic": topics.WEATHER, "value": value}),
                "",
                _line({"sleep_ms": 1500}),
                _line({"topic": topics.WEATHER, "raw_hex": "00"}),
            ]
        )
    )

    record, sleep, raw = load(path)

    assert isinstance(record, RecordStep)
    assert (record.where, record.relative) == (f"{path}:1", True)
    assert sleep == SleepStep(1500, f"{path}:3")
    assert isinstance(raw, RawStep)
    assert raw.where == f"{path}:4"


@pytest.mark.parametrize(
    ("obj", "field", "says"),
    [
        ({"topic": "iot.telemetri", "value": {}}, "topic", "is not a topic: use one of"),
        ({"topic": topics.IOT_TELEMETRY, "raw_hex": "0g"}, "raw_hex", "is not hex"),
        ({"topic": topics.IOT_TELEMETRY, "raw_hex": 12}, "raw_hex", "is not hex"),
        ({"sleep_ms": -1}, "sleep_ms", "is not a whole number of ms"),
        ({"sleep_ms": 1.5}, "sleep_ms", "is not a whole number of ms"),
        ({"sleep_ms": 5, "topic": topics.WEATHER}, "topic", "is not a field of a sleep_ms step"),
        ({"topic": topics.WEATHER, "value": [1]}, "value", "write a JSON object of fields"),
        ({"topic": topics.WEATHER, "key": "north", "value": None}, "value", "needs the device"),
        ({"topic": topics.DEVICE_REGISTRY, "value": None}, "value", "id as key and topic"),
        ({"topic": topics.WEATHER, "value": {}, "key": 5}, "key", "or null for none"),
        (
            {"topic": topics.WEATHER, "value": {"ts_ms": "yesterday"}},
            "value.ts_ms",
            '"now+90s"',
        ),
        (
            {"topic": topics.DR_EVENTS, "value": {"start_ts_ms": "now+1d"}},
            "value.start_ts_ms",
            "units ms, s, m, h",
        ),
    ],
)
def test_bad_lines_name_file_line_and_field_and_what_to_write(
    obj: dict[str, object], field: str, says: str
) -> None:
    """A malformed step is refused with `file:line: field `f`: ...` and the fix."""
    err = _error([_line({"sleep_ms": 1}), _line(obj)])

    assert (err.where, err.field) == ("demo.jsonl:2", field)
    assert str(err).startswith(f"demo.jsonl:2: field `{field}`: ")
    assert says in str(err)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "list is not a step"),
        (_line({"topic": topics.WEATHER}), "has none of value, raw_hex, sleep_ms"),
        (_line({"topic": topics.WEATHER, "value": {}, "raw_hex": "00"}), "has value and raw_hex"),
    ],
)
def test_lines_that_are_no_step_at_all_say_the_three_step_shapes(line: str, says: str) -> None:
    """Not JSON, not an object, or not exactly one kind: the error shows what a step looks like."""
    err = _error([line])

    assert err.where == "demo.jsonl:1"
    assert says in str(err)
    assert '{"sleep_ms": N}' in str(err)


def test_check_refuses_an_out_of_range_value_naming_the_field_and_value() -> None:
    """Validation is the topic's model: a thermostat at 999 kW is refused before any network."""
    steps = parse_lines(
        [
            _line({"topic": topics.IOT_TELEMETRY, "value": example_data(models.IotTelemetry)}),
            _line(
                {
                    "topic": topics.IOT_TELEMETRY,
                    "value": example_data(models.IotTelemetry, power_kw=999.0),
                }
            ),
        ],
        "s.jsonl",
    )

    with pytest.raises(StepError) as caught:
        check(steps, NOW_MS)

    assert caught.value.where == "s.jsonl:2"
    assert "not a valid IotTelemetry" in str(caught.value)
    assert "power_kw=999.0 is outside [0.0, 25.0] kW" in str(caught.value)


def test_check_refuses_an_absolute_event_time_far_in_the_future_and_suggests_now() -> None:
    """An absolute ts_ms an hour ahead is refused, and the message shows the relative form."""
    value = example_data(models.IotTelemetry, ts_ms=NOW_MS + 3_600_000)
    steps = parse_lines([_line({"topic": topics.IOT_TELEMETRY, "value": value})], "s.jsonl")

    with pytest.raises(StepError) as caught:
        check(steps, NOW_MS)

    assert caught.value.field == "value.ts_ms"
    assert "3600 s in the future" in str(caught.value)
    assert '"now-15m"' in str(caught.value)


def test_check_projects_now_over_sleeps_so_times_after_a_pause_are_valid() -> None:
    """An absolute time ten minutes on is valid after a ten-minute sleep, not before it."""
    later = example_data(models.IotTelemetry, ts_ms=NOW_MS + 10 * MINUTE_MS)
    record = {"topic": topics.IOT_TELEMETRY, "value": later}

    (_, checked) = check(
        parse_lines([_line({"sleep_ms": 10 * MINUTE_MS}), _line(record)], "s"), NOW_MS
    )

    assert isinstance(checked, models.IotTelemetry)
    with pytest.raises(StepError):
        check(parse_lines([_line(record)], "s"), NOW_MS)


def test_placeholders_resolve_against_the_play_clock_in_the_validated_record() -> None:
    """`now-30s` becomes the play time minus 30 s in the record that is encoded."""
    value = example_data(models.IotTelemetry, ts_ms="now-30s")
    steps = parse_lines([_line({"topic": topics.IOT_TELEMETRY, "value": value})], "s")

    (record,) = check(steps, NOW_MS)

    assert isinstance(record, models.IotTelemetry)
    assert record.ts_ms == NOW_MS - 30_000


def test_missing_correlation_ids_are_minted_and_given_ones_kept() -> None:
    """Records and raw steps without a correlation id get a fresh one; given ids stay."""
    value = example_data(models.IotTelemetry)
    del value["correlation_id"]
    steps = with_correlation_ids(
        steps_of(
            Scenario()
            .record(topics.IOT_TELEMETRY, value)
            .record(topics.IOT_TELEMETRY, {**value, "correlation_id": "mine"})
            .record(topics.IOT_TELEMETRY, value)
            .raw(topics.IOT_TELEMETRY, b"\x00")
        )
    )

    minted_a, kept, minted_b, raw = steps
    assert isinstance(minted_a, RecordStep)
    assert isinstance(minted_b, RecordStep)
    assert kept.value["correlation_id"] == "mine"  # type: ignore[union-attr]
    assert minted_a.value["correlation_id"] != minted_b.value["correlation_id"]
    assert isinstance(raw, RawStep)
    assert raw.correlation_id


def test_builder_defaults_are_example_records_with_relative_times_and_valid_now() -> None:
    """Every builder method yields a record its model accepts at any moment of playing."""
    scenario = (
        Scenario().telemetry_iot().telemetry_scada().registry().weather().dr_event().approval()
    )
    steps = with_correlation_ids(steps_of(scenario))

    records = check(steps, NOW_MS + 1234)

    assert [type(r) for r in records] == [
        models.IotTelemetry,
        models.ScadaTelemetry,
        models.DeviceRecord,
        models.WeatherObservation,
        models.DrEvent,
        models.OperatorApproval,
    ]
    iot, _, _, _, event, _ = records
    assert iot.ts_ms == NOW_MS + 1234  # type: ignore[union-attr]
    assert event.start_ts_ms == NOW_MS + 1234 + 3_600_000  # type: ignore[union-attr]
    assert all(step.relative for step in steps if isinstance(step, RecordStep))


def test_builder_overrides_fields_and_keys_and_writes_the_file_format(tmp_path: Path) -> None:
    """Overrides replace defaults, absolute times are allowed, `write` round-trips via `load`."""
    scenario = (
        Scenario()
        .telemetry_iot(device_id="wh-9", device_class="WATER_HEATER", ts_ms=NOW_MS)
        .sleep(250)
        .weather(key="custom", region_id="region-south")
        .raw(topics.DR_EVENTS, b"\xde\xad", key="dr-x", correlation_id="c-1")
    )

    assert scenario.lines()[1] == '{"sleep_ms": 250}'
    assert json.loads(scenario.lines()[3]) == {
        "topic": topics.DR_EVENTS,
        "raw_hex": "dead",
        "key": "dr-x",
        "correlation_id": "c-1",
    }
    iot, sleep, weather, raw = load(scenario.write(tmp_path / "built.jsonl"))
    assert isinstance(iot, RecordStep)
    assert isinstance(weather, RecordStep)
    assert (iot.key, iot.value["device_class"], iot.value["ts_ms"]) == (
        "wh-9",
        "WATER_HEATER",
        NOW_MS,
    )
    assert iot.relative is False
    assert (weather.key, weather.value["region_id"]) == ("custom", "region-south")
    assert sleep == SleepStep(250, f"{tmp_path / 'built.jsonl'}:2")
    assert raw == RawStep(
        topics.DR_EVENTS, b"\xde\xad", "dr-x", f"{tmp_path / 'built.jsonl'}:4", "c-1"
    )


def test_builder_steps_are_copies_so_the_scenario_cannot_be_changed_through_them() -> None:
    """Mutating `steps` leaves the scenario as built."""
    scenario = Scenario().sleep(5)
    scenario.steps[0]["sleep_ms"] = 99
    assert scenario.steps == [{"sleep_ms": 5}]


def test_cli_mounts_scenario_dump_approve_and_reject() -> None:
    """The `gridstream` parser knows the new sub-commands and their options."""
    top = cli.parser()

    played = top.parse_args(["scenario", "play", "s.jsonl"])
    ran = top.parse_args(["scenario", "run", "s.jsonl", "--out", "out", "--settle", "3"])
    dumped = top.parse_args(["dump", topics.AUDIT, "--out", "audit.jsonl"])
    approved = top.parse_args(["approve", "rec-1", "--operator", "op-7", "--comment", "ok"])
    rejected = top.parse_args(["reject", "rec-1", "--operator", "op-7"])

    assert played.file == Path("s.jsonl")
    assert (ran.out, ran.settle) == (Path("out"), 3.0)
    assert (dumped.topic, dumped.out) == (topics.AUDIT, Path("audit.jsonl"))
    assert (approved.decision, approved.operator, approved.comment) == ("APPROVE", "op-7", "ok")
    assert (rejected.decision, rejected.comment) == ("REJECT", None)


def test_cli_exits_2_with_one_line_naming_the_bad_line_before_touching_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gridstream scenario play` on a malformed file fails fast with the file, line and field."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.jsonl"
    path.write_text(_line({"sleep_ms": 1}) + "\n" + _line({"topic": "nope", "value": {}}) + "\n")

    code = cli.main(["scenario", "play", str(path)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(f"gridstream: {path}:2: field `topic`: 'nope' is not a topic")


def test_run_refuses_a_stack_that_is_down_and_names_the_command_that_starts_it(
    tmp_path: Path,
) -> None:
    """`run` checks the stack before submitting or playing anything."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stack = dataclasses.replace(
        StackSettings(),
        home=tmp_path / "stack",
        kafka_port=port,
        registry_port=port,
        redis_port=port,
        flink_rest_port=port,
    )
    scenario_file = Scenario().sleep(1).write(tmp_path / "s.jsonl")

    with pytest.raises(StackDown, match=r"not up .*: run `gridstream stack up`"):
        run(Settings(stack=stack), scenario_file, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _Coordinator:
    """A consumer whose group coordinator answers `errors` before the offsets."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return partitions


def test_committed_offsets_asks_again_while_the_group_coordinator_is_not_ready() -> None:
    wanted = [TopicPartition(topics.SCADA_TELEMETRY, 0, 7)]
    consumer = _Coordinator(KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
    assert committed_offsets(consumer, wanted) == wanted  # type: ignore[arg-type]
    assert not consumer.errors


def test_committed_offsets_raises_any_other_error_at_once() -> None:
    consumer = _Coordinator(KafkaError.GROUP_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        committed_offsets(consumer, [TopicPartition(topics.SCADA_TELEMETRY, 0)])  # type: ignore[arg-type]

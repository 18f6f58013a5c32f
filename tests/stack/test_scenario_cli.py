"""Scenarios played into real Kafka through the real registry, dumped back, and approvals."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from gridstream import cli, config, topics
from gridstream.scenario import Scenario, StepError, dump, play
from gridstream.stack import LocalStack
from schemas import models
from schemas.examples import example_data

pytestmark = pytest.mark.stack

GARBAGE = b"\x00\xff\xff\xff\xfe not avro"


def _quiet(line: str) -> None:
    del line


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cli_env(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`gridstream ...` run in-process sees the private stack's settings."""
    monkeypatch.chdir(tmp_path)
    for name, value in config.as_env(local_stack.settings).items():
        monkeypatch.setenv(name, value)


def test_played_record_and_raw_bytes_come_back_from_dump_with_keys_and_headers(
    local_stack: LocalStack,
) -> None:
    """A value record and a raw_hex record reach Kafka; dump decodes one and reports the other."""
    device = _unique("thermostat")
    scenario = (
        Scenario()
        .telemetry_iot(device_id=device, correlation_id=f"corr-{device}", ts_ms="now-2s")
        .raw(topics.IOT_TELEMETRY, GARBAGE, key=f"{device}-raw")
    )

    report = play(local_stack.settings, scenario, progress=_quiet)

    assert report.counts == {topics.IOT_TELEMETRY: 2}
    mine = {
        r["_kafka"]["key"]: r
        for r in dump(local_stack.settings, topics.IOT_TELEMETRY)
        if str(r["_kafka"]["key"]).startswith(device)
    }
    assert set(mine) == {device, f"{device}-raw"}
    record, raw = mine[device], mine[f"{device}-raw"]
    assert (record["device_id"], record["device_class"]) == (device, "THERMOSTAT")
    assert record["_kafka"]["headers"]["correlation_id"] == f"corr-{device}"
    assert record["_kafka"]["timestamp_ms"] == record["ts_ms"]
    assert raw["_undecodable"] == GARBAGE.hex()
    assert raw["_error"].startswith("UnknownSchemaId")
    assert raw["_kafka"]["headers"]["correlation_id"].startswith("scn-")


def test_a_value_without_correlation_id_is_sent_with_a_minted_one_in_value_and_header(
    local_stack: LocalStack,
) -> None:
    """A scenario may leave correlation ids out: the value and the header get the same new one."""
    region = _unique("region")

    play(local_stack.settings, Scenario().weather(region_id=region), progress=_quiet)

    (record,) = [
        r for r in dump(local_stack.settings, topics.WEATHER) if r.get("region_id") == region
    ]
    assert record["_kafka"]["key"] == region
    assert record["correlation_id"].startswith("scn-")
    assert record["_kafka"]["headers"]["correlation_id"] == record["correlation_id"]


def test_an_invalid_value_is_refused_before_anything_is_produced(local_stack: LocalStack) -> None:
    """A thermostat at 999 kW on the second line stops the play before the first line is sent."""
    device = _unique("thermostat")
    scenario = (
        Scenario().telemetry_iot(device_id=device).telemetry_iot(device_id=device, power_kw=999.0)
    )

    with pytest.raises(StepError, match=r"<step 2>: field `value`: .*power_kw=999.0 is outside"):
        play(local_stack.settings, scenario, progress=_quiet)

    keys = [r["_kafka"]["key"] for r in dump(local_stack.settings, topics.IOT_TELEMETRY)]
    assert device not in keys


def test_approve_sends_the_recommendations_device_and_correlation_to_operator_approvals(
    local_stack: LocalStack, cli_env: None, tmp_path: Path
) -> None:
    """`gridstream approve` finds the recommendation, and `gridstream dump` shows the approval."""
    rec_id = _unique("rec")
    device = _unique("feeder")
    recommendation = example_data(
        models.Recommendation,
        recommendation_id=rec_id,
        device_id=device,
        correlation_id=f"corr-{rec_id}",
        created_ts_ms="now",
        expires_ts_ms="now+10m",
    )
    play(
        local_stack.settings,
        Scenario().record(topics.RECOMMENDATIONS, recommendation),
        progress=_quiet,
    )

    code = cli.main(["approve", rec_id, "--operator", "operator-7", "--comment", "load ok"])
    dumped = cli.main(["dump", topics.OPERATOR_APPROVALS, "--out", str(tmp_path / "a.jsonl")])

    assert (code, dumped) == (0, 0)
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    (approval,) = [a for a in map(json.loads, lines) if a.get("recommendation_id") == rec_id]
    assert approval["_kafka"]["key"] == rec_id
    assert (approval["device_id"], approval["decision"]) == (device, "APPROVE")
    assert (approval["operator_id"], approval["comment"]) == ("operator-7", "load ok")
    assert approval["correlation_id"] == f"corr-{rec_id}"


def test_rejecting_an_unknown_recommendation_exits_2_saying_how_to_list_them(
    cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """No such recommendation in grid.recommendations: one line, exit 2, nothing sent."""
    code = cli.main(["reject", _unique("no-such-rec"), "--operator", "operator-7"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert f"`gridstream dump {topics.RECOMMENDATIONS}`" in err

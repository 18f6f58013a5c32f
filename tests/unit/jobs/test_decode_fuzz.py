"""The job's edge under coverage-guided fuzzing, briefly (`make fuzz` runs it long), and the
fuzz property's own teeth: it refuses what a broken edge would let through."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gridstream import topics
from schemas import catalog, models, telemetry
from schemas.examples import encode_unvalidated, example_data
from tests.fuzz import seeds
from tests.fuzz.properties import PropertyViolation, check, frame
from tests.vocabulary import catalog_schemas

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
RUNS, SECONDS = 40_000, 4  # whichever comes first: 6-7 s of CPU a topic with start-up
FINDINGS = ("crash-*", "timeout-*", "oom-*", "leak-*")


@pytest.mark.parametrize("topic", topics.INPUTS)
def test_no_record_breaks_the_decoders_under_fuzzing(topic: str, tmp_path: Path) -> None:
    """A bounded atheris run over the topic's decoders finds no record that escapes as an
    exception, passes invalid, or is dead-lettered without its bytes."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    command = [
        sys.executable, "-m", "tests.fuzz.decode", topic, str(corpus),
        f"-runs={RUNS}", f"-max_total_time={SECONDS}", "-timeout=10", "-print_final_stats=1",
        f"-artifact_prefix={tmp_path}/",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ran = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    found = [path for pattern in FINDINGS for path in tmp_path.glob(pattern)]
    if ran.returncode or found:
        inputs = [f"  {path.name}: {path.read_bytes().hex()}" for path in found]
        crash = ran.stderr.find("=== Uncaught Python exception")
        pytest.fail(
            f"fuzzing {topic} failed (exit {ran.returncode}); inputs (hex):\n"
            + "\n".join(inputs)
            + f"\nreplay: PYTHONPATH=. python -m tests.fuzz.decode {topic} FILE\n"
            + ran.stderr[crash if crash >= 0 else -6000 :][:6000]
        )
    rate = re.search(r"stat::average_exec_per_sec:\s*(\d+)", ran.stderr)
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", ran.stderr)
    print(f"{topic}: {runs and runs[1]} runs, {rate and rate[1]} exec/s")


# Inputs the fuzzer found that broke the property, kept so they stay fixed.
FOUND = [
    # a tombstone keyed "{{ {{{{{...": accepted as a device, whose timer failed the stage
    (topics.DEVICE_REGISTRY, "017b7b7b7b207b7b7b7b7b0f07746865726d356f732d747461303031"),
    # a valid reading of a 128-character device id: its loss timer's cause id was 142 long
    (
        topics.SCADA_TELEMETRY,
        "0800009b9b9b9b9b9b9b9b9b9b9b9b9b9b9b9b9b9b9b969b0101019b9b9b9b9b9b9b000b1c464545656567",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("topic", "found"), FOUND)
def test_what_the_fuzzer_found_holds_the_property(topic: str, found: str) -> None:
    """Each input the fuzzer once found breaking the property now holds it."""
    check(topic, bytes.fromhex(found))


@pytest.mark.parametrize("topic", topics.INPUTS)
def test_every_seed_holds_the_property(topic: str) -> None:
    """The corpus's starting records (valid ones, near-misses, a tombstone) are each events
    of a valid record or a well-formed dead letter."""
    for seed in seeds.seeds(topic):
        check(topic, seed)


def test_the_property_refuses_an_out_of_range_reading_let_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were the telemetry fast path to pass every reading, a 999 kW thermostat would become
    an event: the property names that."""
    chain = catalog.default().chain(topics.IOT_TELEMETRY)
    schema_id = catalog_schemas().schema_id(chain.subject, chain.newest.text)
    data = example_data(models.IotTelemetry, power_kw=999.0)
    reading = frame(b"thermostat-0001", encode_unvalidated(chain.newest, schema_id, data))
    check(topics.IOT_TELEMETRY, reading)  # dead-lettered: as it should be
    monkeypatch.setattr(telemetry, "passes", lambda model, record, now_ms: True)
    with pytest.raises(PropertyViolation, match="model refuses"):
        check(topics.IOT_TELEMETRY, reading)

"""The jars a job ships: a `.jvm/flink/` without one of `make jvm`'s says what to run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gridstream.config import JobSettings, Settings
from jobs.environment import MissingJarError, job_jars

pytestmark = pytest.mark.unit

CONNECTOR = "flink-sql-connector-kafka-5.0.0-2.2.jar"
OWN = "gridstream-flink-0.1.0.jar"


def settings_with(tmp_path: Path, *jars: str) -> Settings:
    (tmp_path / "flink").mkdir()
    for jar in jars:
        (tmp_path / "flink" / jar).touch()
    return dataclasses.replace(Settings(), job=JobSettings(jvm_dir=tmp_path))


@pytest.mark.parametrize(
    ("present", "missing"),
    [((OWN,), "flink-sql-connector-kafka-*.jar"), ((CONNECTOR,), "gridstream-flink-*.jar")],
)
def test_a_missing_jar_is_named_with_what_to_run(
    tmp_path: Path, present: tuple[str, ...], missing: str
) -> None:
    """Without the options factory's jar, flink-conf.yaml's RocksDB options factory would fail
    every job's start inside Flink: the job refuses to start and says `make jvm`."""
    with pytest.raises(MissingJarError, match=rf"no {missing.replace('*', '[*]')} in .*make jvm"):
        job_jars(settings_with(tmp_path, *present))


def test_both_jars_ship(tmp_path: Path) -> None:
    urls = job_jars(settings_with(tmp_path, OWN, CONNECTOR))

    assert [url.rsplit("/", 1)[1] for url in urls[:2]] == [CONNECTOR, OWN]

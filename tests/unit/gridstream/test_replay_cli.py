"""`gridstream replay`'s arguments and its output folder, without Kafka or Flink."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridstream import replay

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1796428800000", 1_796_428_800_000),
        ("2026-12-05T00:00:00Z", 1_796_428_800_000),
        ("2026-12-05T01:00:00+01:00", 1_796_428_800_000),
        ("2026-12-05T00:00:00", 1_796_428_800_000),
    ],
)
def test_times_are_epoch_ms_or_iso_with_utc_when_no_offset_is_named(text: str, ms: int) -> None:
    """Epoch milliseconds pass through; an ISO time without an offset is UTC."""
    assert replay.parse_time(text) == ms


def test_a_range_that_is_empty_or_names_an_unknown_topic_is_refused() -> None:
    """`--to` must be after `--from`, and every topic an input topic."""
    with pytest.raises(replay.ReplayError, match="not after"):
        replay.Request(10, 10)
    with pytest.raises(replay.ReplayError, match=r"grid\.audit"):
        replay.Request(0, 10, ("grid.audit",))
    with pytest.raises(replay.ReplayError, match="ISO"):
        replay.parse_time("yesterday")


def test_a_folder_is_reused_only_for_the_same_request(tmp_path: Path) -> None:
    """The same request completes an interrupted run; another one, or foreign files, are refused."""
    out = tmp_path / "dataset"
    replay.claim(out, replay.Request(0, 10))
    replay.claim(out, replay.Request(0, 10))

    with pytest.raises(replay.ReplayError, match="another request"):
        replay.claim(out, replay.Request(0, 20))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(replay.ReplayError, match="not empty"):
        replay.claim(tmp_path / "other", replay.Request(0, 10))

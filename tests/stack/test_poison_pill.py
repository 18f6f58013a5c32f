"""Rule 9 under a poison pill: one partition where a tenth of the records are junk."""

from __future__ import annotations

import pytest

from gridstream import roundtrip
from gridstream.config import Settings
from tests.stack.scenarios_support import quiet

pytestmark = pytest.mark.stack


def test_every_junk_record_is_one_dead_letter_and_every_reading_is_processed(
    settings: Settings,
) -> None:
    """200 junk records of every kind among 1,800 readings in one partition: each junk record
    is dead-lettered exactly once (read_committed), at its own offset, with its bytes and the
    error of its kind; every reading is processed (its second copy audited DUPLICATE once) and
    none is dead-lettered."""
    report = roundtrip.run(settings, events=900, progress=quiet, junk_share=0.1, partition=0)

    assert (report.missing, report.duplicates) == (0, 0)
    assert len(report.junk) == 200
    assert {pill.kind for pill in report.junk.values()} == set(roundtrip.JUNK_KINDS)
    assert report.junk_unlettered == []
    assert report.good_lettered == []
    for at, pill in report.junk.items():
        (letter,) = report.letters[at]
        assert letter.error_class == pill.error_class, (pill.kind, letter.error_message)
        assert letter.payload == (pill.value or b"")
        assert letter.payload_length == len(pill.value or b"")
        assert (letter.source_partition, letter.source_offset) == at

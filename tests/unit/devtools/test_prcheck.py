"""The pull request description check: both fields answered passes; missing, empty, template
guidance alone or a placeholder fails, and the failure names the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools import prcheck

pytestmark = pytest.mark.unit

TEMPLATE = Path(__file__).resolve().parents[3] / ".github" / "pull_request_template.md"

FILLED = """\
## What changes

Lowers the replay's chunk size.

## Safety Impact

None: the replay writes a training dataset and issues no command; the interlocks are untouched.

## Grid Impact

None: no command, alert or deployment changes; replays use more, smaller files.
"""


def reasons(body: str) -> dict[str, str]:
    return {finding.field: finding.reason for finding in prcheck.check(body)}


def test_a_description_answering_both_fields_passes() -> None:
    """Headings with a sentence each: nothing to report."""
    assert prcheck.check(FILLED) == []


def test_the_unfilled_template_fails_on_both_fields() -> None:
    """The template's own guidance is in comments: left as it is, both fields are empty."""
    found = reasons(TEMPLATE.read_text())

    assert found == {"Safety Impact": "empty", "Grid Impact": "empty"}


def test_the_template_filled_in_passes() -> None:
    """The template with an answer under each heading passes, its comments kept."""
    body = TEMPLATE.read_text()
    body = body.replace(
        "## Safety Impact\n",
        "## Safety Impact\n\nThe lag freeze now also holds CURTAIL commands (test_lag_freeze).\n",
    )
    body = body.replace(
        "## Grid Impact\n", "## Grid Impact\n\nUp to 60 s fewer curtailments while a feed lags.\n"
    )

    assert prcheck.check(body) == []


def test_a_missing_field_is_named() -> None:
    """Without a Grid Impact section the check says so."""
    body = FILLED.split("## Grid Impact")[0]

    assert reasons(body) == {"Grid Impact": "missing (a '## Grid Impact' section)"}


def test_an_empty_description_fails_both() -> None:
    """No description at all (GitHub sends null): both missing."""
    assert set(reasons("")) == {"Safety Impact", "Grid Impact"}


@pytest.mark.parametrize(
    "answer", ["TODO", "tbd", "N/A", "-", "None", "none.", "...", "<describe the safety impact>"]
)
def test_a_placeholder_is_no_answer(answer: str) -> None:
    """Placeholders, a bare None and an unfilled <...> fail."""
    body = FILLED.replace(
        "None: the replay writes a training dataset and issues no command; the interlocks are "
        "untouched.",
        answer,
    )

    assert "Safety Impact" in reasons(body)
    assert "Grid Impact" not in reasons(body)


def test_two_words_say_too_little() -> None:
    """An answer needs a reason: two words do not give one."""
    body = FILLED.replace(
        "None: no command, alert or deployment changes; replays use more, smaller files.",
        "Looks fine",
    )

    assert "says too little" in reasons(body)["Grid Impact"]


def test_an_unticked_checklist_alone_is_empty() -> None:
    """A section holding only unticked boxes answers nothing."""
    body = FILLED.replace(
        "None: the replay writes a training dataset and issues no command; the interlocks are "
        "untouched.",
        "- [ ] interlocks\n- [ ] budget",
    )

    assert reasons(body) == {"Safety Impact": "empty"}


def test_inline_fields_count_as_sections() -> None:
    """`**Safety Impact:** ...` lines are read as well as headings, any case."""
    body = (
        "Fixes the budget window.\n\n"
        "**Safety Impact:** the budget no longer lets two windows' commands through at once.\n"
        "grid impact: at most 200 commands in any 10 s window, as DESIGN.md says.\n"
    )

    assert prcheck.check(body) == []


def test_a_heading_at_another_level_and_with_a_colon_counts() -> None:
    """`### Safety impact:` is the same field."""
    body = FILLED.replace("## Safety Impact", "### Safety impact:")

    assert prcheck.check(body) == []


def test_cli_reads_the_pull_request_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--event` takes GitHub's payload; exit 1 and one line per failing field."""
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"body": FILLED.replace("## Grid Impact", "")}}))

    assert prcheck.main(["--event", str(event)]) == 1
    assert "pr-check: Safety Impact:" not in capsys.readouterr().out

    event.write_text(json.dumps({"pull_request": {"body": FILLED}}))
    assert prcheck.main(["--event", str(event)]) == 0


def test_cli_reads_a_body_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--body-file` takes the Markdown itself; the output names the failing field."""
    body = tmp_path / "body.md"
    body.write_text("## Safety Impact\n\nTBD\n\n## Grid Impact\n\nNone: documentation only.\n")

    assert prcheck.main(["--body-file", str(body)]) == 1
    assert "pr-check: Safety Impact: 'TBD' is a placeholder" in capsys.readouterr().out


def test_a_null_body_in_the_event_fails(tmp_path: Path) -> None:
    """A pull request opened without a description has `"body": null`."""
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"body": None}}))

    assert prcheck.main(["--event", str(event)]) == 1

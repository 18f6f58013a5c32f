"""Change control: a pull request's description must say its Safety Impact and its Grid Impact.

Each is a section of the description (a Markdown heading, as in .github/pull_request_template.md)
or a `Safety Impact: ...` line. The check fails a description where either is missing, or says
nothing once the template's guidance (HTML comments) is taken out, or says only a placeholder
("TODO", "TBD", "N/A", "-", a bare "None", an unfilled `<...>`, an unchecked box): "None" is an
answer only with its reason. Standard library only, so CI runs it before any install:

    python3 -m devtools.prcheck --event "$GITHUB_EVENT_PATH"   # a GitHub pull_request event
    python3 -m devtools.prcheck --body-file body.md            # or "-" for standard input
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

FIELDS = ("Safety Impact", "Grid Impact")
MIN_WORDS = 3  # "None: docs only" is an answer; "None" is not
PLACEHOLDERS = frozenset(
    {"todo", "tbd", "tba", "n/a", "na", "none", "nil", "nothing", "-", "--", "...", "?", "x",
     "same", "see above", "see below", "fill in", "fill me in", "describe", "lorem ipsum"}
)  # fmt: skip
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_UNFILLED = re.compile(r"<[^<>\n]*>")  # `<describe the change>`, left as the template had it
_UNCHECKED = re.compile(r"^\s*[-*]\s*\[ \]")  # a checklist line nobody ticked


@dataclasses.dataclass(frozen=True)
class Finding:
    """One field that fails, and why."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def _label(text: str) -> str:
    """A heading or field label as compared: no emphasis, no colon, case folded."""
    return re.sub(r"[*_`:]", "", text).strip().casefold()


def sections(body: str) -> dict[str, str]:
    """Each field's text: under its heading (to the next heading), or after `Field:` on its
    line (and the lines up to the next blank line or heading). Comments are taken out."""
    lines = _COMMENT.sub("", body.replace("\r\n", "\n")).split("\n")
    wanted = {field.casefold(): field for field in FIELDS}
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    inline = False
    for line in lines:
        heading = _HEADING.match(line)
        if heading:
            field = wanted.get(_label(heading.group(2)))
            current = found.setdefault(field, []) if field else None
            inline = False
            continue
        label, colon, rest = line.partition(":")
        field = wanted.get(_label(label)) if colon and not line.lstrip().startswith("-") else None
        if field:
            current = found.setdefault(field, [])
            current.append(rest)
            inline = True
            continue
        if inline and not line.strip():
            current, inline = None, False
        if current is not None:
            current.append(line)
    return {field: "\n".join(text).strip() for field, text in found.items()}


def _is_placeholder(text: str) -> str | None:
    """Why `text` is no answer, or None when it is one."""
    kept = [line for line in text.split("\n") if line.strip() and not _UNCHECKED.match(line)]
    lines = "\n".join(kept)
    unfilled = _UNFILLED.search(lines)
    plain = re.sub(r"^\s*(>\s*)*[-*+]?\s*", "", lines, flags=re.MULTILINE)  # quotes, bullets
    plain = re.sub(r"[*_`#]", " ", plain).strip()
    if not plain:
        return "empty"
    if unfilled:
        return f"still has the template's placeholder {unfilled.group(0)}"
    if plain.casefold().strip(" .!") in PLACEHOLDERS:
        return f"{plain!r} is a placeholder"
    words = re.findall(r"[A-Za-z0-9][\w'/.-]*", plain)
    if len(words) < MIN_WORDS:
        return f"{plain!r} says too little (write what changes, or 'None' and why)"
    return None


def check(body: str) -> list[Finding]:
    """What the description lacks; empty when both fields are answered."""
    found = sections(body or "")
    findings = []
    for field in FIELDS:
        if field not in found:
            findings.append(Finding(field, "missing (a '## " + field + "' section)"))
            continue
        reason = _is_placeholder(found[field])
        if reason:
            findings.append(Finding(field, reason))
    return findings


def body_of_event(path: Path) -> str:
    """The pull request description in a GitHub event payload (null when none was written)."""
    event = json.loads(path.read_text())
    pull_request = event.get("pull_request")
    if pull_request is None:
        raise SystemExit(f"{path}: not a pull_request event")
    return str(pull_request.get("body") or "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--event", type=Path, help="a GitHub pull_request event (JSON)")
    source.add_argument("--body-file", help="the description as Markdown ('-': standard input)")
    args = parser.parse_args(argv)
    if args.event:
        body = body_of_event(args.event)
    elif args.body_file == "-":
        body = sys.stdin.read()
    else:
        body = Path(args.body_file).read_text()
    findings = check(body)
    for finding in findings:
        print(f"pr-check: {finding}")
    if findings:
        print(
            "pr-check: fill in both fields of .github/pull_request_template.md in the pull "
            "request's description ('None' with its reason when there is none)"
        )
        return 1
    print(f"pr-check: {' and '.join(FIELDS)} answered")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Deterministic ids: the same inputs give the same id on a replay or after a restart."""

from __future__ import annotations

import hashlib
import json
import re

from schemas.models import ID_CHARS, Action

# What an id may not hold: Python's \s refuses every character Pydantic's `^\S+$` (Unicode
# White_Space) does, and U+001C-U+001F besides, which only makes a few more ids derived.
_SPACE = re.compile(r"\s")


def stable_id(*parts: str | int | None) -> str:
    """32 hex digits of BLAKE2b over the parts as a compact JSON array (reproducible anywhere)."""
    text = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).hexdigest()


def derived_id(text: str) -> str:
    """`text` as an id the models accept (1 to `ID_CHARS` characters, no whitespace): `text`
    itself when it is one; else its whitespace made `_`, clipped, and a digest of all of it
    after a `~`, so different texts keep different ids (unless a valid one is written to look
    like another's derived id). An id made of a valid device id and a time can be too long for
    the models, and would fail the stage that builds the output."""
    if 0 < len(text) <= ID_CHARS and _SPACE.search(text) is None:
        return text
    digest = stable_id(text)
    return f"{_SPACE.sub('_', text)[: ID_CHARS - len(digest) - 1]}~{digest}"


def command_id(device_id: str, action: Action, about: str) -> str:
    """The id of the command doing `action` on `device_id` for `about` (a DR participation and
    its round, or the recommendation an operator approved).

    It names the decision, not the input that happened to trigger it (a timer, a reading, a
    late DR event), so the same decision has the same id whatever the arrival order.
    """
    return stable_id("command", device_id, action.value, about)


def recommendation_id(device_id: str, action: Action, about: str) -> str:
    """The id of the recommendation to do `action` on `device_id` for `about` (as `command_id`)."""
    return stable_id("recommendation", device_id, action.value, about)

"""Deterministic ids: the same inputs give the same id on a replay or after a restart."""

from __future__ import annotations

import hashlib
import json

from schemas.models import Action


def stable_id(*parts: str | int | None) -> str:
    """32 hex digits of BLAKE2b over the parts as a compact JSON array (reproducible anywhere)."""
    text = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).hexdigest()


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

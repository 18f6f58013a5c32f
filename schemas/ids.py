"""Deterministic ids: the same inputs give the same id on a replay or after a restart."""

from __future__ import annotations

import hashlib
import json

from schemas.models import Action, Cause


def stable_id(*parts: str | int | None) -> str:
    """32 hex digits of BLAKE2b over the parts as a compact JSON array (reproducible anywhere)."""
    text = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).hexdigest()


def _id_for(kind: str, device_id: str, action: Action, cause: Cause) -> str:
    return stable_id(
        kind,
        device_id,
        action.value,
        cause.source_topic,
        cause.source_partition,
        cause.source_offset,
        cause.event_id,
    )


def command_id(device_id: str, action: Action, cause: Cause) -> str:
    """The id of the command doing `action` on `device_id` because of `cause`."""
    return _id_for("command", device_id, action, cause)


def recommendation_id(device_id: str, action: Action, cause: Cause) -> str:
    """The id of the recommendation to do `action` on `device_id` because of `cause`."""
    return _id_for("recommendation", device_id, action, cause)

"""Dead letters: a record that cannot become a model is described and sent to `gridstream.dlq`.

`build` never raises: whatever it is handed (any bytes, any error, broken unicode in keys and
headers, implausible positions and timestamps) is escaped, truncated or dropped until it fits the
`DeadLetter` model, so a bad record never stalls its partition.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from schemas import ids
from schemas.models import (
    MAX_ERROR_CHARS,
    MAX_HEADER_KEY_CHARS,
    MAX_HEADER_VALUE_BYTES,
    MAX_HEADERS,
    MAX_INT,
    MAX_KEY_BYTES,
    MAX_LONG,
    MAX_PAYLOAD_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    DeadLetter,
    KafkaHeader,
    M,
)
from schemas.serde import DecodeError, Deserializer

CORRELATION_HEADER = "correlation_id"
_ID_CHARS = 128
_LABEL_CHARS = 64
_WHITESPACE = re.compile(r"\s")

Header = tuple[str | bytes, bytes | str | None]


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """A consumed Kafka record: where it came from and its raw parts."""

    topic: str
    partition: int | None
    offset: int | None
    timestamp_ms: int | None
    key: bytes | str | None
    value: bytes | None
    headers: Sequence[Header] | None = ()

    @classmethod
    def from_message(cls, message: Any) -> SourceRecord:
        """The parts of a consumed `confluent_kafka.Message`."""
        kind, timestamp_ms = message.timestamp()
        return cls(
            message.topic(),
            message.partition(),
            message.offset(),
            None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp_ms,
            message.key(),
            message.value(),
            message.headers(),
        )


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """The job that dead-letters: its name and version."""

    name: str
    version: str


def _text(value: object, limit: int) -> str:
    """`value` as valid UTF-8 text (undecodable bytes and lone surrogates escaped), clipped."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode("utf-8", "backslashreplace")
    else:
        text = value if isinstance(value, str) else repr(value)
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text[:limit]


def _bytes(value: object, limit: int) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value[:limit])
    return _text(value, limit).encode("utf-8")[:limit]


def _identifier(value: object, fallback: str) -> str:
    """`value` as an id: whitespace replaced by `_`, clipped; `fallback` when empty."""
    return _WHITESPACE.sub("_", _text(value, _ID_CHARS)) or fallback


def _bounded(value: object, low: int, high: int) -> int | None:
    """`value` when it is an int in [low, high], else None."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    return None


def _message(error: BaseException) -> str:
    try:
        return _text(str(error), MAX_ERROR_CHARS)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the record
        return f"<{type(error).__name__} with an unprintable message>"


def _correlation_id(source: SourceRecord, headers: Sequence[KafkaHeader], payload: bytes) -> str:
    """The record's correlation_id header when usable, else one minted from position and bytes."""
    for header in headers:
        if header.key == CORRELATION_HEADER and header.value:
            return _identifier(header.value, "")
    digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
    return ids.stable_id(
        "dead-letter", _text(source.topic, _ID_CHARS), source.partition, source.offset, digest
    )


def build(
    source: SourceRecord, error: BaseException, job: JobInfo, failed_ts_ms: int
) -> DeadLetter:
    """The dead letter describing why `source` failed with `error`; never raises.

    Args:
        source: The record as consumed.
        error: Why it failed; a `DecodeError` also gives the schema id.
        job: Who dead-letters it.
        failed_ts_ms: Processing time of the failure (clamped into the plausible range).
    """
    payload = bytes(source.value or b"")
    headers = tuple(
        KafkaHeader(key=_text(key, MAX_HEADER_KEY_CHARS), value=_bytes(val, MAX_HEADER_VALUE_BYTES))
        for key, val in list(source.headers or ())[:MAX_HEADERS]
    )
    schema_id = error.schema_id if isinstance(error, DecodeError) else None
    return DeadLetter(
        correlation_id=_correlation_id(source, headers, payload),
        failed_ts_ms=min(max(failed_ts_ms, MIN_TS_MS), MAX_TS_MS),
        error_class=_text(type(error).__name__, _LABEL_CHARS) or "Exception",
        error_message=_message(error),
        schema_id=_bounded(schema_id, -(2**31), MAX_INT),
        source_topic=_identifier(source.topic, "unknown-topic"),
        source_partition=_bounded(source.partition, 0, MAX_INT),
        source_offset=_bounded(source.offset, 0, MAX_LONG),
        source_ts_ms=_bounded(source.timestamp_ms, MIN_TS_MS, MAX_TS_MS),
        key=_bytes(source.key, MAX_KEY_BYTES),
        headers=headers,
        payload=payload[:MAX_PAYLOAD_BYTES],
        payload_length=len(payload),
        job_name=_identifier(job.name, "unknown-job"),
        job_version=_text(job.version, _LABEL_CHARS) or "unknown",
    )


def decode_or_dead_letter(
    deserializer: Deserializer[M], source: SourceRecord, job: JobInfo, now_ms: int
) -> M | DeadLetter:
    """The validated record, or its dead letter when it cannot be decoded or validated.

    Raises:
        RegistryUnavailable: a new schema id could not be fetched; the job should fail and
            retry rather than dead-letter good records.
    """
    try:
        return deserializer.decode(source.value or b"", now_ms)
    except DecodeError as err:
        return build(source, err, job, now_ms)

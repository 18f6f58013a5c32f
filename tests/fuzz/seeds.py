"""A fuzzer's starting corpus and dictionary for one input topic, made from `schemas/avro`.

Seeds are real records of every schema version of the topic, encoded by the project's own
encoder under the catalog's schema ids and keyed as the job expects, so mutations start past
the magic byte and the schema id. The dictionary holds the wire headers, the enum symbols and
ids as Avro strings, and the values range checks trip on (NaN, infinities, odd whitespace).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gridstream import topics
from schemas import catalog, models, serde
from schemas.examples import encode_unvalidated, example_data
from tests.fuzz.properties import frame
from tests.fuzz.records import KEY_FIELDS, ODD_TEXT

_ODD_DOUBLES = (float("nan"), float("inf"), float("-inf"), -0.0, 1e308)


def _avro_string(text: str) -> bytes:
    """`text` as Avro writes a string: a zigzag varint length, then UTF-8."""
    raw = text.encode("utf-8", "surrogatepass")
    length, out = len(raw) << 1, bytearray()
    while length > 0x7F:
        out.append(length & 0x7F | 0x80)
        length >>= 7
    return bytes([*out, length]) + raw


def _versions(topic: str) -> Iterator[tuple[int, Any]]:
    """(schema id, version) of every version of the topic's chain, under the catalog ids."""
    chain = catalog.default().chain(topic)
    ids = serde.StaticSchemas.from_catalog(catalog.default())
    for version in chain.versions:
        yield ids.schema_id(chain.subject, version.text), version


def seeds(topic: str) -> Iterator[bytes]:
    """Framed inputs: the topic's example in every schema version, a few near-misses, and
    (for the registry) a tombstone."""
    model = models.MODELS[topic]
    data = example_data(model)
    key = str(data[KEY_FIELDS[topic]]).encode()
    for schema_id, version in _versions(topic):
        value = encode_unvalidated(version, schema_id, data)
        yield frame(key, value)
        yield frame(key, value, b"corr-fuzz")
        yield frame(key, value[:-1])
        yield frame(b"another-key", value)
    yield frame(key, b"")
    yield frame(key, b"\x01" + value[1:])
    if topic == topics.DEVICE_REGISTRY:
        yield frame(key, None)
    for choice in range(256):  # records built from bytes: a spread of first choices
        yield frame(b"", bytes([choice]) * 64, built=True)


def dictionary(topic: str) -> Iterator[bytes]:
    """libFuzzer dictionary entries for the topic's records."""
    for schema_id, version in _versions(topic):
        yield serde.wire_header(schema_id)
        for field in version.schema["fields"]:
            yield _avro_string(field["name"])
    for enum in (
        models.DeviceClass, models.PriorityLevel, models.Action, models.EventStatus,
        models.ApprovalDecision,
    ):  # fmt: skip
        for member in enum:
            yield _avro_string(member.value)
    for value in example_data(models.MODELS[topic]).values():
        if isinstance(value, str):
            yield _avro_string(value)
    for text in ODD_TEXT:
        yield text.encode("utf-8", "surrogatepass")
    for number in _ODD_DOUBLES:
        yield struct.pack("<d", number)
    yield serde.wire_header(0)
    yield serde.wire_header(2**31 - 1)


def _dict_line(entry: bytes) -> str:
    return '"' + "".join(f"\\x{b:02x}" for b in entry) + '"'


def write(topic: str, corpus: Path, dictionary_file: Path) -> None:
    """Add the topic's seeds to `corpus` (kept: a long run's finds stay) and write its
    dictionary to `dictionary_file`."""
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seeds(topic):
        name = "seed-" + hashlib.sha1(seed, usedforsecurity=False).hexdigest()
        (corpus / name).write_bytes(seed)
    entries = dict.fromkeys(e for e in dictionary(topic) if e)  # in order, once each
    dictionary_file.write_text("\n".join(map(_dict_line, entries)) + "\n", encoding="ascii")

"""The dev schema registry, driven over real HTTP by confluent-kafka's own client."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    Schema,
    SchemaRegistryClient,
    ServerConfig,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from gridstream.stack.registry import CONTENT_TYPE, DevSchemaRegistry

pytestmark = pytest.mark.stack

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SUBJECT = "grid.readings-value"

A = {"name": "a", "type": "int"}
B_DEFAULT = {"name": "b", "type": "string", "default": ""}
B_REQUIRED = {"name": "b", "type": "string"}


def record(*fields: dict[str, Any]) -> str:
    """An AVRO record schema `gs.Reading` with `fields`, as JSON text."""
    return json.dumps({"type": "record", "name": "Reading", "namespace": "gs", "fields": fields})


def avro(*fields: dict[str, Any]) -> Schema:
    """The same record as a client-side `Schema`."""
    return Schema(record(*fields), "AVRO")


def raw(
    registry: DevSchemaRegistry, method: str, path: str, body: Any = None
) -> tuple[int, str, Any]:
    """A raw request: (status, content type, decoded JSON body)."""
    connection = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=10)
    try:
        data = None if body is None else json.dumps(body)
        connection.request(method, path, body=data, headers={"Content-Type": CONTENT_TYPE})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), json.load(response)
    finally:
        connection.close()


def as_json(schema: Schema) -> Any:
    """A fetched schema's text, decoded (formatting aside, what was registered)."""
    return json.loads(schema.schema_str or "null")


def sr_error(call: Any, *args: Any, **kwargs: Any) -> SchemaRegistryError:
    """The `SchemaRegistryError` that `call(*args, **kwargs)` raises."""
    with pytest.raises(SchemaRegistryError) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Where the registry under test keeps its state."""
    return tmp_path / "registry"


@pytest.fixture
def registry(data_dir: Path) -> Iterator[DevSchemaRegistry]:
    """A registry on a free loopback port, stopped after the test."""
    server = DevSchemaRegistry("127.0.0.1", 0, data_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(registry: DevSchemaRegistry) -> SchemaRegistryClient:
    """confluent-kafka's real client, pointed at the registry under test."""
    return SchemaRegistryClient({"url": registry.url})


def test_registers_versions_and_serves_them_back(
    registry: DevSchemaRegistry, client: SchemaRegistryClient
) -> None:
    """v1 and a compatible v2 get ids; schemas, subjects, versions and latest read back."""
    v1_id = client.register_schema(SUBJECT, avro(A))
    v2_id = client.register_schema(SUBJECT, avro(A, B_DEFAULT))

    assert (v1_id, v2_id) == (1, 2)
    fresh = SchemaRegistryClient({"url": registry.url})  # no client-side cache
    assert as_json(fresh.get_schema(v1_id)) == json.loads(record(A))
    assert as_json(fresh.get_schema(v2_id)) == json.loads(record(A, B_DEFAULT))
    assert fresh.get_subjects() == [SUBJECT]
    assert fresh.get_versions(SUBJECT) == [1, 2]
    latest = fresh.get_latest_version(SUBJECT)
    assert (latest.subject, latest.version, latest.schema_id) == (SUBJECT, 2, v2_id)
    assert as_json(latest.schema) == json.loads(record(A, B_DEFAULT))
    first = fresh.get_version(SUBJECT, 1)
    assert (first.version, first.schema_id) == (1, v1_id)


def test_reregistering_an_identical_schema_returns_its_id_without_a_new_version(
    registry: DevSchemaRegistry, client: SchemaRegistryClient
) -> None:
    """The same schema, even formatted differently, keeps its id and adds no version."""
    first = client.register_schema(SUBJECT, avro(A))
    reformatted = Schema(json.dumps(json.loads(record(A)), indent=4), "AVRO")

    again = SchemaRegistryClient({"url": registry.url})
    assert again.register_schema(SUBJECT, avro(A)) == first
    assert again.register_schema(SUBJECT, reformatted) == first
    assert again.get_versions(SUBJECT) == [1]


def test_the_same_schema_under_two_subjects_shares_one_global_id(
    client: SchemaRegistryClient,
) -> None:
    """Ids are global: a second subject registering the same text gets the same id."""
    in_value = client.register_schema("readings-value", avro(A))
    in_dlq = client.register_schema("readings.dlq-value", avro(A))
    other = client.register_schema("other-value", avro(A, B_DEFAULT))

    assert in_value == in_dlq
    assert other != in_value
    assert sorted(client.get_subjects_by_schema_id(in_value)) == [
        "readings-value",
        "readings.dlq-value",
    ]
    assert {(v.subject, v.version) for v in client.get_schema_versions(in_value)} == {
        ("readings-value", 1),
        ("readings.dlq-value", 1),
    }


def test_lookup_finds_the_version_holding_a_schema(client: SchemaRegistryClient) -> None:
    """POST /subjects/{subject} answers subject, version and id; unknown ones are 404s."""
    v1_id = client.register_schema(SUBJECT, avro(A))
    client.register_schema(SUBJECT, avro(A, B_DEFAULT))

    found = client.lookup_schema(SUBJECT, avro(A))
    assert (found.subject, found.version, found.schema_id) == (SUBJECT, 1, v1_id)
    missing = sr_error(client.lookup_schema, SUBJECT, avro(A, {"name": "z", "type": "long"}))
    assert (missing.http_status_code, missing.error_code) == (404, 40403)
    no_subject = sr_error(client.lookup_schema, "nobody-value", avro(A))
    assert (no_subject.http_status_code, no_subject.error_code) == (404, 40401)


def test_a_new_field_without_default_is_refused_with_409_naming_the_field(
    client: SchemaRegistryClient,
) -> None:
    """Under the default BACKWARD_TRANSITIVE, a required new field cannot read old data."""
    client.register_schema(SUBJECT, avro(A))

    err = sr_error(client.register_schema, SUBJECT, avro(A, {"name": "voltage", "type": "double"}))

    assert (err.http_status_code, err.error_code) == (409, 409)
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in err.error_message
    assert "'voltage'" in err.error_message
    assert client.get_versions(SUBJECT) == [1]


@pytest.mark.parametrize(
    ("v1", "v2", "v3"),
    [
        pytest.param(
            [A],
            [A, B_DEFAULT],
            [A, B_REQUIRED],
            id="default-dropped: v1 data has no b",
        ),
        pytest.param(
            [A, {"name": "note", "type": "string", "default": ""}],
            [A],
            [A, {"name": "note", "type": "int", "default": 0}],
            id="name-reused-with-other-type: v1 wrote note as string",
        ),
    ],
)
def test_backward_transitive_refuses_what_plain_backward_accepts(
    client: SchemaRegistryClient,
    v1: list[dict[str, Any]],
    v2: list[dict[str, Any]],
    v3: list[dict[str, Any]],
) -> None:
    """v3 reads v2 data but not v1 data: 409 transitively, accepted once the subject is BACKWARD."""
    client.register_schema(SUBJECT, avro(*v1))
    client.register_schema(SUBJECT, avro(*v2))

    assert client.test_compatibility(SUBJECT, avro(*v3), version="latest") is True
    assert client.test_compatibility(SUBJECT, avro(*v3), version=2) is True
    assert client.test_compatibility(SUBJECT, avro(*v3), version=1) is False
    err = sr_error(client.register_schema, SUBJECT, avro(*v3))
    assert (err.http_status_code, err.error_code) == (409, 409)
    assert "{oldSchemaVersion: 1}" in err.error_message
    assert "{oldSchemaVersion: 2}" not in err.error_message

    client.set_compatibility(SUBJECT, "BACKWARD")
    assert client.register_schema(SUBJECT, avro(*v3)) == 3
    assert client.get_versions(SUBJECT) == [1, 2, 3]


@pytest.mark.parametrize(
    ("level", "candidate", "compatible"),
    [
        ("BACKWARD", [A, B_DEFAULT, {"name": "c", "type": "int"}], False),
        ("FORWARD", [A, B_DEFAULT, {"name": "c", "type": "int"}], True),
        ("FULL", [A, B_DEFAULT, {"name": "c", "type": "int"}], False),
        ("NONE", [A, B_DEFAULT, {"name": "c", "type": "int"}], True),
        ("BACKWARD", [B_DEFAULT], True),
        ("FORWARD", [B_DEFAULT], False),
        ("FULL", [B_DEFAULT], False),
        ("FULL", [A], True),
        ("BACKWARD", [A, {"name": "b", "type": "int", "default": 0}], False),
        ("FORWARD", [A, {"name": "b", "type": "int", "default": 0}], False),
    ],
)
def test_each_level_checks_its_direction(
    client: SchemaRegistryClient, level: str, candidate: list[dict[str, Any]], compatible: bool
) -> None:
    """BACKWARD: new reads old; FORWARD: old reads new; FULL: both; NONE: anything goes."""
    client.register_schema(SUBJECT, avro(A, B_DEFAULT))
    client.set_compatibility(SUBJECT, level)

    assert client.test_compatibility(SUBJECT, avro(*candidate)) is compatible
    if compatible:
        assert client.register_schema(SUBJECT, avro(*candidate)) == 2
    else:
        assert sr_error(client.register_schema, SUBJECT, avro(*candidate)).http_status_code == 409


def test_verbose_compatibility_check_explains_the_incompatibility(
    registry: DevSchemaRegistry, client: SchemaRegistryClient
) -> None:
    """?verbose=true adds a messages list naming the field; without it there is no list."""
    client.register_schema(SUBJECT, avro(A))
    body = {"schema": record(A, {"name": "voltage", "type": "double"})}
    path = f"/compatibility/subjects/{SUBJECT}/versions/latest"

    status, content_type, verbose = raw(registry, "POST", path + "?verbose=true", body)
    _, _, terse = raw(registry, "POST", path, body)
    _, _, fine = raw(registry, "POST", path + "?verbose=true", {"schema": record(A, B_DEFAULT)})

    assert (status, content_type) == (200, CONTENT_TYPE)
    assert verbose["is_compatible"] is False
    assert any("voltage" in m and "MISSING_DEFAULT" in m for m in verbose["messages"])
    assert terse == {"is_compatible": False}
    assert fine == {"is_compatible": True, "messages": []}


def test_global_and_subject_compatibility_are_configurable(
    registry: DevSchemaRegistry, client: SchemaRegistryClient
) -> None:
    """GET/PUT /config and /config/{subject}; a subject without its own level is a 40408."""
    assert client.get_compatibility() == "BACKWARD_TRANSITIVE"
    assert client.get_config().compatibility_level == ConfigCompatibilityLevel.BACKWARD_TRANSITIVE

    # The client is annotated as returning ServerConfig / str here, but hands back the raw JSON.
    answer: Any = client.set_config(
        config=ServerConfig(compatibility=ConfigCompatibilityLevel.FULL)
    )
    assert answer == {"compatibility": "FULL"}
    assert client.get_config().compatibility_level == ConfigCompatibilityLevel.FULL
    answer = client.set_compatibility(SUBJECT, "none")
    assert answer == {"compatibility": "NONE"}
    assert client.get_compatibility(SUBJECT) == "NONE"

    unset = sr_error(client.get_config, "other-value")
    assert (unset.http_status_code, unset.error_code) == (404, 40408)
    status, _, fallback = raw(registry, "GET", "/config/other-value?defaultToGlobal=true")
    assert (status, fallback) == (200, {"compatibilityLevel": "FULL"})
    bad = sr_error(client.set_compatibility, None, "SIDEWAYS")
    assert (bad.http_status_code, bad.error_code) == (422, 42203)


def test_the_constructor_sets_the_default_global_level(data_dir: Path) -> None:
    """DevSchemaRegistry(..., compatibility) is the level until PUT /config; junk is refused."""
    with DevSchemaRegistry("127.0.0.1", 0, data_dir, "none") as server:
        client = SchemaRegistryClient({"url": server.url})
        assert client.get_compatibility() == "NONE"
        client.register_schema(SUBJECT, avro(A))
        assert client.register_schema(SUBJECT, avro(B_REQUIRED)) == 2
    with pytest.raises(ValueError, match="SIDEWAYS"):
        DevSchemaRegistry("127.0.0.1", 0, data_dir, "SIDEWAYS")


def test_state_survives_a_restart_on_a_new_port(data_dir: Path) -> None:
    """Ids, versions and config are on disk: a new server on the same dir answers the same."""
    with DevSchemaRegistry("127.0.0.1", 0, data_dir) as first:
        before = SchemaRegistryClient({"url": first.url})
        v1_id = before.register_schema(SUBJECT, avro(A))
        v2_id = before.register_schema(SUBJECT, avro(A, B_DEFAULT))
        before.set_compatibility(SUBJECT, "FULL")
    assert sorted(p.name for p in data_dir.iterdir()) == ["registry.json"]

    with DevSchemaRegistry("127.0.0.1", 0, data_dir) as second:
        after = SchemaRegistryClient({"url": second.url})
        assert after.get_subjects() == [SUBJECT]
        assert after.get_versions(SUBJECT) == [1, 2]
        assert after.get_latest_version(SUBJECT).schema_id == v2_id
        assert as_json(after.get_schema(v1_id)) == json.loads(record(A))
        assert after.get_compatibility(SUBJECT) == "FULL"
        assert after.register_schema(SUBJECT, avro(A)) == v1_id
        assert after.register_schema("elsewhere-value", avro(A, B_DEFAULT)) == v2_id
        assert after.register_schema("new-value", avro(B_REQUIRED)) == 3


def test_deleting_a_subject_is_soft_first_then_permanent(
    registry: DevSchemaRegistry, client: SchemaRegistryClient
) -> None:
    """Soft delete hides the subject but keeps ids; permanent delete needs a soft one first."""
    v1_id = client.register_schema(SUBJECT, avro(A))
    client.register_schema(SUBJECT, avro(A, B_DEFAULT))

    premature = sr_error(client.delete_subject, SUBJECT, permanent=True)
    assert (premature.http_status_code, premature.error_code) == (404, 40405)
    assert client.delete_subject(SUBJECT) == [1, 2]
    assert client.get_subjects() == []
    assert client.get_subjects(deleted=True) == [SUBJECT]
    assert sr_error(client.get_versions, SUBJECT).error_code == 40401
    assert client.get_versions(SUBJECT, deleted=True) == [1, 2]
    fresh = SchemaRegistryClient({"url": registry.url})
    assert as_json(fresh.get_schema(v1_id)) == json.loads(record(A))

    assert client.delete_subject(SUBJECT, permanent=True) == [1, 2]
    assert client.get_subjects(deleted=True) == []


@pytest.mark.parametrize(
    ("schema_str", "fragment"),
    [
        ('{"type": "recrod", "name": "R", "fields": []}', "recrod"),
        ("{not json", "Invalid schema"),
        (record({"name": "n", "type": ["null", "int"], "default": 0}), "first branch"),
        (record({"name": "n", "type": "int", "default": "zero"}), "'n'"),
    ],
)
def test_an_invalid_schema_is_refused_with_42201(
    client: SchemaRegistryClient, schema_str: str, fragment: str
) -> None:
    """Unparseable schemas and defaults that do not fit their type are 422 / 42201."""
    err = sr_error(client.register_schema, SUBJECT, Schema(schema_str, "AVRO"))

    assert (err.http_status_code, err.error_code) == (422, 42201)
    assert fragment in err.error_message


def test_unknown_ids_versions_and_paths_get_confluent_error_bodies(
    registry: DevSchemaRegistry, client: SchemaRegistryClient
) -> None:
    """40403 unknown id, 40401 unknown subject, 40402 unknown version, 42202 bad version."""
    client.register_schema(SUBJECT, avro(A))

    assert sr_error(client.get_schema, 99).error_code == 40403
    assert sr_error(client.get_version, "nobody-value", 1).error_code == 40401
    assert sr_error(client.get_version, SUBJECT, 7).error_code == 40402
    assert sr_error(client.get_version, SUBJECT, 0).error_code == 42202
    status, content_type, body = raw(registry, "GET", "/no/such/path")
    assert (status, content_type) == (404, CONTENT_TYPE)
    assert set(body) == {"error_code", "message"}


def test_avro_serializer_and_deserializer_round_trip_through_the_registry(
    client: SchemaRegistryClient,
) -> None:
    """The stock AvroSerializer auto-registers `<topic>-value`; the deserializer reads it back."""
    serializer = AvroSerializer(client, record(A, B_DEFAULT))
    deserializer = AvroDeserializer(client)
    context = SerializationContext("grid.readings", MessageField.VALUE)

    payload = serializer({"a": 7, "b": "ok"}, context)

    assert payload is not None
    assert payload[0] == 0
    assert deserializer(payload, context) == {"a": 7, "b": "ok"}
    assert client.get_subjects() == ["grid.readings-value"]


def test_concurrent_registrations_agree_on_one_id(
    registry: DevSchemaRegistry, client: SchemaRegistryClient
) -> None:
    """Eight threads registering one schema under eight subjects all get the same id."""
    url = registry.url

    def register(n: int) -> int:
        return SchemaRegistryClient({"url": url}).register_schema(f"s{n}-value", avro(A))

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(register, range(8)))

    assert ids == {1}
    assert len(client.get_subjects()) == 8


def test_the_cli_logs_ready_serves_and_exits_zero_on_sigterm(data_dir: Path) -> None:
    """`python -m gridstream.stack.registry` logs one ready line, answers, stops on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridstream.stack.registry", "--host", "127.0.0.1",
         "--port", "0", "--data-dir", str(data_dir), "--compatibility", "full"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stderr or ():
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        ready = lines.get(timeout=20)
        match = re.search(r"ready at (http://\S+)", ready)
        assert match, ready
        client = SchemaRegistryClient({"url": match.group(1)})
        assert client.get_compatibility() == "FULL"
        assert client.register_schema(SUBJECT, avro(A)) == 1

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert (data_dir / "registry.json").exists()

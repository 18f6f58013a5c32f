"""The schemas against a real registry, through confluent-kafka's own `SchemaRegistryClient`."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from gridstream import topics
from gridstream.stack.components import Registry as RegistryServer
from schemas import catalog, cli, models, serde
from schemas.examples import EXAMPLE_NOW_MS, encode_unvalidated, example, example_data
from schemas.registry import Registry, RegistryConfig

pytestmark = pytest.mark.stack

CATALOG = catalog.default()
IOT = CATALOG.chain(topics.IOT_TELEMETRY)


@pytest.fixture
def server(registry_server: RegistryServer) -> RegistryServer:
    """The stack's registry, empty and BACKWARD_TRANSITIVE, on a free loopback port."""
    return registry_server


@pytest.fixture
def registry(server: RegistryServer) -> Registry:
    """Our registry access, configured by URL."""
    return Registry(RegistryConfig(server.address))


@pytest.fixture
def registered(registry: Registry) -> Registry:
    """The registry holding every schema version of `schemas/avro`."""
    registry.register(CATALOG)
    return registry


def test_every_subject_and_version_is_registered_and_fetched_back(
    server: RegistryServer, registry: Registry
) -> None:
    """Each `<topic>-value` holds v1..vN of its files, in order, and re-registering is a no-op."""
    first = registry.register(CATALOG)
    fresh = SchemaRegistryClient({"url": server.address})

    assert sorted(fresh.get_subjects()) == sorted(c.subject for c in CATALOG.chains.values())
    for chain in CATALOG.chains.values():
        assert fresh.get_versions(chain.subject) == [v.version for v in chain.versions]
        for version in chain.versions:
            held = fresh.get_version(chain.subject, version.version).schema.schema_str
            assert json.loads(held or "null") == version.schema
    assert registry.register(CATALOG) == first


def test_the_serializer_encodes_with_the_registered_id_of_the_newest_schema(
    server: RegistryServer, registered: Registry
) -> None:
    """Bytes 1-4 are the id the registry gives `iot.telemetry-value`'s latest version."""
    writer = serde.serializer(models.IotTelemetry, registered.schemas())
    latest = SchemaRegistryClient({"url": server.address}).get_latest_version(IOT.subject)

    payload = writer.encode(example(models.IotTelemetry))

    assert payload[:5] == serde.wire_header(latest.schema_id)
    reader = serde.deserializer(models.IotTelemetry, registered.schemas())
    assert reader.decode(payload, EXAMPLE_NOW_MS) == example(models.IotTelemetry)


def test_old_v1_iot_bytes_decode_into_the_v2_model_through_the_registry(
    registered: Registry,
) -> None:
    """A v1 producer's bytes, under v1's registered id, read as the v2 model with defaults."""
    v1 = IOT.versions[0]
    v1_id = registered.client.lookup_schema(IOT.subject, Schema(v1.text, "AVRO")).schema_id
    assert v1_id is not None
    data = example_data(models.IotTelemetry)
    reader = serde.deserializer(models.IotTelemetry, Registry(registered.config).schemas())

    record = reader.decode(encode_unvalidated(v1, v1_id, data), EXAMPLE_NOW_MS)

    assert record == example(models.IotTelemetry, measured_temp_c=None, ev_soc_pct=None)


def test_an_id_the_registry_lacks_is_an_unknown_schema_id(registered: Registry) -> None:
    """The registry's 404 becomes UnknownSchemaId, which dead-letters the record."""
    reader = serde.deserializer(models.IotTelemetry, registered.schemas())

    with pytest.raises(serde.UnknownSchemaId) as caught:
        reader.decode(serde.wire_header(4242) + b"\x00", EXAMPLE_NOW_MS)

    assert caught.value.schema_id == 4242


def test_a_serializer_needs_its_schema_registered_first(registry: Registry) -> None:
    """Without registration the lookup fails saying what to run; auto-register fixes it."""
    with pytest.raises(LookupError, match="schemas register"):
        serde.serializer(models.IotTelemetry, registry.schemas())

    writer = serde.serializer(models.IotTelemetry, registry.schemas(auto_register=True))

    assert registry.client.get_latest_version(IOT.subject).schema_id == writer.schema_id


def test_an_unreachable_registry_is_unavailable_not_an_unknown_id(
    server: RegistryServer,
) -> None:
    """A registry that does not answer raises RegistryUnavailable, which is never dead-lettered."""
    config = RegistryConfig(server.address, max_retries=0)
    server.stop()
    reader = serde.deserializer(models.IotTelemetry, Registry(config).schemas())

    with pytest.raises(serde.RegistryUnavailable, match="stack up"):
        reader.decode(serde.wire_header(1) + b"\x00", EXAMPLE_NOW_MS)


def test_schemas_register_then_check_against_the_registry_pass(
    server: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`schemas register --registry URL` registers all; `schemas check --registry URL` agrees."""
    assert cli.main(["register", "--registry", server.address]) == 0
    assert cli.main(["check", "--registry", server.address]) == 0

    out = capsys.readouterr().out
    assert f"{IOT.subject} v2 -> schema id" in out
    assert f"ok   registry {server.address} accepts every newest version" in out


def test_schemas_check_fails_when_the_registry_refuses_the_newest_version(
    server: RegistryServer, registered: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """A registered v3 that local v2 cannot read makes the registry refuse v2: exit 1, named."""
    v3 = json.loads(IOT.newest.text)
    is_on = next(f for f in v3["fields"] if f["name"] == "is_on")
    is_on["type"] = ["boolean", "null"]
    registered.client.register_schema(IOT.subject, Schema(json.dumps(v3), "AVRO"))

    assert cli.main(["check", "--registry", server.address]) == 1
    assert f"FAIL {IOT.subject}: registry {server.address} refuses v2" in capsys.readouterr().out


def test_schemas_check_says_when_the_registry_does_not_answer(
    server: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable registry is exit code 2 with the command that starts it."""
    url = server.address
    server.stop()

    assert cli.main(["check", "--registry", url]) == 2
    assert "gridstream stack up" in capsys.readouterr().err


@pytest.mark.parametrize("chain", CATALOG.chains.values(), ids=lambda chain: chain.subject)
def test_the_registry_refuses_an_incompatible_next_version_of_every_chain(
    registered: Registry, chain: catalog.SchemaChain
) -> None:
    """Every chain registered at BACKWARD_TRANSITIVE; a next version with a new required field
    cannot read the old data: refused with 409, and the subject keeps the versions it had."""
    client = registered.client
    broken = json.loads(chain.newest.text)
    broken["fields"].append({"name": "gate_probe", "type": "string"})

    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(chain.subject, Schema(json.dumps(broken), "AVRO"))

    assert client.get_compatibility() == "BACKWARD_TRANSITIVE"
    assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)
    assert client.get_versions(chain.subject) == [v.version for v in chain.versions]

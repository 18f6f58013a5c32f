"""The registry client keeps what this process had from a registry: a job restarted in the same
TaskManager while the registry does not answer still decodes the ids and encodes with the ids it
had, and anything it never had still waits for the registry."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas.registry import RegistrySchemas
from schemas.serde import RegistryUnavailable

pytestmark = pytest.mark.unit

SCHEMA = '{"type": "record", "name": "R", "fields": []}'
_urls = itertools.count()


class Client:
    """A registry that holds `SCHEMA` as id 7 under subject `s-value`, or does not answer, or
    answers with a server error."""

    def __init__(self, answers: bool, error: int | None = None) -> None:
        self.answers, self.error = answers, error

    def _ask(self) -> None:
        if not self.answers:
            raise ConnectionError("connection refused")
        if self.error is not None:
            raise SchemaRegistryError(self.error, self.error * 100, "backend unavailable")

    def get_schema(self, schema_id: int) -> Any:
        self._ask()
        return SimpleNamespace(schema_str=SCHEMA)

    def lookup_schema(self, subject: str, schema: Any) -> Any:
        self._ask()
        return SimpleNamespace(schema_id=7)


def test_a_restarted_job_has_what_this_process_fetched_while_the_registry_is_down() -> None:
    url = f"http://registry-{next(_urls)}"
    before = RegistrySchemas(Client(answers=True), url)  # type: ignore[arg-type]
    assert before.writer_schema(7) == SCHEMA
    assert before.schema_id("s-value", SCHEMA) == 7

    restarted = RegistrySchemas(Client(answers=False), url)  # type: ignore[arg-type]
    assert restarted.writer_schema(7) == SCHEMA
    assert restarted.schema_id("s-value", SCHEMA) == 7
    with pytest.raises(RegistryUnavailable):
        restarted.writer_schema(8)  # never fetched: it waits for the registry
    with pytest.raises(RegistryUnavailable):
        restarted.schema_id("other-value", SCHEMA)


def test_a_registry_answering_a_server_error_leaves_what_was_fetched_decoding() -> None:
    url = f"http://registry-{next(_urls)}"
    RegistrySchemas(Client(answers=True), url).writer_schema(7)  # type: ignore[arg-type]
    failing = RegistrySchemas(Client(answers=True, error=503), url)  # type: ignore[arg-type]
    assert failing.writer_schema(7) == SCHEMA
    with pytest.raises(RegistryUnavailable):
        failing.writer_schema(8)


def test_what_one_registry_gave_is_not_used_for_another() -> None:
    url = f"http://registry-{next(_urls)}"
    RegistrySchemas(Client(answers=True), url).writer_schema(7)  # type: ignore[arg-type]
    other = RegistrySchemas(Client(answers=False), f"{url}-elsewhere")  # type: ignore[arg-type]
    with pytest.raises(RegistryUnavailable):
        other.writer_schema(7)

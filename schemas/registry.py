"""The schema registry, reached only through confluent-kafka's `SchemaRegistryClient`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from gridstream.config import Settings
from schemas.catalog import Catalog
from schemas.serde import RegistryUnavailable, UnknownSchemaId

USER_INFO_ENV = "GRIDSTREAM_REGISTRY_USER_INFO"  # "user:password"; never on a command line
_SUBJECT_NOT_FOUND = 40401
_SCHEMA_NOT_FOUND = 40403

T = TypeVar("T")

# What this process had from each registry (keyed by its URL). An id never changes its schema in
# a registry, so while the registry does not answer, a job restarted in the same TaskManager (one
# Python interpreter for the process's life, in thread mode) decodes and encodes what it did.
_FETCHED: dict[tuple[str, int], str] = {}
_LOOKED_UP: dict[tuple[str, str, str], int] = {}


@dataclasses.dataclass(frozen=True)
class RegistryConfig:
    """Where the registry is and how to authenticate to it.

    Attributes:
        url: Base URL, e.g. `http://127.0.0.1:28081` or `https://psrc-....confluent.cloud`.
        basic_auth_user_info: `user:password` for HTTP basic auth, or None.
        timeout_s: Per-request timeout.
        max_retries: Retries of a failed request, with the client's backoff.
    """

    url: str
    basic_auth_user_info: str | None = dataclasses.field(default=None, repr=False)
    timeout_s: float = 10.0
    max_retries: int = 3

    @classmethod
    def from_settings(
        cls, settings: Settings, url: str | None = None, env: Mapping[str, str] | None = None
    ) -> RegistryConfig:
        """`url`, else the local stack's registry; basic auth from `$USER_INFO_ENV`."""
        env = os.environ if env is None else env
        return cls(url or settings.stack.registry_url, env.get(USER_INFO_ENV) or None)

    def client_conf(self) -> dict[str, Any]:
        """The `SchemaRegistryClient` configuration."""
        conf: dict[str, Any] = {
            "url": self.url,
            "timeout": self.timeout_s,
            "max.retries": self.max_retries,
        }
        if self.basic_auth_user_info:
            conf["basic.auth.user.info"] = self.basic_auth_user_info
        return conf


def _ask(url: str, call: Callable[..., T], *args: Any) -> T:
    """`call(*args)`, its transport failures turned into `RegistryUnavailable`."""
    try:
        return call(*args)
    except SchemaRegistryError:
        raise
    except Exception as err:  # the client's HTTP library (httpx or a fork) has its own types
        raise RegistryUnavailable(
            f"schema registry {url} does not answer ({err}): start it with `gridstream stack up`"
        ) from err


class RegistrySchemas:
    """A `SchemaSource` backed by the registry (the client caches what it fetched)."""

    def __init__(self, client: SchemaRegistryClient, url: str, auto_register: bool = False) -> None:
        """Wrap a client.

        Args:
            client: The registry client.
            url: The registry's URL, for messages.
            auto_register: Register a schema that `schema_id` does not find (dev and tests;
                production registers with `gridstream schemas register`).
        """
        self._client = client
        self._url = url
        self._auto_register = auto_register

    def writer_schema(self, schema_id: int) -> str:
        """The schema text registered under `schema_id`; what this process fetched before
        while the registry does not answer."""
        key = (self._url, schema_id)
        try:
            text = self._fetched_schema(schema_id)
        except RegistryUnavailable:
            if key in _FETCHED:
                return _FETCHED[key]
            raise
        _FETCHED[key] = text
        return text

    def _fetched_schema(self, schema_id: int) -> str:
        try:
            schema = _ask(self._url, self._client.get_schema, schema_id)
        except SchemaRegistryError as err:
            if err.error_code == _SCHEMA_NOT_FOUND:
                raise UnknownSchemaId(
                    f"registry {self._url} has no schema with id {schema_id}", schema_id
                ) from None
            raise RegistryUnavailable(f"registry {self._url}: {err}") from err
        return str(schema.schema_str)

    def schema_id(self, subject: str, schema_text: str) -> int:
        """The id of `schema_text` under `subject` (registered first when auto-registering);
        what this process looked up before while the registry does not answer."""
        key = (self._url, subject, schema_text)
        try:
            found = self._registered_id(subject, Schema(schema_text, "AVRO"))
        except RegistryUnavailable:
            if key in _LOOKED_UP:
                return _LOOKED_UP[key]
            raise
        _LOOKED_UP[key] = found
        return found

    def _registered_id(self, subject: str, schema: Schema) -> int:
        if self._auto_register:
            return int(_ask(self._url, self._client.register_schema, subject, schema))
        try:
            found = _ask(self._url, self._client.lookup_schema, subject, schema)
        except SchemaRegistryError as err:
            raise LookupError(
                f"{subject} does not hold this schema at {self._url} ({err}): "
                "run `gridstream schemas register`"
            ) from err
        if found.schema_id is None:
            raise LookupError(f"registry {self._url} answered {subject} without a schema id")
        return found.schema_id


@dataclasses.dataclass(frozen=True)
class Registration:
    """One schema file registered: its subject, file version and registry id."""

    subject: str
    version: int
    schema_id: int


class Registry:
    """The registry at `config.url`: a schema source, registration, compatibility checks."""

    def __init__(self, config: RegistryConfig) -> None:
        """Build the client for `config`."""
        self.config = config
        self.client = SchemaRegistryClient(config.client_conf())

    def schemas(self, auto_register: bool = False) -> RegistrySchemas:
        """A `SchemaSource` for serializers and deserializers."""
        return RegistrySchemas(self.client, self.config.url, auto_register)

    def register(self, catalog: Catalog) -> list[Registration]:
        """Register every version of every chain, oldest first (idempotent).

        Raises:
            SchemaRegistryError: the registry refused a schema (409: incompatible).
            RegistryUnavailable: the registry does not answer.
        """
        return [
            Registration(
                chain.subject,
                version.version,
                int(
                    _ask(
                        self.config.url,
                        self.client.register_schema,
                        chain.subject,
                        Schema(version.text, "AVRO"),
                    )
                ),
            )
            for chain in catalog.chains.values()
            for version in chain.versions
        ]

    def refused(self, catalog: Catalog) -> list[str]:
        """Subjects whose newest local version the registry's compatibility endpoint refuses."""
        problems = []
        for chain in catalog.chains.values():
            schema = Schema(chain.newest.text, "AVRO")
            try:
                ok = _ask(
                    self.config.url,
                    self.client.test_compatibility_all_versions,
                    chain.subject,
                    schema,
                )
            except SchemaRegistryError as err:
                if err.error_code == _SUBJECT_NOT_FOUND:
                    continue  # nothing registered yet, so nothing to break
                raise
            if not ok:
                problems.append(
                    f"{chain.subject}: registry {self.config.url} refuses "
                    f"v{chain.newest.version} as incompatible with the versions it holds"
                )
        return problems

"""The Kafka tables' WITH clauses: client settings (TLS, SASL) become `properties.*` options,
and a quote inside a value cannot end the SQL string."""

from __future__ import annotations

import pytest

from jobs.io import _client, _with

pytestmark = pytest.mark.unit


def test_client_properties_become_properties_options() -> None:
    """Each Kafka client setting is passed to the table as `properties.<key>`."""
    settings = (("security.protocol", "SASL_SSL"), ("sasl.mechanism", "SCRAM-SHA-512"))

    assert _client(settings) == {
        "properties.security.protocol": "SASL_SSL",
        "properties.sasl.mechanism": "SCRAM-SHA-512",
    }


def test_a_quote_in_a_value_is_doubled() -> None:
    """A JAAS line's password may hold a quote: SQL doubles it instead of ending the string."""
    options = {"connector": "kafka", "properties.sasl.jaas.config": 'password="it\'s";'}

    assert _with(options) == (
        "'connector' = 'kafka', 'properties.sasl.jaas.config' = 'password=\"it''s\";'"
    )

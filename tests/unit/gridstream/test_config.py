"""Settings: defaults, overlaid by the YAML file, overlaid by the environment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridstream.config import (
    ConfigError,
    JobSettings,
    Settings,
    StackSettings,
    as_env,
    kafka_client_config,
    kafka_client_properties,
    load,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def write_config(tmp_path: Path) -> Any:
    """Factory: write a settings file and return its path."""

    def write(data: Any, name: str = "gridstream.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def test_defaults_apply_without_file_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file and no variables give the dataclass defaults."""
    monkeypatch.chdir(tmp_path)

    assert load(env={}) == Settings()
    assert load(env={}).stack.bootstrap_servers == "127.0.0.1:29092"


def test_file_overrides_defaults(write_config: Any) -> None:
    """Values in the file replace defaults, coerced to each setting's type; the rest stay."""
    path = write_config(
        {"stack": {"kafka_port": "39092", "home": "~/grid"}, "job": {"parallelism": 3}}
    )

    settings = load(path, env={})

    assert settings.stack.kafka_port == 39092
    assert settings.stack.home == Path("~/grid").expanduser()
    assert settings.job.parallelism == 3
    assert settings.stack.registry_port == StackSettings().registry_port
    assert settings.job.delivery_guarantee == JobSettings().delivery_guarantee


def test_environment_beats_the_file(write_config: Any) -> None:
    """`GRIDSTREAM_<SECTION>_<NAME>` wins over the same setting in the file."""
    path = write_config({"stack": {"kafka_port": 39092, "host": "10.0.0.1"}})

    settings = load(path, env={"GRIDSTREAM_STACK_KAFKA_PORT": "49092"})

    assert settings.stack.kafka_port == 49092
    assert settings.stack.host == "10.0.0.1"
    assert settings.stack.bootstrap_servers == "10.0.0.1:49092"


def test_the_schema_id_wait_comes_from_the_file_and_the_environment(write_config: Any) -> None:
    """`job.schema_id_wait_ms`: 30 s by default, set by file or by environment (0 disables)."""
    path = write_config({"job": {"schema_id_wait_ms": 45_000}})

    assert JobSettings().schema_id_wait_ms == 30_000
    assert load(path, env={}).job.schema_id_wait_ms == 45_000
    assert load(path, env={"GRIDSTREAM_JOB_SCHEMA_ID_WAIT_MS": "0"}).job.schema_id_wait_ms == 0


def test_gridstream_config_variable_selects_the_file(write_config: Any) -> None:
    """`GRIDSTREAM_CONFIG` names the file to read."""
    path = write_config({"job": {"parallelism": 4}}, name="elsewhere.yaml")

    assert load(env={"GRIDSTREAM_CONFIG": str(path)}).job.parallelism == 4


def test_gridstream_config_naming_a_missing_file_raises(tmp_path: Path) -> None:
    """A `GRIDSTREAM_CONFIG` that points nowhere fails, naming the path."""
    missing = tmp_path / "missing.yaml"

    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load(env={"GRIDSTREAM_CONFIG": str(missing)})


def test_explicit_config_path_naming_a_missing_file_raises(tmp_path: Path) -> None:
    """A file asked for by path (`gridstream --config`) that is missing fails, naming it."""
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load(tmp_path / "missing.yaml", env={})


def test_unknown_setting_raises_naming_it(write_config: Any) -> None:
    """A misspelt setting fails, naming the section and the key."""
    path = write_config({"stack": {"kafka_prot": 1}})

    with pytest.raises(ConfigError, match=r"'stack'.*kafka_prot"):
        load(path, env={})


def test_unknown_section_raises_naming_it(write_config: Any) -> None:
    """A misspelt section fails instead of being ignored, naming it."""
    path = write_config({"stak": {"kafka_port": 1}})

    with pytest.raises(ConfigError, match="stak"):
        load(path, env={})


@pytest.mark.parametrize(
    ("section", "name", "raw"),
    [("stack", "kafka_port", "many"), ("job", "parallelism", 2.5), ("stack", "partitions", True)],
)
def test_bad_value_in_the_file_raises_naming_the_setting(
    write_config: Any, section: str, name: str, raw: Any
) -> None:
    """A value that is not of the setting's type fails, naming `section.name` and the value."""
    path = write_config({section: {name: raw}})

    with pytest.raises(ConfigError, match=rf"{section}\.{name}.*{raw!r}"):
        load(path, env={})


def test_bad_value_in_the_environment_raises_naming_the_setting(write_config: Any) -> None:
    """A malformed variable fails, naming the setting."""
    with pytest.raises(ConfigError, match=r"job\.parallelism.*'two'"):
        load(write_config({}), env={"GRIDSTREAM_JOB_PARALLELISM": "two"})


def test_file_that_is_not_a_mapping_raises(write_config: Any) -> None:
    """A file whose top level is not sections fails, naming the file."""
    path = write_config(["stack", "job"])

    with pytest.raises(ConfigError, match=r"gridstream\.yaml"):
        load(path, env={})


def test_settings_survive_the_environment_round_trip(write_config: Any) -> None:
    """`as_env` of loaded settings loads back to the same settings (how jobs get them)."""
    settings = load(write_config({"stack": {"kafka_port": 39092}, "job": {"parallelism": 2}}), {})

    assert load(write_config({}, name="empty.yaml"), env=as_env(settings)) == settings


def test_external_endpoints_win_over_the_local_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment's Kafka, registry and Redis (GRIDSTREAM_STACK_EXTERNAL_*) replace the
    local stack's host and ports; unset, the local stack's are used."""
    env = {
        "GRIDSTREAM_STACK_EXTERNAL_KAFKA": "b-1:9096,b-2:9096",
        "GRIDSTREAM_STACK_EXTERNAL_REGISTRY": "https://registry.internal",
        "GRIDSTREAM_STACK_EXTERNAL_REDIS": "rediss://:secret@redis.internal:6380/0",
    }
    monkeypatch.chdir(tmp_path)  # no gridstream.yaml

    settings = load(env=env)

    assert settings.stack.bootstrap_servers == "b-1:9096,b-2:9096"
    assert settings.stack.registry_url == "https://registry.internal"
    assert settings.stack.redis_url == "rediss://:secret@redis.internal:6380/0"
    assert load(env={}).stack.redis_url == "redis://127.0.0.1:26379/0"


def test_kafka_client_properties_read_a_java_properties_file(tmp_path: Path) -> None:
    """Comments and blank lines skipped, `=` or `:` separated, a `\\` continues the line."""
    path = tmp_path / "client.properties"
    path.write_text(
        "# TLS and SASL for the brokers\n"
        "security.protocol=SASL_SSL\n"
        "! another comment\n\n"
        "sasl.mechanism: SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        '    username="gridstream" password="it\'s-secret";\n'
        "ssl.truststore.type = PEM\n"
        "ssl.truststore.location=/etc/gridstream/kafka/ca.crt\n"
    )

    found = kafka_client_properties(JobSettings(kafka_client_properties=str(path)))

    assert found == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="gridstream" password="it\'s-secret";',
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/etc/gridstream/kafka/ca.crt",
    }
    assert kafka_client_properties(JobSettings()) == {}


@pytest.mark.parametrize("key", ["isolation.level", "group.id", "transaction.timeout.ms"])
def test_kafka_client_properties_may_not_change_what_the_jobs_set(tmp_path: Path, key: str) -> None:
    """Exactly-once rests on the jobs' own settings: a file that changes one is refused."""
    path = tmp_path / "client.properties"
    path.write_text(f"security.protocol=SSL\n{key}=anything\n")

    with pytest.raises(ConfigError, match=re.escape(f"{key} is set by the jobs themselves")):
        kafka_client_properties(JobSettings(kafka_client_properties=str(path)))


def test_kafka_client_properties_name_a_missing_file(tmp_path: Path) -> None:
    """A file that is not there is a ConfigError naming the setting and the path."""
    missing = tmp_path / "nope.properties"

    with pytest.raises(ConfigError, match=re.escape("job.kafka_client_properties: cannot read")):
        kafka_client_properties(JobSettings(kafka_client_properties=str(missing)))


def _client_settings(tmp_path: Path, properties: str, password: str | None) -> StackSettings:
    config_file = tmp_path / "kafka.properties"
    config_file.write_text(properties)
    password_file = ""
    if password is not None:
        (tmp_path / "kafka.password").write_text(password + "\n")
        password_file = str(tmp_path / "kafka.password")
    return StackSettings(kafka_client_config=str(config_file), kafka_password_file=password_file)


def test_the_python_clients_take_the_password_from_its_file_before_the_environment(
    tmp_path: Path,
) -> None:
    """The properties file's settings, then the password file's first line, over the env's."""
    stack = _client_settings(tmp_path, "security.protocol=SASL_SSL\nsasl.username=op\n", "s3")
    env = {"GRIDSTREAM_KAFKA_PASSWORD": "from-env"}

    assert kafka_client_config(stack, env) == {
        "bootstrap.servers": "127.0.0.1:29092",
        "security.protocol": "SASL_SSL",
        "sasl.username": "op",
        "sasl.password": "s3",
    }
    without_file = StackSettings(kafka_client_config=stack.kafka_client_config)
    assert kafka_client_config(without_file, env)["sasl.password"] == "from-env"
    assert kafka_client_config(StackSettings(), {}) == {"bootstrap.servers": "127.0.0.1:29092"}


def test_a_password_in_the_python_clients_properties_file_is_refused(tmp_path: Path) -> None:
    """A settings file is no place for a secret: the error says where the password goes."""
    stack = _client_settings(tmp_path, "sasl.username=op\nsasl.password=oops\n", None)

    with pytest.raises(ConfigError, match=re.escape("or $GRIDSTREAM_KAFKA_PASSWORD")):
        kafka_client_config(stack, {})

"""A secured stack of the module's own: a broker with TLS + SASL/SCRAM, the StandardAuthorizer and
ACLs (each principal does what its part of the suite needs and nothing else), and a Redis that
requires a password (the job's mirror reads it from a file); no password is logged."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from gridstream import config, replay, topics
from gridstream.scenario import Scenario, dump, play
from gridstream.stack import LocalStack
from gridstream.stack.security import (
    BrokerSecurity,
    Credentials,
    generate_tls,
    grant,
    job_acls,
    operator_acls,
    replay_acls,
)
from jobs.device_control import JOB_NAME
from jobs.replay import JOB_NAME as REPLAY_JOB
from schemas import catalog, examples, models, serde
from schemas.registry import Registry as SchemaRegistry
from schemas.registry import RegistryConfig
from state import mirror
from tests.stack.scenarios_support import job_running, quiet, unique
from tests.stack.settings_support import private_settings

pytestmark = pytest.mark.stack


@dataclasses.dataclass(frozen=True)
class Secured:
    """The running broker, its security and where each principal's client settings are."""

    stack: LocalStack
    security: BrokerSecurity
    job: Credentials
    operator: Credentials
    replay: Credentials
    clients: Path  # <user>.properties (librdkafka settings) and <user>.password per user
    redis_password: str

    def settings(self, user: Credentials) -> config.Settings:
        """The suite's settings for a client that authenticates as `user`."""
        stack = dataclasses.replace(
            self.stack.settings.stack,
            kafka_client_config=str(self.clients / f"{user.username}.properties"),
            kafka_password_file=str(self.clients / f"{user.username}.password"),
        )
        return dataclasses.replace(self.stack.settings, stack=stack)

    @property
    def passwords(self) -> list[str]:
        users = (self.security.admin, self.job, self.operator, self.replay)
        return [*(u.password for u in users), self.redis_password]


def _write_client_files(folder: Path, security: BrokerSecurity, user: Credentials) -> None:
    settings = security.client_config(user)
    password = settings.pop("sasl.password")
    (folder / f"{user.username}.properties").write_text(
        "".join(f"{k}={v}\n" for k, v in settings.items())
    )
    secret = folder / f"{user.username}.password"
    secret.touch(mode=0o600)
    secret.write_text(password + "\n")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A Kafka broker with only a SASL_SSL listener, its SCRAM users made at format time, the
    topics, the job's and the operator's ACLs, and the dev registry (Redis and Flink when the
    job's test starts them); everything stopped at the end."""
    home = tmp_path_factory.mktemp("secured-stack")
    clients = tmp_path_factory.mktemp("secured-clients")
    admin = Credentials("admin", secrets.token_urlsafe(18))
    settings = private_settings(
        home,
        # The tests' own plays and dumps (the job's warm-up reading) go as the admin.
        kafka_client_config=str(clients / "admin.properties"),
        kafka_password_file=str(clients / "admin.password"),
    )
    redis_password = clients / "redis.password"
    redis_password.touch(mode=0o600)
    redis_password.write_text(secrets.token_urlsafe(18) + "\n")
    settings = dataclasses.replace(
        settings,
        stack=dataclasses.replace(settings.stack, redis_password_file=str(redis_password)),
    )
    job, operator, replayer = (
        Credentials(name, secrets.token_urlsafe(18)) for name in ("job", "operator", "replay")
    )
    security = BrokerSecurity(
        tls=generate_tls(home / "tls", settings.stack.host),
        admin=admin,
        users=(job, operator, replayer),
    )
    for user in (admin, job, operator, replayer):
        _write_client_files(clients, security, user)
    stack = LocalStack(settings, say=lambda line: None, security=security)
    try:
        stack.kafka.start()
        stack.create_topics()
        admin_client = AdminClient(stack.kafka.admin_config())
        grant(admin_client, job_acls(job.principal, JOB_NAME, JOB_NAME))
        grant(admin_client, operator_acls(operator.principal))
        grant(admin_client, replay_acls(replayer.principal, REPLAY_JOB))
        stack.registry.start()
        SchemaRegistry(RegistryConfig.from_settings(settings)).register(catalog.default())
        yield Secured(
            stack, security, job, operator, replayer, clients, redis_password.read_text().strip()
        )
    finally:
        stack.down()


def _produce(settings: config.Settings, topic: str, value: bytes = b"v") -> KafkaError | None:
    """Produce one record as the settings' principal; the delivery error, if any."""
    outcome: list[KafkaError | None] = []
    producer = Producer(
        {**config.kafka_client_config(settings.stack), "message.timeout.ms": 15_000}
    )
    producer.produce(topic, key=b"k", value=value, on_delivery=lambda err, _: outcome.append(err))
    producer.flush(20)
    assert outcome, f"no delivery report for {topic} within 20 s"
    return outcome[0]


def _refused(error: KafkaError | None) -> bool:
    return error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_job_principal_writes_outputs_and_may_not_write_an_input(secured: Secured) -> None:
    """The job's principal may write grid.commands but a write to iot.telemetry is refused."""
    job = secured.settings(secured.job)
    assert _produce(job, topics.COMMANDS) is None
    assert _refused(_produce(job, topics.IOT_TELEMETRY))


def test_the_operator_cli_writes_approvals_and_nothing_else(secured: Secured) -> None:
    """`gridstream approve` authenticates as the operator from its settings, reads the job's
    recommendation and sends its approval; the operator's principal may write no other topic."""
    operator = secured.settings(secured.operator)
    job = secured.settings(secured.job)
    schemas = SchemaRegistry(RegistryConfig.from_settings(job)).schemas()
    recommendation = examples.example(models.Recommendation, recommendation_id="rec-1")
    encoded = serde.serializer(models.Recommendation, schemas).encode(recommendation)
    assert _produce(job, topics.RECOMMENDATIONS, encoded) is None
    env = {
        **os.environ,
        **config.as_env(operator),
        "GRIDSTREAM_CONFIG": os.devnull,  # no settings file of the working directory
    }
    approve = subprocess.run(
        [sys.executable, "-m", "gridstream.cli", "approve", "rec-1", "--operator", "op-7"],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert approve.returncode == 0, approve.stderr
    assert f"sent to {topics.OPERATOR_APPROVALS}" in approve.stdout
    for secret in secured.passwords:
        assert secret not in approve.stdout + approve.stderr
    for topic in (*topics.OUTPUTS, *(t for t in topics.INPUTS if t != topics.OPERATOR_APPROVALS)):
        assert _refused(_produce(operator, topic)), topic


@pytest.mark.parametrize("password", [None, "not-the-password"], ids=["none", "wrong"])
def test_a_client_without_the_right_password_is_refused(
    secured: Secured, password: str | None
) -> None:
    """No metadata for a client that sends no credentials or a wrong password."""
    client = config.kafka_client_config(secured.settings(secured.job).stack)
    if password is None:
        client = {"bootstrap.servers": client["bootstrap.servers"]}
    else:
        client["sasl.password"] = password
    with pytest.raises(KafkaException):
        AdminClient({**client, "log_level": 0}).list_topics(timeout=5)


def _java_client_file(secured: Secured, user: Credentials) -> Path:
    """`user`'s Java client settings for a Flink job (`job.kafka_client_properties`), 0600."""
    path = secured.clients / f"{user.username}-java.properties"
    path.touch(mode=0o600)
    properties = secured.security.flink_client_properties(user)
    path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    return path


def test_replay_reads_the_inputs_as_its_principal_and_may_write_no_topic(
    secured: Secured, tmp_path: Path
) -> None:
    """`gridstream replay` as the replay principal (its Python clients by its settings, the
    job's by `job.kafka_client_properties`) turns a range of readings into a dataset; that
    principal's write to any topic is refused."""
    devices = [unique("replayed-thermostat") for _ in range(3)]
    scenario = Scenario()
    for device_id in devices:
        scenario = scenario.telemetry_iot(device_id=device_id)
    start = int(time.time() * 1000) - 1_000
    play(secured.stack.settings, scenario, progress=quiet)  # as the admin
    settings = secured.settings(secured.replay)
    job = dataclasses.replace(
        settings.job, kafka_client_properties=str(_java_client_file(secured, secured.replay))
    )
    settings = dataclasses.replace(settings, job=job)
    request = replay.Request(start, int(time.time() * 1000) + 1, (topics.IOT_TELEMETRY,))
    replay.run(settings, request, tmp_path / "dataset", say=quiet)
    rows = ds.dataset(tmp_path / "dataset" / "readings", format="parquet", partitioning="hive")
    assert set(devices) <= set(rows.to_table(columns=["device_id"]).column(0).to_pylist())
    for topic in (*topics.INPUTS, *topics.OUTPUTS):
        assert _refused(_produce(settings, topic)), topic


def test_the_job_runs_as_its_principal_on_the_secured_broker(secured: Secured) -> None:
    """The device-control job, given the job's credentials by `job.kafka_client_properties`,
    reads its inputs (the warm-up reading reaches Redis) and writes its outputs: a record it
    cannot decode reaches the dead-letter topic (in a transaction, exactly once)."""
    secured.stack.up()  # Redis, Flink and the supervisor beside the broker and the registry
    java_client = _java_client_file(secured, secured.job)
    with job_running(secured.stack, kafka_client_properties=str(java_client)) as settings:
        correlation_id = unique("secured-bad-bytes")
        bad = Scenario().raw(topics.IOT_TELEMETRY, b"\x00garbage", "t-1", correlation_id)
        play(settings, bad, progress=quiet)
        deadline = time.monotonic() + 120
        while not any(r["correlation_id"] == correlation_id for r in dump(settings, topics.DLQ)):
            assert time.monotonic() < deadline, "no dead letter for the bad record within 120 s"
            time.sleep(2)


def test_redis_requires_its_password(secured: Secured, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack's Redis requires the password of `stack.redis_password_file`, which is not on
    its command line; a client gets in with the file or $GRIDSTREAM_REDIS_PASSWORD, and one
    without it or with a wrong one is refused and told how to give it."""
    secured.stack.up()
    url = secured.stack.settings.stack.redis_url
    pid = secured.stack.redis.process.pid
    assert pid is not None
    assert secured.redis_password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    monkeypatch.delenv(mirror.PASSWORD_ENV, raising=False)
    with pytest.raises(mirror.MirrorUnavailableError, match=re.escape(mirror.PASSWORD_ENV)):
        mirror.read(url, "no-such-device")
    file = secured.stack.settings.stack.redis_password_file
    assert mirror.read(url, "no-such-device", password_file=file) is None
    monkeypatch.setenv(mirror.PASSWORD_ENV, secured.redis_password)
    assert mirror.read(url, "no-such-device") is None
    monkeypatch.setenv(mirror.PASSWORD_ENV, "not-the-password")
    with pytest.raises(mirror.MirrorUnavailableError, match="refused"):
        mirror.read(url, "no-such-device")


def test_no_password_is_written_to_any_log(secured: Secured) -> None:
    """After the other tests (the job's run too), no log the stack, the broker, Flink and the
    job wrote holds a password; the grep does find the broker's own configuration's."""
    secured.stack.up()  # every component's log is there even when the job's test is left out
    home = secured.stack.settings.stack.home
    logs = [
        path
        for path in home.rglob("*")
        if path.is_file() and (path.parent.name in {"log", "logs"} or ".log" in path.name)
    ]
    for path in logs:
        data = path.read_bytes()
        for secret in secured.passwords:
            assert secret.encode() not in data, f"a password is in {path}"
    assert {p.name for p in logs} >= {"kafka.log", "registry.log", "redis.log"}
    assert any(p.parent == secured.stack.flink.home / "log" for p in logs)
    broker_config = (secured.stack.kafka.home / "server.properties").read_bytes()
    assert secured.security.admin.password.encode() in broker_config  # the grep can see one

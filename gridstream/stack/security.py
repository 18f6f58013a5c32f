"""A secured broker: a TLS + SASL/SCRAM-SHA-512 listener, the StandardAuthorizer, and ACLs that
give each principal only what its part of the suite needs.

The broker's own credentials live in its `server.properties` (mode 0600, in the stack's folder);
the clients' come from files or the environment (`config.kafka_client_config`). Nothing here
logs a password: `Credentials` hides it from `repr`.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gridstream import topics
from gridstream.stack.process import ComponentError

MECHANISM = "SCRAM-SHA-512"
LISTENER = "SASL_SSL"
_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
# The Flink Kafka connector's fat jar relocates the Kafka client: a JAAS line must name the
# relocated class (the plain name fails with "No LoginModule found").
FLINK_SCRAM_MODULE = f"org.apache.flink.kafka.shaded.{_SCRAM_MODULE}"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A SCRAM user; the password never shows in `repr` (nor so in logs or test reports)."""

    username: str
    password: str = dataclasses.field(repr=False)

    @property
    def principal(self) -> str:
        return f"User:{self.username}"


@dataclasses.dataclass(frozen=True)
class Tls:
    """PEM files: the CA certificate clients trust, and the broker's key and certificate."""

    ca: Path
    broker: Path


def generate_tls(folder: Path, host: str) -> Tls:
    """A fresh CA and a broker certificate for `host` (an IP or a name), valid for a day."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gridstream local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(ca=folder / "ca.pem", broker=folder / "broker.pem")
    tls.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    # Kafka's PEM keystore wants a PKCS#8 key; unencrypted, so the file itself is the secret.
    tls.broker.touch(mode=0o600)
    tls.broker.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return tls


def _jaas(module: str, user: Credentials, *extra: str) -> str:
    fields = [f'username="{user.username}"', f'password="{user.password}"', *extra]
    return f"{module} required {' '.join(fields)};"


@dataclasses.dataclass(frozen=True)
class BrokerSecurity:
    """How the broker is secured: its TLS files, its admin (the super user, also the broker's
    own identity between its listeners) and the SCRAM users made when storage is formatted."""

    tls: Tls
    admin: Credentials
    users: Sequence[Credentials] = ()

    def broker_properties(self, host: str, port: int, controller_port: int) -> dict[str, str]:
        """The listeners and authorizer keys laid over the plaintext broker's.

        The controller listener takes SASL/PLAIN (KRaft controllers cannot check SCRAM: the
        credentials live in the metadata they serve) on loopback, for the admin only.
        """
        controller_jaas = _jaas(
            _PLAIN_MODULE, self.admin, f'user_{self.admin.username}="{self.admin.password}"'
        )
        return {
            "listeners": f"{LISTENER}://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"{LISTENER}://{host}:{port}",
            "inter.broker.listener.name": LISTENER,
            "listener.security.protocol.map": f"CONTROLLER:SASL_PLAINTEXT,{LISTENER}:SASL_SSL",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": controller_jaas,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.{LISTENER.lower()}.sasl.enabled.mechanisms": MECHANISM,
            f"listener.name.{LISTENER.lower()}.{MECHANISM.lower()}.sasl.jaas.config": _jaas(
                _SCRAM_MODULE, self.admin
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls.broker),
            # The broker's own inter-broker client checks the listener's certificate too.
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.ca),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": self.admin.principal,
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_arguments(self) -> list[str]:
        """`kafka-storage format` arguments that create every SCRAM user, the admin first."""
        return [
            f"--add-scram={MECHANISM}=[name={user.username},password={user.password}]"
            for user in (self.admin, *self.users)
        ]

    def redact(self, text: str) -> str:
        """`text` with every user's password replaced by `***`."""
        for user in (self.admin, *self.users):
            text = text.replace(user.password, "***")
        return text

    def client_config(self, user: Credentials) -> dict[str, str]:
        """librdkafka settings that authenticate as `user` over this broker's listener."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": user.username,
            "sasl.password": user.password,
            "ssl.ca.location": str(self.tls.ca),
        }

    def flink_client_properties(self, user: Credentials) -> dict[str, str]:
        """Java client settings for the Flink jobs (`job.kafka_client_properties`) as `user`."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.jaas.config": _jaas(FLINK_SCRAM_MODULE, user),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.ca),
        }


def _binding(
    kind: ResourceType,
    name: str,
    principal: str,
    operation: AclOperation,
    pattern: ResourcePatternType = ResourcePatternType.LITERAL,
) -> AclBinding:
    return AclBinding(kind, name, pattern, principal, "*", operation, AclPermissionType.ALLOW)


def job_acls(principal: str, group_prefix: str, transactional_id_prefix: str) -> list[AclBinding]:
    """The device-control job: read its inputs with its consumer groups, write its outputs in
    transactions under its transactional id prefix; nothing else."""
    topic, prefixed = ResourceType.TOPIC, ResourcePatternType.PREFIXED
    transactions = ResourceType.TRANSACTIONAL_ID
    return [
        *(
            _binding(topic, name, principal, op)
            for name in topics.INPUTS
            for op in (AclOperation.READ, AclOperation.DESCRIBE)
        ),
        *(
            _binding(topic, name, principal, op)
            for name in topics.OUTPUTS
            for op in (AclOperation.WRITE, AclOperation.DESCRIBE)
        ),
        _binding(ResourceType.GROUP, group_prefix, principal, AclOperation.READ, prefixed),
        *(
            _binding(transactions, transactional_id_prefix, principal, op, prefixed)
            for op in (AclOperation.WRITE, AclOperation.DESCRIBE)
        ),
    ]


def replay_acls(principal: str, group_prefix: str) -> list[AclBinding]:
    """The replay job (`gridstream replay`, with or without decisions): read the inputs; its
    groups are named but never joined or committed. It writes files, no topic."""
    return [
        *(
            _binding(ResourceType.TOPIC, name, principal, op)
            for name in topics.INPUTS
            for op in (AclOperation.READ, AclOperation.DESCRIBE)
        ),
        _binding(
            ResourceType.GROUP, group_prefix, principal, AclOperation.READ,
            ResourcePatternType.PREFIXED,
        ),
    ]  # fmt: skip


def operator_acls(principal: str) -> list[AclBinding]:
    """The operator CLI: read the recommendations it answers, write approvals; nothing else.

    It reads by assigning partitions, never committing, so it needs no consumer group.
    """
    return [
        *(
            _binding(ResourceType.TOPIC, topics.RECOMMENDATIONS, principal, op)
            for op in (AclOperation.READ, AclOperation.DESCRIBE)
        ),
        *(
            _binding(ResourceType.TOPIC, topics.OPERATOR_APPROVALS, principal, op)
            for op in (AclOperation.WRITE, AclOperation.DESCRIBE)
        ),
    ]


def grant(admin: AdminClient, bindings: Iterable[AclBinding]) -> None:
    """Create the ACLs (idempotent: an existing one is kept)."""
    for binding, future in admin.create_acls(list(bindings)).items():
        try:
            future.result()
        except Exception as err:
            raise ComponentError(f"kafka: granting {binding} failed: {err}") from err

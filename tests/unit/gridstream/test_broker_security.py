"""The secured broker's pieces that need no broker: ACL sets, format arguments, redaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AclOperation, ResourceType

from gridstream import topics
from gridstream.stack.security import (
    BrokerSecurity,
    Credentials,
    Tls,
    job_acls,
    operator_acls,
)

pytestmark = pytest.mark.unit

SECURITY = BrokerSecurity(
    tls=Tls(ca=Path("/tls/ca.pem"), broker=Path("/tls/broker.pem")),
    admin=Credentials("admin", "adm-secret"),
    users=(Credentials("job", "job-secret"),),
)


def _topic_grants(bindings: list[Any], operation: AclOperation) -> set[str]:
    return {
        b.name for b in bindings if b.restype == ResourceType.TOPIC and b.operation == operation
    }


def test_the_job_may_write_only_outputs_and_read_only_inputs() -> None:
    """WRITE exactly on the outputs, READ exactly on the inputs."""
    acls = job_acls("User:job", "g", "t")

    assert _topic_grants(acls, AclOperation.WRITE) == set(topics.OUTPUTS)
    assert _topic_grants(acls, AclOperation.READ) == set(topics.INPUTS)


def test_the_operator_may_write_only_approvals() -> None:
    """WRITE on operator.approvals alone; READ on the recommendations it answers alone."""
    acls = operator_acls("User:operator")

    assert _topic_grants(acls, AclOperation.WRITE) == {topics.OPERATOR_APPROVALS}
    assert _topic_grants(acls, AclOperation.READ) == {topics.RECOMMENDATIONS}


def test_passwords_are_hidden_from_repr_and_redacted_from_tool_output() -> None:
    """A Credentials' repr has no password; `redact` removes every user's from a text."""
    echoed = " ".join(SECURITY.format_arguments())

    assert "adm-secret" not in repr(SECURITY)
    assert "job-secret" in echoed
    assert SECURITY.redact(echoed).count("***") == 2
    assert "secret" not in SECURITY.redact(echoed)

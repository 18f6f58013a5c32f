"""The Helm chart through helm and kubeconform: every real render passes the strict schemas and
GridStream's policy, and a misspelled field, rendered the same way, fails them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools import k8scheck

pytestmark = pytest.mark.k8s

Docs = list[dict[str, Any]]


@pytest.fixture(scope="module")
def schema_dir() -> Path:
    """The schemas `make k8s-check` validates against, and the library chart vendored."""
    for tool in ("helm", "kubeconform"):
        if not (k8scheck.TOOLS_BIN / tool).exists():
            pytest.fail(f"{k8scheck.TOOLS_BIN / tool} is missing: run `make k8s-tools`")
    k8scheck.build_chart_dependencies()
    return k8scheck.schemas()


@pytest.fixture(scope="module")
def everything() -> Docs:
    """Production with every optional template on: both jobs, the PVC, KEDA."""
    render = next(r for r in k8scheck.renders() if r.name == "production+all-options")
    return k8scheck.documents(k8scheck.template(render))


def problems(docs: Docs, schema_dir: Path) -> list[str]:
    """Everything k8s-check says about `docs`: schemas, pod templates as Pods, policy."""
    found = (
        k8scheck.validate(docs, schema_dir)
        + k8scheck.validate(k8scheck.as_pods(docs), schema_dir)
        + k8scheck.policy(docs)
    )
    return [str(problem) for problem in found]


def first(docs: Docs, kind: str) -> dict[str, Any]:
    return next(doc for doc in docs if doc["kind"] == kind)


@pytest.mark.parametrize("render", k8scheck.renders(), ids=lambda r: r.name)
def test_every_render_passes_lint_schemas_and_policy(
    render: k8scheck.Render, schema_dir: Path
) -> None:
    """Each environment's render lints, and every document and pod template is valid."""
    k8scheck.lint(render)
    docs = k8scheck.documents(k8scheck.template(render))

    assert {doc["kind"] for doc in docs} >= {"FlinkDeployment", "NetworkPolicy", "Role"}
    assert problems(docs, schema_dir) == []


def test_all_options_render_every_kind(everything: Docs) -> None:
    """The validation render reaches every template: nothing escapes the schemas unseen."""
    kinds = {doc["kind"] for doc in everything}

    assert kinds == {
        "ConfigMap", "FlinkDeployment", "NetworkPolicy", "PersistentVolumeClaim",
        "PodDisruptionBudget", "Role", "RoleBinding", "ScaledObject", "ServiceAccount",
        "StorageClass", "TriggerAuthentication",
    }  # fmt: skip
    assert len(k8scheck.as_pods(everything)) == 4  # two roles of two jobs


def _rename(node: dict[str, Any], old: str, new: str) -> None:
    node[new] = node.pop(old)


def resources_for_resource(docs: Docs) -> None:
    _rename(first(docs, "FlinkDeployment")["spec"]["jobManager"], "resource", "resources")


def run_as_non_rot(docs: Docs) -> None:
    pod = first(docs, "FlinkDeployment")["spec"]["taskManager"]["podTemplate"]["spec"]
    _rename(pod["securityContext"], "runAsNonRoot", "runAsNonRot")


def read_only_root_file_system(docs: Docs) -> None:
    pod = first(docs, "FlinkDeployment")["spec"]["jobManager"]["podTemplate"]["spec"]
    _rename(
        pod["containers"][0]["securityContext"], "readOnlyRootFilesystem", "readOnlyRootFileSystem"
    )


def flink_version_unknown(docs: Docs) -> None:
    first(docs, "FlinkDeployment")["spec"]["flinkVersion"] = "v2_9"


def upgrade_mode_key(docs: Docs) -> None:
    _rename(first(docs, "FlinkDeployment")["spec"]["job"], "upgradeMode", "upgrademode")


def policy_types(docs: Docs) -> None:
    _rename(first(docs, "NetworkPolicy")["spec"], "policyTypes", "policyType")


def min_available(docs: Docs) -> None:
    _rename(first(docs, "PodDisruptionBudget")["spec"], "minAvailable", "minAvailible")


def lag_threshold(docs: Docs) -> None:
    metadata = first(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    _rename(metadata, "lagThreshold", "lagTreshold")


def secret_target_ref(docs: Docs) -> None:
    _rename(first(docs, "TriggerAuthentication")["spec"], "secretTargetRef", "secretTargetRefs")


def storage_class_provisioner(docs: Docs) -> None:
    _rename(first(docs, "StorageClass"), "provisioner", "provisoner")


MISSPELLINGS: list[tuple[Callable[[Docs], None], str]] = [
    (resources_for_resource, "resources"),
    (run_as_non_rot, "runAsNonRot"),
    (read_only_root_file_system, "readOnlyRootFileSystem"),
    (flink_version_unknown, "flinkVersion"),
    (upgrade_mode_key, "upgrademode"),
    (policy_types, "policyType"),
    (min_available, "minAvailible"),
    (lag_threshold, "lagTreshold"),
    (secret_target_ref, "secretTargetRefs"),
    (storage_class_provisioner, "provisoner"),
]


@pytest.fixture(scope="module")
def misspelled(everything: Docs, schema_dir: Path) -> dict[str, list[str]]:
    """Each misspelling's problems, by its function's name. Every misspelled document goes to
    one kubeconform run (a run compiles its schemas anew: one per test would take minutes),
    renamed after its misspelling so each problem can be told apart."""
    batch: Docs = []
    found: dict[str, list[str]] = {}
    for misspell, _ in MISSPELLINGS:
        docs = copy.deepcopy(everything)
        misspell(docs)
        found[misspell.__name__] = [str(p) for p in k8scheck.policy(docs)]
        for doc, original in zip(docs, everything, strict=True):
            if doc != original:
                doc["metadata"]["name"] += f"--{misspell.__name__}"
                batch.append(doc)
    checked = k8scheck.validate(batch, schema_dir) + k8scheck.validate(
        k8scheck.as_pods(batch), schema_dir
    )
    for problem in checked:
        for name in found:
            if name.replace("_", "-") in problem.name.replace("_", "-"):
                found[name].append(str(problem))
    return found


@pytest.mark.parametrize(
    ("misspell", "field"), MISSPELLINGS, ids=[m.__name__ for m, _ in MISSPELLINGS]
)
def test_a_misspelled_field_fails_validation(
    misspell: Callable[[Docs], None], field: str, misspelled: dict[str, list[str]]
) -> None:
    """The render with one field misspelled fails, and the problem names the field."""
    found = misspelled[misspell.__name__]

    assert found, f"{misspell.__name__}: the misspelled render passed"
    assert any(field in problem for problem in found), found


def test_a_pod_template_misspelling_fails_as_a_pod_too(everything: Docs, schema_dir: Path) -> None:
    """Pod templates are checked twice: in the FlinkDeployment schema (the operator's pod model)
    and as a core Pod of the target Kubernetes version."""
    docs = copy.deepcopy(everything)
    run_as_non_rot(docs)

    pods = k8scheck.validate(k8scheck.as_pods(docs), schema_dir)

    assert [p.kind for p in pods] == ["Pod"]
    assert "runAsNonRot" in pods[0].message


def test_policy_refuses_a_writable_root_and_an_inlined_credential(everything: Docs) -> None:
    """What no schema forbids, the policy does: a writable root, a password in plain text."""
    docs = copy.deepcopy(everything)
    container = first(docs, "FlinkDeployment")["spec"]["taskManager"]["podTemplate"]["spec"][
        "containers"
    ][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    container["env"].append({"name": "GRIDSTREAM_REGISTRY_USER_INFO", "value": "me:hunter2"})

    found = [str(p) for p in k8scheck.policy(docs)]

    assert any("root filesystem is writable" in p for p in found), found
    assert any("GRIDSTREAM_REGISTRY_USER_INFO is inlined" in p for p in found), found


def test_the_chart_refuses_missing_required_values(schema_dir: Path) -> None:
    """An environment without the bucket does not render: the failure names the value."""
    render = next(r for r in k8scheck.renders() if r.name == "staging")

    with pytest.raises(k8scheck.CheckError, match=r"objectStorage\.root"):
        k8scheck.template(render, ["objectStorage.root="])


def test_a_misspelled_value_fails_the_render(schema_dir: Path) -> None:
    """values.schema.json is strict too: a value the chart does not know stops helm, named."""
    render = next(r for r in k8scheck.renders() if r.name == "production")

    with pytest.raises(k8scheck.CheckError, match="additional properties 'paralelism'"):
        k8scheck.template(render, ["deviceControl.paralelism=3"])

"""`make k8s-check`: every manifest the Helm chart renders, validated offline and strictly.

For each render (an environment's values file, and production with the chart's
`ci/all-options.yaml` on top, so the templates the environments leave off are checked too):
`helm lint`, `helm template`, then `kubeconform -strict` over every document, an unknown field
being an error. The FlinkDeployments' pod templates are validated a second time as core Pods,
against the Kubernetes version's own Pod schema. Last, GridStream's own rules (`policy`).

The schemas are made here, offline after the first run, from pinned inputs (`schemas`):
- core kinds: the `kubernetes-validate` wheel's strict schemas (tools/k8s/schema-sources.txt);
- FlinkDeployment: derived from the CRD in the operator API jar 1.10.0, patched to 1.15
  (`flink_deployment_schema` documents each patch);
- KEDA's ScaledObject and TriggerAuthentication: the hand-written minimal schemas in
  k8s/schemas/.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
WORK = ROOT / ".tools" / "k8s"
CHART = ROOT / "k8s" / "charts" / "gridstream"
ENVIRONMENTS = ROOT / "k8s" / "environments"
HAND_WRITTEN = ROOT / "k8s" / "schemas"
SCHEMA_SOURCES = ROOT / "tools" / "k8s" / "schema-sources.txt"
RELEASE = "gridstream"
NAMESPACE = "gridstream"

KUBERNETES_VERSION = "1.34.0"
OPERATOR_API = ("org.apache.flink", "flink-kubernetes-operator-api", "1.10.0")
OPERATOR_API_SHA256 = "b1f44814e17514fa8395c61b329a3ee9087123a5bda5b21fe1a495d5182c30b6"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"  # as jvm/pom.xml
FLINK_CRD = "META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml"
# What operator 1.15 accepts in `flinkVersion` beyond 1.10's enum (which ends at v1_20): the
# Flink 2 lines its compatibility list names (2.0.x, 2.1.x, 2.2.x).
FLINK_2_VERSIONS = ("v2_0", "v2_1", "v2_2")
DEFINITIONS = "_definitions.json"
OBJECT_META = f"{DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
LOCATION = "{{ .ResourceKind }}{{ .KindSuffix }}.json"  # kubeconform's file name template


class CheckError(RuntimeError):
    """A step of the check could not run (a tool or an input missing); says what to do."""


@dataclasses.dataclass(frozen=True)
class Render:
    """One `helm template` of the chart: a name and its values files, in order."""

    name: str
    values: tuple[Path, ...]


def renders() -> list[Render]:
    """Each environment alone, and production with every optional template switched on."""
    found = [Render(p.stem, (p,)) for p in sorted(ENVIRONMENTS.glob("*.yaml"))]
    production = ENVIRONMENTS / "production.yaml"
    found.append(Render("production+all-options", (production, CHART / "ci" / "all-options.yaml")))
    return found


def _run(argv: Sequence[str], what: str) -> str:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(WORK / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(WORK / "helm" / "config"),
        "HELM_DATA_HOME": str(WORK / "helm" / "data"),
    }
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    except FileNotFoundError:
        raise CheckError(f"{argv[0]} not found: run `make k8s-tools`") from None
    if done.returncode != 0:
        raise CheckError(f"{what} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def helm(*args: str, what: str = "helm") -> str:
    return _run([str(TOOLS_BIN / "helm"), *args], what)


def build_chart_dependencies() -> None:
    """Vendor the library chart into the application chart (`charts/`, git-ignored)."""
    helm("dependency", "build", "--skip-refresh", str(CHART), what="helm dependency build")


def lint(render: Render) -> None:
    values = [arg for path in render.values for arg in ("-f", str(path))]
    helm("lint", "--strict", str(CHART), *values, what=f"helm lint ({render.name})")


def template(render: Render, overrides: Sequence[str] = ()) -> str:
    """The chart's manifests for `render` (`overrides`: extra `--set` assignments)."""
    values = [arg for path in render.values for arg in ("-f", str(path))]
    sets = [arg for assignment in overrides for arg in ("--set", assignment)]
    return helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values, *sets,
        what=f"helm template ({render.name})",
    )  # fmt: skip


def documents(text: str) -> list[dict[str, Any]]:
    """The YAML documents of a render, empty ones left out."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


POD_TEMPLATE_PLACES = (("spec",), ("spec", "jobManager"), ("spec", "taskManager"))


def pod_templates(docs: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod template) for each pod template of each FlinkDeployment."""
    for doc in docs:
        if doc.get("kind") != "FlinkDeployment":
            continue
        for place in POD_TEMPLATE_PLACES:
            node: Any = doc
            for key in place:
                node = node.get(key) or {}
            if "podTemplate" in node:
                where = f"{doc['metadata']['name']}.{'.'.join(place)}.podTemplate"
                yield where, node["podTemplate"]


def as_pods(docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The FlinkDeployments' pod templates as Pod documents, named after where they are."""
    pods = []
    for where, template_ in pod_templates(docs):
        pod = copy.deepcopy(template_)
        pod.setdefault("apiVersion", "v1")
        pod.setdefault("kind", "Pod")
        pod.setdefault("metadata", {})["name"] = where.lower().replace(".", "-")
        pods.append(pod)
    return pods


# --- schemas -------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _core_wheel(downloads: Path) -> Path:
    wheels = sorted(downloads.glob("kubernetes_validate-*.whl"))
    if not wheels:
        _run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--no-deps", "--only-binary", ":all:", "--require-hashes",
                "-r", str(SCHEMA_SOURCES), "-d", str(downloads),
            ],
            "pip download kubernetes-validate",
        )  # fmt: skip
        wheels = sorted(downloads.glob("kubernetes_validate-*.whl"))
    return wheels[-1]


def local_refs(text: str) -> dict[str, Any]:
    """A kubernetes-validate schema with its `$id` gone and its refs made relative, so
    kubeconform resolves them in the schema's own folder instead of on kubernetes.io."""
    relative = text.replace('"/api/_definitions.json#', f'"{DEFINITIONS}#')
    schema: dict[str, Any] = json.loads(relative)
    schema.pop("$id", None)
    return schema


def core_schemas(wheel: Path, dest: Path) -> int:
    """Unpack the strict schemas of KUBERNETES_VERSION from the wheel into `dest`."""
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict/"
    count = 0
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(prefix) and name.endswith(".json"):
                target = dest / name[len(prefix) :]
                target.write_text(json.dumps(local_refs(archive.read(name).decode())))
                count += 1
    if count == 0:
        raise CheckError(f"{wheel.name} has no schemas for Kubernetes {KUBERNETES_VERSION}")
    return count


def _operator_jar(downloads: Path) -> Path:
    group, artifact, version = OPERATOR_API
    jar = downloads / f"{artifact}-{version}.jar"
    if not jar.exists():
        _run(
            [
                "mvn", "-q", "-B", f"{DEPENDENCY_PLUGIN}:copy",
                f"-Dartifact={group}:{artifact}:{version}", f"-DoutputDirectory={downloads}",
            ],
            f"mvn dependency:copy {artifact}:{version}",
        )  # fmt: skip
    if _sha256(jar) != OPERATOR_API_SHA256:
        raise CheckError(f"{jar} is not the pinned jar (sha256 {OPERATOR_API_SHA256}): delete it")
    return jar


def strict(node: Any) -> None:
    """What kubeconform's strict schemas do: an object that lists its properties takes no
    other (an open map says `additionalProperties`, a free-form field preserves unknown
    fields; both are left as they are)."""
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)


def flink_deployment_schema(crd: Mapping[str, Any]) -> dict[str, Any]:
    """The FlinkDeployment (v1beta1) JSON schema of operator 1.15, from 1.10's CRD.

    Patched, each for a field the chart uses:
    1. `spec.flinkVersion`: 1.10's enum ends at v1_20; 1.15 also takes v2_0, v2_1 and v2_2
       (the chart says v2_2).
    Checked, not patched:
    2. `spec.jobManager.resource` / `spec.taskManager.resource`: singular in 1.10, as in 1.15's
       CRD (`resources` exists only on the operator's main branch), so `resources` must fail.
    3. `spec.flinkConfiguration`: a map of strings in 1.10. Later CRDs also take nested YAML
       there; a map of strings is valid in both, so the derived schema is the stricter one.
    Added, as for any CRD (the API server supplies them, fabric8's CRD leaves them out):
    4. `apiVersion`, `kind` and `metadata` (the core ObjectMeta schema), all required.
    Then every object that lists its properties is made strict (`strict`).
    """
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema: dict[str, Any] = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    spec = schema["properties"]["spec"]["properties"]
    enum = spec["flinkVersion"]["enum"]
    if enum[-1] != "v1_20":
        raise CheckError(f"the operator CRD's flinkVersion enum changed ({enum}): review the patch")
    enum.extend(FLINK_2_VERSIONS)  # patch 1
    for role in ("jobManager", "taskManager"):  # check 2
        declared = spec[role]["properties"]
        if "resource" not in declared or "resources" in declared:
            raise CheckError(f"spec.{role} no longer declares `resource` alone: review the patch")
    if spec["flinkConfiguration"].get("additionalProperties") != {"type": "string"}:  # check 3
        raise CheckError("spec.flinkConfiguration is no longer a map of strings: review")
    schema["properties"] = {  # patch 4
        "apiVersion": {"type": "string", "enum": ["flink.apache.org/v1beta1"]},
        "kind": {"type": "string", "enum": ["FlinkDeployment"]},
        "metadata": {"$ref": OBJECT_META},
        **schema["properties"],
    }
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    strict(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$comment"] = (
        f"DERIVED by devtools/k8scheck.py from {FLINK_CRD} in "
        f"{':'.join(OPERATOR_API)} (sha256 {OPERATOR_API_SHA256}), patched to operator 1.15 "
        "as its flink_deployment_schema docstring lists."
    )
    return schema


def schemas() -> Path:
    """The folder of every schema kubeconform needs, made once (and again when an input
    changes)."""
    downloads = WORK / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    wheel = _core_wheel(downloads)
    jar = _operator_jar(downloads)
    inputs = hashlib.sha256()
    for path in [wheel, jar, Path(__file__), *sorted(HAND_WRITTEN.glob("*.json"))]:
        inputs.update(path.name.encode() + path.read_bytes())
    dest = WORK / "schemas" / f"v{KUBERNETES_VERSION}-{inputs.hexdigest()[:12]}"
    if (dest / ".complete").exists():
        return dest
    for old in dest.parent.glob("v*"):  # made from other inputs
        shutil.rmtree(old)
    dest.mkdir(parents=True, exist_ok=True)
    core_schemas(wheel, dest)
    with zipfile.ZipFile(jar) as archive:
        crd = yaml.safe_load(archive.read(FLINK_CRD))
    derived = flink_deployment_schema(crd)
    (dest / "flinkdeployment-flink-v1beta1.json").write_text(json.dumps(derived))
    for path in HAND_WRITTEN.glob("*.json"):
        (dest / path.name).write_text(path.read_text())
    (dest / ".complete").touch()
    return dest


# --- validation ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """One document that did not pass: its kind, its name, why."""

    kind: str
    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.message}"


def _reason(message: str) -> str:
    """kubeconform's message without its preamble and the schema's file URL."""
    _, marker, reason = message.partition("' - ")
    return reason if marker else message


def validate(docs: Sequence[Mapping[str, Any]], schema_dir: Path) -> list[Problem]:
    """kubeconform -strict over `docs`; a document without a schema is a problem too."""
    if not docs:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.yaml"
        manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        argv = [
            str(TOOLS_BIN / "kubeconform"), "-strict", "-verbose", "-output", "json",
            "-kubernetes-version", KUBERNETES_VERSION,
            "-schema-location", str(schema_dir / LOCATION), str(manifest),
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise CheckError("kubeconform not found: run `make k8s-tools`") from None
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise CheckError(f"kubeconform: {done.stdout}{done.stderr}") from None
    results = report.get("resources") or []
    problems = [
        Problem(r.get("kind", "?"), r.get("name", "?"), _reason(r.get("msg") or r.get("status")))
        for r in results
        if r.get("status") != "statusValid"
    ]
    if done.returncode != 0 and not problems:
        problems.append(Problem("?", "?", f"kubeconform exited {done.returncode}: {done.stderr}"))
    if len(results) != len(docs) and not problems:
        problems.append(Problem("?", "?", f"kubeconform saw {len(results)} of {len(docs)}"))
    return problems


# Environment variables that carry a credential: only ever from a Secret (valueFrom).
SECRET_NAMES = ("PASSWORD", "SECRET", "TOKEN", "USER_INFO", "ACCESS_KEY", "JAAS", "EXTERNAL_REDIS")


def _containers(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    spec = pod.get("spec") or {}
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def policy(docs: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """GridStream's rules a schema cannot say: no Secret rendered, credentials only by
    reference, every pod template hardened, state on object storage, a default-deny policy."""
    problems = []
    for doc in docs:
        kind, name = doc.get("kind", "?"), (doc.get("metadata") or {}).get("name", "?")
        if kind == "Secret":
            problems.append(Problem(kind, name, "the chart renders a Secret: reference one"))
        if kind == "FlinkDeployment":
            conf = doc["spec"].get("flinkConfiguration") or {}
            for key in ("high-availability.storageDir", "execution.checkpointing.dir"):
                if "://" not in conf.get(key, "") or conf[key].startswith("file:"):
                    problems.append(Problem(kind, name, f"{key} is not on object storage"))
            if doc["spec"]["job"].get("upgradeMode") == "savepoint":
                for key in ("execution.checkpointing.savepoint-dir", "state.savepoints.dir"):
                    if key not in conf:
                        problems.append(Problem(kind, name, f"savepoint upgrades need {key}"))
            if conf.get("high-availability.type") != "kubernetes":
                problems.append(Problem(kind, name, "high-availability.type is not kubernetes"))
    for where, pod in pod_templates(docs):
        pod_context = (pod.get("spec") or {}).get("securityContext") or {}
        if pod_context.get("runAsNonRoot") is not True:
            problems.append(Problem("PodTemplate", where, "runAsNonRoot is not true"))
        for container in _containers(pod):
            context = container.get("securityContext") or {}
            label = f"{where} {container.get('name')}"
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(Problem("PodTemplate", label, "root filesystem is writable"))
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(Problem("PodTemplate", label, "privilege escalation allowed"))
            if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
                problems.append(Problem("PodTemplate", label, "capabilities not all dropped"))
            for variable in container.get("env") or []:
                if any(word in variable["name"] for word in SECRET_NAMES) and "value" in variable:
                    problems.append(Problem("PodTemplate", label, f"{variable['name']} is inlined"))
    if not any(
        d.get("kind") == "NetworkPolicy"
        and d["spec"].get("podSelector") == {}
        and set(d["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not d["spec"].get("ingress")
        and not d["spec"].get("egress")
        for d in docs
    ):
        problems.append(Problem("NetworkPolicy", "-", "no default-deny policy"))
    return problems


def check(render: Render, schema_dir: Path, out: Path) -> tuple[int, list[Problem]]:
    """Lint, render, validate (documents, then pod templates as Pods), apply the policy;
    the render is kept in `out` for reading. (documents checked, problems)"""
    lint(render)
    text = template(render)
    (out / f"{render.name}.yaml").write_text(text)
    docs = documents(text)
    pods = as_pods(docs)
    problems = validate(docs, schema_dir) + validate(pods, schema_dir) + policy(docs)
    return len(docs) + len(pods), problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    try:
        schema_dir = schemas()
        build_chart_dependencies()
        out = WORK / "rendered"
        out.mkdir(parents=True, exist_ok=True)
        failed = 0
        for render in renders():
            count, problems = check(render, schema_dir, out)
            for problem in problems:
                print(f"k8s-check: {render.name}: {problem}")
            failed += bool(problems)
            verdict = "valid" if not problems else f"{len(problems)} problem(s)"
            print(f"k8s-check: {render.name}: {count} documents, {verdict}")
    except CheckError as err:
        print(f"k8s-check: {err}", file=sys.stderr)
        return 2
    print(f"k8s-check: renders in {out}, schemas in {schema_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

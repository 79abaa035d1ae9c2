"""deploy/kubernetes and deploy/Containerfile: every manifest is valid against the
Kubernetes schemas (kubernetes-validate, offline, strict), and every flag, environment
variable and probe path they hand the control plane exists in it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from muto.cli import build_parser
from muto.cloud.api.app import PROBES, ROUTES, artifact_dir
from muto.cloud.settings import ENVIRONMENT, ROLES, Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
# The oldest Kubernetes release still in upstream support when this was written, and
# the newest the validator knows: the manifests must be valid on both.
VERSIONS = ("1.32.0", kubernetes_validate.latest_version())


def kustomization() -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return found


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, doc)
        for name in kustomization()["resources"]
        for doc in yaml.safe_load_all((BASE / name).read_text())
        if doc
    ]


def containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{name}/{c['name']}", c)
        for name, doc in documents()
        if doc["kind"] == "Deployment"
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]


def test_the_kustomization_lists_every_manifest_of_the_directory() -> None:
    listed = set(kustomization()["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_kubernetes(version: str) -> None:
    for name, doc in documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name}: {exc.message} at {list(exc.path)}") from None


def serve_arguments(args: list[str]) -> Any:
    """`muto cloud serve <args>` as the CLI parses it (argparse exits on an unknown flag)."""
    try:
        return build_parser("cloud").parse_args(["cloud", "serve", *args])
    except SystemExit:
        raise AssertionError(f"muto cloud serve does not take {args}") from None


def test_every_flag_the_manifests_pass_exists_in_the_cli() -> None:
    roles = set()
    for name, container in containers():
        assert container["image"] == kustomization()["images"][0]["name"], name
        parsed = serve_arguments(container.get("args", []))
        roles.add(parsed.role)
    assert roles == {"api", "worker"}


def test_every_environment_variable_the_manifests_set_is_read_by_the_cloud() -> None:
    config_maps = {
        doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == "ConfigMap"
    }
    for name, container in containers():
        names = {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            names |= set(config_maps[source["configMapRef"]["name"]]["data"])
        assert names, name
        assert names <= set(ENVIRONMENT), f"{name}: {sorted(names - set(ENVIRONMENT))}"


def test_probes_point_at_the_probe_routes() -> None:
    probes = {route.path for route in PROBES}
    assert probes <= {route.path for route in ROUTES}
    for name, container in containers():
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            if kind in container:
                assert container[kind]["httpGet"]["path"] in probes, f"{name} {kind}"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["resources"]["requests"], name


def test_the_api_scales_and_survives_disruptions_and_two_workers_stand_by() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in documents()}
    api = kinds[("Deployment", "muto-api")]
    assert api["spec"]["replicas"] >= 2
    assert kinds[("HorizontalPodAutoscaler", "muto-api")]["spec"]["minReplicas"] >= 2
    assert kinds[("PodDisruptionBudget", "muto-api")]["spec"]["minAvailable"] >= 1
    assert kinds[("Deployment", "muto-worker")]["spec"]["replicas"] == 2
    for deployment in (api, kinds[("Deployment", "muto-worker")]):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
    ingress = kinds[("Ingress", "muto-api")]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "muto-api"


def test_the_api_replicas_share_a_writable_artifact_volume() -> None:
    """PUT /artifacts writes under the artifact dir. The root file system is read-only,
    so that dir is a mounted volume, writable, and the same for every replica (a
    ReadWriteMany claim): an upload to one is downloaded from any other."""
    kinds = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in documents()}
    pod = kinds[("Deployment", "muto-api")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    flags = serve_arguments(container["args"])
    data_dir = Path(kinds[("ConfigMap", "muto-cloud")]["data"]["MUTO_DATA_DIR"])
    given = Path(flags.artifact_dir) if flags.artifact_dir else None
    where = artifact_dir(Settings(data_dir=data_dir, artifact_dir=given))
    holding = [m for m in container["volumeMounts"] if where.is_relative_to(m["mountPath"])]
    assert holding, f"nothing is mounted at {where}"
    mount = max(holding, key=lambda m: len(m["mountPath"]))  # the one that holds it
    assert not mount.get("readOnly", False), mount
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = kinds[("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def nginx_size(text: str) -> int:
    """An nginx size (`client_max_body_size`): bytes, or k, m, g for powers of 1024."""
    found = re.fullmatch(r"(\d+)([kmg]?)", text.lower())
    assert found, text
    return int(found.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[found.group(2)]


def test_the_ingress_passes_the_largest_artifact_the_api_takes() -> None:
    (ingress,) = [doc for _, doc in documents() if doc["kind"] == "Ingress"]
    annotations = ingress["metadata"]["annotations"]
    limit = nginx_size(annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert limit >= Settings().max_artifact_bytes
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"


def test_the_containerfile_runs_the_cli_with_flags_it_has() -> None:
    text = CONTAINERFILE.read_text()
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entry is not None
    command = yaml.safe_load(entry.group(1))
    assert command[:3] == ["muto", "cloud", "serve"]
    serve_arguments(command[3:])
    for env in re.findall(r"\b(MUTO_[A-Z_]+)=", text):
        assert env in ENVIRONMENT, env
    role = re.search(r"MUTO_ROLE=(\w+)", text)
    assert role is not None and role.group(1) in ROLES
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in shlex.split(source):
            assert (ROOT / path).exists(), path

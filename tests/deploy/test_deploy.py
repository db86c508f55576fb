"""deploy/: every object is valid Kubernetes (the official client's models, generated from the API's
OpenAPI, read it back unchanged: required fields present, no misspelt or unknown field that the
API server would prune), the kustomization applies exactly those files, the RBAC objects bind
the roles to the service account that ``srseg pipeline submit --service-account`` names, and the
one-off volume Job really makes a root-owned folder writable for uid 1000 (run here as root)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# kind -> (apiVersion, the kubernetes client's model)
KINDS = {
    "ServiceAccount": ("v1", "V1ServiceAccount"),
    "PersistentVolumeClaim": ("v1", "V1PersistentVolumeClaim"),
    "Pod": ("v1", "V1Pod"),
    "Job": ("batch/v1", "V1Job"),
    "Role": ("rbac.authorization.k8s.io/v1", "V1Role"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "V1RoleBinding"),
}
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) of every Kubernetes object under deploy/ (the kustomization aside)."""
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return out


def round_trip(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` through the kubernetes client's model of its kind and back (unknown fields vanish,
    a missing required field raises)."""
    from kubernetes.client import ApiClient

    class Response:
        data = json.dumps(doc)

    client = ApiClient()
    return client.sanitize_for_serialization(client.deserialize(Response(), KINDS[doc["kind"]][1]))


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


@pytest.mark.parametrize(("name", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"])
def test_every_object_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    assert doc["kind"] in KINDS, f"{name}: unexpected kind {doc['kind']}"
    assert doc["apiVersion"] == KINDS[doc["kind"]][0], name
    assert DNS_1123.match(doc["metadata"]["name"]), name
    assert "namespace" not in doc["metadata"], f"{name}: the namespace comes from kustomize / kubectl -n"
    assert round_trip(doc) == doc, f"{name}: fields the API does not know (or wrong types)"


def test_the_validation_catches_what_the_api_would_reject_or_drop() -> None:
    role = objects("Role")["srseg-trainjobs"]
    rule = {k: v for k, v in role["rules"][0].items() if k != "verbs"}
    misspelt = {**role, "rules": [{**rule, "verb": ["create"]}]}  # 'verb' for 'verbs'
    with pytest.raises(ValueError, match="verbs"):  # required field missing
        round_trip(misspelt)
    pvc = objects("PersistentVolumeClaim")["srseg-data"]
    extra = {**pvc, "spec": {**pvc["spec"], "accesMode": ["ReadWriteMany"]}}
    assert round_trip(extra) != extra  # the API would silently drop it: the test's equality fails


def test_kustomization_applies_these_files_and_sets_image_and_namespace() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization" and kustomization["namespace"]
    assert all((DEPLOY / r).is_file() for r in kustomization["resources"])
    assert set(kustomization["resources"]) == {
        "serviceaccount.yaml",
        "rbac.yaml",
        "pvc.yaml",
        "volume-permissions-job.yaml",
    }
    (image,) = kustomization["images"]
    job_image = objects("Job")["srseg-volume-permissions"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert job_image.split(":")[0] == image["name"]  # the images transformer rewrites it


def test_rbac_binds_both_roles_to_the_pipeline_service_account() -> None:
    (account,) = objects("ServiceAccount")
    roles, bindings = objects("Role"), objects("RoleBinding")
    assert set(roles) == {"srseg-trainjobs", "srseg-kfp-step"}
    bound = {}
    for binding in bindings.values():
        ref = binding["roleRef"]
        assert ref["kind"] == "Role" and ref["apiGroup"] == "rbac.authorization.k8s.io" and ref["name"] in roles
        (subject,) = binding["subjects"]
        assert subject["kind"] == "ServiceAccount" and subject["name"] == account and subject["namespace"]
        bound[ref["name"]] = subject["name"]
    assert bound == {"srseg-trainjobs": account, "srseg-kfp-step": account}
    assert account == "srseg-pipeline"  # the name README and the submit help use


def test_pvc_is_shared_by_every_node_and_named_as_the_pipeline_default() -> None:
    from srseg.pipeline import MOUNT_PATH

    pvc = objects("PersistentVolumeClaim")["srseg-data"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # TrainJob nodes share the checkpoints
    job = objects("Job")["srseg-volume-permissions"]["spec"]["template"]["spec"]
    assert job["volumes"][0]["persistentVolumeClaim"]["claimName"] == "srseg-data"
    assert job["containers"][0]["volumeMounts"][0]["mountPath"] == MOUNT_PATH
    spec = yaml.safe_load_all((REPO / "pipelines" / "training_pipeline.yaml").read_text())
    assert next(spec)["root"]["inputDefinitions"]["parameters"]["pvc_name"]["defaultValue"] == "srseg-data"


def _as_uid_1000(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", *command],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to own a folder as root and write as uid 1000 (CI runs as root)",
)
def test_volume_job_makes_a_root_owned_volume_writable_for_uid_1000() -> None:
    job = objects("Job")["srseg-volume-permissions"]["spec"]["template"]["spec"]
    (container,) = job["containers"]
    assert job["securityContext"]["runAsUser"] == 0 and container["command"] == ["/bin/sh", "-c"]
    mount = container["volumeMounts"][0]["mountPath"]
    base = Path(tempfile.mkdtemp(prefix="srseg-volume-"))
    try:
        base.chmod(0o755)
        volume = base / "mnt"
        volume.mkdir(mode=0o755)  # a fresh RWX volume: owned by root, 755
        (volume / "left-by-root").mkdir()
        write = 'mkdir -p "$1/data/lr" && echo x > "$1/data/lr/probe"'  # what the download step does first
        before = _as_uid_1000("/bin/sh", "-c", write, "sh", str(volume))
        assert before.returncode != 0 and "Permission denied" in before.stderr  # the failure the issue describes
        script = container["args"][0].replace(mount, str(volume))
        subprocess.run(["/bin/sh", "-c", script], check=True, capture_output=True, timeout=60)
        after = _as_uid_1000("/bin/sh", "-c", write, "sh", str(volume))
        assert after.returncode == 0, after.stderr
        assert _as_uid_1000("mkdir", str(volume / "left-by-root" / "x")).returncode == 0  # existing content too
        assert volume.stat().st_uid == 1000 and volume.stat().st_mode & 0o2000  # setgid: new folders keep group 1000
        assert (volume / "data").stat().st_gid == 1000
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_readme_runbook_uses_the_deploy_objects() -> None:
    from srseg.cli import build_parser

    readme = (REPO / "README.md").read_text()
    runbook = readme[readme.index("### Runbook") :]
    assert "kubectl apply -k deploy/" in runbook and "--service-account srseg-pipeline" in runbook
    for path in DEPLOY.glob("*.yaml"):
        assert f"deploy/{path.name}" in runbook, f"the README runbook does not say what {path.name} is for"
    args = build_parser().parse_args(
        ["pipeline", "submit", "--host", "h", "--service-account", "srseg-pipeline", "--no-cache"]
    )
    assert args.service_account == "srseg-pipeline" and args.no_cache

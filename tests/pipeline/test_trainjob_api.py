"""The TrainJob launcher against a fake Kubernetes API server (real HTTP on 127.0.0.1, port 0,
the official kubernetes client on the other end), every request recorded: a job's whole life,
403/404/422 turned into what to grant or install, deletion on timeout, the finished-job TTL sweep,
and SIGTERM of a real launcher process (the component's own body) deleting its TrainJob; every call
the launcher made is one the Role in deploy/rbac.yaml grants."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline.fake_kube import FakeKube, api, kubeconfig, serve
from pipeline.fake_kube import trainjob as job

from srseg.pipeline import steps, trainjob
from srseg.pipeline.overrides import override_strings
from srseg.pipeline.trainjob import TrainJobError, TrainJobTimeout

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NAMESPACE = "kubeflow-user"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/kubeflow-user/trainjobs"


def granted() -> set[tuple[str, str, str]]:
    """(api group, resource, verb) the Role srseg-trainjobs of deploy/rbac.yaml grants."""
    (role,) = [
        d
        for d in yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text())
        if d["kind"] == "Role" and d["metadata"]["name"] == "srseg-trainjobs"
    ]
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


def assert_role_allows(kube: FakeKube) -> None:
    used = {("trainer.kubeflow.org", "trainjobs", r.verb) for r in kube.requests}
    assert used and used <= granted(), f"calls the Role does not grant: {sorted(used - granted())}"
    assert {r.token for r in kube.requests} == {"fake-token"}  # the service account's token on every call


def manifest(tmp_path: Path) -> dict[str, Any]:
    train_dir = Path("/mnt/srseg/runs/0123456789abcdef/multitask")
    return trainjob.build_trainjob(
        steps.trainjob_config(
            train_dir=train_dir,
            params_file=train_dir / "params.yaml",
            image="registry.example/srseg:1.2.3",
            namespace=NAMESPACE,
            nodes=2,
            gpus_per_node=8,
            cpu="32",
            memory="256Gi",
            pvc_name="srseg-data",
            mount_path="/mnt/srseg",
            tolerations=[],
            node_selector={},
            s3_secret="srseg-s3",
            mlflow_secret="srseg-mlflow",
            runtime="torch-distributed",
            timeout_s=86400,
        )
    )


def test_a_job_runs_to_completion_over_http(tmp_path: Path) -> None:
    body = manifest(tmp_path)
    with serve(FakeKube(states=["Running", "Running", "Complete"])) as kube:
        done = trainjob.run_trainjob(api(kube), body, timeout_s=60, poll_s=0.01)
    assert trainjob.trainjob_state(done) == "Complete"
    assert kube.verbs() == ["list", "create", "get", "get", "get"]  # TTL sweep, create, poll until Complete
    assert kube.requests[0].query["labelSelector"] == ["app.kubernetes.io/part-of=srseg"]
    assert kube.requests[1].path == TRAINJOBS and kube.requests[1].body == body  # exactly the manifest
    assert_role_allows(kube)


@pytest.mark.parametrize(
    ("refuse", "namespaces", "message"),
    [
        (
            {"create": 403},
            None,
            r"may not create trainjobs\.trainer\.kubeflow\.org in namespace 'kubeflow-user' .*"
            r"cannot create resource \"trainjobs\".*deploy/rbac\.yaml.*--service-account srseg-pipeline",
        ),
        ({"get": 403}, None, r"may not get trainjobs.*deploy/rbac\.yaml"),
        (
            {"create": 404},
            None,
            r"no trainjobs\.trainer\.kubeflow\.org/v1alpha1 API: install Kubeflow Trainer >= v2\.2",
        ),
        ({}, {"other"}, r"namespace 'kubeflow-user' does not exist \(pipeline parameter trainer_namespace\)"),
        ({"create": 422}, None, r"rejected TrainJob .*clustertrainingruntimes"),
    ],
)
def test_api_errors_say_what_to_grant_or_install(
    tmp_path: Path, refuse: dict[str, int], namespaces: set[str] | None, message: str
) -> None:
    with serve(FakeKube(refuse=refuse, namespaces=namespaces)) as kube:
        with pytest.raises(TrainJobError, match=message):
            trainjob.run_trainjob(api(kube), manifest(tmp_path), timeout_s=60, poll_s=0.01)


def test_a_refused_cleanup_list_does_not_stop_the_launcher(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with serve(FakeKube(states=["Complete"], refuse={"list": 403})) as kube:
        trainjob.run_trainjob(api(kube), manifest(tmp_path), timeout_s=60, poll_s=0.01)
    assert kube.verbs() == ["list", "create", "get"]
    assert "finished TrainJobs not cleaned up" in caplog.text and "may not list" in caplog.text


def test_giving_up_deletes_the_job(tmp_path: Path) -> None:
    body = manifest(tmp_path)
    with serve(FakeKube(states=["Suspended"])) as kube:
        with pytest.raises(TrainJobTimeout, match="not finished after 0 s"):
            trainjob.run_trainjob(api(kube), body, timeout_s=0.2, poll_s=0.05)
    deletes = [r for r in kube.requests if r.verb == "delete"]
    assert [r.path for r in deletes] == [f"{TRAINJOBS}/{body['metadata']['name']}"]
    assert json.loads(json.dumps(deletes[0].body or {})).get("propagationPolicy") in (None, "Background")
    assert_role_allows(kube)


def test_finished_jobs_are_deleted_after_their_ttl(tmp_path: Path) -> None:
    now = datetime(2030, 1, 2, tzinfo=UTC)
    stamp = lambda delta: (now - delta).isoformat().replace("+00:00", "Z")  # noqa: E731

    ttl = {trainjob.TTL_ANNOTATION: "3600"}
    existing = [
        job("old-complete", NAMESPACE, "Complete", stamp(timedelta(hours=2)), ttl),
        job("old-failed", NAMESPACE, "Failed", stamp(timedelta(days=2)), {trainjob.TTL_ANNOTATION: "86400"}),
        job("recent-failed", NAMESPACE, "Failed", stamp(timedelta(minutes=5)), ttl),  # kept for its logs
        job("running", NAMESPACE, "Running", annotations=ttl),
        job("mine", NAMESPACE, "Complete", stamp(timedelta(days=9)), ttl),  # the launcher's own: reused, not deleted
        job("no-ttl", NAMESPACE, "Complete", stamp(timedelta(days=9))),  # not made by this launcher version
    ]
    with serve(FakeKube(existing=existing)) as kube:
        deleted = trainjob.sweep_finished(api(kube), NAMESPACE, keep="mine", now=now)
    assert deleted == ["old-complete", "old-failed"]
    assert [r.path.rsplit("/", 1)[-1] for r in kube.requests if r.verb == "delete"] == deleted
    assert_role_allows(kube)


def test_sigterm_of_a_real_launcher_process_deletes_its_trainjob(tmp_path: Path) -> None:
    """The launch-trainjob component's body in its own process: it creates the TrainJob and polls;
    SIGTERM (a stopped KFP run) makes it delete the job and exit 143, within the grace period."""
    mount = tmp_path / "mnt"
    params = steps.resolve_params("", "", override_strings(str(mount), {}), base_dir=REPO)
    kwargs = dict(
        request=steps.step_request(params, "train", "code-1"),
        data_sha256="data-1",
        work_dir=str(mount),
        branch="multitask",
        lambda_seg=-1.0,
        seed=0,
        image="registry.example/srseg:1.2.3",
        run_as_user=1000,
        nodes=2,
        gpus_per_node=0,
        cpu="1",
        memory="1Gi",
        pvc_name="srseg-data",
        mount_path=str(mount),
        tolerations=[],
        node_selector={},
        s3_secret="",
        mlflow_secret="",
        runtime="torch-distributed",
        namespace=NAMESPACE,
        timeout_s=3600,
    )
    with serve(FakeKube(states=["Running"])) as kube:
        env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
        env.update(
            KUBECONFIG=str(kubeconfig(kube, tmp_path / "kubeconfig")),
            PYTHONPATH=str(REPO),
            SRSEG_KFP_RUN_ID="run-7",
            SRSEG_KFP_POD="srseg-training-x-launcher",
        )
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "launcher_child.py"), json.dumps(kwargs)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 180
            while "get" not in kube.verbs():  # created, and polling (then sleeping 30 s)
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=10)
                time.sleep(0.1)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
            stopped_in = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert stopped_in < 10  # well inside Kubernetes' default 30 s grace period
    (created,) = [r.body for r in kube.requests if r.verb == "create"]
    name = created["metadata"]["name"]
    assert kube.verbs() == ["list", "create", "get", "delete"]
    assert kube.requests[-1].path == f"{TRAINJOBS}/{name}" and name not in kube.created  # gone from the cluster
    assert f"deleting TrainJob {NAMESPACE}/{name}" in err
    # what the launcher forwarded: its image and user, lineage, its own pod, the TTL
    assert created["spec"]["trainer"]["image"] == "registry.example/srseg:1.2.3"
    assert {"name": "SRSEG_KFP_RUN_ID", "value": "run-7"} in created["spec"]["trainer"]["env"]
    assert created["metadata"]["annotations"] == {
        "srseg/launcher-pod": "srseg-training-x-launcher",
        "srseg/ttl-seconds-after-finished": "86400",
    }
    assert_role_allows(kube)

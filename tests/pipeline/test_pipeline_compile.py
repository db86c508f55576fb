"""The compiled pipeline (IR YAML) carries what the cluster needs: GPU requests on training, retries
on download, a preflight step before any data moves, caching keyed on data requests, code version
and weight digests (off where reruns must happen), promotion behind the gate, the kfp-kubernetes
platform settings (PVC, secrets, tolerations, node selector, lineage env), the image chosen at
compile time; submission refuses a tracking URI the pods cannot share before it contacts the
host; and the committed ``pipelines/training_pipeline.yaml`` is exactly what compiling gives today."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from srseg.pipeline import PIPELINE_PACKAGE, commands

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / PIPELINE_PACKAGE
IMAGE = "registry.example/srseg:9.9.9"
SMALL_STEPS = (
    "resolve-params",
    "preflight",
    "download",
    "degrade",
    "seeds",
    "collect-model",
    "collect-model-2",
    "evaluate",
    "study-build",
    "study-analyze",
    "benchmark",
    "report",
    "export",
    "register",
    "gate",
    "promote",
    "launch-trainjob",
    "launch-trainjob-2",
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, kubernetes platform spec) compiled for ``IMAGE``."""
    out = commands.compile_pipeline(IMAGE, tmp_path_factory.mktemp("ir") / "p.yaml", root=REPO)
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def all_tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the root DAG and of the nested condition DAGs, by task name."""
    tasks: dict[str, dict[str, Any]] = {}
    for dag in [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]:
        tasks.update(dag["tasks"])
    return tasks


def dag_of(spec: dict[str, Any], task: str) -> dict[str, dict[str, Any]]:
    """The tasks of the DAG (root, loop or condition) that holds ``task``."""
    for dag in [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]:
        if task in dag["tasks"]:
            return dag["tasks"]
    raise KeyError(task)


def seed_loop(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ParallelFor task in the root DAG, its component's DAG)."""
    (task,) = [t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    return task, spec["components"][task["componentRef"]["name"]]["dag"]


def executor(spec: dict[str, Any], task: str) -> tuple[str, dict[str, Any]]:
    label = spec["components"][all_tasks(spec)[task]["componentRef"]["name"]]["executorLabel"]
    return label, spec["deploymentSpec"]["executors"][label]["container"]


def test_committed_pipeline_is_up_to_date(tmp_path: Path) -> None:
    image = commands.package_image(COMMITTED)
    fresh = commands.compile_pipeline(image, tmp_path / "fresh.yaml", root=REPO)
    assert fresh.read_text() == COMMITTED.read_text(), (
        f"{PIPELINE_PACKAGE} is stale: run `srseg pipeline compile --image {image}` and commit the result"
    )


def test_image_is_chosen_at_compile_time(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}
    for e in executors.values():  # the image has kfp: no pip install when a step starts
        assert "pip install" not in " ".join(e["container"]["command"])
    launcher = all_tasks(spec)["launch-trainjob"]["inputs"]["parameters"]
    assert launcher["image"]["runtimeValue"]["constant"] == IMAGE  # the TrainJob runs the same image
    assert launcher["run_as_user"]["runtimeValue"]["constant"] == 1000  # ... as the same user
    assert IMAGE in spec["pipelineInfo"]["description"]


def test_training_requests_gpus_and_resources(compiled: tuple[dict, dict]) -> None:
    spec, platform = compiled
    for task in ("train", "train-2"):
        label, container = executor(spec, task)
        res = container["resources"]
        assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert res["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus_per_node']}}"
        assert res["resourceCpuLimit"] == "{{$.inputs.parameters['pipelinechannel--train_cpu']}}"
        assert res["resourceMemoryLimit"] == "{{$.inputs.parameters['pipelinechannel--train_memory']}}"
        gpus = all_tasks(spec)[task]["inputs"]["parameters"]["gpus"]
        assert gpus["componentInputParameter"] == "pipelinechannel--gpus_per_node"  # torchrun --nproc_per_node
        assert all_tasks(spec)[task]["retryPolicy"]["maxRetryCount"] == 2
        k8s = platform[label]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
        assert {"tolerationJson": {"componentInputParameter": "pipelinechannel--gpu_tolerations"}} in k8s["tolerations"]
        assert k8s["nodeSelector"] == {
            "nodeSelectorJson": {"componentInputParameter": "pipelinechannel--gpu_node_selector"}
        }
        assert k8s["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm"}]
    lambdas = {
        all_tasks(spec)[t]["inputs"]["parameters"]["lambda_seg"].get("runtimeValue", {}).get("constant")
        for t in ("train", "train-2")
    }
    assert 0.0 in lambdas  # the SR-only ablation branch


def test_every_step_has_cpu_and_memory_limits(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    for task in SMALL_STEPS:
        res = executor(spec, task)[1]["resources"]
        assert res["resourceCpuLimit"] and res["resourceMemoryLimit"], task
        assert "accelerator" not in res, task  # only training holds GPUs; the TrainJob launcher only waits


def test_download_retries_with_backoff(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    assert all_tasks(spec)["download"]["retryPolicy"] == {
        "backoffDuration": "60s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "3600s",
        "maxRetryCount": 3,
    }


def test_caching_is_off_where_reruns_must_happen(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    tasks = all_tasks(spec)
    for task in ("preflight", "study-build", "study-analyze", "report", "register", "gate", "promote"):
        assert not tasks[task].get("cachingOptions", {}).get("enableCache", False), task
    for task in (
        "resolve-params",
        "download",
        "degrade",
        "seeds",
        "train",
        "train-2",
        "launch-trainjob",
        "launch-trainjob-2",
        "collect-model",
        "collect-model-2",
        "evaluate",
        "benchmark",
        "export",
    ):
        assert tasks[task]["cachingOptions"]["enableCache"] is True, task


def inputs(spec: dict[str, Any], task: str) -> dict[str, Any]:
    return {
        **all_tasks(spec)[task]["inputs"].get("parameters", {}),
        **all_tasks(spec)[task]["inputs"].get("artifacts", {}),
    }


def test_cache_keys_follow_data_requests_code_and_weights(compiled: tuple[dict, dict]) -> None:
    """KFP keys a cached step on its inputs: the data and training steps see only their step
    request (code version + the params sections they read), never the whole params artifact, so
    an unrelated parameter keeps the dataset and models; the model step is keyed on the weights."""
    spec, _ = compiled
    resolve = inputs(spec, "resolve-params")
    assert resolve["code_version"] == {"componentInputParameter": "code_version"}
    request = {"taskOutputParameter": {"outputParameterKey": "download_request", "producerTask": "resolve-params"}}
    assert inputs(spec, "download") == {"request": request}
    degrade = inputs(spec, "degrade")
    assert set(degrade) == {"request", "dataset"}
    assert degrade["request"]["taskOutputParameter"]["outputParameterKey"] == "degrade_request"
    assert degrade["dataset"]["taskOutputArtifact"] == {"outputArtifactKey": "dataset", "producerTask": "download"}
    for task in ("train", "train-2", "launch-trainjob", "launch-trainjob-2"):
        given = inputs(spec, task)
        assert "params" not in given, task
        # resolve-params' train_request, carried into the loop by the seed sweep's items (see below)
        assert given["request"]["parameterExpressionSelector"] == 'parseJson(string_value)["request"]', task
    loop = dag_of(spec, "collect-model")
    for collect, suffix in (("collect-model", ""), ("collect-model-2", "-2")):  # either path's digest of the weights
        digest = loop[collect]["inputs"]["parameters"]["weights_sha256"]["taskOutputParameter"]
        branches = spec["components"][loop[digest["producerTask"]]["componentRef"]["name"]]["dag"]["outputs"][
            "parameters"
        ]
        selectors = branches[digest["outputParameterKey"]]["valueFromOneof"]["parameterSelectors"]
        assert {s["outputParameterKey"] for s in selectors} == {
            f"pipelinechannel--launch-trainjob{suffix}-weights_sha256",
            f"pipelinechannel--train{suffix}-weights_sha256",
        }
    for task in (
        "seeds",
        "evaluate",
        "export",
        "study-build",
        "benchmark",
        "report",
    ):  # the resolved params (code version included)
        assert inputs(spec, task)["params"]["taskOutputArtifact"]["producerTask"] == "resolve-params"


def test_training_fans_out_over_the_seeds(compiled: tuple[dict, dict]) -> None:
    """One ParallelFor iteration per seed of train.seeds (the `seeds` step's output) trains both arms
    with that seed; the steps after it get every seed's model of each arm."""
    spec, _ = compiled
    loop, body = seed_loop(spec)
    assert loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--seeds-Output"}
    item = loop["parameterIterator"]["itemInput"]
    # the items are the loop's only task-output parameter: kfp.local would overwrite any other with the item
    from_tasks = {
        k: v["taskOutputParameter"] for k, v in loop["inputs"]["parameters"].items() if "taskOutputParameter" in v
    }
    assert from_tasks == {"pipelinechannel--seeds-Output": {"outputParameterKey": "Output", "producerTask": "seeds"}}
    assert inputs(spec, "seeds")["request"]["taskOutputParameter"] == {
        "outputParameterKey": "train_request",
        "producerTask": "resolve-params",
    }
    for task in ("train", "train-2", "launch-trainjob", "launch-trainjob-2", "collect-model", "collect-model-2"):
        assert inputs(spec, task)["seed"] == {
            "componentInputParameter": item,
            "parameterExpressionSelector": 'parseJson(string_value)["seed"]',
        }, task
    for task in ("train", "train-2", "launch-trainjob", "launch-trainjob-2"):
        assert inputs(spec, task)["request"] == {
            "componentInputParameter": item,
            "parameterExpressionSelector": 'parseJson(string_value)["request"]',
        }, task
    assert set(body["tasks"]) >= {"collect-model", "collect-model-2"}
    surfaced = body["outputs"]["artifacts"]
    for task in ("evaluate", "study-build", "benchmark", "report"):
        given = inputs(spec, task)
        for arm, collect in (("multitask", "collect-model"), ("sr_only", "collect-model-2")):
            key = given[arm]["taskOutputArtifact"]
            assert key["producerTask"] == "for-loop-1", (task, arm)
            assert surfaced[key["outputArtifactKey"]]["artifactSelectors"] == [
                {"outputArtifactKey": "model", "producerSubtask": collect}
            ]
    assert inputs(spec, "export")["models"]["taskOutputArtifact"]["producerTask"] == "for-loop-1"
    assert "report" in all_tasks(spec)["export"]["dependentTasks"]  # the card links to the report
    # the report's study section reads the votes analysed in this run
    assert inputs(spec, "report")["study"]["taskOutputArtifact"] == {
        "outputArtifactKey": "results",
        "producerTask": "study-analyze",
    }


def test_preflight_runs_before_any_data_moves(compiled: tuple[dict, dict]) -> None:
    spec, platform = compiled
    tasks = all_tasks(spec)
    assert "preflight" in tasks["download"]["dependentTasks"]
    given = inputs(spec, "preflight")
    assert given["code_version"] == {"componentInputParameter": "code_version"}
    assert given["work_dir"] == {"componentInputParameter": "work_dir"}
    label, container = executor(spec, "preflight")
    assert "run_preflight" in " ".join(container["args"] + container["command"])
    assert platform[label]["pvcMount"][0]["mountPath"] == "/mnt/srseg"  # checks the volume it will write


def test_every_step_knows_its_kfp_run_for_lineage(compiled: tuple[dict, dict]) -> None:
    _, platform = compiled
    for label, k8s in platform.items():
        assert {"name": "SRSEG_KFP_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"} in k8s[
            "fieldPathAsEnv"
        ], label
        assert {"name": "SRSEG_KFP_POD", "fieldPath": "metadata.name"} in k8s["fieldPathAsEnv"], label


def test_promotion_runs_only_when_the_gate_passes(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    (name,) = [
        n
        for n, t in root.items()
        if "promote" in spec["components"][t["componentRef"]["name"]].get("dag", {}).get("tasks", {})
    ]
    condition = root[name]
    assert condition["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-Output'] == true"
    assert condition["inputs"]["parameters"]["pipelinechannel--gate-Output"]["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "gate",
    }
    assert set(root["gate"]["dependentTasks"]) >= {"register", "study-analyze"}
    # the promote step applies the gate's verdict (it scores nothing itself)
    inner = spec["components"][root[name]["componentRef"]["name"]]["dag"]["tasks"]["promote"]
    assert inner["inputs"]["artifacts"]["verdict"] == {"componentInputArtifact": "pipelinechannel--gate-verdict"}
    assert condition["inputs"]["artifacts"]["pipelinechannel--gate-verdict"]["taskOutputArtifact"] == {
        "outputArtifactKey": "verdict",
        "producerTask": "gate",
    }


def test_multi_node_training_goes_through_a_trainjob(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    root = dag_of(spec, "collect-model")  # inside the seed loop
    branches = [n for n, t in root.items() if n.startswith("condition-branches")]
    assert len(branches) == 2  # multitask and sr_only
    for name in branches:
        inner = spec["components"][root[name]["componentRef"]["name"]]["dag"]["tasks"]
        conditions = {t["triggerPolicy"]["condition"]: t for t in inner.values()}
        assert set(conditions) == {
            "int(inputs.parameter_values['pipelinechannel--nodes']) > 1",
            "!(int(inputs.parameter_values['pipelinechannel--nodes']) > 1)",
        }
    for collect in ("collect-model", "collect-model-2"):  # either path's run folder feeds the model artifact
        source = root[collect]["inputs"]["parameters"]["train_dir"]["taskOutputParameter"]
        assert source["producerTask"] in branches


def test_platform_settings_pvc_and_secrets(compiled: tuple[dict, dict]) -> None:
    spec, platform = compiled
    tasks = all_tasks(spec)
    for task in tasks:
        if task.startswith(("condition", "for-loop")) or task in ("resolve-params", "seeds"):
            continue
        label, _ = executor(spec, task)
        k8s = platform[label]
        (pvc,) = k8s["pvcMount"]
        assert pvc["mountPath"] == "/mnt/srseg" and pvc["pvcNameParameter"]["componentInputParameter"].endswith(
            "pvc_name"
        ), task
        secrets = {s["secretNameParameter"]["componentInputParameter"].split("--")[-1]: s for s in k8s["secretAsEnv"]}
        assert secrets["s3_secret"]["keyToEnv"] == [
            {"envVar": "AWS_ACCESS_KEY_ID", "secretKey": "AWS_ACCESS_KEY_ID"},
            {"envVar": "AWS_SECRET_ACCESS_KEY", "secretKey": "AWS_SECRET_ACCESS_KEY"},
        ], task
        assert secrets["mlflow_secret"]["keyToEnv"] == [
            {"envVar": "MLFLOW_TRACKING_TOKEN", "secretKey": "MLFLOW_TRACKING_TOKEN"}
        ]
        assert all(s["optional"] for s in secrets.values())
    for task in ("resolve-params", "seeds"):
        settings = platform[executor(spec, task)[0]]
        assert "pvcMount" not in settings and "secretAsEnv" not in settings, task  # reads no data, needs no secret


def test_every_pod_runs_as_the_images_non_root_user(compiled: tuple[dict, dict]) -> None:
    spec, platform = compiled
    assert set(platform) == set(spec["deploymentSpec"]["executors"])
    for label, k8s in platform.items():
        assert k8s["securityContext"] == {"runAsUser": "1000", "runAsGroup": "1000", "runAsNonRoot": True}, label
        assert "imagePullSecret" not in k8s, label


def test_pipeline_parameters(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    expected = {
        "params_yaml": "STRING",
        "profile": "STRING",
        "data_mode": "STRING",
        "subset_size": "NUMBER_INTEGER",
        "mirror": "STRING",
        "scale": "NUMBER_INTEGER",
        "lambda_seg": "NUMBER_DOUBLE",
        "gpus_per_node": "NUMBER_INTEGER",
        "nodes": "NUMBER_INTEGER",
        "mlflow_uri": "STRING",
        "s3_bucket": "STRING",
        "s3_prefix": "STRING",
        "s3_endpoint_url": "STRING",
        "work_dir": "STRING",
        "pvc_name": "STRING",
        "s3_secret": "STRING",
        "mlflow_secret": "STRING",
        "gpu_tolerations": "LIST",
        "gpu_node_selector": "STRUCT",
        "train_cpu": "STRING",
        "train_memory": "STRING",
        "trainer_runtime": "STRING",
        "trainer_namespace": "STRING",
        "train_timeout_s": "NUMBER_INTEGER",
        "code_version": "STRING",
    }
    assert {k: v["parameterType"] for k, v in params.items()} == expected
    assert params["nodes"]["defaultValue"] == 1 and params["work_dir"]["defaultValue"] == "/mnt/srseg"
    assert spec["root"]["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "STRING"  # the model URI


def test_mount_path_is_a_compile_option(tmp_path: Path) -> None:
    out = commands.compile_pipeline(IMAGE, tmp_path / "p.yaml", mount_path="/data/srseg", root=REPO)
    spec, platform = yaml.safe_load_all(out.read_text())
    mounts = {
        m["mountPath"]
        for e in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
        for m in e.get("pvcMount", [])
    }
    assert (
        mounts == {"/data/srseg"}
        and spec["root"]["inputDefinitions"]["parameters"]["work_dir"]["defaultValue"] == "/data/srseg"
    )


def test_bad_image_or_checkout_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(commands.PipelineError, match="container image reference"):
        commands.compile_pipeline("my image", tmp_path / "p.yaml", root=REPO)
    with pytest.raises(commands.PipelineError, match="not the srseg checkout"):
        commands.compile_pipeline(IMAGE, tmp_path / "p.yaml", root=tmp_path)
    assert not (tmp_path / "p.yaml").exists()


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def create_run_from_pipeline_package(self, package: str, **kwargs: Any) -> Any:
        self.calls.append({"package": package, **kwargs})
        return type("Result", (), {"run_id": "run-123"})()

    def wait_for_run_completion(self, run_id: str, timeout: float) -> Any:
        return type("Run", (), {"state": "SUCCEEDED"})()


def test_submit_sends_resolved_params(tmp_path: Path) -> None:
    from srseg.pipeline.preflight import code_digest

    client = FakeClient()
    result = commands.submit(
        "https://kfp.example/pipeline",
        package=COMMITTED,
        params=REPO / "params.yaml",
        profile="paper",
        arguments={"nodes": 2, "gpus_per_node": 8, "mlflow_uri": "https://mlflow.example.org"},
        experiment="srseg-test",
        run_name="r1",
        wait=True,
        client=client,
        service_account="srseg-pipeline",
        enable_caching=False,
    )
    assert result.run_id == "run-123" and result.succeeded
    assert result.url == "https://kfp.example/pipeline/#/runs/details/run-123"
    (call,) = client.calls
    assert call["experiment_name"] == "srseg-test" and call["run_name"] == "r1"
    assert call["service_account"] == "srseg-pipeline" and call["enable_caching"] is False
    args = call["arguments"]
    assert args["profile"] == "" and args["nodes"] == 2 and args["gpus_per_node"] == 8
    assert args["code_version"] == code_digest(REPO / "srseg")  # keys the cache; preflight compares it with the image
    sent = yaml.safe_load(args["params_yaml"])
    assert sent["profile"] == "paper" and sent["download"]["mode"] == "full"  # the profile was applied client-side
    default_client = FakeClient()
    image_default = commands.submit("h", package=COMMITTED, params=None, profile="demo", client=default_client)
    assert image_default.state is None
    assert {k: default_client.calls[0]["arguments"][k] for k in ("params_yaml", "profile")} == {
        "params_yaml": "",
        "profile": "demo",
    }


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("sqlite:///mlflow.db", "local to each pod"),
        ("file:///mnt/srseg/mlruns", "local to each pod"),
        ("mlruns", "local to each pod"),
        ("postgresql://db.example.org/mlflow", "database URI"),
        ("http://localhost:5000", "the pod itself"),
        ("http://127.0.0.1:5000", "the pod itself"),
        ("https://[::1]/", "the pod itself"),
    ],
)
def test_submit_refuses_a_tracking_uri_the_pods_cannot_share(uri: str, why: str) -> None:
    client = FakeClient()
    with pytest.raises(ValueError, match=rf"pipeline argument mlflow_uri.*{why}"):
        commands.submit(
            "h", package=COMMITTED, params=REPO / "params.yaml", arguments={"mlflow_uri": uri}, client=client
        )
    assert client.calls == []
    with pytest.raises(ValueError, match=r"mlflow\.tracking_uri in the params"):  # params.yaml's own sqlite default
        commands.submit("h", package=COMMITTED, params=REPO / "params.yaml", client=client)
    with pytest.raises(ValueError, match="pipeline argument mlflow_uri"):  # the image's params: the argument is checked
        commands.submit("h", package=COMMITTED, params=None, arguments={"mlflow_uri": uri}, client=client)
    assert client.calls == []


def test_submit_refuses_disabled_tracking_and_bad_service_accounts() -> None:
    from srseg.config import load_params

    disabled = load_params(REPO / "params.yaml").model_copy(
        update={"mlflow": load_params(REPO / "params.yaml").mlflow.model_copy(update={"enabled": False})}
    )
    client = FakeClient()
    with pytest.raises(ValueError, match="mlflow.enabled is false"):
        commands.submit(
            "h", package=COMMITTED, params=disabled, arguments={"mlflow_uri": "https://m.example"}, client=client
        )
    with pytest.raises(commands.PipelineError, match="service account"):
        commands.submit("h", package=COMMITTED, params=None, client=client, service_account="Srseg Runner")
    assert client.calls == []


def test_cli_submit_with_sqlite_exits_2_before_contacting_the_host(tmp_path: Path) -> None:
    """The acceptance line: exit 2, a message about the tracking URI, and not one connection to the host."""
    import socket
    import subprocess
    import sys

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "srseg",
                "--params",
                str(REPO / "params.yaml"),
                "pipeline",
                "submit",
                "--host",
                f"http://127.0.0.1:{port}",
                "--arg",
                "mlflow_uri=sqlite:///x.db",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
        )
        try:
            connection, _ = listener.accept()
            connection.close()
            contacted = True
        except TimeoutError:
            contacted = False
    finally:
        listener.close()
    assert proc.returncode == 2, proc.stderr
    assert "tracking URI" in proc.stderr and "sqlite:///x.db" in proc.stderr and "mlflow_uri" in proc.stderr
    assert "Traceback" not in proc.stderr and not contacted


def test_params_objects_and_typed_arguments() -> None:
    from srseg.config import load_params

    loaded = load_params(REPO / "params.yaml").model_copy(update={"profile": "custom"})  # e.g. the CLI's, --set applied
    assert yaml.safe_load(commands.params_arguments(loaded, "ignored")["params_yaml"])["profile"] == "custom"
    args = commands.pipeline_arguments(
        [
            "nodes=2",
            "lambda_seg=0.05",
            "mlflow_uri=http://m:5000",
            'gpu_node_selector={"pool": "a100"}',
            "gpu_tolerations=[]",
        ],
        COMMITTED,
    )
    assert args == {
        "nodes": 2,
        "lambda_seg": 0.05,
        "mlflow_uri": "http://m:5000",
        "gpu_node_selector": {"pool": "a100"},
        "gpu_tolerations": [],
    }
    with pytest.raises(commands.PipelineError, match="one of"):
        commands.pipeline_arguments(["gpus=2"], COMMITTED)
    with pytest.raises(commands.PipelineError, match="NUMBER_INTEGER"):
        commands.pipeline_arguments(["nodes=two"], COMMITTED)


class ReadingClient(FakeClient):
    """Reads the uploaded package while it exists (a recompiled one is a temporary file)."""

    def create_run_from_pipeline_package(self, package: str, **kwargs: Any) -> Any:
        self.spec, self.platform = yaml.safe_load_all(Path(package).read_text())
        return super().create_run_from_pipeline_package(package, **kwargs)


def test_image_pull_secrets_and_user_are_submit_time_choices() -> None:
    committed = COMMITTED.read_text()
    client = ReadingClient()
    pod = commands.PodOptions(
        image="registry.example/srseg:1.2.3",
        image_pull_secrets=("regcred", "mirror-cred"),
        run_as_user=2000,
        run_as_group=3000,
    )
    commands.submit("h", package=COMMITTED, params=None, profile="demo", client=client, pod=pod, root=REPO)
    spec = client.spec
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {pod.image}
    assert all_tasks(spec)["launch-trainjob"]["inputs"]["parameters"]["image"]["runtimeValue"]["constant"] == pod.image
    for label, k8s in client.platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
        assert [s["secretName"] for s in k8s["imagePullSecret"]] == ["regcred", "mirror-cred"], label
        assert k8s["securityContext"] == {"runAsUser": "2000", "runAsGroup": "3000", "runAsNonRoot": True}, label
    assert COMMITTED.read_text() == committed  # the committed IR is not touched
    with pytest.raises(commands.PipelineError, match="image pull secret"):
        commands.submit(
            "h",
            package=COMMITTED,
            params=None,
            client=FakeClient(),
            root=REPO,
            pod=commands.PodOptions(image_pull_secrets=("bad name",)),
        )
    root_pod = commands.PodOptions(run_as_user=0, run_as_group=0)
    client = ReadingClient()
    commands.submit("h", package=COMMITTED, params=None, client=client, pod=root_pod, root=REPO)
    contexts = [
        k8s["securityContext"]
        for k8s in client.platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    ]
    assert all(c.get("runAsNonRoot") is False for c in contexts)  # uid 0 is never declared non-root

"""Glue shared by the KFP components: params in and out of artifacts, the work-dir layout on the
dataset volume, the torchrun command line, and reading a training run's outputs back.

Components embed only their own function body in the compiled pipeline, so anything two of them
need lives here (in the image) instead of being copied into each body. Nothing here knows about
KFP types: components hand in plain paths and get plain values back, which keeps this testable.

Layout under ``work_dir`` (the mounted dataset PVC on a cluster, a local folder under kfp.local)::

    data/cocostuff/                   paths.data_root (download output)
    data/lr/                          paths.lr_root (degrade output)
    runs/<key>/<branch>/              train.output_dir of one branch (multitask | sr_only) and seed
        params.yaml                   the exact parameters torchrun's ranks read
        psnr/ gan/                    stage outputs (checkpoints, selected/final weights, metrics.json)

``<key>`` hashes the branch's training parameters (its seed included) and the dataset manifest, so
a retried or re-run step with the same inputs resumes the same checkpoints and a changed input
starts afresh. The seed sweep (``train.seeds``) fans out over such runs; the evaluation-side steps
get every seed's model and lay them out per seed again (:func:`link_seed_models`).

Caching: KFP keys a cached step on its inputs. The data and training steps therefore get a
*step request* (:func:`step_request`): the code version plus only the params sections they use, so
an unrelated change (say ``evaluate.bootstrap``) keeps the dataset, the LR images and the trained
models, while a change of their own sections or of the code re-runs them. The trained model is
handed on with the digest of its weights (:func:`weights_digest`), so the step that collects it is
keyed on content, never on a folder path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import mimetypes
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from srseg.config import ConfigError, Params, deep_merge, load_params, parse_params
from srseg.fileio import read_json, write_text_atomic
from srseg.pipeline.trainjob import (
    GPU_RESOURCE,
    IMAGE_UID,
    LAUNCHER_ANNOTATION,
    SecretEnv,
    TrainJobConfig,
    job_name,
    shell_command,
)
from srseg.seeds import seed_run_dir
from srseg.tracking import PARENT_FILE

PARAMS_FILE = "params.yaml"
BRANCHES = ("multitask", "sr_only")
STAGES = ("psnr", "gan")
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}  # the usual GPU node taint
# Kubernetes secret key -> environment variable, for the S3 and MLflow secrets of every step.
S3_SECRET_ENV = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
MLFLOW_SECRET_ENV = {"MLFLOW_TRACKING_TOKEN": "MLFLOW_TRACKING_TOKEN"}
# Files of the GAN stage that make up the trained model handed to evaluation and export (its
# MLflow run record too, so evaluation can tag its run with the training runs).
MODEL_PATTERNS = (
    "best.pt",
    "best.pt.sha256",
    "final.pt",
    "final.pt.sha256",
    "*.safetensors",
    "*.safetensors.json",
    "metrics.json",
    "config.yaml",
    "class_map.json",
    "mlflow_run.json",
)
WEIGHT_PATTERNS = ("*.safetensors", "*.pt")  # what the content digest of a trained model covers
# Params sections each cached data/training step reads: its cache key covers these and the code only.
STEP_SECTIONS: dict[str, tuple[str, ...]] = {
    "download": ("paths", "download"),
    "degrade": ("paths", "degrade"),
    "train": ("paths", "train", "mlflow"),
}


# --------------------------------------------------------------------------------- parameters


def resolve_params(params_yaml: str, profile: str, overrides: Sequence[str], base_dir: str | Path = ".") -> Params:
    """Validated params: ``params_yaml`` (or ``base_dir/params.yaml`` when empty), then the
    profile (``base_dir/profiles/<profile>.yaml``), then ``overrides`` (``KEY.PATH=VALUE``, see
    :func:`srseg.pipeline.overrides.override_strings`); every problem is a ``ConfigError``."""
    path = Path(base_dir) / PARAMS_FILE
    if not params_yaml.strip() and not path.is_file():
        raise ConfigError(f"params_yaml is empty and {path.resolve()} does not exist (pass the file content)")
    text = params_yaml if params_yaml.strip() else None
    return load_params(path, profile or None, overrides, text=text, text_source="params_yaml (pipeline parameter)")


def dump_params(params: Params) -> str:
    """YAML text of the resolved params (what every step reads back)."""
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)


def write_params(path: str | Path, params: Params) -> Path:
    write_text_atomic(path, dump_params(params))
    return Path(path)


def read_params(path: str | Path) -> Params:
    """Params from a file written by :func:`write_params` (a params artifact or a run's copy)."""
    path = Path(path)
    return parse_params(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, str(path))


def params_digest(params: Params) -> str:
    return hashlib.sha256(dump_params(params).encode("utf-8")).hexdigest()


def step_request(params: Params, step: str, code_version: str) -> str:
    """The input of a cached data/training step: the code version and the sections it reads.

    Canonical YAML (sorted keys), so equal requests are equal strings and KFP reuses the step.
    """
    if step not in STEP_SECTIONS:
        raise ValueError(f"step must be one of {sorted(STEP_SECTIONS)}, got {step!r}")
    raw = params.model_dump(mode="json")
    body = {"step": step, "code_version": code_version, "params": {k: raw[k] for k in STEP_SECTIONS[step]}}
    return yaml.safe_dump(body, sort_keys=True)


def request_params(request: str, step: str) -> Params:
    """The params of a step request (sections it does not carry keep their defaults: the step does not read them)."""
    try:
        body = yaml.safe_load(request)
    except yaml.YAMLError as exc:
        raise ValueError(f"{step} request: not valid YAML ({exc})") from exc
    if not isinstance(body, dict) or body.get("step") != step or not isinstance(body.get("params"), dict):
        raise ValueError(f"not a {step} step request (made by steps.step_request)")
    unexpected = set(body["params"]) - set(STEP_SECTIONS[step])
    if unexpected:
        raise ValueError(f"{step} request carries sections {sorted(unexpected)} it does not use")
    return parse_params(body["params"], f"{step} request")


def link_seed_models(
    models: Mapping[str, Sequence[tuple[int, str | Path]]], root: str | Path, seeds: Sequence[int]
) -> dict[str, Path]:
    """Lay the trained-model artifacts out like a seed sweep: ``root/<branch>/seed<K>`` links to the
    model folder of seed K (:mod:`srseg.seeds`); returns ``{branch: root/<branch>}``.

    ``models``: branch -> [(seed, model folder)], from the models' ``seed`` metadata. Every seed of
    ``seeds`` (``train.seeds``) must be there exactly once per branch.
    """
    out: dict[str, Path] = {}
    for branch, items in models.items():
        found = {int(seed): Path(folder) for seed, folder in items}
        if len(found) != len(items) or sorted(found) != sorted(seeds):
            raise ValueError(
                f"{branch}: models for seeds {sorted(int(s) for s, _ in items)}, train.seeds is {list(seeds)}"
            )
        folder = Path(root) / branch
        folder.mkdir(parents=True, exist_ok=True)
        for seed, model in found.items():
            link = seed_run_dir(folder, seed)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(model.resolve(), target_is_directory=True)
        out[branch] = folder
    return out


def model_overrides(params: Params, models: Mapping[str, str | Path]) -> dict[str, Any]:
    """Point ``evaluate.methods``, ``benchmark.methods`` and ``export.weights`` at the trained models.

    The params name weights where a seed sweep writes them: ``<train.output_dir>/seed<K>/gan/<file>``
    (or ``seed{seed}``, one per seed) for the multitask branch, ``<paths.ablation_dir>/...`` for
    sr_only. In the pipeline those GAN-stage files arrive as Model artifacts, laid out per seed by
    :func:`link_seed_models` (``models``: branch -> folder with ``seed<K>/`` inside), so such paths
    are rewritten into that folder; other methods (bicubic, models:/...) stay as they are.
    """
    roots = {"multitask": Path(params.train.output_dir), "sr_only": Path(params.paths.ablation_dir)}
    unknown = set(models) - set(roots)
    if unknown:
        raise ValueError(f"unknown branches {sorted(unknown)} (expected {sorted(roots)})")

    def relocate(value: str) -> str:
        for branch, folder in models.items():
            try:
                rel = Path(value).relative_to(roots[branch])
            except ValueError:
                continue
            if len(rel.parts) != 3 or not rel.parts[0].startswith("seed") or rel.parts[1] != "gan":
                raise ValueError(
                    f"{value}: the pipeline hands over the GAN stage's weights of each seed only "
                    "(<dir>/seed<K>/gan/<file> or <dir>/seed{seed}/gan/<file>)"
                )
            return str(Path(folder) / rel.parts[0] / rel.parts[2])
        return value

    return {
        "evaluate": {"methods": {name: relocate(spec) for name, spec in params.evaluate.methods.items()}},
        "benchmark": {"methods": {name: relocate(spec) for name, spec in params.benchmark.methods.items()}},
        "export": {"weights": relocate(params.export.weights)},
    }


def stage_params(
    params_path: str | Path,
    *,
    models: Mapping[str, str | Path] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Params:
    """The params artifact with the step's own inputs and output folders applied (validated)."""
    params = read_params(params_path)
    raw = params.model_dump(mode="json")
    if models:
        raw = deep_merge(raw, model_overrides(params, models))
    return parse_params(deep_merge(raw, dict(overrides or {})), f"{params_path} (step overrides)")


# ----------------------------------------------------------------------------------- datasets


def record_dataset(root: str | Path, artifact_path: str | Path) -> dict[str, Any]:
    """Copy ``root/manifest.json`` into a KFP Dataset artifact and describe the dataset.

    The images stay on the volume (too large to copy between steps); the artifact carries the
    manifest (every file's SHA-256) and, as metadata, where the data is and its checksum.
    """
    from srseg.data.manifest import MANIFEST_NAME, Manifest, manifest_checksum

    root = Path(root)
    manifest = Manifest.load(root)
    Path(artifact_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / MANIFEST_NAME, artifact_path)
    return {
        "path": str(root),
        "kind": manifest.kind,
        "manifest_sha256": manifest_checksum(root),
        "images": {split: len(samples) for split, samples in manifest.splits.items()},
    }


# ---------------------------------------------------------------------------------- training


def branch_params(
    params: Params, work_dir: str | Path, branch: str, lambda_seg: float, data_sha256: str, seed: int | None = None
) -> Params:
    """The params of one training branch (and seed), with ``train.output_dir`` set to its run folder.

    ``lambda_seg < 0`` keeps the params' value (the multitask branch); ``0`` is the SR-only
    ablation. ``seed`` (one of the sweep's ``train.seeds``) sets ``train.seed``. The run folder
    depends on these params and the dataset, see the module docstring.
    """
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
    raw = params.model_dump(mode="json")
    if lambda_seg >= 0:
        raw["train"]["loss"]["lambda_seg"] = lambda_seg
    if seed is not None:
        if seed not in params.train.seeds:
            raise ValueError(f"seed {seed} is not one of train.seeds {list(params.train.seeds)}")
        raw["train"]["seed"] = seed
    raw["train"]["output_dir"] = ""
    # only what shapes the checkpoints: not other stages' settings, not where runs are tracked
    key = hashlib.sha256((json.dumps(raw["train"], sort_keys=True) + data_sha256).encode("utf-8")).hexdigest()[:16]
    raw["train"]["output_dir"] = str(Path(work_dir) / "runs" / key / branch)
    return parse_params(raw, f"branch {branch}")


def prepare_branch(
    params: Params, work_dir: str | Path, branch: str, lambda_seg: float, data_sha256: str, seed: int | None = None
) -> tuple[Path, Path]:
    """Write the branch's params into its run folder; returns (run folder, params file)."""
    params = branch_params(params, work_dir, branch, lambda_seg, data_sha256, seed)
    train_dir = Path(params.train.output_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    return train_dir, write_params(train_dir / PARAMS_FILE, params)


def torchrun_command(
    params_file: str | Path, stage: str, nproc_per_node: int | None, python: str | None = None
) -> list[str]:
    """``torchrun ... -m srseg --params FILE train --stage STAGE``.

    ``nproc_per_node`` set: one standalone node with that many ranks (the in-pod, multi-GPU case;
    the rendezvous picks a free local port). ``None``: no topology flags, torchrun reads them from
    the ``PET_*`` variables Kubeflow Trainer sets on every node of a TrainJob.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    launcher = [python, "-m", "torch.distributed.run"] if python else ["torchrun"]
    topology = (
        [] if nproc_per_node is None else ["--standalone", "--nnodes=1", f"--nproc_per_node={max(1, nproc_per_node)}"]
    )
    return [*launcher, *topology, "-m", "srseg", "--params", str(params_file), "train", "--stage", stage]


def local_torchrun_command(params_file: str | Path, stage: str, nproc_per_node: int) -> list[str]:
    """The in-pod command, run by the current interpreter (no reliance on PATH)."""
    return torchrun_command(params_file, stage, nproc_per_node, python=sys.executable)


def run_training(params_file: str | Path, nproc_per_node: int) -> None:
    """Both stages (PSNR, then GAN from its weights), each one torchrun job in this pod."""
    for stage in STAGES:
        command = local_torchrun_command(params_file, stage, nproc_per_node)
        code = subprocess.run(command, check=False).returncode
        if code:
            raise RuntimeError(
                f"{stage} stage failed: torchrun exited with code {code} (see the log above): {shlex.join(command)}"
            )


def trainjob_config(
    *,
    train_dir: str | Path,
    params_file: str | Path,
    image: str,
    namespace: str,
    nodes: int,
    gpus_per_node: int,
    cpu: str,
    memory: str,
    pvc_name: str,
    mount_path: str,
    tolerations: list[dict[str, Any]],
    node_selector: dict[str, str],
    s3_secret: str,
    mlflow_secret: str,
    runtime: str,
    timeout_s: int,
    run_as_user: int | None = IMAGE_UID,
    run_as_group: int | None = IMAGE_UID,
    env: Mapping[str, str] | None = None,
    launcher_pod: str = "",
) -> TrainJobConfig:
    """The TrainJob that runs both stages on ``nodes`` nodes with what the launcher step has
    (its user, the KFP lineage variables in ``env``; ``launcher_pod`` is recorded on the job)."""
    train_dir = Path(train_dir)
    if Path(mount_path) not in train_dir.parents:
        raise ValueError(
            f"{train_dir} is not on the dataset volume mounted at {mount_path}: the TrainJob could not see it"
        )
    branch = train_dir.name
    if gpus_per_node and GPU_TOLERATION not in tolerations:
        tolerations = [GPU_TOLERATION, *tolerations]
    secret_env = [SecretEnv(env, s3_secret, key) for key, env in S3_SECRET_ENV.items() if s3_secret]
    secret_env += [SecretEnv(env, mlflow_secret, key) for key, env in MLFLOW_SECRET_ENV.items() if mlflow_secret]
    return TrainJobConfig(
        name=job_name(f"srseg-{branch.replace('_', '-')}", train_dir.parent.name),
        namespace=namespace,
        image=image,
        command=shell_command([torchrun_command(params_file, stage, None) for stage in STAGES]),
        num_nodes=nodes,
        gpus_per_node=gpus_per_node,
        cpu=cpu,
        memory=memory,
        runtime=runtime,
        pvc_name=pvc_name or None,
        mount_path=mount_path,
        tolerations=tolerations,
        node_selector=node_selector,
        secret_env=secret_env,
        labels={"srseg/branch": branch.replace("_", "-")},
        active_deadline_s=timeout_s or None,
        run_as_user=run_as_user,
        run_as_group=run_as_group,
        env={k: v for k, v in (env or {}).items() if v},
        annotations={LAUNCHER_ANNOTATION: launcher_pod} if launcher_pod else {},
    )


def training_record(train_dir: str | Path) -> dict[str, Any]:
    """MLflow run ids and the final metrics of a finished two-stage training run."""
    train_dir = Path(train_dir)
    gan = train_dir / "gan"
    if not gan.is_dir():
        raise FileNotFoundError(f"{gan} does not exist: the GAN stage did not run (see the training step's log)")

    def record(path: Path) -> dict[str, Any]:
        data = read_json(path) if path.is_file() else {}
        return data if isinstance(data, dict) else {}

    metrics = record(gan / "metrics.json")
    params_file = train_dir / PARAMS_FILE
    lambda_seg = read_params(params_file).train.loss.lambda_seg if params_file.is_file() else None
    return {
        "train_dir": str(train_dir),
        "lambda_seg": lambda_seg,
        "mlflow_run_id": str(record(gan / "mlflow_run.json").get("run_id", "")),
        "mlflow_psnr_run_id": str(record(train_dir / "psnr" / "mlflow_run.json").get("run_id", "")),
        "mlflow_parent_run_id": str(record(train_dir / "mlflow_parent.json").get("run_id", "")),
        "metrics": metrics,
    }


def weights_digest(train_dir: str | Path) -> str:
    """SHA-256 over the GAN stage's weight files (name + content): the trained model's identity."""
    from srseg.fileio import sha256_file

    gan = Path(train_dir) / "gan"
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in gan.glob(pattern) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"{gan} holds no weights file (*.safetensors or *.pt)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()


def copy_model_files(train_dir: str | Path, dest: str | Path, expected_digest: str = "") -> list[str]:
    """Copy the GAN stage's weights and metadata into ``dest``; returns the file names.

    ``expected_digest`` (the training step's :func:`weights_digest`): the weights must still be the
    ones training reported; a folder changed since then is refused rather than handed on.
    """
    gan = Path(train_dir) / "gan"
    if expected_digest:
        found = weights_digest(train_dir)
        if found != expected_digest:
            raise ValueError(
                f"{gan}: the weights changed after training reported them (digest {found[:12]}, "
                f"expected {expected_digest[:12]}): another run wrote this folder; re-run the training step"
            )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied = sorted({p.name for pattern in MODEL_PATTERNS for p in gan.glob(pattern) if p.is_file()})
    if not any(name.endswith((".pt", ".safetensors")) for name in copied):
        raise FileNotFoundError(f"{gan} holds no weights file (*.safetensors or *.pt)")
    for name in copied:
        shutil.copy2(gan / name, dest / name)
    for extra in (PARAMS_FILE, PARENT_FILE):  # the parent record: evaluation links to the training run
        if (Path(train_dir) / extra).is_file():
            shutil.copy2(Path(train_dir) / extra, dest / extra)
            copied.append(extra)
    return copied


# ------------------------------------------------------------------------------------- study


def votes_store(bundle_dir: str | Path) -> Path | None:
    """The votes database of a study bundle, or None while nobody has served the study yet."""
    from srseg.study.store import DB_NAME, default_state_dir

    path = default_state_dir(Path(bundle_dir)) / DB_NAME
    return path if path.is_file() else None


def no_votes_report(bundle_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """What the analysis step writes before any vote exists (a fresh bundle in this run)."""
    text = (
        f"# User study\n\nNo votes yet for the bundle at `{bundle_dir}`: serve it with "
        f"`srseg study serve --bundle <bundle>` (or import crowd votes) and analyse again.\n"
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.md", text)
    write_text_atomic(out / "report.html", f"<p>No votes yet for the bundle at <code>{bundle_dir}</code>.</p>\n")
    return {"votes": 0}


# ------------------------------------------------------------------------------------ reports


def scalar_metrics(tree: Any, prefix: str = "") -> dict[str, float]:
    """Finite numbers of a nested metrics dict, keyed ``a/b/c`` (KFP Metrics holds scalars only)."""
    out: dict[str, float] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            out.update(scalar_metrics(value, f"{prefix}{key}/"))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool) and math.isfinite(tree):
        out[prefix.rstrip("/")] = float(tree)
    return out


_IMG_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^":]+)(")', re.IGNORECASE)


def inline_images(html: str, base_dir: str | Path) -> str:
    """Embed the relative ``<img src>`` files of ``html`` as data URIs, so the page renders
    as one KFP HTML artifact (the UI shows a single file, not its folder)."""
    base = Path(base_dir).resolve()

    def embed(match: re.Match[str]) -> str:
        path = (base / match.group(2)).resolve()
        if base not in path.parents or not path.is_file():
            return match.group(0)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{match.group(1)}data:{kind};base64,{data}{match.group(3)}"

    return _IMG_SRC.sub(embed, html)


def publish(src: str | Path, dest: str | Path, missing: str, html: bool = False) -> bool:
    """Copy a stage's report file into a KFP Markdown/HTML artifact (images inlined for HTML).

    A missing file writes ``missing`` instead, so the step still shows why there is no report.
    """
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_file():
        dest.write_text(f"<p>{missing}</p>\n" if html else f"{missing}\n", encoding="utf-8")
        return False
    text = src.read_text(encoding="utf-8")
    dest.write_text(inline_images(text, src.parent) if html else text, encoding="utf-8")
    return True


def record_decision(result: Mapping[str, Any], markdown_path: str | Path) -> dict[str, Any]:
    """Write the decision's Markdown to ``markdown_path``; return the metadata every artifact of
    the decision carries (its plain values and the MLflow links), for the gate and promote steps."""
    write_text_atomic(markdown_path, decision_markdown(result))
    return {**plain_metadata(result), **decision_links(result)}


def decision_markdown(result: Mapping[str, Any]) -> str:
    """A promotion decision (``Decision.to_dict()``) as Markdown: verdict, criteria table, JSON."""
    parts = [
        "# Promotion decision",
        "",
        f"**{result.get('action', '?')}** ({'passed' if result.get('passed') else 'not passed'}): "
        f"{result.get('reason', '')}",
        "",
    ]
    criteria = result.get("criteria") or []
    if criteria:

        def ci(c: Mapping[str, Any]) -> str:
            if c.get("difference") is None:
                return "n/a"
            low, high = c.get("ci_low"), c.get("ci_high")
            interval = "CI n/a" if low is None or high is None else f"[{low:+.4f}, {high:+.4f}]"
            return f"{c['difference']:+.4f} {interval} (n={c.get('n')})"

        parts += [
            "| criterion | challenger | opponent | difference [95% CI] | threshold | result |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        parts += [
            f"| {c.get('name')} | {c.get('challenger')} | {c.get('opponent')} ({c.get('opponent_name')}) | {ci(c)} | "
            f"{c.get('threshold')} | {'pass' if c.get('passed') else 'FAIL'} |"
            for c in criteria
        ]
        parts.append("")
    parts += ["```json", json.dumps(result, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(parts)


def decision_links(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a promotion decision points to in MLflow, as KFP metadata: the versions judged (model
    URIs) and, per role, the run holding the scores it was judged on and whether this step scored it."""
    name = str(result.get("model_name") or "")

    def uri(version: Any) -> str:
        return f"models:/{name}/{version}" if version else ""

    links: dict[str, Any] = {
        "model_name": name,
        "challenger_uri": uri(result.get("challenger_version")),
        "champion_before_uri": uri(result.get("champion_before")),
        "champion_after_uri": uri(result.get("champion_after")),
        "evaluation_key": str(result.get("evaluation_key") or ""),
    }
    for role, source in sorted((result.get("evaluations") or {}).items()):
        links[f"{role}_scores_run_id"] = str(source.get("run_id") or "")
        links[f"{role}_scored_here"] = not source.get("cached", False)
    return links


def plain_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-safe scalar entries of a stage result, for ``artifact.metadata``."""
    return {
        str(k): v
        for k, v in values.items()
        if isinstance(v, (str, int, float, bool)) and not (isinstance(v, float) and not math.isfinite(v))
    }


def sweep_seeds(params_path: str | Path) -> list[int]:
    """``train.seeds`` of a params artifact: what the pipeline's training fans out over."""
    return [int(seed) for seed in read_params(params_path).train.seeds]


def seed_sweep(params_path: str | Path, request: str) -> list[dict[str, Any]]:
    """The pipeline's ParallelFor items: ``{"seed": seed, "request": request}`` per seed of ``train.seeds``."""
    return [{"seed": seed, "request": request} for seed in sweep_seeds(params_path)]


def seed_models(artifacts: Sequence[Any]) -> list[tuple[int, str]]:
    """(seed, folder) of collected Model artifacts (``seed`` metadata set by collect-model)."""
    return [(int(a.metadata["seed"]), str(a.path)) for a in artifacts]

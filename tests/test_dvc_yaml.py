"""``dvc.yaml`` declares what its stages really depend on: every project file a stage's command
can run is a dependency (directories are fine), and the parameters are the ones the stage reads.

The code closure is static (``importgraph``): it starts from the CLI handler the stage's ``srseg``
command dispatches to. ``srseg/cli.py`` itself is not required: it only parses arguments and
forwards them to the stage functions (``srseg.stages``); declaring it would re-run every stage
whenever any subcommand gains an option.
"""

from __future__ import annotations

import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from importgraph import ImportGraph, Ref

from srseg.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DISPATCH_ONLY = {Path("srseg/cli.py"), Path("srseg/__main__.py")}


@lru_cache(maxsize=1)
def dvc_stages() -> dict[str, Any]:
    """Stages of ``dvc.yaml`` as DVC resolves them (``${...}`` filled in from params.yaml; a
    ``foreach`` stage once per item, named ``<stage>@<item>``)."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {
            stage.name: {
                "cmd": stage.cmd,
                "deps": [Path(dep.def_path) for dep in stage.deps],
                "params": {key for dep in stage.params for key in dep.params},
                "outs": [Path(out.def_path) for out in stage.outs],
            }
            for stage in repo.index.stages
        }


def code_closure(graph: ImportGraph, cmd: str) -> set[Path]:
    """Project files (relative to the repo) run by ``srseg ...`` in ``cmd``."""
    argv = shlex.split(cmd)
    assert argv[0] == "srseg", f"stage command {cmd!r} is not an `srseg` call"
    handler = build_parser().parse_args(argv[1:]).func
    code = {
        path.relative_to(REPO) for path in graph.closure([Ref(handler.__module__, handler.__name__)])
    } - DISPATCH_ONLY
    return code | {template for module, templates in TEMPLATES_READ.items() if module in code for template in templates}


# Package data that shapes a stage's outputs as much as code does: the files each module reads.
TEMPLATES_READ = {Path("srseg/export.py"): [Path("srseg/templates/model_card.md")]}


def test_the_templates_read_are_those_named(graph: ImportGraph) -> None:
    for module, templates in TEMPLATES_READ.items():
        source = (REPO / module).read_text(encoding="utf-8")
        for template in templates:
            assert (REPO / template).is_file() and f'"{template.name}"' in source, (module, template)
    shipped = {path.relative_to(REPO) for path in (REPO / "srseg" / "templates").iterdir()}
    assert shipped == {t for ts in TEMPLATES_READ.values() for t in ts}, "a template no module is known to read"


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph(REPO, "srseg")


def test_every_stage_declares_the_code_it_runs(graph: ImportGraph) -> None:
    missing = {}
    for name, stage in dvc_stages().items():
        closure = code_closure(graph, stage["cmd"])
        assert Path("srseg/config.py") in closure, f"{name}: the closure misses the parameter defaults"
        undeclared = sorted(str(p) for p in closure if not covered(p, stage["deps"]))
        if undeclared:
            missing[name] = undeclared
    assert not missing, "dvc.yaml stages run project files they do not declare as deps:\n" + yaml.safe_dump(missing)


def test_no_stage_declares_code_it_does_not_run(graph: ImportGraph) -> None:
    """A code dependency outside the closure re-runs a stage for nothing (or names a removed file)."""
    stale = {}
    for name, stage in dvc_stages().items():
        closure = code_closure(graph, stage["cmd"])
        code_deps = [dep for dep in stage["deps"] if dep.parts[0] == "srseg"]
        unused = sorted(str(dep) for dep in code_deps if not any(covered(p, [dep]) for p in closure))
        if unused:
            stale[name] = unused
    assert not stale, "dvc.yaml stages declare project code they never run:\n" + yaml.safe_dump(stale)


def test_closure_follows_lazy_imports_and_reexports(tmp_path: Path) -> None:
    """The analyser on a small package: function-level imports count, names are followed to the
    submodule that defines them, TYPE_CHECKING imports and unrelated functions do not count."""
    files = {
        "pkg/__init__.py": "",
        "pkg/stages/__init__.py": "from pkg.stages.a import run_a\nfrom pkg.stages.b import run_b\n",
        "pkg/stages/a.py": (
            "from typing import TYPE_CHECKING\nfrom pkg.util import helper\n"
            "if TYPE_CHECKING:\n    from pkg.typing_only import T\n"
            "HANDLERS = {'x': helper}\n"
            "def run_a():\n    from pkg.lazy import work\n    return _inner(), HANDLERS\n"
            "def _inner():\n    import pkg.deep.mod\n"
            "def unrelated():\n    from pkg.other import nothing\n"
        ),
        "pkg/stages/b.py": "def run_b():\n    from pkg.other import nothing\n",
        "pkg/util.py": "def helper():\n    pass\n",
        "pkg/lazy.py": "from pkg.consts import N\ndef work():\n    return N\n",
        "pkg/consts.py": "N = 1\n",
        "pkg/deep/__init__.py": "",
        "pkg/deep/mod.py": "",
        "pkg/typing_only.py": "",
        "pkg/other.py": "def nothing():\n    pass\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = ImportGraph(tmp_path, "pkg")
    closure = {p.relative_to(tmp_path).as_posix() for p in graph.closure([Ref("pkg.stages", "run_a")])}
    assert closure == {
        "pkg/stages/__init__.py",
        "pkg/stages/a.py",
        "pkg/util.py",
        "pkg/lazy.py",
        "pkg/consts.py",
        "pkg/deep/mod.py",
    }


def test_closure_of_the_real_stages(graph: ImportGraph) -> None:
    train = code_closure(graph, "srseg train --stage psnr")
    assert {Path("srseg/degrade/bicubic.py"), Path("srseg/metrics.py"), Path("srseg/models/generator.py")} <= train
    evaluate = code_closure(graph, "srseg evaluate")
    assert {Path("srseg/stages/evaluate.py"), Path("srseg/evaluate/run.py"), Path("srseg/models/io.py")} <= evaluate
    assert Path("srseg/stages/ship.py") not in evaluate  # a sibling re-exported by srseg/stages/__init__.py
    assert Path("srseg/data/download.py") not in code_closure(graph, "srseg degrade")
    assert not any(p.parts[1] == "degrade" for p in code_closure(graph, "srseg download"))


# -- params ------------------------------------------------------------------------------------

GAN_ONLY = (
    "train.gan_stage",
    "train.discriminator",
    "train.loss.perceptual_weight",
    "train.loss.perceptual_layer",
    "train.loss.vgg_weights",
    "train.loss.adversarial_weight",
)
# Per stage: the params.yaml sections whose every key it must either declare or name here, with why.
NOT_READ: dict[str, dict[str, str]] = {
    "download": {
        k: "transport setting: how files are fetched, not which"
        for k in ("download.retries", "download.backoff_s", "download.timeout_s")
    },
    "degrade": {},
    "train_psnr": {**{k: "GAN stage only" for k in GAN_ONLY}, "train.output_dir": "the outs path"},
    "train_gan": {
        "train.psnr_stage": "its result is the dependency on the PSNR stage's output",
        "train.output_dir": "the outs path",
    },
    "evaluate": {"evaluate.output_dir": "the outs path"},
    "study_build": {
        "study.attention_threshold": "read by `study analyze`",
        "study.bootstrap": "read by `study analyze`",
        "study.output_dir": "the outs path",
    },
    "export": {"export.weights": "a dependency path", "export.output_dir": "the outs path"},
}
NOT_READ["train_gan"]["train.loss.seg_warmup"] = "PSNR stage only"
for _name in ("train_psnr", "train_gan"):
    NOT_READ[_name]["train.seeds"] = "decides which runs exist (one foreach stage per seed); --seed sets train.seed"
NOT_READ["ablation_psnr"] = {
    **NOT_READ["train_psnr"],
    "train.loss.seg_warmup": "no effect with the lambda_seg = 0 its cmd sets",
}
NOT_READ["ablation_gan"] = NOT_READ["train_gan"]
NOT_READ["benchmark"] = {"benchmark.output_dir": "the outs path"}  # + the other sets' entries (stage_not_read)
NOT_READ["report"] = {}
SECTIONS = {
    "download": "download",
    "degrade": "degrade",
    "evaluate": "evaluate",
    "study_build": "study",
    "export": "export",
    "benchmark": "benchmark",
    "report": "report",
    **{name: "train" for name in ("train_psnr", "train_gan", "ablation_psnr", "ablation_gan")},
}


def base(name: str) -> str:
    """The dvc.yaml stage behind a resolved stage: ``train_psnr@0`` -> ``train_psnr``."""
    return name.split("@", 1)[0]


def stage_not_read(name: str) -> dict[str, str]:
    """NOT_READ of a resolved stage; a benchmark stage reads only its own set's entry."""
    found = dict(NOT_READ[base(name)])
    if base(name) == "benchmark":
        sets = yaml.safe_load((REPO / "params.yaml").read_text())["benchmark"]["sets"]
        found.update(
            {f"benchmark.sets.{other}": "another set's stage" for other in sets if other != name.split("@", 1)[1]}
        )
    return found


def leaf_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys |= leaf_keys(value, dotted + ".") if isinstance(value, dict) and value else {dotted}
    return keys


def under(key: str, prefixes: set[str] | dict[str, str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def overridden(cmd: str) -> set[str]:
    """Keys a stage's command sets itself: ``--set KEY=...``, and ``train.seed`` by ``train --seed``."""
    argv = shlex.split(cmd)
    keys = {argv[i + 1].split("=", 1)[0] for i, arg in enumerate(argv[:-1]) if arg == "--set"}
    return keys | ({"train.seed"} if "--seed" in argv else set())


def test_every_stage_is_listed_in_the_params_table() -> None:
    assert {base(name) for name in dvc_stages()} == set(NOT_READ) == set(SECTIONS)


def test_params_are_exactly_what_each_stage_reads() -> None:
    """Every key of a stage's section is declared or named as not read (new keys must be sorted
    into one or the other); declared keys exist; nothing is both."""
    keys = leaf_keys(yaml.safe_load((REPO / "params.yaml").read_text()))
    problems = []
    for name, stage in dvc_stages().items():
        declared = stage["params"]
        not_read = stage_not_read(name)
        problems += [f"{name}: declares {k!r}, not in params.yaml" for k in sorted(declared) if not under_any(k, keys)]
        problems += [f"{name}: declares {k!r} and names it as not read" for k in sorted(declared) if under(k, not_read)]
        section = [k for k in keys if k.startswith(SECTIONS[base(name)] + ".")]
        problems += [
            f"{name}: {k!r} is neither declared nor named as not read (tests/test_dvc_yaml.py NOT_READ)"
            for k in sorted(section)
            if not under(k, declared) and not under(k, not_read) and not under(k, overridden(stage["cmd"]))
        ]
    assert not problems, "\n".join(problems)


def under_any(key: str, keys: set[str]) -> bool:
    return any(k == key or k.startswith(key + ".") for k in keys)


def test_tracking_and_overridden_keys_do_not_invalidate_results() -> None:
    for name, stage in dvc_stages().items():
        assert not under("mlflow", stage["params"]) and not any(k.startswith("mlflow.") for k in stage["params"]), name
        for key in overridden(stage["cmd"]):
            assert not any(under(d, {key}) or under(key, {d}) for d in stage["params"]), (
                f"{name}: {key} is set by its cmd"
            )
    assert overridden(dvc_stages()["ablation_psnr@0"]["cmd"]) == {
        "train.loss.lambda_seg",
        "train.output_dir",
        "train.seed",
    }


def test_no_stage_writes_to_the_model_registry(graph: ImportGraph) -> None:
    """`dvc exp run` sweeps run every stage: none may register, promote or roll back a model."""
    writers = {Path("srseg/registry/log_model.py"), Path("srseg/registry/promote.py")}
    for name, stage in dvc_stages().items():
        command = build_parser().parse_args(shlex.split(stage["cmd"])[1:]).command
        assert command not in {"register", "promote", "rollback"}, name
        assert not code_closure(graph, stage["cmd"]) & writers, name


def test_weights_named_in_params_are_dependencies() -> None:
    """evaluate.methods, study.methods and export.weights name weights files: the stages that read
    them must depend on them (and on their JSON sidecars), wherever the params point."""
    from srseg.config import load_params

    params = load_params(REPO / "params.yaml")
    stages = dvc_stages()

    def files(spec: str) -> list[Path]:
        return (
            []
            if spec == "bicubic" or "://" in spec or spec.startswith("models:/")
            else [Path(spec), Path(spec + ".json")]
        )

    readers = {
        "evaluate": list(params.evaluate.methods.values()),
        "study_build": [params.evaluate.methods[m] for m in params.study.methods],
        "export": [params.export.weights],
        **{f"benchmark@{name}": list(params.benchmark.methods.values()) for name in params.benchmark.sets},
    }
    for stage, specs in readers.items():
        wanted = [path for spec in specs for path in files(spec)]
        assert wanted, stage
        assert all(covered(path, stages[stage]["deps"]) for path in wanted), (stage, wanted, stages[stage]["deps"])

"""The seed sweep: run folders per seed, method strings expanded over the seeds, and the params
that refuse what a sweep cannot mean."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from srseg.config import ConfigError, load_params, parse_params
from srseg.seeds import expand_methods, for_seed, seed_run_dir, seeded_name

REPO = Path(__file__).resolve().parents[1]


def test_run_folders_and_model_names() -> None:
    assert seed_run_dir("outputs/train", 3) == Path("outputs/train/seed3")
    assert seeded_name("multitask", 3) == "multitask@seed3"
    assert for_seed("a/seed{seed}/w.safetensors", 7) == "a/seed7/w.safetensors" and for_seed("bicubic", 7) == "bicubic"
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError, match="seed must be"):
            seed_run_dir("outputs/train", bad)  # type: ignore[arg-type]


def test_methods_expand_over_the_seeds_in_order() -> None:
    methods = {
        "multitask": "runs/seed{seed}/gan/selected.safetensors",
        "bicubic": "bicubic",
        "champion": "models:/m@champion",
    }
    seeded = expand_methods(methods, (2, 0))
    assert seeded.specs == {
        "multitask@seed2": "runs/seed2/gan/selected.safetensors",
        "multitask@seed0": "runs/seed0/gan/selected.safetensors",
        "bicubic": "bicubic",
        "champion": "models:/m@champion",
    }
    assert seeded.groups == {
        "multitask": ["multitask@seed2", "multitask@seed0"],
        "bicubic": ["bicubic"],
        "champion": ["champion"],
    }
    assert seeded.first("multitask") == "multitask@seed2" and seeded.first("bicubic") == "bicubic"
    assert seeded.seeded("multitask") and not seeded.seeded("bicubic")
    with pytest.raises(ValueError, match="braces other than"):
        expand_methods({"m": "runs/{run}/w.safetensors"}, (0,))
    with pytest.raises(ValueError, match="reserved"):
        expand_methods({"m@seed0": "bicubic"}, (0,))
    with pytest.raises(ValueError, match="no seeds"):
        expand_methods(methods, ())


def _raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"train": {"seeds": []}}, "train.seeds"),
        ({"train": {"seeds": [0, 0]}}, "train.seeds"),
        ({"train": {"seeds": [-1]}}, "train.seeds"),
        (
            {
                "evaluate": {
                    "methods": {"multitask": "outputs/{x}/w.safetensors", "sr_only": "bicubic", "bicubic": "bicubic"}
                }
            },
            "evaluate.methods",
        ),
        ({"benchmark": {"methods": {"a@b": "bicubic"}}}, "benchmark.methods"),
        ({"benchmark": {"sets": {"a/b": "x"}}}, "benchmark.sets"),
        ({"report": {"min_class_images": 0}}, "report.min_class_images"),
    ],
)
def test_bad_sweep_params_fail_at_load_naming_the_key(patch: dict, key: str) -> None:
    from srseg.config import deep_merge

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_params(deep_merge(_raw(), patch), "params.yaml")


def test_no_benchmark_set_is_an_error() -> None:
    raw = _raw()
    raw["benchmark"]["sets"] = {}
    with pytest.raises(ConfigError, match=r"benchmark\.sets.*at least one"):
        parse_params(raw, "params.yaml")


def test_the_exported_model_is_the_first_seeds() -> None:
    from srseg.config import deep_merge

    params = load_params(REPO / "params.yaml")
    assert (
        params.export.weights
        == f"{seed_run_dir(params.train.output_dir, params.train.seeds[0])}/gan/selected.safetensors"
    )
    with pytest.raises(ConfigError, match=r"first of train.seeds \[2, 0\]"):
        parse_params(deep_merge(_raw(), {"train": {"seeds": [2, 0]}}), "params.yaml")
    moved = parse_params(
        deep_merge(
            _raw(), {"train": {"seeds": [2, 0]}, "export": {"weights": "outputs/train/seed2/gan/selected.safetensors"}}
        )
    )
    assert moved.train.seeds == (2, 0)
    assert (
        parse_params(deep_merge(_raw(), {"export": {"weights": "elsewhere/w.safetensors"}})).export.weights
        == "elsewhere/w.safetensors"
    )

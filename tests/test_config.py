"""params.yaml is read into typed sections; bad input fails with the key named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from srseg.config import ConfigError, Params, load_params
from srseg.profiles import use_profile

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def params_copy(tmp_path: Path) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    return tmp_path / "params.yaml"


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_repo_params_load_as_demo_profile() -> None:
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.profile == "demo"
    assert params.download.mode == "subset"
    assert params.degrade.scale == 4
    assert params.degrade.high_order.jpeg_quality == (30, 95)


def test_every_profile_validates() -> None:
    for name in ("demo", "paper"):
        params = load_params(REPO / "params.yaml", profile=name)
        assert params.profile == name
    assert load_params(REPO / "params.yaml", profile="paper").download.mirror is None


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "params.yaml", {"download": {"subset_sise": 3}})
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert str(path) in message and "download.subset_sise" in message


def test_out_of_range_and_wrong_choice_name_allowed_values(tmp_path: Path) -> None:
    path = _write(tmp_path / "params.yaml", {"degrade": {"scale": 5, "method": "nearest"}})
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert "degrade.scale" in message and "2, 3 or 4" in message
    assert "degrade.method" in message and "'bicubic' or 'highorder'" in message


def test_wrong_type_and_inverted_range(tmp_path: Path) -> None:
    path = _write(tmp_path / "params.yaml", {"download": {"subset_size": "many"}})
    with pytest.raises(ConfigError, match=r"download.subset_size"):
        load_params(path)
    path = _write(tmp_path / "params.yaml", {"degrade": {"high_order": {"noise_sigma": [30, 1]}}})
    with pytest.raises(ConfigError, match=r"noise_sigma: lower bound 30.0 is above upper bound 1.0"):
        load_params(path)


def test_missing_file_and_unknown_profile(tmp_path: Path, params_copy: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"profile 'huge'.*available: cpu, demo, paper"):
        load_params(params_copy, profile="huge")


def test_use_profile_rewrites_params_and_keeps_comments(params_copy: Path) -> None:
    params = use_profile(params_copy, "paper")
    assert params.download.mode == "full"
    text = params_copy.read_text()
    assert "# srseg parameters" in text and "profile: paper" in text
    assert load_params(params_copy).download.mirror is None
    use_profile(params_copy, "demo")
    assert load_params(params_copy) == load_params(REPO / "params.yaml")


def test_set_overrides_are_validated() -> None:
    from srseg.config import with_overrides

    params = load_params(REPO / "params.yaml")
    ablation = with_overrides(params, ["train.loss.lambda_seg=0", "train.output_dir=outputs/ablation"])
    assert ablation.train.loss.lambda_seg == 0 and ablation.train.output_dir == "outputs/ablation"
    assert params.train.loss.lambda_seg != 0  # the original is untouched
    with pytest.raises(ConfigError, match=r"train.loss.lambda_seg"):
        with_overrides(params, ["train.loss.lambda_seg=-1"])
    with pytest.raises(ConfigError, match=r"train.nonsense"):
        with_overrides(params, ["train.nonsense=1"])
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        with_overrides(params, ["lambda"])


def test_contradictory_lr_source_is_refused_naming_both_keys(tmp_path: Path) -> None:
    """High-order LR cannot come from the GPU path (it synthesises bicubic LR only)."""
    path = _write(tmp_path / "params.yaml", {"degrade": {"method": "highorder"}, "train": {"lr_source": "gpu"}})
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert "degrade.method=highorder" in str(err.value) and "train.lr_source=gpu" in str(err.value)
    ok = _write(tmp_path / "ok.yaml", {"degrade": {"method": "highorder"}, "train": {"lr_source": "precomputed"}})
    assert load_params(ok).train.lr_source == "precomputed"


def test_gan_stage_may_not_ship_its_max_psnr_weights(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "params.yaml",
        {
            "train": {
                "gan_stage": {
                    "iterations": 10,
                    "lr": 1e-4,
                    "val_every": 5,
                    "checkpoint_every": 5,
                    "select": "max_psnr_y",
                }
            }
        },
    )
    with pytest.raises(ConfigError, match=r"gan_stage.select: max_psnr_y"):
        load_params(path)
    demo = load_params(REPO / "params.yaml")
    assert demo.train.gan_stage.select == "auto" and demo.train.psnr_stage.select == "auto"


def test_demo_and_paper_differ_where_the_readme_says() -> None:
    demo, paper = (load_params(REPO / "params.yaml", profile=name) for name in ("demo", "paper"))
    assert demo.train.generator.global_residual == "bicubic" and paper.train.generator.global_residual == "none"
    assert demo.train.class_map == "coarse8" and paper.train.class_map == "fine171"
    assert demo.train.loss.vgg_weights == "none" and paper.train.loss.vgg_weights == "auto"
    assert demo.promote.min_gain_over_bicubic_db == paper.promote.min_gain_over_bicubic_db == 0.1


def test_multiscale_copies_need_factors_and_lr_made_in_the_step() -> None:
    from srseg.config import with_overrides

    params = load_params(REPO / "params.yaml")
    assert with_overrides(params, ["train.hr_scales=[1.0,0.7]"]).train.hr_scales == (1.0, 0.7)
    with pytest.raises(ConfigError, match=r"hr_scales .*\(0, 1\]"):
        with_overrides(params, ["train.hr_scales=[1.0,2.0]"])
    with pytest.raises(ConfigError, match=r"hr_scales .*lr_source gpu"):
        with_overrides(params, ["train.hr_scales=[1.0,0.5]", "train.lr_source=precomputed"])

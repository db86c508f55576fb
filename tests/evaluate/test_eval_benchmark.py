"""Standard SR benchmarks on the real Set5/Set14: the bicubic row reproduces the published numbers,
the set's own LR images are used when it ships them, seeds of a method aggregate with a CI over
seeds, and bad set folders fail naming the path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srseg.evaluate.benchmark import BenchmarkError, benchmark, benchmark_markdown, find_set, load_results
from srseg.fileio import read_json


@pytest.fixture(scope="module")
def bicubic_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    sets = {"set5": shared_data / "set5", "set14": shared_data / "set14"}
    return benchmark({"bicubic": "bicubic"}, sets, 4, out, bootstrap=0, device="cpu"), out


def test_bicubic_reproduces_the_published_set5_x4_values(bicubic_run: tuple[dict, Path]) -> None:
    result, out = bicubic_run
    set5 = result["sets"]["set5"]["methods"]["bicubic"]
    assert set5["psnr_y"]["mean"] == pytest.approx(28.42, abs=0.01)  # published: 28.42 dB / 0.8104
    assert set5["ssim_y"]["mean"] == pytest.approx(0.8104, abs=0.001)
    assert result["sets"]["set5"]["images"] == 5 and result["sets"]["set14"]["images"] == 14
    assert result["sets"]["set5"]["lr"] == "LR_bicubic/X4 (the set's own)"
    written = read_json(out / "set5" / "benchmark.json")  # per image too, the DVC metrics file per set
    assert set(written["per_image"]) == {"baby", "bird", "butterfly", "head", "woman"}
    assert np.mean([v["bicubic"]["psnr_y"] for v in written["per_image"].values()]) == pytest.approx(
        set5["psnr_y"]["mean"]
    )
    assert read_json(out / "set14" / "metrics.json")["methods"]["bicubic"]["psnr_y"]["mean"] == pytest.approx(
        26.09, abs=0.01
    )
    table = benchmark_markdown(load_results(out, ["set5", "set14"]))
    assert "| bicubic | 1 | 28.42 | 0.8102 | 26.09 | 0.7042 |" in table and "set5 (5) psnr_y" in table


def test_the_sets_own_lr_is_used_when_present(tmp_path: Path, set5: Path) -> None:
    """Without LR_bicubic/X4 the LR is MATLAB bicubic of HR (the shipped LR is exactly that, so the
    numbers agree); with a planted, different LR folder the numbers follow that folder."""
    own = benchmark({"bicubic": "bicubic"}, {"set5": set5}, 4, tmp_path / "own", bootstrap=0, device="cpu")
    hr_only = tmp_path / "hr_only"
    shutil.copytree(set5 / "HR", hr_only / "HR")
    made = benchmark({"bicubic": "bicubic"}, {"set5": hr_only}, 4, tmp_path / "made", bootstrap=0, device="cpu")
    assert made["sets"]["set5"]["lr"] == "MATLAB bicubic of HR"
    assert made["sets"]["set5"]["methods"]["bicubic"]["psnr_y"]["mean"] == pytest.approx(
        own["sets"]["set5"]["methods"]["bicubic"]["psnr_y"]["mean"], abs=1e-9
    )
    planted = tmp_path / "planted"
    shutil.copytree(set5, planted)
    for lr in (planted / "LR_bicubic" / "X4").glob("*.png"):
        pixels = np.asarray(Image.open(lr).convert("RGB"))
        Image.fromarray(np.roll(pixels, 1, axis=1)).save(lr)  # one LR pixel to the right
    shifted = benchmark({"bicubic": "bicubic"}, {"set5": planted}, 4, tmp_path / "shifted", bootstrap=0, device="cpu")
    assert (
        shifted["sets"]["set5"]["methods"]["bicubic"]["psnr_y"]["mean"]
        < made["sets"]["set5"]["methods"]["bicubic"]["psnr_y"]["mean"] - 1.0
    )


def _tiny(path: Path, seed: int) -> str:
    import torch

    from srseg.models.generator import MultiTaskSRNet
    from srseg.models.io import save_generator

    torch.manual_seed(seed)
    net = MultiTaskSRNet(scale=4, num_features=4, num_blocks=1, num_classes=0, global_residual="bicubic").eval()
    with torch.no_grad():
        net.sr_head.weight.normal_(0.0, 0.01)  # a small, seed-dependent residual on top of bicubic
    save_generator(net, path)
    return str(path)


def test_seeds_of_a_method_aggregate_with_a_ci_over_seeds(tmp_path: Path, set5: Path) -> None:
    seeds = (0, 1, 2)
    methods = {f"tiny@seed{s}": _tiny(tmp_path / f"seed{s}" / "w.safetensors", s) for s in seeds}
    methods["bicubic"] = "bicubic"
    groups = {"tiny": [f"tiny@seed{s}" for s in seeds], "bicubic": ["bicubic"]}
    result = benchmark(methods, {"set5": set5}, 4, tmp_path / "out", groups=groups, bootstrap=0, device="cpu")
    entry = result["sets"]["set5"]["methods"]["tiny"]
    alone = {
        s: benchmark(
            {"m": methods[f"tiny@seed{s}"]}, {"set5": set5}, 4, tmp_path / f"alone{s}", bootstrap=0, device="cpu"
        )
        for s in seeds
    }
    per_seed = [alone[s]["sets"]["set5"]["methods"]["m"]["psnr_y"]["mean"] for s in seeds]
    assert entry["psnr_y"]["per_seed"] == pytest.approx(per_seed) and entry["psnr_y"]["seeds"] == 3
    assert entry["psnr_y"]["mean"] == pytest.approx(np.mean(per_seed))
    lo, hi = entry["psnr_y"]["ci"]
    assert lo < entry["psnr_y"]["mean"] < hi  # Student t over the 3 per-seed means
    bicubic = result["sets"]["set5"]["methods"]["bicubic"]["psnr_y"]["mean"]
    assert entry["psnr_y_gain_over_bicubic"]["per_seed"] == pytest.approx([v - bicubic for v in per_seed])
    assert "| tiny - bicubic | 3 |" in benchmark_markdown(result)
    two = benchmark(
        {k: methods[k] for k in ("tiny@seed0", "tiny@seed1")},
        {"set5": set5},
        4,
        tmp_path / "two",
        groups={"tiny": ["tiny@seed0", "tiny@seed1"]},
        bootstrap=0,
        device="cpu",
    )
    assert two["sets"]["set5"]["methods"]["tiny"]["psnr_y"]["ci"] == [None, None]  # 2 seeds: no interval


def test_bad_set_folders_fail_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match=r"nowhere/HR is not a folder.*benchmark\.sets\.urban100"):
        find_set("urban100", tmp_path / "nowhere", 4)
    (tmp_path / "empty" / "HR").mkdir(parents=True)
    with pytest.raises(BenchmarkError, match="no images in"):
        find_set("empty", tmp_path / "empty", 4)
    with pytest.raises(BenchmarkError, match=r"set9/benchmark.json not found"):
        load_results(tmp_path, ["set9"])

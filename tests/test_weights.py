"""srseg.weights: which pretrained files the params need, checked before anything trains (never a
download): the paper profile's PSNR stage refuses to start without the GAN stage's VGG19 and says
where the file goes; corrupt files are caught by torchvision's file-name hash; staging copies
exactly the files the image or the volume needs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from srseg.cli import main
from srseg.config import load_params
from srseg.models.vgg import MissingWeightsError
from srseg.weights import check_weights, required_weights, stage_weights

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache (TORCH_HOME), whatever this machine has cached."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_which_files_each_profile_needs(empty_hub: Path) -> None:
    assert (
        required_weights(load_params(REPO / "params.yaml", profile="demo"), "pipeline") == []
    )  # vgg none, gate psnr only
    paper = load_params(REPO / "params.yaml", profile="paper")
    (vgg,) = required_weights(paper, "train")  # training: VGG19 only, also for the PSNR stage
    assert vgg.path == empty_hub / "vgg19-dcbb9e9d.pth" and vgg.source.startswith("https://download.pytorch.org/")
    files = required_weights(paper, "pipeline")  # + LPIPS for evaluation and the promotion gate
    assert [f.path.name for f in files] == ["vgg19-dcbb9e9d.pth", "alexnet-owt-7be5be79.pth", "alex.pth"]
    no_perceptual = paper.model_copy(
        update={
            "train": paper.train.model_copy(
                update={"loss": paper.train.loss.model_copy(update={"perceptual_weight": 0.0})}
            )
        }
    )
    assert [f.path.name for f in required_weights(no_perceptual, "train")] == []


def test_paper_psnr_stage_refuses_to_start_without_vgg19(
    empty_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The acceptance line: exit 2, the file and where to put it, before any data is read."""
    monkeypatch.chdir(tmp_path)  # no dataset here: the check must come first
    code = main(["--params", str(REPO / "params.yaml"), "--profile", "paper", "train", "--stage", "psnr"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"put the file at {empty_hub / 'vgg19-dcbb9e9d.pth'}" in err
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in err and "make image WEIGHTS=" in err
    assert "Traceback" not in err and not (tmp_path / "outputs").exists()


def test_present_files_pass_and_corrupt_ones_are_named(empty_hub: Path, tmp_path: Path) -> None:
    paper = load_params(REPO / "params.yaml", profile="paper")
    empty_hub.mkdir(parents=True)
    (empty_hub / "vgg19-dcbb9e9d.pth").write_bytes(b"truncated download")
    with pytest.raises(MissingWeightsError, match=r"vgg19-dcbb9e9d\.pth is corrupt or truncated"):
        check_weights(paper, "train")
    local = tmp_path / "my-vgg.pth"  # an explicit path: used as given (no hash in its name)
    local.write_bytes(b"weights")
    explicit = paper.model_copy(
        update={
            "train": paper.train.model_copy(
                update={"loss": paper.train.loss.model_copy(update={"vgg_weights": str(local)})}
            )
        }
    )
    assert [f.path for f in check_weights(explicit, "train")] == [local]
    with pytest.raises(MissingWeightsError) as missing:  # the pipeline scope names every missing file at once
        check_weights(explicit, "pipeline")
    assert "alexnet-owt-7be5be79.pth" in str(missing.value) and str(local) not in str(missing.value)


def _named_by_hash(folder: Path, stem: str, content: bytes) -> Path:
    """A file named like torchvision's (``<stem>-<sha256 prefix>.pth``) that matches its name."""
    path = folder / f"{stem}-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    path.write_bytes(content)
    return path


def test_stage_copies_the_files_for_the_image_or_the_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "downloads"
    source.mkdir()
    vgg = _named_by_hash(source, "vgg19", b"vgg weights")
    alex = _named_by_hash(source, "alexnet-owt", b"alexnet weights")
    # the torchvision names of this test's files (the real ones cannot be made without the real weights)
    monkeypatch.setattr(
        "srseg.models.vgg.imagenet_vgg19_weights_location", lambda: (Path("/hub") / vgg.name, "https://x/vgg")
    )
    monkeypatch.setattr("srseg.evaluate.lpips.torchvision_weights_file", lambda net: (alex.name, "https://x/alex"))
    staged = stage_weights(tmp_path / "weights", source)
    assert [p.name for p in staged] == [vgg.name, alex.name, "alex.pth"]  # + the lpips package's linear layers
    assert (tmp_path / "weights" / vgg.name).read_bytes() == b"vgg weights"
    (source / alex.name).write_bytes(b"half a file")
    with pytest.raises(MissingWeightsError, match="corrupt or truncated"):
        stage_weights(tmp_path / "again", source)
    shutil.rmtree(source)
    with pytest.raises(MissingWeightsError, match="missing"):
        stage_weights(tmp_path / "again", source)


def test_cli_check(empty_hub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--params", str(REPO / "params.yaml"), "weights", "check"]) == 0
    assert "need no pretrained weights" in capsys.readouterr().out
    assert main(["--params", str(REPO / "params.yaml"), "--profile", "paper", "weights", "check"]) == 2
    assert "alexnet-owt-7be5be79.pth" in capsys.readouterr().err

"""Study bundle: deterministic for a seed, balanced sides, same crop window for every method,
attention checks with known answers, checksums verified, clear errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from srseg.imageio import load_rgb
from srseg.study.bundle import DEGRADED, MANIFEST, REFERENCE, build_study, load_study, texture_window

METHODS = ("bicubic", "sr_only", "multitask")


def _methods(folders: dict[str, Path], names=METHODS) -> dict[str, Path]:
    return {name: folders[name] for name in names}


def test_same_seed_same_bundle_other_seed_other_sample(method_folders: dict[str, Path], tmp_path: Path) -> None:
    kwargs = dict(hr_dir=method_folders["hr"], num_images=4, crop_size=64, attention_checks=2)
    a = build_study(_methods(method_folders), tmp_path / "a", seed=7, **kwargs)
    b = build_study(_methods(method_folders), tmp_path / "b", seed=7, **kwargs)
    c = build_study(_methods(method_folders), tmp_path / "c", seed=8, **kwargs)
    assert (a / MANIFEST).read_bytes() == (b / MANIFEST).read_bytes()
    assert sorted(p.name for p in (a / "images").iterdir()) == sorted(p.name for p in (b / "images").iterdir())
    pairs = lambda root: [
        (p["stem"], p["left"]["method"], p["right"]["method"])
        for p in json.loads((root / MANIFEST).read_text())["pairs"]
    ]
    assert pairs(a) != pairs(c)
    assert not list(tmp_path.glob(".*tmp")), "no temp folders left behind"


def test_pairs_sides_balanced_and_complete(study_bundle: Path) -> None:
    study = load_study(study_bundle)
    regular = [p for p in study.pairs if not p.attention_check]
    assert len(regular) == 6 * 3 and len(study.pairs) == 6 * 3 + 4
    for a, b in study.method_pairs:
        mine = [p for p in regular if {p.left.method, p.right.method} == {a, b}]
        assert len(mine) == 6 and len({p.stem for p in mine}) == 6
        left_a = sum(p.left.method == a for p in mine)
        assert abs(left_a - (len(mine) - left_a)) <= 1
    assert [p.id for p in study.pairs] == [f"p{i:04d}" for i in range(len(study.pairs))]
    # the order is shuffled: attention checks are not all at the end
    assert any(p.attention_check for p in study.pairs[: len(study.pairs) - 4])


def test_crops_are_the_same_texture_window_for_every_method(
    study_bundle: Path, method_folders: dict[str, Path]
) -> None:
    study = load_study(study_bundle)
    for image in study.manifest["images"]:
        x, y, w, h = image["crop"]
        hr = load_rgb(method_folders["hr"] / f"{image['stem']}.png")
        luma = hr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        assert texture_window(luma, 64)[:2] == (x, y)
        for name in (*METHODS, REFERENCE):
            source = load_rgb(method_folders["hr" if name == REFERENCE else name] / f"{image['stem']}.png")
            shown = load_rgb(study.path(image["files"][name]))
            assert shown.shape == (64, 64, 3)
            np.testing.assert_array_equal(shown, source[y : y + h, x : x + w])
    # file names are content hashes: they reveal no method
    assert all(name.startswith("images/") and not any(m in name for m in METHODS) for name in study.manifest["files"])


def test_attention_checks_have_known_answers(study_bundle: Path) -> None:
    study = load_study(study_bundle)
    checks = [p for p in study.pairs if p.attention_check]
    assert len(checks) == 4
    assert Counter(p.left.method for p in checks) == {REFERENCE: 2, DEGRADED: 2}
    for pair in checks:
        assert pair.expected == REFERENCE and {pair.left.method, pair.right.method} == {REFERENCE, DEGRADED}
        sharp = load_rgb(study.path(pair.file("left" if pair.left.method == REFERENCE else "right"))).astype(float)
        blurred = load_rgb(study.path(pair.file("left" if pair.left.method == DEGRADED else "right"))).astype(float)
        energy = lambda a: float((np.diff(a, axis=1) ** 2).mean())
        assert energy(blurred) < 0.3 * energy(sharp)
    assert study.manifest["attention"]["count"] == 4 and "downscaled by 8" in study.manifest["attention"]["rule"]
    assert study.manifest["seed"] == 0 and "gradient energy" in study.manifest["crop_rule"]


def test_reference_shown_when_asked(method_folders: dict[str, Path], tmp_path: Path) -> None:
    bundle = build_study(
        _methods(method_folders, ("bicubic", "blurry")),
        tmp_path / "s",
        hr_dir=method_folders["hr"],
        num_images=2,
        crop_size=48,
        attention_checks=1,
        seed=1,
        show_reference=True,
    )
    study = load_study(bundle)
    assert study.show_reference and all(p.reference for p in study.pairs)
    assert len(study.pairs) == 2 + 1


def test_tampered_file_is_detected(method_folders: dict[str, Path], tmp_path: Path) -> None:
    bundle = build_study(
        _methods(method_folders, ("bicubic", "blurry")),
        tmp_path / "s",
        num_images=1,
        crop_size=32,
        attention_checks=0,
        seed=0,
    )
    victim = next((bundle / "images").iterdir())
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(ValueError, match=victim.name):
        load_study(bundle)


def test_rebuild_replaces_bundle_but_never_a_foreign_folder(method_folders: dict[str, Path], tmp_path: Path) -> None:
    methods = _methods(method_folders, ("bicubic", "blurry"))
    out = build_study(methods, tmp_path / "s", num_images=1, crop_size=32, attention_checks=0, seed=0)
    build_study(methods, out, num_images=2, crop_size=32, attention_checks=0, seed=0)
    assert len(load_study(out).pairs) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a study bundle"):
        build_study(methods, foreign, num_images=1, crop_size=32, attention_checks=0, seed=0)
    assert (foreign / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pairs": [("bicubic", "nope")]}, "unknown method 'nope'"),
        ({"pairs": [("bicubic", "bicubic")]}, "with itself"),
        ({"show_reference": True}, "show_reference=True needs hr_dir"),
        ({"num_images": 99}, "num_images=99"),
        ({"crop_size": 8}, "crop_size must be >= 16"),
        ({"crop_size": 5000}, "at least 5000x5000"),
        ({"attention_checks": -1}, "attention_checks must be >= 0, got -1"),
    ],
)
def test_bad_arguments_name_the_value(
    method_folders: dict[str, Path], tmp_path: Path, kwargs: dict, message: str
) -> None:
    base = dict(num_images=1, crop_size=32, attention_checks=0, seed=0)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_study(_methods(method_folders, ("bicubic", "blurry")), tmp_path / "s", **{**base, **kwargs})


def test_bad_method_names_and_folders(method_folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'@hr'.*reserved"):
        build_study(
            {"@hr": method_folders["hr"], "b": method_folders["bicubic"]}, tmp_path / "s", num_images=1, crop_size=32
        )
    with pytest.raises(FileNotFoundError, match="method 'b'"):
        build_study({"a": method_folders["hr"], "b": tmp_path / "missing"}, tmp_path / "s", num_images=1, crop_size=32)
    with pytest.raises(ValueError, match="at least two methods"):
        build_study({"a": method_folders["hr"]}, tmp_path / "s", num_images=1, crop_size=32)


def test_bad_manifests_name_the_file(study_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a study bundle"):
        load_study(tmp_path)
    (tmp_path / MANIFEST).write_text("{oops")
    with pytest.raises(ValueError, match="study.json: not valid JSON"):
        load_study(tmp_path)
    (tmp_path / MANIFEST).write_text('{"format": "srseg-study/1"}')
    with pytest.raises(ValueError, match="study.json: malformed manifest .KeyError"):
        load_study(tmp_path)
    manifest = json.loads((study_bundle / MANIFEST).read_text())
    manifest["pairs"][0]["left"]["file"] = "../../etc/passwd"
    manifest["files"]["../../etc/passwd"] = "0" * 64
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="'../../etc/passwd' is not inside the bundle"):
        load_study(tmp_path, verify=False)

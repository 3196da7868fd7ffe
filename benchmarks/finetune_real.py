"""Fine-tuning vs training from scratch on real images of another domain.

The real data: scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``:
1,797 real 8x8 grayscale scans, 10 classes; offline, ``pip install -e ".[bench]"``), written
as an ImageFolder of PNGs upscaled (bicubic) to ``--size`` px, a stratified 80/20 train/val
split fixed by ``--split-seed``. The source model: the ``demo`` preset (sknet_tiny on the
built-in synthetic shapes, 48 px), trained here unless ``--source RUN`` names a run.

Arms, each for ``--epochs`` epochs and every seed of ``--seeds``:

* ``finetune``: the ``finetune`` preset from the source run's weights (``--init RUN``);
* ``finetune recipe, scratch``: the same recipe from random weights (same model and input);
* ``demo recipe, scratch``: the ``demo`` preset's recipe from random weights.

All runs use one intra-op thread and no loader workers, one after another. Results:
``OUT/results.json`` and ``OUT/results.md`` (a markdown table of mean ± std validation accuracy
and wall time per run)::

    PYTHONPATH=src python benchmarks/finetune_real.py --out /tmp/ft_bench --epochs 6 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from sknet.train import load_preset, train

SIZE = 48


def write_digits(
    root: Path, size: int, split_seed: int = 0, train_per_class: int | None = None
) -> dict[str, int]:
    """scikit-learn's digits as ``root/{train,val}/<digit>/*.png``; returns the split sizes.

    ``train_per_class`` keeps only that many training images per class (a small folder, the
    case fine-tuning is for); the validation split is the same 20% either way."""
    import numpy as np
    from PIL import Image
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
            Image.fromarray(img, "L").resize((size, size), Image.BICUBIC).convert("RGB").save(
                d / f"{i:04d}.png"
            )
            counts[split] += 1
    return counts


def common(seed: int, epochs: int) -> dict[str, Any]:
    return dict(
        seed=seed, epochs=epochs, threads=1, workers=0, tensorboard=False, checkpoint_every=0
    )


def run_arm(arm: str, data: Path, source: Path, out: Path, seed: int, epochs: int) -> dict:
    same_input = dict(image_size=SIZE, mean=[0.5] * 3, std=[0.5] * 3)  # the demo model's input
    if arm == "finetune":
        cfg = load_preset("finetune", init=str(source), data_dir=str(data), **common(seed, epochs))
    elif arm == "finetune recipe, scratch":
        cfg = load_preset(
            "finetune", model="sknet_tiny", data_dir=str(data), **same_input, **common(seed, epochs)
        )
    else:
        cfg = load_preset(
            "demo", data="imagefolder", data_dir=str(data), **same_input, **common(seed, epochs)
        )
    t0 = time.perf_counter()
    summary = train(cfg, out)
    return {
        "arm": arm,
        "seed": seed,
        "val_acc": float(summary["val_acc"]),
        "seconds": time.perf_counter() - t0,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| arm | val accuracy (mean ± std) | runs | wall time per run (s) |",
        "|---|---|---|---|",
    ]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        acc = [r["val_acc"] for r in rows if r["arm"] == arm]
        sec = [r["seconds"] for r in rows if r["arm"] == arm]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(
            f"| {arm} | {statistics.mean(acc):.2f}% ± {sd:.2f} | {len(acc)} | "
            f"{statistics.mean(sec):.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--source", type=Path, default=None, help="a demo run (default: train one)")
    ap.add_argument("--source-epochs", type=int, default=4)
    ap.add_argument("--source-samples", type=int, default=3000)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument(
        "--train-per-class",
        type=int,
        default=None,
        help="keep this many training images per class (default: all, about 144)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "digits"
    if not (data / "train").is_dir():
        counts = write_digits(data, SIZE, args.split_seed, args.train_per_class)
        print(f"digits: {counts['train']} train / {counts['val']} val images at {SIZE} px")
    source = args.source
    if source is None:
        source = out / "source_demo"
        if not (source / "model.safetensors").is_file():
            t0 = time.perf_counter()
            s = train(
                load_preset(
                    "demo",
                    epochs=args.source_epochs,
                    num_samples=args.source_samples,
                    tensorboard=False,
                    threads=1,
                ),
                source,
            )
            sec = time.perf_counter() - t0
            print(
                f"source (demo preset, {args.source_epochs} epochs x {args.source_samples} "
                f"shapes): val acc {s['val_acc']:.2f}%, {sec:.0f} s"
            )
    rows: list[dict] = []
    arms = ("finetune", "finetune recipe, scratch", "demo recipe, scratch")
    for seed in args.seeds:
        for i, arm in enumerate(arms):
            run = out / "runs" / f"{i}_s{seed}"
            r = run_arm(arm, data, source, run, seed, args.epochs)
            rows.append(r)
            print(f"{arm} seed {seed}: val acc {r['val_acc']:.2f}% in {r['seconds']:.0f} s")
            (out / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    md = table(rows)
    header = (
        f"Digits (scikit-learn, real scans) at {SIZE} px, "
        f"{args.train_per_class or 'all'} training images per class, {args.epochs} epochs, seeds "
        f"{args.seeds}; source: {source}; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 thread per run\n\n"
    )
    (out / "results.md").write_text(header + md + "\n", encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Throughput of SKNet-50 vs ResNeXt-50, sknet vs timm, and the project's goals: ``python
benchmarks/throughput.py``.

The measurement is :mod:`sknet.benchmark` (the engine of ``sknet bench``, whose ``--help``
details the method). Defaults: CPU, 2 torch threads, batch 16 at 224x224; inference fp32 (NCHW
and channels_last), inference bf16 autocast (channels_last), training fp32 (NCHW and
channels_last); ``--full`` for every combination, ``--compile`` to add torch.compile'd variants
(slow to compile on a small CPU). Prints the markdown report and, below it, where the goals of
``benchmarks/README.md`` stand (:data:`GOALS`; the goals are the project's, not the library's).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from sknet.benchmark import (
    DEFAULT_MODELS,
    BenchConfig,
    Result,
    best_of,
    best_round_ratio,
    paired_ratio,
    parse_groups,
    run_benchmark,
)

SK, RX, SK_TIMM = "sknet50", "resnext50_32x4d", "timm:skresnext50_32x4d"
SK_ANY, RX_ANY = (SK, SK + "+deploy"), (RX, RX + "+deploy")


@dataclass(frozen=True)
class Goal:
    """Ours over the reference (best setting of each) must reach ``minimum``."""

    name: str
    ours: tuple[str, ...]
    reference: tuple[str, ...]
    minimum: float
    group: tuple[str, str]  # (mode, dtype) of ours
    reference_group: tuple[str, str] | None = None  # default: the same group


# CPU goals at batch 16, 224 px, 2 threads (benchmarks/README.md, "Goals").
GOALS: tuple[Goal, ...] = (
    Goal("fp32 inference: sknet50 / timm SK", SK_ANY, (SK_TIMM,), 1.7, ("infer", "fp32")),
    Goal("fp32 inference: sknet50 / own ResNeXt", SK_ANY, RX_ANY, 0.93, ("infer", "fp32")),
    Goal("bf16 inference: sknet50 / own ResNeXt bf16", SK_ANY, RX_ANY, 0.90, ("infer", "bf16")),
    Goal(
        "bf16 inference: sknet50 / timm SK fp32",
        SK_ANY,
        (SK_TIMM,),
        3.0,
        ("infer", "bf16"),
        ("infer", "fp32"),
    ),
    Goal("fp32 training: sknet50 / timm SK", (SK,), (SK_TIMM,), 1.4, ("train", "fp32")),
    Goal("fp32 training: sknet50 / own ResNeXt", (SK,), (RX,), 0.90, ("train", "fp32")),
)


def goals_table(results: Sequence[Result]) -> list[str]:
    """Where each goal stands: the best setting of each side (eager, or compiled where timed)."""

    def grp(key: tuple[str, str]) -> list[Result]:
        return [r for r in results if (r.mode, r.dtype) == key]

    lines = [
        "| goal (best setting of each) | ours | reference | ratio (best rounds) | goal | met |",
        "|---|---|---|---:|---:|---|",
    ]
    for g in GOALS:
        a = best_of(grp(g.group), g.ours)
        b = best_of(grp(g.reference_group or g.group), g.reference)
        if a is None or b is None:
            continue
        ratio = paired_ratio(a, b)
        lines.append(
            f"| {g.name} | {a.contender} {a.layout} | {b.contender} {b.layout} | "
            f"{ratio:.3f}x ({best_round_ratio(a, b):.3f}x) | >= {g.minimum}x | "
            f"{'yes' if ratio >= g.minimum else 'no'} |"
        )
    a, b = best_of(grp(("train", "fp32")), (SK,)), best_of(grp(("train", "fp32")), (SK_TIMM,))
    if a and b and a.peak_mem_mib is not None and b.peak_mem_mib is not None:
        lines.append(
            f"| fp32 training peak memory: sknet50 <= timm SK | {a.peak_mem_mib:.0f} MiB "
            f"({a.layout}) | {b.peak_mem_mib:.0f} MiB ({b.layout}) | - | <= | "
            f"{'yes' if a.peak_mem_mib <= b.peak_mem_mib else 'no'} |"
        )
    return lines if len(lines) > 2 else []


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="benchmarks/throughput.py",
        description="SKNet-50 vs ResNeXt-50, sknet vs timm, and the project's goals "
        "(options as in `sknet bench`, which has more)",
    )
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--modes", default=None, help="infer,train")
    p.add_argument("--dtypes", default=None, help="fp32,bf16 (CUDA also fp16)")
    p.add_argument("--layouts", default=None, help="nchw,cl")
    p.add_argument("--full", action="store_true", help="every mode x dtype x layout")
    p.add_argument("--compile", action="store_true", help="also torch.compile'd variants")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--batch-size", type=int, default=None, help="16 (CPU), 64 (CUDA)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--markdown", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    try:
        cfg = BenchConfig(
            models=tuple(c.strip() for c in args.models.split(",") if c.strip()),
            compile=args.compile,
            batch_size=args.batch_size,
            device=args.device,
            threads=args.threads,
            rounds=args.rounds,
        )
        device = cfg.resolve_device()
        cfg.groups = parse_groups(device.type, args.modes, args.dtypes, args.layouts, args.full)
        run = run_benchmark(cfg)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = run.markdown()
    goals = goals_table(run.results) if device.type == "cpu" else []
    if goals:
        report += "\n\n### Goals\n\n" + "\n".join(goals)
    print(report)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``sknet bench``: throughput of SKNet-50 against ResNeXt-50 and timm's pair, side by side.

A thin command over :mod:`sknet.benchmark` (the timing engine, the CPU memory probe and the
report): it parses the options, runs :func:`sknet.benchmark.run_benchmark`, prints the markdown
report (``--json``: the raw results as JSON instead) and, with ``--out DIR``, writes both to
``DIR/bench.md`` and ``DIR/bench.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sknet._files import atomic_write_text, check_out_arg, check_output
from sknet.benchmark import DEFAULT_MODELS, BenchConfig, parse_groups, run_benchmark
from sknet.cli import DEVICE_HELP, examples

_DESCRIPTION = (
    "Throughput of sknet's SKNet-50 and ResNeXt-50 (eager and deployed) against timm's "
    "SKNet-50 and ResNeXt-50, measured side by side in one process (interleaved rounds, "
    "medians, paired ratios), with peak memory and the machine named."
)


def add_arguments(p: argparse.ArgumentParser) -> None:

    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated contenders: sknet names (suffix +deploy for the deployed form) "
        "and timm:NAME (default: %(default)s)",
    )
    p.add_argument("--modes", default=None, help="infer,train (default: see --full)")
    p.add_argument("--dtypes", default=None, help="fp32,bf16, CUDA also fp16 (default: --full)")
    p.add_argument("--layouts", default=None, help="nchw,cl; cl = channels_last (default: --full)")
    p.add_argument(
        "--full",
        action="store_true",
        help="every combination of --modes/--dtypes/--layouts (default set: inference fp32 in "
        "both layouts, inference bf16 channels_last, training fp32 in both layouts)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile'd variants (inference with inductor freezing); compiling "
        "a ResNeXt-50 on a 2-core CPU takes minutes per variant",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="images per step (default: 16 CPU, 64 CUDA)"
    )
    p.add_argument("--input-size", type=int, default=224, help="square input side")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per group (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations per variant")
    p.add_argument(
        "--memory",
        choices=["train", "all", "none"],
        default="train",
        help="which groups get a peak-memory run (CPU: one subprocess per variant; "
        "default: training groups)",
    )
    p.add_argument("--no-share-weights", action="store_true", help="skip timm -> sknet weights")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="also write DIR/bench.md (the report) and DIR/bench.json (all results)",
    )
    p.add_argument("--force", action="store_true", help="replace bench.md/bench.json in --out")
    p.add_argument("--json", action="store_true", help="print the results as JSON, not tables")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="throughput: SKNet-50 vs ResNeXt-50, sknet vs timm (interleaved, medians)",
        description=_DESCRIPTION,
        epilog=examples(
            "sknet bench                                  # the default CPU set, ~8 min",
            "sknet bench --device cuda --dtypes bf16 --layouts cl --compile --out bench/h100",
        ),
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out is not None:  # '' is an error, not "the current folder"
        args.out = Path(check_out_arg(args.out, "--out") or "")
    cfg = BenchConfig(
        models=tuple(c.strip() for c in args.models.split(",") if c.strip()),
        compile=args.compile,
        batch_size=args.batch_size,
        input_size=args.input_size,
        device=args.device,
        threads=args.threads,
        rounds=args.rounds,
        warmup=args.warmup,
        memory=args.memory,
        share_weights=not args.no_share_weights,
    )
    device = cfg.resolve_device()
    cfg.groups = parse_groups(device.type, args.modes, args.dtypes, args.layouts, args.full)
    if args.out is not None:  # checked before minutes of timing, not after
        for name in ("bench.md", "bench.json"):
            check_output(args.out / name, force=args.force, what="--out")
    result = run_benchmark(cfg)
    report = result.markdown()
    data = json.dumps(result.to_dict(), indent=2)
    print(data if args.json else report)
    if args.out is not None:
        atomic_write_text(args.out / "bench.md", report + "\n")
        atomic_write_text(args.out / "bench.json", data + "\n")
    return 0

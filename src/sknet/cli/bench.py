"""``sknet bench``: throughput of SKNet-50 against ResNeXt-50 and timm's pair, side by side.

A thin command over :mod:`sknet.benchmark` (the timing engine, the CPU memory probe and the
report): it parses the options, runs :func:`sknet.benchmark.run_benchmark`, prints the markdown
report and writes it (``--markdown``) and the raw results (``--json``) where asked.
"""

from __future__ import annotations

import argparse

_DESCRIPTION = (
    "Throughput of sknet's SKNet-50 and ResNeXt-50 (eager and deployed) against timm's "
    "SKNet-50 and ResNeXt-50, measured side by side in one process (interleaved rounds, "
    "medians, paired ratios), with peak memory and the machine named."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sknet.benchmark import DEFAULT_MODELS

    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated contenders: sknet names (suffix +deploy for the deployed form) "
        "and timm:NAME (default: %(default)s)",
    )
    p.add_argument("--modes", default=None, help="infer,train (default: see --full)")
    p.add_argument("--dtypes", default=None, help="fp32,bf16 (CUDA also fp16)")
    p.add_argument("--layouts", default=None, help="nchw,cl (cl = channels_last)")
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
    p.add_argument("--batch-size", type=int, default=None, help="default 16 (CPU), 64 (CUDA)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
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
    p.add_argument("--markdown", default=None, help="also write the tables to this file")
    p.add_argument("--json", dest="json_out", default=None, help="write all results as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="throughput: SKNet-50 vs ResNeXt-50, sknet vs timm (interleaved, medians)",
        description=_DESCRIPTION,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sknet.benchmark import BenchConfig, parse_groups, run_benchmark

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
    result = run_benchmark(cfg)
    report = result.markdown()
    print(report)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(report + "\n")
    if args.json_out:
        result.write_json(args.json_out)
    return 0

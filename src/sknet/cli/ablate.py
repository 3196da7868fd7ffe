"""``sknet ablate``: train the rows of one of the paper's ablations and tabulate them.

Every row is trained with the same preset, settings (``--set``) and seeds; the sweep folder holds
``runs/<row>/seed<k>/`` and ``table.{md,json,png,svg}``. Repeating the command reuses finished
runs and resumes an interrupted one. See :mod:`sknet.analysis.ablate` for the row definitions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sknet
from sknet._files import check_out_arg
from sknet.cli import add_progress, show_progress
from sknet.data import DATASET_NAMES, DENSE_DATASET_NAMES
from sknet.errors import ConfigError
from sknet.models import create_model
from sknet.train import load_preset, parse_set_options

# sknet.analysis.ablate (and matplotlib with it) is imported when the command runs: `sknet
# --help` and the other commands start without it.


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="train the rows of one of the paper's ablations (table6, table7, attention, "
        "baselines), or the dense study (dense), and write a table",
        description=(
            "Train every row of an ablation with the same preset, settings and seeds, then write "
            "DIR/table.md, table.json and a plot (top-1 error mean and std over seeds, params, "
            "MACs). Finished runs in DIR are reused when the command is repeated; an interrupted "
            "run resumes from its last checkpoint. Demo scale: '--preset demo' (base sknet_tiny, "
            "built-in data, CPU). The paper's setting: '--preset imagenet --data imagefolder "
            "--data-dir DIR' (base sknet50). 'dense' (beyond the paper) trains SKNet, ResNeXt, "
            "SENet and SK-sum backbones under a detector or segmenter (--preset detect-demo or "
            "segment-demo) with paired seeds and writes DIR/study.md with paired differences, "
            "95%% intervals, timings, the forced-branch test and per-object attention vs size."
        ),
        epilog=(
            "examples:\n"
            "  sknet ablate --list                      # the experiments\n"
            "  sknet ablate table7 --list               # its rows, params and MACs\n"
            "  sknet ablate table7 --out runs/table7 --seeds 0 1 --jobs 2 \\\n"
            "      --set epochs=4 --set threads=1      # the demo recipe (AdamW, lr 3e-3)\n"
            "  sknet ablate baselines --preset imagenet --data imagefolder \\\n"
            "      --data-dir /data/imagenet --out runs/table2\n"
            "  sknet ablate dense --preset detect-demo --seeds 0 1 2 3 4 --out runs/study"
        ),
    )
    p.add_argument(
        "experiment",
        nargs="?",
        metavar="EXPERIMENT",
        help="table6 | table7 | attention | baselines | dense",
    )
    p.add_argument("--out", metavar="DIR", help="sweep folder (required to train)")
    p.add_argument("--preset", default="demo", help="training preset or TOML file (default demo)")
    p.add_argument(
        "--model",
        default=None,
        metavar="BASE",
        help="base model of the rows (default: the preset's model: sknet_tiny for demo, "
        "sknet50 for imagenet, sknet29 for cifar)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="training seeds; one run per row and seed (default 0; dense: 0 1 2 3 4)",
    )
    p.add_argument(
        "--data",
        default=None,
        choices=DATASET_NAMES + DENSE_DATASET_NAMES,
        help="dataset (default: the preset's)",
    )
    p.add_argument("--data-dir", default=None, metavar="DIR", help="root folder of real data")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training setting for every row, as in 'sknet train' (repeatable), "
        "e.g. --set epochs=3 --set num_samples=4000",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="list the experiments (or, with EXPERIMENT, its rows with params and MACs) and exit",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="runs trained at the same time, each in its own process (default 1); a run "
        "without --set threads=K then gets cores/N threads",
    )
    p.add_argument("--quiet", action="store_true", help="no per-run progress from the trainer")
    add_progress(p, "per-run progress bar")
    p.set_defaults(func=run)


def _list(args: argparse.Namespace) -> int:
    from sknet.analysis.ablate import EXPERIMENTS, experiment_rows

    if not args.experiment:
        for e in EXPERIMENTS.values():
            print(f"{e.name:<10} {e.title}")
        return 0
    base = args.model or load_preset(args.preset).model

    print(f"{args.experiment} on base {base}:")
    for row in experiment_rows(args.experiment, base):
        model = create_model(row.model, **row.overrides)
        c = sknet.complexity(model)
        print(
            f"  {row.name:<16} {row.model:<16} {c.params / 1e6:8.3f}M params "
            f"{c.macs / 1e6:9.2f}M MACs  {row.description}"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    from sknet.analysis.ablate import get_experiment, run_ablation

    if args.experiment == "dense":
        return _run_dense(args)
    if args.experiment is not None:
        get_experiment(args.experiment)  # unknown name -> clear error
    if args.list:
        return _list(args)
    if not args.experiment:
        raise ConfigError("name an experiment: table6, table7, attention or baselines (--list)")
    if args.out is None:
        raise ConfigError("--out DIR is required (the sweep folder)")

    args.out = Path(check_out_arg(args.out, "--out") or "")  # '' is an error, not "here"
    settings = parse_set_options(args.sets)
    if args.data is not None:
        settings["data"] = args.data
    if args.data_dir is not None:
        settings["data_dir"] = args.data_dir

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    doc = run_ablation(
        args.experiment,
        args.out,
        preset=args.preset,
        base_model=args.model,
        seeds=args.seeds or [0],
        settings=settings,
        log=log,
        progress=not args.quiet and args.jobs == 1 and show_progress(args),
        jobs=args.jobs,
    )
    print((args.out / "table.md").read_text(encoding="utf-8"))
    done = sum(len(r["top1_errs"]) for r in doc["rows"])
    print(
        f"{done} run(s) in {args.out}; table: {args.out / 'table.md'}, "
        f"{args.out / 'table.json'}, {args.out / 'table.png'}"
    )
    return 0


def _run_dense(args: argparse.Namespace) -> int:
    """``sknet ablate dense``: the paired SKNet / ResNeXt / SENet / SK-sum dense study."""
    from sknet.analysis.dense_study import run_dense_study, study_rows

    preset = args.preset if args.preset != "demo" else "detect-demo"
    if args.list:
        base = args.model or load_preset(preset).model
        print(f"dense study on base {base} ({preset}):")
        for row in study_rows(base):
            print(f"  {row.name:<10} {row.model:<14} {row.overrides}  {row.description}")
        return 0
    if args.out is None:
        raise ConfigError("--out DIR is required (the study folder)")
    out = Path(check_out_arg(args.out, "--out") or "")
    settings = parse_set_options(args.sets)
    if args.data is not None:
        settings["data"] = args.data
    if args.data_dir is not None:
        settings["data_dir"] = args.data_dir
    seeds = args.seeds or [0, 1, 2, 3, 4]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    run_dense_study(
        out,
        preset=preset,
        base_model=args.model,
        seeds=seeds,
        settings=settings,
        jobs=args.jobs,
        log=log,
        progress=not args.quiet and args.jobs == 1 and show_progress(args),
    )
    print((out / "study.md").read_text(encoding="utf-8"))
    print(f"study in {out}: study.md, study.json, metrics.png")
    return 0

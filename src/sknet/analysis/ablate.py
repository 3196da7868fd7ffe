"""The paper's ablations as resumable training sweeps (Li et al., CVPR 2019, Tables 2, 6, 7).

Experiments (:data:`EXPERIMENTS`), each a list of rows built from a *base* model of the
ResNeXt family (``sknet_tiny`` at demo scale, ``sknet50`` for the paper's ImageNet setting):

* ``table6`` - the second branch's kernel, dilation and groups, with the first branch fixed at
  3x3 D1 G32 (Table 6): 3x3 D1 G32, 3x3 D2 G32, 3x3 D3 G32, 5x5 G64, 7x7 G128.
* ``table7`` - K3, K5, K7 alone (M = 1: no attention), and K3+K5, K3+K7, K5+K7, K3+K5+K7 with
  plain summation and with SK attention (Table 7); K3 = 3x3, K5 = 3x3 D2, K7 = 3x3 D3.
* ``attention`` - channel-wise attention (paper) vs one attention weight per branch shared by
  all channels (the Lucid library's variant) vs plain summation.
* ``baselines`` - ResNeXt vs SENet vs SKNet at matched depth and width (Table 2).

Departures from the paper, by design:

* **Group counts scale with the base model.** The paper's G32 is SKNet-50's cardinality, i.e.
  4 channels per group in conv2_x. A branch written ``G<n>`` in the paper is realised with
  ``n / 32 * G_base`` groups, where ``G_base`` is the base model's SK groups (its cardinality
  unless ``sk_groups`` is set). For ``sknet50`` this is the identity; for ``sknet_tiny``
  (cardinality 8, widths 1/4 of SKNet-50's) G32 -> G8, G64 -> G16, G128 -> G32, which keeps the
  paper's channels per group (4, 2 and 1 in the first stage; G128 is depthwise there, as in
  SKNet-50's conv2_x). Each row records both its paper label and the realised branches.
* At demo scale the rows are trained on the built-in data for a few epochs on a CPU, so the
  absolute errors say nothing about ImageNet; only orderings that exceed the seed-to-seed
  spread are worth reading.

Sweeps are resumable: every finished run leaves ``ablate_run.json`` (its settings fingerprint
and summary) in its run directory and is reused when the command is repeated; an interrupted
run is resumed from its last checkpoint by the trainer; the table is rewritten after every
run, so a partial table exists at any time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sknet.train as _train_mod
from sknet._files import atomic_write_text
from sknet._json import jsonable
from sknet.analysis.plots import save_figure
from sknet.complexity import complexity
from sknet.data import SyntheticShapes
from sknet.errors import ConfigError, MissingFileError, OutputError, TrainingError
from sknet.models import create_model, get_entry, list_models

__all__ = [
    "EXPERIMENTS",
    "AblationRow",
    "Experiment",
    "experiment_rows",
    "get_experiment",
    "markdown_table",
    "plot_table",
    "resolve_base",
    "run_ablation",
    "summarize",
]

RUN_RECORD = "ablate_run.json"
TABLE_JSON = "table.json"
TABLE_MD = "table.md"


@dataclass(frozen=True)
class AblationRow:
    """One row of an ablation table: a model (registry name + overrides) and its labels."""

    name: str
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    paper: str = ""  # the row as the paper writes it

    @property
    def slug(self) -> str:
        """File-system-safe name of the row's run folder."""
        s = re.sub(r"[^A-Za-z0-9]+", "_", self.name).strip("_").lower()
        return s or "row"

    def overrides_text(self) -> dict[str, Any]:
        """Overrides with branch specs as text (JSON-friendly)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.overrides.items()}


@dataclass(frozen=True)
class Experiment:
    """A named ablation: its description and how to build its rows from a base model."""

    name: str
    title: str
    build: Callable[[str], list[AblationRow]]


# --------------------------------------------------------------------------------------------
# Base model
# --------------------------------------------------------------------------------------------


def _base_config(base: str) -> Any:
    entry = get_entry(base)
    cfg = entry.config
    if not hasattr(cfg, "sk_branches") or not hasattr(cfg, "block"):
        raise ConfigError(
            f"ablations need a ResNeXt-family base model (one with SK branch settings), got "
            f"{base!r} ({entry.family}); e.g. sknet_tiny, sknet26 or sknet50"
        )
    return entry


def base_groups(base: str) -> int:
    """``G_base``: the SK groups of the base model (its cardinality unless ``sk_groups``)."""
    cfg = _base_config(base).config
    return int(cfg.sk_groups or cfg.cardinality)


def _scaled_groups(paper_groups: int, base: str) -> int:
    g = paper_groups * base_groups(base) / 32
    if g != int(g) or g < 1:
        raise ConfigError(
            f"cannot scale the paper's G{paper_groups} to base {base!r} (G_base = "
            f"{base_groups(base)}): G_base must be a multiple of 32 / {paper_groups}"
        )
    return int(g)


def resolve_base(base: str, overrides: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A registered model equal to ``base`` + ``overrides`` (e.g. sknet_tiny + block=plain ->
    resnext_tiny), else ``(base, overrides)`` unchanged."""
    entry = get_entry(base)
    try:
        target = dataclasses.replace(entry.config, **overrides)
    except TypeError:
        return base, dict(overrides)
    if not overrides:
        return base, {}
    for name in list_models():
        other = get_entry(name)
        if (
            other.family == entry.family
            and other.paper_num_classes == entry.paper_num_classes
            and other.config == target
        ):
            return name, {}
    return base, dict(overrides)


# --------------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------------


def _table6(base: str) -> list[AblationRow]:
    _base_config(base)
    first = f"3x3 D1 G{_scaled_groups(32, base)}"
    rows = []
    for paper_spec, (k, d, g) in [
        ("3x3 D1 G32", (3, 1, 32)),
        ("3x3 D2 G32", (3, 2, 32)),
        ("3x3 D3 G32", (3, 3, 32)),
        ("5x5 G64", (5, 1, 64)),
        ("7x7 G128", (7, 1, 128)),
    ]:
        second = f"{k}x{k} D{d} G{_scaled_groups(g, base)}"
        eff = d * (k - 1) + 1
        rows.append(
            AblationRow(
                name=paper_spec,
                model=base,
                overrides={"block": "sk", "sk_branches": (first, second)},
                description=f"SK: {first} + {second} (second branch sees {eff}x{eff})",
                paper=f"3x3 D1 G32 + {paper_spec}",
            )
        )
    return rows


_K = {"K3": "3x3 D1", "K5": "3x3 D2", "K7": "3x3 D3"}


def _table7(base: str) -> list[AblationRow]:
    _base_config(base)
    rows = [
        AblationRow(
            name=k,
            model=base,
            overrides={"block": "sk", "sk_branches": (_K[k],), "sk_aggregation": "sum"},
            description=f"one branch {_K[k]} (M = 1, no attention)",
            paper=k,
        )
        for k in ("K3", "K5", "K7")
    ]
    for combo in (("K3", "K5"), ("K3", "K7"), ("K5", "K7"), ("K3", "K5", "K7")):
        label = "+".join(combo)
        branches = tuple(_K[k] for k in combo)
        for agg, tag in (("sum", "sum"), ("attention", "SK")):
            rows.append(
                AblationRow(
                    name=f"{label} {tag}",
                    model=base,
                    overrides={"block": "sk", "sk_branches": branches, "sk_aggregation": agg},
                    description=f"{' + '.join(branches)}, "
                    + ("plain sum" if agg == "sum" else "SK attention"),
                    paper=f"{label}" + (" + SK" if agg == "attention" else ""),
                )
            )
    return rows


def _attention(base: str) -> list[AblationRow]:
    _base_config(base)
    return [
        AblationRow(
            "channel",
            base,
            {"block": "sk", "sk_attention": "channel", "sk_aggregation": "attention"},
            "channel-wise attention: one softmax over branches per channel (paper)",
            "SK",
        ),
        AblationRow(
            "shared",
            base,
            {"block": "sk", "sk_attention": "shared", "sk_aggregation": "attention"},
            "one attention weight per branch shared by all channels (Lucid's variant)",
            "",
        ),
        AblationRow(
            "sum",
            base,
            {"block": "sk", "sk_aggregation": "sum"},
            "plain sum of the branches, no attention",
            "",
        ),
    ]


def _baselines(base: str) -> list[AblationRow]:
    _base_config(base)
    rows = []
    for label, block, what in (
        ("ResNeXt", "plain", "grouped 3x3 convolution"),
        ("SENet", "se", "ResNeXt + squeeze-and-excitation"),
        ("SKNet", "sk", "ResNeXt with SK convolution"),
    ):
        model, ov = resolve_base(base, {"block": block})
        rows.append(AblationRow(label, model, ov, what, label))
    return rows


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "table6", "Table 6: dilation, kernel size and groups of the second branch", _table6
        ),
        Experiment(
            "table7", "Table 7: combinations of kernels, with and without SK attention", _table7
        ),
        Experiment("attention", "Channel-wise vs shared attention vs plain sum", _attention),
        Experiment("baselines", "Table 2: ResNeXt vs SENet vs SKNet at matched depth", _baselines),
    )
}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}"
        ) from None


def experiment_rows(name: str, base: str) -> list[AblationRow]:
    """The rows of experiment ``name`` built on ``base`` (a ResNeXt-family registry name)."""
    return get_experiment(name).build(base)


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _complexity(row: AblationRow, num_classes: int, image_size: int | None) -> dict[str, int]:
    model = create_model(row.model, num_classes=num_classes, **row.overrides)
    c = complexity(model, image_size)
    return {"params": c.params, "macs": c.macs, "input_size": c.input_size}


def summarize(errors: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    vals = [float(e) for e in errors]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


def markdown_table(doc: dict[str, Any]) -> str:
    """The markdown of an ablation table document (see :func:`run_ablation`)."""
    seeds = doc.get("seeds", [])
    lines = [
        f"# {doc.get('title', doc.get('experiment', 'ablation'))}",
        "",
        f"- Preset `{doc.get('preset')}`, base model `{doc.get('base_model')}`, seeds "
        f"{', '.join(str(s) for s in seeds)}; settings: "
        + (", ".join(f"{k}={v}" for k, v in doc.get("settings", {}).items()) or "preset defaults"),
        "- Top-1 error on the validation split, mean and sample std over seeds; params and MACs "
        f"at {doc.get('input_size')} px input.",
    ]
    if doc.get("note"):
        lines.append(f"- {doc['note']}")
    lines += [
        "",
        "| row | realised as | params | MACs | top-1 err (%) | std | seeds done |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        mean, std = r.get("top1_err_mean"), r.get("top1_err_std")
        m = "-" if mean is None else f"{mean:.2f}"
        s = "-" if std is None else f"{std:.2f}"
        lines.append(
            f"| {r['name']} | {r['description']} | {r['params'] / 1e6:.3f}M | "
            f"{r['macs'] / 1e6:.2f}M | {m} | {s} | {len(r['top1_errs'])}/{len(seeds)} |"
        )
    lines.append("")
    return "\n".join(lines)


def plot_title(doc: dict[str, Any]) -> str:
    """The plot's title: the experiment and the settings every run actually used (the preset
    with the sweep's overrides), so a figure never claims a plain preset it did not run."""
    settings = doc.get("settings") or {}
    used = ", ".join(f"{k}={v}" for k, v in settings.items())
    preset = f"preset {doc.get('preset')}" + (f" with {used}" if used else "")
    return (
        f"{doc.get('title', '')}\n({preset}; base {doc.get('base_model')}, "
        f"{len(doc.get('seeds', []))} seed(s))"
    )


def plot_table(doc: dict[str, Any], out_dir: Path, stem: str = "table") -> list[Path]:
    """Top-1 error per row: mean (diamond) with +-std whiskers and single seeds; PNG and SVG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = doc["rows"]
    fig = Figure(figsize=(7.0, 0.5 * len(rows) + 1.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    y = list(range(len(rows)))[::-1]
    means = [r["top1_err_mean"] if r["top1_err_mean"] is not None else math.nan for r in rows]
    stds = [r["top1_err_std"] or 0.0 for r in rows]
    # Points, not bars: the error axis does not start at zero.
    ax.errorbar(means, y, xerr=stds, fmt="D", color="#4C72B0", ms=5, capsize=3, lw=1.2)
    for yi, r, m in zip(y, rows, means):
        ax.plot(r["top1_errs"], [yi] * len(r["top1_errs"]), "k.", ms=4, alpha=0.7)
        if not math.isnan(m):
            ax.annotate(
                f"{m:.2f}%  ({r['macs'] / 1e6:.1f}M MACs, {r['params'] / 1e6:.3f}M params)",
                (m, yi),
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=8)
    ax.set_xlabel("top-1 error (%) on the validation split; dots: single seeds")
    ax.set_title(plot_title(doc), fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.margins(x=0.35)  # room for the centred labels
    lo, hi = ax.get_xlim()
    lo, hi = max(0.0, lo), min(100.0, hi) if hi > 0 else 100.0  # errors live in [0, 100]
    num_classes = doc.get("num_classes")
    if isinstance(num_classes, int) and num_classes > 1:
        chance = 100.0 * (1.0 - 1.0 / num_classes)
        if chance <= 1.5 * hi:  # near the results: draw it
            hi = max(hi, min(100.0, chance * 1.05))
            ax.axvline(chance, color="#C44E52", ls="--", lw=1)
            ax.annotate(
                f"chance ({chance:.0f}%)",
                (chance, len(rows) - 0.4),
                ha="right",
                va="top",
                fontsize=7,
                color="#C44E52",
                rotation=90,
            )
        else:  # far off the scale: say it rather than squash the results
            ax.set_xlabel(f"{ax.get_xlabel()}; chance level {chance:.0f}% (off the scale)")
    ax.set_xlim(lo, hi)
    return save_figure(fig, out_dir, stem, tight=False)


TrainFn = Callable[..., dict[str, Any]]
ConfigFn = Callable[..., Any]


def _check_sweep(
    jobs: int, seeds: Sequence[int], settings: dict[str, Any] | None
) -> tuple[list[int], dict[str, Any]]:
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {seeds}")
    settings = dict(settings or {})
    for key, flag in (("model", "--model"), ("seed", "--seeds")):
        if key in settings:
            raise ConfigError(f"set {key!r} with {flag}, not as a setting: every row has its own")
    return seeds, settings


def _sweep_doc(
    exp: Any,
    preset: str,
    base: str,
    seeds: list[int],
    settings: dict[str, Any],
    first_cfg: Any,
    image_size: int,
    num_classes: int,
) -> dict[str, Any]:
    """The table document of a sweep, without rows yet."""
    return {
        "format": "sknet-ablation/1",
        "experiment": exp.name,
        "title": exp.title,
        "preset": preset,
        "base_model": base,
        "seeds": seeds,
        "settings": jsonable(settings),
        "input_size": image_size,
        "num_classes": num_classes,
        "note": _NOTES.get(exp.name, ""),
        # Rows differ from this only in model, model_overrides and seed.
        "config_of_first_run": first_cfg.to_dict() if hasattr(first_cfg, "to_dict") else None,
        "rows": [],
    }


def run_ablation(
    experiment: str,
    out_dir: str | Path,
    *,
    preset: str = "demo",
    base_model: str | None = None,
    seeds: Sequence[int] = (0,),
    settings: dict[str, Any] | None = None,
    make_config: ConfigFn | None = None,
    train_fn: TrainFn | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Train every row of ``experiment`` for every seed (reusing finished runs); write the table.

    Args:
        experiment: a name of :data:`EXPERIMENTS`.
        out_dir: sweep folder: ``runs/<row>/seed<k>/`` per run, ``table.{json,md,png,svg}``.
        preset: training preset shared by every row (``"demo"``, ``"imagenet"``, ...).
        base_model: the row models' base (default: the preset's model, i.e. ``sknet_tiny`` for
            ``demo``, ``sknet50`` for ``imagenet``, ``sknet29`` for ``cifar``).
        seeds: one run per row per seed; the table reports mean and std over them.
        settings: preset overrides applied to every row (epochs, num_samples, data, ...), the
            same keys as ``sknet train --set``.
        make_config: ``(preset, **overrides) -> TrainConfig`` (default: ``sknet.train``'s
            ``load_preset``).
        train_fn: ``(cfg, run_dir=..., resume=..., progress=...) -> summary`` (default:
            ``sknet.train.train``); the summary holds ``top1_err`` (%) of the validation split.
        log: called with one line per run (reused / resumed / trained).
        progress: passed to the trainer (``jobs=1`` only).
        jobs: runs trained at the same time, each in its own process (default 1: in this
            process). With ``jobs > 1`` a run whose ``threads`` setting is 0 (torch's default)
            gets ``cores // jobs`` threads: more threads than cores slows everything down.

    Returns:
        The table document (also written to ``table.json``).

    Raises:
        ValueError: unknown experiment, empty seeds, or a finished run in ``out_dir`` made with
            different settings (use a new folder).
    """
    default_train = _train_mod.train
    make_config = make_config or _train_mod.load_preset
    train_fn = train_fn or default_train
    exp = get_experiment(experiment)
    seeds, settings = _check_sweep(jobs, seeds, settings)
    base = base_model or make_config(preset, **settings).model
    rows = exp.build(base)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)

    configs: dict[tuple[str, int], Any] = {}
    for row in rows:
        for seed in seeds:
            configs[(row.name, seed)] = _make_row_config(make_config, preset, row, seed, settings)
    first_cfg = configs[(rows[0].name, seeds[0])]
    num_classes, image_size = _data_shape(first_cfg)

    doc = _sweep_doc(exp, preset, base, seeds, settings, first_cfg, image_size, num_classes)
    sweep = _Sweep(doc, rows, seeds, out, say)
    sweep.cplx = {r.name: _complexity(r, num_classes, image_size) for r in rows}
    todo = sweep.collect_finished(configs)  # validates every finished run before training
    sweep.write_table()
    sweep.train(todo, jobs, train_fn, progress, custom_trainer=train_fn is not default_train)
    plot_table(doc, out)
    return doc


class _Sweep:
    """The state of one :func:`run_ablation` call: the table document and the results so far,
    rewritten (atomically) after every finished run so that an interrupted sweep shows them."""

    def __init__(
        self,
        doc: dict[str, Any],
        rows: list[AblationRow],
        seeds: list[int],
        out: Path,
        say: Callable[[str], None],
    ) -> None:
        self.doc, self.rows, self.seeds, self.out, self.say = doc, rows, seeds, out, say
        self.results: dict[tuple[str, int], dict[str, Any]] = {}
        self.cplx: dict[str, Any] = {}

    def write_table(self) -> None:
        self.doc["rows"] = [
            _row_doc(
                r,
                self.cplx[r.name],
                [self.results[(r.name, s)] for s in self.seeds if (r.name, s) in self.results],
            )
            for r in self.rows
        ]
        atomic_write_text(self.out / TABLE_JSON, json.dumps(self.doc, indent=1) + "\n")
        atomic_write_text(self.out / TABLE_MD, markdown_table(self.doc))

    def collect_finished(
        self, configs: dict[tuple[str, int], Any]
    ) -> list[tuple[AblationRow, int, Path, Any, bool]]:
        """Record the finished runs (their settings checked); return the runs still to do."""
        todo: list[tuple[AblationRow, int, Path, Any, bool]] = []
        for row in self.rows:
            for seed in self.seeds:
                run_dir = self.out / "runs" / row.slug / f"seed{seed}"
                cfg = configs[(row.name, seed)]
                record = _read_record(run_dir, cfg)
                if record is not None:
                    self.say(f"{row.name} seed {seed}: reused ({run_dir})")
                    self.results[(row.name, seed)] = {
                        "seed": seed,
                        "run_dir": str(run_dir),
                        **record,
                    }
                else:
                    # A run directory with a config is an interrupted run: the trainer resumes
                    # it from its last checkpoint (or restarts it when none was written yet).
                    todo.append((row, seed, run_dir, cfg, (run_dir / "config.toml").is_file()))
        return todo

    def train(
        self,
        todo: list[tuple[AblationRow, int, Path, Any, bool]],
        jobs: int,
        train_fn: TrainFn,
        progress: bool,
        *,
        custom_trainer: bool = False,
    ) -> None:
        """Train the runs of ``todo`` here (``jobs`` 1) or in ``jobs`` worker processes."""
        if jobs <= 1 or len(todo) <= 1:
            for row, seed, run_dir, cfg, resume in todo:
                self.start(row, seed, run_dir, resume)
                summary = train_fn(cfg, run_dir=run_dir, resume=resume, progress=progress)
                self.finish(row, seed, run_dir, cfg, summary)
        else:
            _run_parallel(todo, jobs, self.start, self.finish, custom_trainer=custom_trainer)

    def start(self, row: AblationRow, seed: int, run_dir: Path, resume: bool) -> None:
        self.say(f"{row.name} seed {seed}: {'resuming' if resume else 'training'} ({run_dir})")

    def headline(self, summary: dict[str, Any]) -> str:
        """What the log line of a finished run says about its result."""
        return f"top-1 error {_top1_err(summary):.2f}%"

    def finish(self, row: AblationRow, seed: int, run_dir: Path, cfg: Any, summary: Any) -> None:
        record = {
            "fingerprint": _fingerprint(cfg),
            "row": row.name,
            "seed": seed,
            "summary": jsonable(summary),
        }
        atomic_write_text(run_dir / RUN_RECORD, json.dumps(record, indent=1) + "\n")
        self.say(f"{row.name} seed {seed}: {self.headline(record['summary'])}")
        self.results[(row.name, seed)] = {"seed": seed, "run_dir": str(run_dir), **record}
        self.write_table()


def _run_parallel(
    todo: list[tuple[AblationRow, int, Path, Any, bool]],
    jobs: int,
    start: Callable[..., None],
    finish: Callable[..., None],
    *,
    custom_trainer: bool,
) -> None:
    """Train ``todo`` in up to ``jobs`` worker processes (spawned: each imports torch afresh).

    On any error or interrupt in this process the workers are terminated (their runs resume
    from their last checkpoints next time); a failed or crashed worker stops the sweep.
    """
    import multiprocessing
    import queue

    if custom_trainer:
        raise ConfigError("jobs > 1 runs sknet.train.train in worker processes; pass jobs=1")
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    pending = list(todo)
    running: dict[int, tuple[Any, tuple[AblationRow, int, Path, Any, bool]]] = {}
    next_id = 0
    previous_term = _raise_on_sigterm()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                item = pending.pop(0)
                row, seed, run_dir, cfg, resume = item
                start(row, seed, run_dir, resume)
                cfg_dict = cfg.to_dict()
                if not cfg_dict.get("threads"):  # share the cores between the workers
                    cfg_dict["threads"] = max(1, (os.cpu_count() or 1) // jobs)
                proc = ctx.Process(
                    target=_train_worker,
                    args=(next_id, cfg_dict, str(run_dir), resume, messages),
                    name=f"sknet-ablate-{row.slug}-seed{seed}",
                )
                proc.start()
                running[next_id] = (proc, item)
                next_id += 1
            try:
                job, ok, payload = messages.get(timeout=1.0)
            except queue.Empty:
                job = None
            if job is None:
                for proc, (row, seed, *_rest) in running.values():
                    if proc.exitcode not in (None, 0):
                        raise TrainingError(
                            f"the worker training {row.name} seed {seed} died (exit code "
                            f"{proc.exitcode}); run the command again to resume"
                        )
                continue
            proc, (row, seed, run_dir, cfg, _resume) = running.pop(job)
            proc.join()
            if not ok:
                raise TrainingError(f"training {row.name} seed {seed} failed: {payload}")
            finish(row, seed, run_dir, cfg, payload)
    finally:
        for proc, _item in running.values():
            if proc.is_alive():
                proc.terminate()
        for proc, _item in running.values():
            proc.join()
        if previous_term is not None:
            import signal

            signal.signal(signal.SIGTERM, previous_term)


def _raise_on_sigterm() -> Any:
    """Turn SIGTERM into ``SystemExit`` (so that workers are cleaned up); returns the previous
    handler, or None when not in the main thread (where signals cannot be handled)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _exit_with_parent(interval: float = 2.0) -> None:
    """In a worker: end this process soon after the sweep process that started it is gone
    (killed without cleaning up); the run resumes from its last checkpoint next time."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _train_worker(
    job: int, cfg_dict: dict[str, Any], run_dir: str, resume: bool, messages: Any
) -> None:
    """Entry point of a worker process: rebuild the config, train one run, report back."""
    _exit_with_parent()
    try:
        cfg = _train_mod.TrainConfig.from_dict(cfg_dict, source="ablation worker")
        summary = jsonable(_train_mod.train(cfg, run_dir=run_dir, resume=resume, progress=False))
    except Exception as exc:  # reported to the parent, which stops the sweep
        messages.put((job, False, f"{type(exc).__name__}: {exc}"))
        return
    messages.put((job, True, summary))


_NOTES = {
    "table6": "Group counts G<n> of the paper are realised as n / 32 x G_base (the base "
    "model's SK groups), keeping the paper's channels per group.",
    "table7": "K3 = 3x3, K5 = 3x3 dilation 2, K7 = 3x3 dilation 3; single-kernel rows have no "
    "attention (M = 1).",
}


def _make_row_config(
    make_config: ConfigFn, preset: str, row: AblationRow, seed: int, settings: dict[str, Any]
) -> Any:
    """The preset with the sweep's settings, then the row's model and the seed on top.

    The row's model overrides are merged over the preset's (and ``--set model_overrides.*``).
    """
    cfg = make_config(preset, **settings)
    merged = {**dict(cfg.model_overrides), **row.overrides}
    return cfg.replace(model=row.model, model_overrides=merged, seed=seed)


def _data_shape(cfg: Any) -> tuple[int, int]:
    """(num_classes, image_size) that a training config's runs will have."""
    image_size = int(cfg.resolved_image_size())
    if cfg.num_classes:
        return int(cfg.num_classes), image_size
    if cfg.data == "synthetic":
        return SyntheticShapes.num_classes, image_size
    if cfg.data in ("cifar10", "cifar100"):
        return (10 if cfg.data == "cifar10" else 100), image_size
    train_dir = Path(cfg.data_dir).expanduser() / "train"
    if not train_dir.is_dir():
        raise MissingFileError(
            f"no {train_dir}: --data imagefolder expects DIR/train/<class>/ and DIR/val/<class>/"
        )
    return sum(1 for e in train_dir.iterdir() if e.is_dir()), image_size


# Config fields that do not change what a run computes (a finished run is reused across them).
_NOT_FINGERPRINTED = {
    "workers",
    "threads",
    "device",
    "log_every",
    "checkpoint_every",
    "eval_batch_size",
    "tensorboard",
    "rank_summaries",
    "cache_data",
    "max_bad",
    "preset",
    "description",
}


def _fingerprint(cfg: Any) -> dict[str, Any]:
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else jsonable(cfg)
    if isinstance(d, dict):
        return {k: jsonable(v) for k, v in d.items() if k not in _NOT_FINGERPRINTED}
    return {"config": jsonable(d)}


def _read_record(run_dir: Path, cfg: Any) -> dict[str, Any] | None:
    path = run_dir / RUN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a torn write: train again
    want = _fingerprint(cfg)
    have = record.get("fingerprint")
    if have != want:
        keys = sorted(k for k in set(want) | set(have or {}) if (have or {}).get(k) != want.get(k))
        raise OutputError(
            f"{run_dir} holds a finished run with different settings (differs in "
            f"{', '.join(keys) or 'its format'}); use another --out folder or delete that run"
        )
    return record


def _top1_err(summary: dict[str, Any]) -> float:
    for key in ("top1_err", "val_top1_err"):
        if key in summary:
            return float(summary[key])
    for sub in ("val", "final", "best"):
        s = summary.get(sub)
        if isinstance(s, dict) and "top1_err" in s:
            return float(s["top1_err"])
    # An internal invariant: sknet.train always writes the top-1 error, so a summary without
    # one is a bug (or a hand-edited record), not a user error.
    raise KeyError(f"the training summary has no top-1 error: keys {sorted(summary)}")


def _row_doc(row: AblationRow, cplx: dict[str, int], runs: list[dict[str, Any]]) -> dict[str, Any]:
    errs = [_top1_err(r["summary"]) for r in runs]
    mean, std = summarize(errs)
    return {
        "name": row.name,
        "paper": row.paper,
        "description": row.description,
        "model": row.model,
        "overrides": jsonable(row.overrides_text()),
        "params": cplx["params"],
        "macs": cplx["macs"],
        "top1_err_mean": mean,
        "top1_err_std": std,
        "top1_errs": errs,
        "seeds_done": [r["seed"] for r in runs],
        "seconds": [r["summary"].get("seconds") for r in runs],
        "run_dirs": [r["run_dir"] for r in runs],
    }

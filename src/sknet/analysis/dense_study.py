"""Does selection help beyond classification? The paired, multi-seed dense study.

``sknet ablate dense --preset detect-demo --seeds 0 1 2 3 4 --out DIR`` (or ``segment-demo``)
trains four backbones under one dense head, matched in depth and width:

* **SKNet** - SK units with the paper's Select (softmax attention over the branches);
* **ResNeXt** - the same network with a grouped 3x3 convolution (no branches, no attention);
* **SENet** - ResNeXt with squeeze-and-excitation (attention without kernel selection);
* **SK-sum** - SK units whose branches are summed without attention (``sk_aggregation=sum``):
  the control that isolates Select, as in the paper's Table 7.

Every row is trained with every seed on the same data stream (the data, the sampling order and
the augmentation depend on the seed alone, not on the model), for the same number of steps, so
the comparison is paired: for each seed the difference SKNet - row is taken, and the table gives
its mean with a 95% t interval, an exact two-sided sign-flip permutation p-value (all 2^n sign
patterns of the n paired differences; no normality assumed) and Holm's step-down correction over
the three comparisons of each metric. Detectors report COCO mAP, AP50, AP75 and AP per
object-size bin (bins at the terciles of the validation objects' sqrt(area), because COCO's
fixed 32/96 px bins leave small canvases with an empty "large" bin); segmenters mIoU.

After training, the study measures, in this process and interleaved between the rows (so that
machine load affects them alike), the inference and the training time per image of every row,
and for the SKNet runs (see :mod:`sknet.analysis.dense_scale`):

* the per-object attention on the larger-kernel branch of every SK unit against object size
  (Spearman's rho per unit, with a plot like the paper's Figs. 3-4), and
* the forced-branch test: the evaluation repeated with every SK unit's attention clamped to its
  small or to its large branch, giving the AP lost per size bin (whether selection is used).

Runs are resumable and reused like the classification ablations (``runs/<row>/seed<k>/``).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

import sknet.train as _train_mod
from sknet._files import atomic_write_text
from sknet._json import jsonable
from sknet.analysis.ablate import (
    AblationRow,
    _make_row_config,
    _Sweep,
    resolve_base,
    summarize,
)
from sknet.analysis.dense_scale import (
    forced_branch_table,
    object_attention,
    plot_object_attention,
)
from sknet.analysis.plots import save_figure
from sknet.data.dense import dense_collate
from sknet.dense import evaluate_dense, load_dense
from sknet.errors import ConfigError
from sknet.models import sk_units
from sknet.train.dense import dense_val_loader

__all__ = [
    "DETECT_METRICS",
    "SEGMENT_METRICS",
    "analyze_dense",
    "holm",
    "paired_stats",
    "run_dense_study",
    "sign_flip_p",
    "study_markdown",
    "study_rows",
]

#: Metrics tabulated for detectors and for segmenters (percent).
DETECT_METRICS = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")
SEGMENT_METRICS = ("miou", "pixel_acc", "seg_recall_small", "seg_recall_medium", "seg_recall_large")

STUDY_JSON = "study.json"
STUDY_MD = "study.md"

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (then 1.96).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def study_rows(base: str) -> list[AblationRow]:
    """SKNet, ResNeXt, SENet and SK-sum on ``base`` (a ResNeXt-family SK model)."""
    rows = []
    for label, overrides, what in (
        ("SKNet", {"block": "sk"}, "SK units with attention (Select)"),
        ("ResNeXt", {"block": "plain"}, "grouped 3x3 convolution"),
        ("SENet", {"block": "se"}, "ResNeXt + squeeze-and-excitation"),
        ("SK-sum", {"block": "sk", "sk_aggregation": "sum"}, "SK branches summed, no Select"),
    ):
        model, ov = resolve_base(base, overrides)
        rows.append(AblationRow(label, model, ov, what, label))
    return rows


# --------------------------------------------------------------------------------- statistics


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (table; 1.96 above 30)."""
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def sign_flip_p(diffs: Sequence[float]) -> float | None:
    """Exact two-sided p-value of the paired sign-flip permutation test of mean(diffs) = 0:
    the share of the 2^n sign patterns whose |mean| is at least the observed one (n <= 16)."""
    d = [float(x) for x in diffs]
    n = len(d)
    if n < 2 or n > 16:
        return None
    observed = abs(sum(d)) - 1e-12
    hits = sum(
        1
        for signs in itertools.product((1, -1), repeat=n)
        if abs(sum(s * x for s, x in zip(signs, d))) >= observed
    )
    return hits / 2**n


def paired_stats(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Mean, sd and 95% t interval of the paired differences ``a - b``, and the sign-flip p."""
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    mean, sd = summarize(diffs)
    if mean is None:
        return {"n": 0, "mean": None, "sd": None, "ci95": None, "p": None}
    half = t975(len(diffs) - 1) * sd / math.sqrt(len(diffs)) if sd is not None else None
    return {
        "n": len(diffs),
        "mean": mean,
        "sd": sd,
        "ci95": None if half is None else [mean - half, mean + half],
        "p": sign_flip_p(diffs),
    }


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error), None kept in place."""
    idx = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


# --------------------------------------------------------------------------------- the study


def run_dense_study(
    out_dir: str | Path,
    *,
    preset: str = "detect-demo",
    base_model: str | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    settings: dict[str, Any] | None = None,
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    analysis_images: int = 200,
    timing_images: int = 32,
) -> dict[str, Any]:
    """Train every row for every seed (reusing finished runs), then time, analyse and tabulate.

    Writes ``study.json``, ``study.md``, ``metrics.png/svg`` (the metrics per row, single seeds
    as dots) and ``object_attention.png/svg`` (SKNet, first seed). Returns the
    study document.
    """
    say = log or (lambda _msg: None)
    seeds, settings, probe = _check_study(preset, seeds, settings)
    make_config = _train_mod.load_preset
    base = base_model or probe.model
    rows = study_rows(base)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    configs = {
        (r.name, s): _make_row_config(make_config, preset, r, s, settings)
        for r in rows
        for s in seeds
    }
    sweep = _DenseSweep(probe.task, rows, seeds, out, say)
    todo = sweep.collect_finished(configs)  # validates every finished run before training
    t0 = time.perf_counter()
    sweep.train(todo, jobs, _train_mod.train, progress)
    train_seconds = time.perf_counter() - t0

    metrics = DETECT_METRICS if probe.task == "detect" else SEGMENT_METRICS
    doc: dict[str, Any] = {
        "format": "sknet-dense-study/1",
        "task": probe.task,
        "head": probe.resolved_head(),
        "preset": preset,
        "base_model": base,
        "seeds": seeds,
        "settings": jsonable(settings),
        "data": probe.data,
        "image_size": probe.resolved_image_size(),
        "metrics": list(metrics),
        "training_seconds_this_call": round(train_seconds, 1),
        "rows": [],
    }
    doc["rows"] = [_row_doc(r, [sweep.results[(r.name, s)] for s in seeds], metrics) for r in rows]
    doc["comparisons"] = _comparisons(doc["rows"], metrics)
    sk = doc["rows"][0]
    say("timing the rows (interleaved, in this process)")
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, probe.threads))  # the runs' own setting (the presets: 1)
    try:
        doc["timing"] = _time_rows(doc["rows"], seeds[0], timing_images)
    finally:
        torch.set_num_threads(saved_threads)
    sk_dirs = sk["run_dirs"]
    if _has_attention(load_dense(sk_dirs[0])[0]):
        say("SK analysis: per-object attention and forced branches")
        doc["sk_analysis"] = _sk_analysis(sk_dirs, probe.task, metrics, out, analysis_images)
    atomic_write_text(out / STUDY_JSON, json.dumps(jsonable(doc), indent=1) + "\n")
    atomic_write_text(out / STUDY_MD, study_markdown(doc))
    plot_study(doc, out)
    return doc


def _check_study(
    preset: str, seeds: Sequence[int], settings: dict[str, Any] | None
) -> tuple[list[int], dict[str, Any], Any]:
    """The seeds and settings checked, and the preset's config with the settings (a probe)."""
    seeds = [int(s) for s in seeds]
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"give distinct seeds, got {seeds}")
    settings = dict(settings or {})
    for key in ("model", "seed"):
        if key in settings:
            raise ConfigError(f"set {key!r} with --model / --seeds, not --set")
    probe = _train_mod.load_preset(preset, **settings)
    if probe.task == "classify":
        raise ConfigError(
            f"preset {preset!r} trains a classifier; the dense study needs task detect or "
            "segment (e.g. --preset detect-demo or segment-demo)"
        )
    return seeds, settings, probe


def _row_doc(
    row: AblationRow, runs: list[dict[str, Any]], metrics: Sequence[str]
) -> dict[str, Any]:
    """One row of the study: the build, the runs, and every metric per seed with mean and sd."""
    summaries = [x["summary"] for x in runs]
    doc: dict[str, Any] = {
        "name": row.name,
        "model": row.model,
        "overrides": jsonable(row.overrides_text()),
        "description": row.description,
        "params": summaries[0].get("params"),
        "macs": summaries[0].get("macs"),
        "train_seconds": [s.get("seconds") for s in summaries],
        "run_dirs": [x["run_dir"] for x in runs],
        "bins": (summaries[0].get("val") or {}).get("bins"),
    }
    for m in metrics:
        vals = [_metric(s, m) for s in summaries]
        doc[m] = vals
        doc[f"{m}_mean"], doc[f"{m}_sd"] = summarize([v for v in vals if v is not None])
    return doc


def _comparisons(
    rows: list[dict[str, Any]], metrics: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Per metric: SKNet (the first row) minus every other row, paired by seed, Holm-adjusted
    over the comparisons of that metric."""
    sk, out = rows[0], {}
    for m in metrics:
        comps = []
        for other in rows[1:]:
            pairs = [(a, b) for a, b in zip(sk[m], other[m]) if a is not None and b is not None]
            st = paired_stats([a for a, _ in pairs], [b for _, b in pairs])
            comps.append({"versus": other["name"], **st})
        for c, adj in zip(comps, holm([c["p"] for c in comps])):
            c["p_holm"] = adj
        out[m] = comps
    return out


class _DenseSweep(_Sweep):
    """The ablations' sweep (reuse, resume, parallel workers, run records) for dense runs:
    their log line reports mAP / mIoU, and the study writes its own tables at the end."""

    def __init__(
        self, task: str, rows: list[AblationRow], seeds: list[int], out: Path, say: Any
    ) -> None:
        super().__init__({}, rows, seeds, out, say)
        self.task = task

    def headline(self, summary: dict[str, Any]) -> str:
        return _headline(self.task, summary)

    def write_table(self) -> None:  # the study's tables need every run: written at the end
        pass


def _has_attention(model: Any) -> bool:
    return any(u.attn is not None for u in sk_units(model.backbone).values())


def _metric(summary: dict[str, Any], key: str) -> float | None:
    v = (summary.get("val") or {}).get(key)
    return float(v) if isinstance(v, (int, float)) else None


def _headline(task: str, summary: dict[str, Any]) -> str:
    val = summary.get("val") or {}
    if task == "segment":
        return f"mIoU {val.get('miou')}"
    return f"mAP {val.get('map')} (AP50 {val.get('ap50')})"


def _val_loader(run_dir: str, batch_size: int = 16) -> tuple[Any, Any, DataLoader]:
    model, _record, loader = dense_val_loader(run_dir, batch_size)
    return model, loader.dataset, loader


def _time_rows(rows: list[dict[str, Any]], seed: int, n_images: int) -> dict[str, Any]:
    """Inference and training milliseconds per image of every row, measured round-robin
    (5 rounds, the median kept) in one process on one thread setting; the first round of
    each row is a warm-up and not counted."""
    idx = 0  # the first seed's run of each row
    models, batches = {}, None
    for r in rows:
        model, ds, _ = _val_loader(r["run_dirs"][idx])
        models[r["name"]] = model
        if batches is None:
            items = [ds[i] for i in range(min(n_images, len(ds)))]
            images, targets, _bad = dense_collate(items)
            batches = (images, targets)
    assert batches is not None
    images, targets = batches
    bs = max(2, min(8, len(images)))  # training batches need >= 2 images (SK attention's BN)
    if len(images) < bs:
        raise ConfigError(f"timing needs at least 2 validation images, got {len(images)}")
    infer: dict[str, list[float]] = {k: [] for k in models}
    train: dict[str, list[float]] = {k: [] for k in models}
    for _round in range(6):
        for name, model in models.items():
            model.eval()
            with torch.no_grad():
                t = time.perf_counter()
                for i in range(0, len(images), bs):
                    model(images[i : i + bs])
                infer[name].append((time.perf_counter() - t) / len(images) * 1000)
            model.train()
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
            t = time.perf_counter()
            for i in range(0, len(images) - bs + 1, bs):
                losses = model(images[i : i + bs], targets[i : i + bs])
                sum(losses.values()).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            train[name].append((time.perf_counter() - t) / (len(images) // bs * bs) * 1000)
            model.eval()
    med = {k: sorted(v[1:])[2] for k, v in infer.items()}
    medt = {k: sorted(v[1:])[2] for k, v in train.items()}
    ref = rows[1]["name"]  # ResNeXt
    return {
        "images": len(images),
        "threads": torch.get_num_threads(),
        "infer_ms_per_image": med,
        "train_ms_per_image": medt,
        "infer_ratio_vs_resnext": {k: v / med[ref] for k, v in med.items()},
        "train_ratio_vs_resnext": {k: v / medt[ref] for k, v in medt.items()},
    }


def _sk_analysis(
    run_dirs: list[str], task: str, metrics: Sequence[str], out: Path, n_images: int
) -> dict[str, Any]:
    forced: list[dict[str, Any]] = []
    rhos: dict[str, list[float]] = {}
    first_attention = None
    for k, run_dir in enumerate(run_dirs):
        model, _ds, loader = _val_loader(run_dir)

        def evaluate(model: Any = model, loader: Any = loader) -> dict[str, Any]:
            # the bins come from the validation objects: the same in every call
            return evaluate_dense(model, loader, torch.device("cpu"))

        forced.append(forced_branch_table(evaluate, model, list(metrics)))
        att = object_attention(
            model,
            loader,
            image_size=int(model.geometry.image_size),
            max_images=n_images,
        )
        for unit in att.units:
            rho, _p, _n = att.spearman(unit)
            if rho is not None and math.isfinite(rho):
                rhos.setdefault(unit, []).append(rho)
        if k == 0:
            first_attention = att
    doc: dict[str, Any] = {"forced_branch": forced, "forced_branch_mean": _mean_forced(forced)}
    if first_attention is not None:  # detectors and segmenters: the ground-truth objects
        att_json = first_attention.to_json_dict()
        atomic_write_text(out / "object_attention.json", json.dumps(jsonable(att_json)) + "\n")
        plot_object_attention(first_attention, out, stem="object_attention")
        doc["spearman_first_seed"] = {
            u: list(first_attention.spearman(u)) for u in first_attention.units
        }
        doc["spearman_by_seed"] = rhos
        doc["spearman_mean"] = {u: summarize(v) for u, v in rhos.items()}
    return doc


def analyze_dense(
    source: str | Path,
    out_dir: str | Path,
    *,
    num_images: int = 200,
    batch_size: int = 16,
) -> dict[str, Any]:
    """The scale analysis of one trained detector or segmenter on its validation split.

    Writes ``object_attention.json`` / ``.png`` / ``.svg`` (per-object attention on the
    larger-kernel branch vs object size for the split's ground-truth objects, Spearman's rho
    per SK unit), ``forced_branch.json``
    (the metrics with every SK unit clamped to its small or its large branch) and
    ``report.md`` into ``out_dir``; returns what ``report.md`` shows.
    """
    if num_images < 1:
        raise ConfigError(f"num_images must be >= 1, got {num_images}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, _ds, loader = _val_loader(str(source), batch_size)
    if not _has_attention(model):
        raise ConfigError(
            f"{source}: the backbone {model.backbone_name} has no SK unit with attention; "
            "there is no selection to analyse (ResNeXt, SENet and SK-sum have none)"
        )
    metrics = DETECT_METRICS if model.task == "detect" else SEGMENT_METRICS

    def evaluate() -> dict[str, Any]:
        return evaluate_dense(model, loader, torch.device("cpu"), max_images=num_images)

    forced = forced_branch_table(evaluate, model, list(metrics))
    atomic_write_text(out / "forced_branch.json", json.dumps(jsonable(forced), indent=1) + "\n")
    doc: dict[str, Any] = {"source": str(source), "task": model.task, "forced_branch": forced}
    lines = [
        f"# Scale analysis of {source} ({model.task} {model.head} over {model.backbone_name})",
        "",
        "Forced branch: every SK unit's attention clamped to one branch (values in %):",
        "",
        "| metric | normal | small branch only | large branch only |",
        "|---|---:|---:|---:|",
    ]
    for m in metrics:
        cells = [_fmt(forced.get(part, {}).get(m)) for part in ("normal", "small", "large")]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    att = object_attention(
        model, loader, image_size=int(model.geometry.image_size), max_images=num_images
    )
    att.save_json(out / "object_attention.json")
    plot_object_attention(att, out, stem="object_attention")
    doc["spearman"] = {u: list(att.spearman(u)) for u in att.units}
    lines += [
        "",
        f"Per-object attention on the larger-kernel branch vs object size "
        f"({att.num_objects} objects in {att.num_images} images): Spearman's rho per unit",
        "",
        "| unit | rho | p (permutation) | objects |",
        "|---|---:|---:|---:|",
    ]
    for u, (rho, p, n) in doc["spearman"].items():
        lines.append(f"| {u} | {_fmt(rho, 3)} | {_fmt(p, 4)} | {n} |")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return doc


def _mean_forced(tables: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not tables:
        return out
    for part in ("normal", "small", "large", "delta_small", "delta_large"):
        keys = tables[0].get(part, {}).keys()
        out[part] = {}
        for key in keys:
            vals = [t[part].get(key) for t in tables if t.get(part, {}).get(key) is not None]
            mean, sd = summarize(vals)
            out[part][key] = {"mean": mean, "sd": sd, "n": len(vals)}
    return out


# --------------------------------------------------------------------------------- reports


def _hi(v: Any) -> str:
    return "inf" if v is None else f"{v:g}"


def _fmt(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def study_markdown(doc: dict[str, Any]) -> str:
    """The study's tables as markdown."""
    metrics = doc["metrics"]
    n = len(doc["seeds"])
    lines = [
        f"# Dense study: {doc['task']} ({doc['head']}) over {doc['base_model']}-family backbones",
        "",
        f"- Preset `{doc['preset']}`, data `{doc['data']}` at {doc['image_size']} px, seeds "
        f"{', '.join(map(str, doc['seeds']))}; settings: "
        + (", ".join(f"{k}={v}" for k, v in doc["settings"].items()) or "preset defaults"),
        "- Values in %, mean ± sd over seeds. Paired differences SKNet - row: mean, 95% t "
        f"interval, exact sign-flip p over {n} seeds (smallest possible p: "
        f"{2 / 2**n:.3g}), Holm-adjusted over the 3 comparisons.",
    ]
    bins = doc["rows"][0].get("bins")
    if bins:
        lines.append(
            "- Size bins (sqrt(area), px, terciles of the validation objects): "
            + ", ".join(f"{b[0]} [{b[1]:g}, {_hi(b[2])})" for b in bins)
        )
    lines += ["", "| row | params | MACs | " + " | ".join(metrics) + " |"]
    lines.append("|---|---:|---:|" + "---:|" * len(metrics))
    for r in doc["rows"]:
        cells = [f"{_fmt(r[f'{m}_mean'])} ± {_fmt(r[f'{m}_sd'])}" for m in metrics]
        params = r["params"] / 1e6 if r.get("params") else None
        macs = r["macs"] / 1e6 if r.get("macs") else None
        lines.append(
            f"| {r['name']} | {_fmt(params, 3)}M | {_fmt(macs, 1)}M | " + " | ".join(cells) + " |"
        )
    lines += ["", "Paired differences, SKNet minus each row:", ""]
    lines.append("| metric | versus | mean diff | 95% CI | p | p (Holm) |")
    lines.append("|---|---|---:|---|---:|---:|")
    for m in metrics:
        for c in doc["comparisons"][m]:
            ci = c["ci95"]
            ci_text = "-" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
            lines.append(
                f"| {m} | {c['versus']} | {_fmt(c['mean'], 2)} | {ci_text} | "
                f"{_fmt(c['p'], 3)} | {_fmt(c['p_holm'], 3)} |"
            )
    t = doc.get("timing")
    if t:
        lines += [
            "",
            f"Time per image (ms; median of 5 interleaved rounds over {t['images']} validation "
            f"images, {t['threads']} thread(s), this machine):",
            "",
            "| row | inference | ratio vs ResNeXt | training step | ratio vs ResNeXt |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in doc["rows"]:
            k = r["name"]
            lines.append(
                f"| {k} | {t['infer_ms_per_image'][k]:.2f} | {t['infer_ratio_vs_resnext'][k]:.3f} "
                f"| {t['train_ms_per_image'][k]:.2f} | {t['train_ratio_vs_resnext'][k]:.3f} |"
            )
    sk = doc.get("sk_analysis")
    if sk:
        fm = sk.get("forced_branch_mean") or {}
        if fm:
            lines += [
                "",
                "Forced branch (SKNet runs; every SK unit's attention clamped to one branch), "
                "mean over seeds:",
                "",
                "| metric | normal | small branch only | large branch only |",
                "|---|---:|---:|---:|",
            ]
            for m in metrics:

                def g(part: str, m: str = m) -> str:
                    return _fmt((fm.get(part, {}).get(m) or {}).get("mean"))

                lines.append(f"| {m} | {g('normal')} | {g('small')} | {g('large')} |")
        sm = sk.get("spearman_mean")
        if sm:
            lines += [
                "",
                "Per-object attention on the larger-kernel branch vs object size: Spearman's "
                "rho per SK unit (mean ± sd over seeds):",
                "",
                "| unit | rho | seeds |",
                "|---|---:|---:|",
            ]
            for unit, (mean, sd) in sm.items():
                lines.append(
                    f"| {unit} | {_fmt(mean, 3)} ± {_fmt(sd, 3)} | "
                    f"{len(sk['spearman_by_seed'][unit])} |"
                )
    lines.append("")
    return "\n".join(lines)


def plot_study(doc: dict[str, Any], out_dir: Path, stem: str = "metrics") -> list[Path]:
    """Every metric per row: mean ± sd and single seeds (dots); PNG and SVG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = doc["metrics"]
    rows = doc["rows"]
    fig = Figure(figsize=(2.2 * len(metrics) + 1, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), sharey=False, squeeze=False)[0]
    colors = ["#C44E52", "#4C72B0", "#55A868", "#8172B2"]
    for ax, m in zip(axes, metrics):
        for i, r in enumerate(rows):
            vals = [v for v in r[m] if v is not None]
            ax.plot([i] * len(vals), vals, ".", color="k", ms=3, alpha=0.6)
            if r[f"{m}_mean"] is not None:
                ax.errorbar(
                    i, r[f"{m}_mean"], yerr=r[f"{m}_sd"] or 0.0, fmt="D",
                    color=colors[i % 4], ms=5, capsize=3,
                )  # fmt: skip
        ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=45, fontsize=7)
        ax.set_title(m, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{doc['task']} {doc['head']} on {doc['data']} ({len(doc['seeds'])} seeds)", fontsize=9
    )
    return save_figure(fig, out_dir, stem, tight=False)

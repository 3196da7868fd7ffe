"""The SKNet paper's evidence as tools: attention vs object size (Figs. 3-4) and ablations.

* :mod:`sknet.analysis.attention` - the zoom protocol and attention statistics;
* :mod:`sknet.analysis.plots` - Fig. 3 (per-channel attention, attention across depth) and
  Fig. 4 (per-class attention) as PNG and SVG;
* :mod:`sknet.analysis.report` - ``report.md`` in plain words;
* :mod:`sknet.analysis.pipeline` - dataset -> zoomed views -> ``attention.json`` + plots + report;
* :mod:`sknet.analysis.ablate` - the paper's ablation tables (6, 7, attention kind, baselines).

The analysis core depends on torch, numpy and matplotlib (Agg canvas) only; the ablation
runner also uses :mod:`sknet.train` (imported when a sweep starts).
"""

from sknet.analysis.ablate import EXPERIMENTS, AblationRow, experiment_rows, run_ablation
from sknet.analysis.attention import (
    FORMAT,
    MIN_CHANGE,
    AttentionResult,
    PhotoZoomSet,
    SyntheticZoomSet,
    UnitInfo,
    check_zooms,
    collect_attention,
    default_units,
    load_attention_json,
    photo_zoom_transform,
    select_synthetic,
    unit_infos,
    zoom_tensor,
)
from sknet.analysis.pipeline import DEFAULT_ZOOMS, Views, build_views, run_analysis
from sknet.analysis.plots import bin_channels, plot_all
from sknet.analysis.report import paper_pattern, render_report

__all__ = [
    "DEFAULT_ZOOMS",
    "EXPERIMENTS",
    "FORMAT",
    "MIN_CHANGE",
    "AblationRow",
    "AttentionResult",
    "PhotoZoomSet",
    "SyntheticZoomSet",
    "UnitInfo",
    "Views",
    "bin_channels",
    "build_views",
    "check_zooms",
    "collect_attention",
    "default_units",
    "experiment_rows",
    "load_attention_json",
    "paper_pattern",
    "photo_zoom_transform",
    "plot_all",
    "render_report",
    "run_ablation",
    "run_analysis",
    "select_synthetic",
    "unit_infos",
    "zoom_tensor",
]

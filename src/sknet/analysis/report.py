"""``report.md``: what the attention numbers of the object-scale protocol show, in plain words.

A unit's large-kernel attention is said to *rise* (or *fall*) with zoom when the per-image
change of its mean attention difference, from the reference zoom (the first) to the largest
one, is more than two standard errors away from zero (paired over the same images); otherwise
it is *flat*. Changes smaller than :data:`~sknet.analysis.attention.MIN_CHANGE` (half a
percentage point of attention) count as flat however many images support them. "Early" units
are those of every stage but the last; the paper's pattern (Li et al., Sec. 4.4) is a rise in
the early units and a weaker or no rise in the last stage.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sknet.analysis.attention import MIN_CHANGE, AttentionResult, zkey

__all__ = ["paper_pattern", "render_report", "write_report"]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _f(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.{digits}f}"


def _stage_groups(result: AttentionResult) -> tuple[list[str], list[str]]:
    """(early units, last-stage units); without stage names the last unit is 'last'."""
    names = list(result.units)
    stages = [result.units[u].stage for u in names]
    if all(s is not None for s in stages) and len(set(stages)) > 1:
        last = max(s for s in stages if s is not None)
        return [u for u, s in zip(names, stages) if s != last], [
            u for u, s in zip(names, stages) if s == last
        ]
    return names[:-1], names[-1:]


def paper_pattern(result: AttentionResult) -> dict[str, Any]:
    """Compare the measured trends with the paper's finding.

    Returns the early / last unit groups, their trends, their mean change (largest zoom minus
    reference), ``verdict`` and ``matches``:

    * ``"matches"``: most early units rise and no last-stage unit does (the paper's pattern);
    * ``"partly"``: most early units rise; last-stage units rise too, but by less on average;
    * ``"differs"``: anything else;
    * ``None``: cannot be judged (one zoom, or one unit).

    ``matches`` is True for ``"matches"`` and ``"partly"``, False for ``"differs"``.
    """
    early, last = _stage_groups(result)
    trends = {u: result.trend(u) for u in result.units}
    change = {u: result.paired_change(u)["mean"] for u in result.units}
    out: dict[str, Any] = {
        "early_units": early,
        "last_units": last,
        "trends": trends,
        "early_mean_change": float(np.mean([change[u] for u in early])) if early else None,
        "last_mean_change": float(np.mean([change[u] for u in last])) if last else None,
        "matches": None,
        "verdict": None,
    }
    if len(result.zooms) < 2 or not early or not last:
        return out
    early_rise = sum(trends[u] == "rises" for u in early)
    out["early_rising"] = early_rise
    if early_rise > len(early) / 2 and not any(trends[u] == "rises" for u in last):
        out["verdict"] = "matches"
    elif early_rise > len(early) / 2 and out["last_mean_change"] < out["early_mean_change"]:
        out["verdict"] = "partly"
    else:
        out["verdict"] = "differs"
    out["matches"] = out["verdict"] != "differs"
    return out


def _protocol_lines(result: AttentionResult) -> list[str]:
    meta = result.meta
    proto = meta.get("protocol", {})
    lines = []
    zooms = ", ".join(f"{zkey(z)}x" for z in result.zooms)
    method = proto.get("zoom_method", "")
    if method == "render":
        lines.append(
            f"- Views: each object is **re-rendered** at {zooms} its size (same shape, colours, "
            "background and noise); the reference view is the first zoom."
        )
    elif method == "center-crop-resize":
        lines.append(
            f"- Views: each image's short side is resized to zoom x {proto.get('resize_size')} "
            f"px and the central {proto.get('image_size')} px are kept ({zooms}); zoom 1 is the "
            "standard evaluation crop, so the central object is enlarged by the zoom factor."
        )
    sel = proto.get("selection", {})
    if sel.get("selection") == "in-range":
        lo, hi = sel["train_scale_range"]
        blo, bhi = sel["base_scale_range"]
        lines.append(
            f"- Images: only objects that stay inside the training scale range "
            f"[{lo:g}, {hi:g}] (object size / canvas) at *every* zoom, i.e. base size in "
            f"[{blo:.3g}, {bhi:.3g}]; {_pct(sel.get('eligible_fraction', float('nan')))} of "
            f"the {sel.get('scanned')} scanned samples qualified. Without this, enlarged large "
            "objects fall outside the training distribution, which was seen to reverse the "
            "trend in a prototype."
        )
    elif sel.get("selection") == "all":
        lines.append(
            "- Images: all samples, whatever their object size (no check that zoomed views stay "
            "within the training scale range)."
        )
    elif sel:
        lines.append(f"- Images: {sel.get('description', '')}")
    lines.append(
        f"- {result.num_images} images, {len(result.classes)} classes; model in eval mode; "
        "attention captured during the ordinary batched forward pass."
    )
    return lines


def render_report(result: AttentionResult, *, class_units: list[str] | None = None) -> str:
    """The markdown text of ``report.md``."""
    meta = result.meta
    zs = result.zooms
    ref, top = zkey(zs[0]), zkey(zs[-1])
    acc = result.accuracy()
    lines = [
        "# Attention vs object size (the SKNet paper's Figs. 3-4 protocol)",
        "",
        f"- Model: `{meta.get('model', '?')}` from `{meta.get('source', '?')}`; data: "
        f"{meta.get('data', '?')}.",
        *_protocol_lines(result),
        "",
        "## Accuracy per zoom",
        "",
        "| zoom | top-1 accuracy |",
        "|---:|---:|",
        *[f"| {zkey(z)}x | {_pct(acc[zkey(z)])} |" for z in zs],
        "",
        "## Mean attention difference per unit",
        "",
        "Mean over images and channels of the attention to the largest kernel minus that to the "
        "smallest (positive: the unit leans to the larger receptive field). The change is "
        f"per image from {ref}x to {top}x, with its standard error.",
        "",
    ]
    head = "| unit | branches | " + " | ".join(f"{zkey(z)}x" for z in zs)
    if len(zs) > 1:
        head += f" | change {ref}x->{top}x | images up | trend |"
        sep = "|---|---|" + "---:|" * len(zs) + "---:|---:|---|"
    else:
        head += " |"
        sep = "|---|---|" + "---:|" * len(zs)
    lines += [head, sep]
    for u, info in result.units.items():
        md = result.mean_diff(u)
        row = f"| {u} | {' / '.join(info.branches)} | " + " | ".join(_f(v) for v in md)
        if len(zs) > 1:
            ch = result.paired_change(u)
            row += (
                f" | {_f(ch['mean'])} +- {ch['sem']:.4f} | {_pct(ch['frac_up'])} | "
                f"{result.trend(u)} |"
            )
        else:
            row += " |"
        lines.append(row)
    lines += ["", "## What the numbers show", ""]
    lines += _findings(result, class_units or [])
    lines.append("")
    return "\n".join(lines)


def _findings(result: AttentionResult, class_units: list[str]) -> list[str]:
    zs = result.zooms
    if len(zs) < 2:
        return ["- Only one zoom was probed, so there is no trend to describe."]
    ref, top = zkey(zs[0]), zkey(zs[-1])
    pat = paper_pattern(result)
    trends = pat["trends"]
    rising = [u for u, t in trends.items() if t == "rises"]
    falling = [u for u, t in trends.items() if t == "falls"]
    flat = [u for u, t in trends.items() if t == "flat"]
    n = len(trends)
    out = []

    def names(us: list[str]) -> str:
        return ", ".join(us) if us else "none"

    out.append(
        f"- Enlarging the object from {ref}x to {top}x **raises** the large-kernel attention in "
        f"{len(rising)} of {n} SK units ({names(rising)}), **lowers** it in {len(falling)} "
        f"({names(falling)}) and leaves it flat in {len(flat)} "
        f"({names(flat)})."
    )
    if not rising and not falling:
        out.append(
            "- No unit's attention changes measurably with object size, so there is no pattern "
            "to compare with the paper's (an untrained or under-trained model looks like this)."
        )
    elif pat["matches"] is not None:
        early, last = pat["early_units"], pat["last_units"]
        out.append(
            f"- Early units ({names(early)}): mean change {_f(pat['early_mean_change'])}, "
            f"{pat['early_rising']} of {len(early)} rising. Last stage ({names(last)}): mean "
            f"change {_f(pat['last_mean_change'])}."
        )
        if pat["verdict"] == "matches":
            out.append(
                "- This **matches** the paper's finding: larger objects draw more attention to "
                "the larger kernel in the early units, and not in the last stage."
            )
        elif pat["verdict"] == "partly":
            out.append(
                "- This **partly matches** the paper's finding: larger objects draw more "
                "attention to the larger kernel in the early units; in the last stage the "
                "attention rises too, but less (the paper sees no such rise there)."
            )
        else:
            out.append(
                "- This **does not match** the paper's finding (a rise in most early units and a "
                "weaker change in the last stage)."
            )
    # Monotonic over the intermediate zooms?
    if len(zs) > 2:
        mono = [u for u in rising if np.all(np.diff(result.mean_diff(u)) > 0)]
        out.append(f"- Of the rising units, {len(mono)} rise at every zoom step ({names(mono)}).")
    acc = result.accuracy()
    drop = acc[ref] - acc[top]
    if drop > 0.05:
        verdict = (
            " The drop suggests the zoomed views are harder or partly out of distribution; "
            "read the attention change with that in mind."
        )
    elif drop < -0.02:
        verdict = (
            " The enlarged objects are recognised better than the originals, so the change in "
            "attention is not a symptom of failing to see them."
        )
    else:
        verdict = (
            " The zoomed views are recognised about as well as the originals, so the change in "
            "attention is not a symptom of failing to see the object."
        )
    out.append(
        f"- Top-1 accuracy is {_pct(acc[ref])} at {ref}x and {_pct(acc[top])} at {top}x." + verdict
    )
    for u in class_units:
        if u not in result.units:
            continue
        cd = result.class_diff(u)
        ok = ~np.isnan(cd[0]) & ~np.isnan(cd[-1])
        if ok.sum() == 0:
            continue
        up = int((cd[-1][ok] > cd[0][ok]).sum())
        out.append(
            f"- Per class ({u}): the difference at {top}x exceeds that at {ref}x in {up} of "
            f"{int(ok.sum())} classes."
        )
    out.append(
        f"- Trend rule: a unit rises/falls when the mean per-image change is more than two "
        f"standard errors from zero and at least {MIN_CHANGE} in size (attention is in [0, 1]); "
        "otherwise it is flat."
    )
    return out


def write_report(
    result: AttentionResult, path: Path, *, class_units: list[str] | None = None
) -> Path:
    """Write :func:`render_report` to ``path``."""
    path = Path(path)
    path.write_text(render_report(result, class_units=class_units), encoding="utf-8")
    return path

"""``sknet info``: parameters and multiply-accumulates of registered models, vs the paper."""

from __future__ import annotations

import argparse
import json

import sknet
from sknet.cli import examples
from sknet.complexity import MAX_COUNTED_SIDE
from sknet.errors import ConfigError
from sknet.hub import get_pretrained_cfg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameters and MACs of a model (torch's FLOP counter), with the paper's figures",
        description="Count parameters and multiply-accumulates (the paper's 'GFLOPs'), on "
        "the meta device (no memory for activations, any input size).",
        epilog=examples(
            "sknet info sknet50",
            "sknet info 'sk*' --input-size 320",
            "sknet info '*' --markdown > models.md",
        ),
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="model names or wildcards (sk*)")
    p.add_argument(
        "--input-size", type=int, default=None, help="square input side (default: native)"
    )
    p.add_argument(
        "--num-classes", type=int, default=None, help="classifier width (default: the paper's)"
    )
    p.add_argument("--json", action="store_true", help="print JSON (one object per model)")
    p.add_argument(
        "--markdown", action="store_true", help="print a markdown table with the paper's figures"
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="list model names and exit (timm's names such as skresnext50_32x4d are accepted "
        "as aliases; `sknet info NAME` shows a model's aliases)",
    )
    p.set_defaults(func=run)


def _row(name: str, input_size: int | None, num_classes: int | None) -> dict:
    entry = sknet.get_entry(name)
    model = sknet.create_model(name, num_classes=num_classes)
    c = sknet.complexity(model, input_size)
    row: dict = {
        "name": name,
        "params": c.params,
        "macs": c.macs,
        "input_size": c.input_size,
        "num_classes": model.num_classes,
        "description": entry.description,
    }
    row["aliases"] = sknet.models.aliases_of(name)
    row["pretrained"] = _weights(name)
    paper = entry.paper
    if paper is not None:
        row["paper"] = {
            "params": paper.params,
            "macs": paper.macs,
            "top1_err": paper.top1_err,
            "source": paper.source,
            "confirmed": paper.confirmed,
        }
    return row


def _weights(name: str) -> list[dict]:
    """The published weights of ``name`` with their source and reported accuracy."""
    out = []
    for tag in sknet.list_pretrained(f"{name}.*"):
        cfg = get_pretrained_cfg(tag)
        out.append(
            {
                "name": tag,
                "source": cfg.source,
                "license": cfg.license,
                "reported": [
                    {"top1": r.top1, "top5": r.top5, "resolution": r.resolution}
                    for r in cfg.reported
                ],
                "reported_by_publisher_not_measured_here": True,
            }
        )
    return out


def _expand(patterns: list[str]) -> list[str]:
    names: list[str] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            found = sknet.list_models(pat)
            if not found:
                raise ConfigError(f"no model matches {pat!r} (sknet info --list shows them)")
            names.extend(found)
        else:
            names.append(sknet.get_entry(pat).name)  # raises with suggestions; alias resolved
    return names


def run(args: argparse.Namespace) -> int:
    if args.list:
        for n in sknet.list_models():
            print(n)
        return 0
    if not args.names:
        raise ConfigError("give at least one model name (sknet info --list shows them)")
    if args.input_size is not None and not 1 <= args.input_size <= MAX_COUNTED_SIDE:
        raise ConfigError(
            f"--input-size must be in [1, {MAX_COUNTED_SIDE}], got {str(args.input_size)[:40]}"
        )
    rows = [_row(n, args.input_size, args.num_classes) for n in _expand(args.names)]
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    if args.markdown:
        print(_markdown(rows))
        return 0
    print(f"{'model':<24} {'params':>14} {'GMACs':>8} {'input':>6}  paper params / GMACs")
    for r in rows:
        p = r.get("paper") or {}
        pp = f"{p['params'] / 1e6:.2f}M" if p.get("params") else "-"
        pm = f"{p['macs'] / 1e9:.3f}" if p.get("macs") else "-"
        print(
            f"{r['name']:<24} {r['params']:>14,} {r['macs'] / 1e9:>8.3f} {r['input_size']:>6}"
            f"  {pp} / {pm}"
        )
        if r["aliases"]:
            print(f"  aliases: {', '.join(r['aliases'])} (timm's names)")
        for w in r["pretrained"]:
            acc = ", ".join(f"{a['top1']:.2f}% at {a['resolution']}" for a in w["reported"])
            print(f"  weights {w['name']}: {w['source']}; top-1 {acc or '-'} (reported)")
    return 0


def _fmt_gap(ours: float, paper: float | None) -> str:
    return f"{100 * (ours - paper) / paper:+.1f}%" if paper else ""


def _markdown(rows: list[dict]) -> str:
    lines = [
        "| model | input | params | paper | gap | MACs (G) | paper | gap | source |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        p = r.get("paper") or {}
        pp, pm = p.get("params"), p.get("macs")
        mark = "" if not p else (" (C)" if p.get("confirmed") else " (U)")
        lines.append(
            f"| `{r['name']}` | {r['input_size']} | {r['params'] / 1e6:.2f}M | "
            f"{f'{pp / 1e6:.2f}M' if pp else '-'} | {_fmt_gap(r['params'], pp)} | "
            f"{r['macs'] / 1e9:.3f} | {f'{pm / 1e9:.3f}' if pm else '-'} | "
            f"{_fmt_gap(r['macs'], pm)} | {p.get('source', '') + mark if p else r['description']} |"
        )
    return "\n".join(lines)

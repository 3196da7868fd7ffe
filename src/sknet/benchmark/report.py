"""Markdown tables and ratios from benchmark results.

Ratios between two variants are the median of their per-round ratios when both were timed in
the same interleaved rounds (paired: a slow spell of the machine hits both), else the ratio of
their medians; in parentheses the ratio of their fastest rounds, the least disturbed estimate on
a busy machine.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from sknet.benchmark.engine import Result

__all__ = [
    "BenchEnv",
    "best_of",
    "cpu_name",
    "group_table",
    "paired_ratio",
    "render_report",
]

SK_TIMM, RX_TIMM = "timm:skresnext50_32x4d", "timm:resnext50_32x4d"


@dataclass
class BenchEnv:
    """The machine and settings a benchmark ran with (printed above the tables)."""

    device: str
    cpu: str
    cores: int
    threads: int
    torch: str
    timm: str
    batch_size: int
    input_size: int
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None
    gpu: str | None = None
    weights: dict[str, str] = field(default_factory=dict)


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``, else what ``platform`` knows)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def paired_ratio(a: Result, b: Result) -> float:
    """Throughput of ``a`` over ``b``: the median of the per-round ratios when both were timed
    in the same rounds, else the ratio of the medians."""
    same_rounds = (a.mode, a.dtype, a.compiled) == (b.mode, b.dtype, b.compiled)
    if same_rounds and len(a.times_s) == len(b.times_s) and a.times_s:
        return statistics.median(tb / ta for ta, tb in zip(a.times_s, b.times_s))
    return a.images_per_s / b.images_per_s


def best_round_ratio(a: Result, b: Result) -> float:
    """Throughput of ``a`` over ``b`` in each one's fastest round."""
    return a.best_images_per_s / b.best_images_per_s


def best_of(results: Sequence[Result], contenders: Sequence[str]) -> Result | None:
    """The fastest (median images/s) of ``contenders``' variants in ``results`` (eager or
    compiled, any layout), or None if none of them ran."""
    pool = [r for r in results if r.contender.removesuffix(" (compiled)") in contenders]
    pool = [r for r in pool if r.images_per_s > 0]
    return max(pool, key=lambda r: r.images_per_s) if pool else None


def _fmt_ratios(a: Result, b: Result | None) -> str:
    if b is None or a.images_per_s <= 0 or b.images_per_s <= 0:
        return "-"
    return f"{paired_ratio(a, b):.2f}x ({best_round_ratio(a, b):.2f}x)"


def _own_baselines(name: str) -> list[str]:
    """sknet's ResNeXt counterparts of a contender: sknet50 -> resnext50_32x4d, ..."""
    core, plus = (name[: -len("+deploy")], "+deploy") if name.endswith("+deploy") else (name, "")
    if not core.startswith("sknet"):
        return [name]
    rx = "resnext" + core[len("sknet") :]
    return [rx + plus, rx + "_32x4d" + plus]


def group_table(results: Sequence[Result]) -> list[str]:
    """One group's markdown table: images/s, ratios to timm's SK and to the own ResNeXt."""
    lines = [
        "| contender | layout | images/s | best round | vs timm SK | vs own ResNeXt "
        "| peak mem (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    by = {(r.contender, r.layout): r for r in results}
    for r in results:
        if r.images_per_s <= 0:
            lines.append(f"| {r.contender} | {r.layout} | - | - | - | - | {r.note} |")
            continue
        suffix = " (compiled)" if r.compiled else ""
        timm_sk = by.get((SK_TIMM + suffix, r.layout))
        own_rx = None
        if r.contender.startswith("timm:"):
            own_rx = by.get((RX_TIMM + suffix, r.layout))
        else:
            for rx_name in _own_baselines(r.contender.removesuffix(suffix)):
                own_rx = own_rx or by.get((rx_name + suffix, r.layout))
        mem = f"{r.peak_mem_mib:.0f}" if r.peak_mem_mib is not None else "-"
        comp = f" (compile {r.compile_s:.0f} s)" if r.compile_s else ""
        lines.append(
            f"| {r.contender}{comp} | {r.layout} | {r.images_per_s:.2f} | "
            f"{r.best_images_per_s:.2f} | {_fmt_ratios(r, timm_sk)} | {_fmt_ratios(r, own_rx)} "
            f"| {mem} |"
        )
    return lines


def render_report(env: BenchEnv, groups: Sequence[tuple[str, str, bool, list[Result]]]) -> str:
    """The markdown report: the machine, one table per (mode, dtype, compiled) group, and how
    to read it."""
    out = [
        f"Machine: {env.cpu}, {env.cores} logical CPUs"
        + (f", GPU {env.gpu}" if env.gpu else "")
        + f"; torch {env.torch}, timm {env.timm}; device {env.device}, "
        f"{env.threads} torch threads; batch {env.batch_size} at {env.input_size}x"
        f"{env.input_size}.",
    ]
    if env.load_before is not None:
        lb, la = env.load_before, env.load_after or env.load_before
        out.append(
            f"Load average (1 min) {lb[0]:.1f} before, {la[0]:.1f} after: a value above the "
            "thread count means other processes shared the cores; read the ratios, which come "
            "from interleaved rounds, rather than the absolute images/s."
        )
    for name, note in env.weights.items():
        out.append(f"Weights of {name}: {note}.")
    out.append("")
    for mode, dtype, compiled, results in groups:
        title = {"infer": "Inference", "train": "Training step (forward, backward, SGD)"}[mode]
        out.append(f"### {title}, {dtype}{', torch.compile' if compiled else ''}")
        out.append("")
        out.extend(group_table(results))
        out.append("")
    out.append(
        "images/s: median over the interleaved rounds; best round: the fastest. Ratios: median "
        "of the per-round ratios (each round times every variant once, back to back), in "
        "parentheses the ratio of the fastest rounds, the least disturbed estimate on a busy "
        "machine. Peak memory: "
        + (
            "growth of the RSS high-water mark over two iterations in a fresh process (after one "
            "single-image eval forward, so torch's lazily loaded code is not counted)."
            if env.device == "cpu"
            else "growth of torch.cuda.max_memory_allocated over two iterations."
        )
    )
    return "\n".join(out)

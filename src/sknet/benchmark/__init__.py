"""Throughput and peak memory of sknet's models against timm's, measured side by side.

The engine behind ``sknet bench`` and ``benchmarks/``. One process; for each (mode, dtype,
compile) group every (contender, layout) variant is warmed up, then timed in interleaved rounds
(:func:`time_interleaved`); reported are median images/s, paired ratios and peak memory
(:mod:`sknet.benchmark.memory` on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA).

>>> from sknet.benchmark import BenchConfig, Group, run_benchmark
>>> run = run_benchmark(BenchConfig(models=("sknet_tiny", "resnext_tiny"),  # doctest: +SKIP
...     groups=(Group("infer", "fp32", ("cl",)),), input_size=48, batch_size=2))
>>> print(run.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sknet.benchmark.engine import (
    DEFAULT_GROUPS,
    DEFAULT_MODELS,
    BenchConfig,
    Group,
    Result,
    Variant,
    autocast,
    build_contender,
    cpu_flags,
    cuda_peak_mib,
    load_average,
    make_inputs,
    make_step,
    parse_groups,
    share_timm_weights,
    time_group,
    time_interleaved,
    variant_model,
    warm_up,
)
from sknet.benchmark.memory import cpu_peak_mib
from sknet.benchmark.report import (
    BenchEnv,
    best_of,
    best_round_ratio,
    cpu_name,
    group_table,
    paired_ratio,
    render_report,
)

__all__ = [
    "DEFAULT_GROUPS",
    "DEFAULT_MODELS",
    "BenchConfig",
    "BenchEnv",
    "BenchRun",
    "Group",
    "Result",
    "Variant",
    "autocast",
    "best_of",
    "best_round_ratio",
    "build_contender",
    "cpu_peak_mib",
    "cuda_peak_mib",
    "group_table",
    "make_inputs",
    "make_step",
    "paired_ratio",
    "parse_groups",
    "render_report",
    "run_benchmark",
    "share_timm_weights",
    "time_interleaved",
    "variant_model",
    "warm_up",
]


@dataclass
class BenchRun:
    """The outcome of :func:`run_benchmark`: the environment and the timed groups
    ``(mode, dtype, compiled, results)``."""

    env: BenchEnv
    groups: list[tuple[str, str, bool, list[Result]]] = field(default_factory=list)

    @property
    def results(self) -> list[Result]:
        return [r for *_, rs in self.groups for r in rs]

    def markdown(self) -> str:
        return render_report(self.env, self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {"env": asdict(self.env), "results": [asdict(r) for r in self.results]}

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_benchmark(cfg: BenchConfig) -> BenchRun:
    """Time ``cfg``'s contenders side by side (progress on stderr). torch's CPU thread count is
    set to ``cfg.threads`` for the run and restored afterwards."""
    device = cfg.resolve_device()
    cfg.validate(device)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, device)
    finally:
        torch.set_num_threads(threads_before)


def _environment(cfg: BenchConfig, device: torch.device) -> BenchEnv:
    timm_version = "-"
    with contextlib.suppress(ImportError):
        import timm

        timm_version = timm.__version__
    return BenchEnv(
        device=device.type,
        cpu=cpu_name(),
        cores=os.cpu_count() or 0,
        threads=cfg.threads,
        torch=torch.__version__,
        timm=timm_version,
        batch_size=int(cfg.batch_size or 0),
        input_size=cfg.input_size,
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        load_before=load_average(),
    )


def _run(cfg: BenchConfig, device: torch.device) -> BenchRun:
    groups = cfg.groups or ()
    bf16 = any(g.dtype == "bf16" for g in groups)
    if device.type == "cpu" and bf16 and not ({"avx512_bf16", "amx_bf16"} & cpu_flags()):
        _log("note: this CPU has no native bf16 (avx512_bf16/amx_bf16)")
    env = _environment(cfg, device)
    _log(
        f"sknet bench on {env.cpu} ({env.cores} CPUs), torch {env.torch}, {cfg.threads} "
        f"threads, device {device}, batch {cfg.batch_size}, {cfg.input_size}px"
    )
    base_models = {c.removesuffix("+deploy"): build_contender(c.removesuffix("+deploy"))
                   for c in cfg.models}  # fmt: skip
    if cfg.share_weights:
        env.weights = share_timm_weights(base_models, min(cfg.input_size, 64))
    run = BenchRun(env)
    for g in groups:
        for compiled in (False, True) if cfg.compile else (False,):
            variants = [
                Variant(c, lay, compiled)
                for c in cfg.models
                for lay in g.layouts
                if not (g.mode == "train" and c.endswith("+deploy"))
            ]
            if not variants:
                continue
            _log(f"[{g.mode} {g.dtype}{' compiled' if compiled else ''}] {len(variants)} variants")
            results = time_group(g, compiled, variants, base_models, cfg, device)
            want_mem = cfg.memory == "all" or (cfg.memory == "train" and g.mode == "train")
            if device.type == "cpu" and want_mem and not compiled:
                for v, res in zip(variants, results):
                    if res.images_per_s > 0:
                        res.peak_mem_mib = cpu_peak_mib(
                            v.contender,
                            v.layout,
                            g.mode,
                            g.dtype,
                            batch=res.batch_size,
                            size=cfg.input_size,
                            threads=cfg.threads,
                        )
            run.groups.append((g.mode, g.dtype, compiled, results))
    env.load_after = load_average()
    return run

"""``sknet bench``: throughput of SKNet-50 against ResNeXt-50 and timm's pair, side by side.

Also ``python benchmarks/throughput.py`` (same options). Everything is measured in one process:
for each (mode, dtype, compile) group, every (contender, layout) variant is built, warmed up, and
then timed in rounds, one iteration per variant per round, the order rotating every round
(ABCD, BCDA, ...), so that slow drifts of a shared machine hit all variants alike. Reported:
median images/s over the rounds, the spread, ratios between contenders (the numbers to trust on
a busy machine: they come from interleaved measurements), and peak memory.

Peak memory. On CPU, torch's allocations do not go through Python's tracemalloc, so each
(contender, layout, mode) runs once more in a fresh subprocess: it builds the model, runs one
single-image eval forward (so torch's lazily loaded code and thread pools are in place), builds
the input batch, notes its resident set size (RSS), runs two iterations (a training iteration
includes the gradients and the SGD momentum buffers), and reports the growth of the RSS
high-water mark (``VmHWM`` in ``/proc/self/status``; not ``getrusage``, whose ``ru_maxrss``
carries over the forked parent's size across ``exec``) over that baseline: activations,
gradients, optimizer state, temporaries and allocator slack, as the OS sees them. On CUDA it is
``torch.cuda.max_memory_allocated`` growth over the same two iterations, in-process.

Contenders (``--models``): sknet's ``sknet50`` and ``resnext50_32x4d`` (eager, and with
``+deploy`` their :func:`sknet.deploy` form, inference only), timm's ``skresnext50_32x4d`` and
``resnext50_32x4d`` (``timm:`` prefix). sknet's models get timm's (random) weights through
:func:`sknet.convert.from_timm`, and the outputs are checked to agree before timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_MODELS = (
    "sknet50",
    "sknet50+deploy",
    "resnext50_32x4d",
    "resnext50_32x4d+deploy",
    "timm:skresnext50_32x4d",
    "timm:resnext50_32x4d",
)
# (mode, dtype, layouts) measured without --full
DEFAULT_GROUPS = (
    ("infer", "fp32", ("nchw", "cl")),
    ("infer", "bf16", ("cl",)),
    ("train", "fp32", ("nchw", "cl")),
)
SK_OURS, RX_OURS = "sknet50", "resnext50_32x4d"
SK_TIMM, RX_TIMM = "timm:skresnext50_32x4d", "timm:resnext50_32x4d"
# sknet model <- timm model whose weights it takes
SHARE = {SK_OURS: "skresnext50_32x4d", RX_OURS: "resnext50_32x4d"}


# ----------------------------------------------------------------------------- arguments

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
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="throughput: SKNet-50 vs ResNeXt-50, sknet vs timm (interleaved, medians)",
        description=_DESCRIPTION,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/throughput.py", description=_DESCRIPTION)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# ----------------------------------------------------------------------------- contenders


@dataclass(frozen=True)
class Variant:
    contender: str  # e.g. "sknet50", "sknet50+deploy", "timm:skresnext50_32x4d"
    layout: str  # "nchw" | "cl"
    compiled: bool = False

    @property
    def base(self) -> str:
        return self.contender.removesuffix("+deploy")

    @property
    def deployed(self) -> bool:
        return self.contender.endswith("+deploy")

    @property
    def label(self) -> str:
        return self.contender + (" (compiled)" if self.compiled else "")


@dataclass
class Result:
    mode: str
    dtype: str
    contender: str
    layout: str
    compiled: bool
    images_per_s: float
    times_s: list[float]
    batch_size: int
    compile_s: float | None = None
    peak_mem_mib: float | None = None
    note: str = ""

    @property
    def best_images_per_s(self) -> float:
        return self.batch_size / min(self.times_s) if self.times_s else 0.0


@dataclass
class Env:
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


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def _timm():
    try:
        import timm
    except ImportError as exc:
        raise RuntimeError("timm contenders need timm (pip install timm)") from exc
    return timm


def _build(name: str, num_classes: int = 1000):
    """A fresh, randomly initialised model for a contender's base name."""
    if name.startswith("timm:"):
        return _timm().create_model(name[5:], pretrained=False, num_classes=num_classes)
    import sknet

    return sknet.create_model(name, num_classes=num_classes)


def _share_weights(models: dict[str, Any], size: int) -> dict[str, str]:
    """Load timm's weights into the matching sknet models; check the outputs agree."""
    import torch

    notes: dict[str, str] = {}
    try:
        from sknet.convert import from_timm
    except ImportError:
        for ours in SHARE:
            if ours in models:
                notes[ours] = "not shared (sknet.convert unavailable)"
        return notes
    for ours, theirs in SHARE.items():
        key = "timm:" + theirs
        if ours not in models:
            continue
        if key not in models:
            notes[ours] = f"own random init ({key} not benchmarked)"
            continue
        src = models[key]
        models[ours].load_state_dict(from_timm(src.state_dict(), ours), strict=True)
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        a, b = models[ours].eval(), src.eval()
        with torch.inference_mode():
            diff = float((a(x) - b(x)).abs().max())
        if diff > 1e-3:
            raise RuntimeError(f"{ours} with {key}'s weights differs from it by {diff:.3g}")
        notes[ours] = f"{key} weights via sknet.convert.from_timm; max |out diff| {diff:.1e}"
    return notes


def _variant_model(base_models: dict[str, Any], v: Variant, mode: str, device):
    import copy

    import torch

    model = copy.deepcopy(base_models[v.base]).to(device)
    mf = torch.channels_last if v.layout == "cl" else torch.contiguous_format
    if v.deployed:
        from sknet.deploy import deploy

        fmt = "channels_last" if v.layout == "cl" else "contiguous"
        model = deploy(model, memory_format=fmt, inplace=True)
    else:
        model = model.to(memory_format=mf)
        model.train(mode == "train")
    return model


# ----------------------------------------------------------------------------- timing


def _amp(device, dtype: str):
    import torch

    if dtype == "fp32":
        return contextlib.nullcontext()
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    return torch.autocast(device.type, dtype=dt)


def _make_step(model, mode: str, dtype: str, device, x, y, compiled: bool) -> Callable[[], None]:
    import torch
    import torch.nn.functional as F

    if mode == "infer":
        grad_ctx = torch.no_grad if compiled else torch.inference_mode

        def step() -> None:
            with grad_ctx(), _amp(device, dtype):
                model(x)

        return step
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with _amp(device, dtype):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return train_step


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(v: Variant, batch: int, size: int, device):
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    if v.layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    return x, y


def _time_group(
    mode: str,
    dtype: str,
    variants: list[Variant],
    base_models: dict[str, Any],
    args: argparse.Namespace,
    device,
) -> list[Result]:
    import torch

    steps: dict[Variant, Callable[[], None]] = {}
    compile_s: dict[Variant, float] = {}
    notes: dict[Variant, str] = {}
    for v in variants:
        model = _variant_model(base_models, v, mode, device)
        if v.compiled:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = mode == "infer"  # fold BN / pre-pack weights for inference
            model = torch.compile(model)
        x, y = _inputs(v, args.batch_size, args.input_size, device)
        steps[v] = _make_step(model, mode, dtype, device, x, y, v.compiled)
        t0 = time.perf_counter()
        try:
            for _ in range(max(1, args.warmup)):
                steps[v]()
            _sync(device)
        except Exception as exc:  # report a variant that cannot run instead of aborting all
            notes[v] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            del steps[v]
            continue
        if v.compiled:
            compile_s[v] = time.perf_counter() - t0
        print(f"  warmed up {v.label:<34} {v.layout:<4}", file=sys.stderr, flush=True)
    order = list(steps)
    times: dict[Variant, list[float]] = {v: [] for v in order}
    for r in range(args.rounds):
        k = r % len(order) if order else 0
        for v in order[k:] + order[:k]:
            _sync(device)
            t0 = time.perf_counter()
            steps[v]()
            _sync(device)
            times[v].append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    results = []
    for v in variants:
        if v not in times:
            results.append(
                Result(
                    mode,
                    dtype,
                    v.label,
                    v.layout,
                    v.compiled,
                    0.0,
                    [],
                    args.batch_size,
                    note=notes.get(v, ""),
                )
            )
            continue
        med = statistics.median(times[v])
        results.append(
            Result(
                mode,
                dtype,
                v.label,
                v.layout,
                v.compiled,
                args.batch_size / med,
                times[v],
                args.batch_size,
                compile_s=compile_s.get(v),
            )
        )
    if device.type == "cuda" and args.memory != "none":
        for v, res in zip(variants, results):
            if v in steps:
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                steps[v]()
                steps[v]()
                _sync(device)
                res.peak_mem_mib = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    steps.clear()
    return results


# ----------------------------------------------------------------------------- memory (CPU)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    """This process's own RSS high-water mark (VmHWM; Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (peak memory needs Linux)")


def _child(spec_json: str) -> int:
    """Run in a fresh process: peak RSS growth over two iterations of one variant."""
    import torch

    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    v = Variant(spec["contender"], spec["layout"])
    device = torch.device("cpu")
    base = {v.base: _build(v.base)}
    model = _variant_model(base, v, spec["mode"], device)
    # Touch the libraries' code and thread pools first (an eval forward of one image), so the
    # measured growth is the tensors' memory, not torch's lazily loaded code pages.
    x1, _ = _inputs(v, 1, spec["size"], device)
    training = model.training
    with torch.inference_mode(), _amp(device, spec["dtype"]):
        model.eval()(x1)
    model.train(training)
    x, y = _inputs(v, spec["batch"], spec["size"], device)
    step = _make_step(model, spec["mode"], spec["dtype"], device, x, y, False)
    before = _rss_bytes()
    step()
    step()
    peak = _hwm_bytes()
    print(json.dumps({"growth_mib": max(0, peak - before) / 2**20, "peak_mib": peak / 2**20}))
    return 0


def _memory_cpu(v: Variant, mode: str, dtype: str, args: argparse.Namespace) -> float | None:
    spec = {
        "contender": v.contender,
        "layout": v.layout,
        "mode": mode,
        "dtype": dtype,
        "batch": args.batch_size,
        "size": args.input_size,
        "threads": args.threads,
    }
    cmd = [sys.executable, "-m", "sknet.cli.bench", "--child", json.dumps(spec)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
        return float(json.loads(out.stdout.strip().splitlines()[-1])["growth_mib"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError) as exc:
        print(f"  memory run for {v.label} {v.layout} failed: {exc}", file=sys.stderr)
        return None


# ----------------------------------------------------------------------------- report


def _best(results: list[Result], contenders: Sequence[str]) -> Result | None:
    """The best setting (highest median images/s) among ``contenders``' variants."""
    pool = [r for r in results if r.contender.removesuffix(" (compiled)") in contenders]
    pool = [r for r in pool if r.images_per_s > 0]
    return max(pool, key=lambda r: r.images_per_s) if pool else None


def _ratio(a: Result, b: Result) -> float:
    """Throughput of ``a`` over ``b``: the median of the per-round ratios when both were timed
    in the same rounds (paired: a slow spell of the machine hits both), else of the medians."""
    same_rounds = (a.mode, a.dtype, a.compiled) == (b.mode, b.dtype, b.compiled)
    if same_rounds and len(a.times_s) == len(b.times_s) and a.times_s:
        return statistics.median(tb / ta for ta, tb in zip(a.times_s, b.times_s))
    return a.images_per_s / b.images_per_s


def _ratio_best(a: Result, b: Result) -> float:
    """Throughput of ``a`` over ``b`` in each one's fastest round."""
    return a.best_images_per_s / b.best_images_per_s


def _fmt_ratios(a: Result, b: Result | None) -> str:
    if b is None or a.images_per_s <= 0 or b.images_per_s <= 0:
        return "-"
    return f"{_ratio(a, b):.2f}x ({_ratio_best(a, b):.2f}x)"


def _own_baselines(name: str) -> list[str]:
    """sknet's ResNeXt counterparts of a contender: sknet50 -> resnext50_32x4d, ..."""
    core, plus = (name[: -len("+deploy")], "+deploy") if name.endswith("+deploy") else (name, "")
    if not core.startswith("sknet"):
        return [name]
    rx = "resnext" + core[len("sknet") :]
    return [rx + plus, rx + "_32x4d" + plus]


def _group_table(results: list[Result]) -> list[str]:
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
            base = r.contender.removesuffix(suffix)
            for rx_name in _own_baselines(base):
                own_rx = own_rx or by.get((rx_name + suffix, r.layout))
        mem = f"{r.peak_mem_mib:.0f}" if r.peak_mem_mib is not None else "-"
        comp = f" (compile {r.compile_s:.0f} s)" if r.compile_s else ""
        lines.append(
            f"| {r.contender}{comp} | {r.layout} | {r.images_per_s:.2f} | "
            f"{r.best_images_per_s:.2f} | {_fmt_ratios(r, timm_sk)} | {_fmt_ratios(r, own_rx)} "
            f"| {mem} |"
        )
    return lines


TARGETS: tuple[
    tuple[str, tuple[str, str], tuple[str, ...], tuple[str, str], tuple[str, ...], float], ...
] = (
    (
        "fp32 inference: sknet50 / timm SK",
        ("infer", "fp32"),
        (SK_OURS, SK_OURS + "+deploy"),
        ("infer", "fp32"),
        (SK_TIMM,),
        1.7,
    ),
    (
        "fp32 inference: sknet50 / own ResNeXt",
        ("infer", "fp32"),
        (SK_OURS, SK_OURS + "+deploy"),
        ("infer", "fp32"),
        (RX_OURS, RX_OURS + "+deploy"),
        0.93,
    ),
    (
        "bf16 inference: sknet50 / own ResNeXt bf16",
        ("infer", "bf16"),
        (SK_OURS, SK_OURS + "+deploy"),
        ("infer", "bf16"),
        (RX_OURS, RX_OURS + "+deploy"),
        0.90,
    ),
    (
        "bf16 inference: sknet50 / timm SK fp32",
        ("infer", "bf16"),
        (SK_OURS, SK_OURS + "+deploy"),
        ("infer", "fp32"),
        (SK_TIMM,),
        3.0,
    ),
    (
        "fp32 training: sknet50 / timm SK",
        ("train", "fp32"),
        (SK_OURS,),
        ("train", "fp32"),
        (SK_TIMM,),
        1.4,
    ),
    (
        "fp32 training: sknet50 / own ResNeXt",
        ("train", "fp32"),
        (SK_OURS,),
        ("train", "fp32"),
        (RX_OURS,),
        0.90,
    ),
)


def _targets(all_results: list[Result], device_type: str) -> list[str]:
    """The issue's CPU targets (batch 16 at 224), best setting of each contender (eager; a
    compiled variant counts where --compile measured one)."""
    if device_type != "cpu":
        return []

    def grp(key: tuple[str, str]) -> list[Result]:
        return [r for r in all_results if (r.mode, r.dtype) == key]

    lines = [
        "| target (best setting of each) | ours | reference | ratio (best rounds) | goal | met |",
        "|---|---|---|---:|---:|---|",
    ]
    for name, ga, ca, gb, cb, goal in TARGETS:
        a, b = _best(grp(ga), ca), _best(grp(gb), cb)
        if a is None or b is None:
            continue
        ratio = _ratio(a, b)
        lines.append(
            f"| {name} | {a.contender} {a.layout} | {b.contender} {b.layout} | "
            f"{ratio:.3f}x ({_ratio_best(a, b):.3f}x) | >= {goal}x | "
            f"{'yes' if ratio >= goal else 'no'} |"
        )
    a, b = _best(grp(("train", "fp32")), (SK_OURS,)), _best(grp(("train", "fp32")), (SK_TIMM,))
    if a and b and a.peak_mem_mib is not None and b.peak_mem_mib is not None:
        ok = a.peak_mem_mib <= b.peak_mem_mib
        lines.append(
            f"| fp32 training peak memory: sknet50 <= timm SK | {a.peak_mem_mib:.0f} MiB "
            f"({a.layout}) | {b.peak_mem_mib:.0f} MiB ({b.layout}) | - | <= | "
            f"{'yes' if ok else 'no'} |"
        )
    return lines if len(lines) > 2 else []


def _report(env: Env, groups: list[tuple[str, str, bool, list[Result]]]) -> str:
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
        out.extend(_group_table(results))
        out.append("")
    all_results = [r for *_, rs in groups for r in rs]
    targets = _targets(all_results, env.device)
    if targets:
        out.append("### Targets")
        out.append("")
        out.extend(targets)
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


# ----------------------------------------------------------------------------- driver


def _split(text: str | None, allowed: Sequence[str], what: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ValueError(f"--{what}: unknown {bad or text!r}; choose from {', '.join(allowed)}")
    return items


def _plan(args: argparse.Namespace, device_type: str) -> list[tuple[str, str, tuple[str, ...]]]:
    dtypes_ok = ("fp32", "bf16", "fp16") if device_type == "cuda" else ("fp32", "bf16")
    modes = _split(args.modes, ("infer", "train"), "modes")
    dtypes = _split(args.dtypes, dtypes_ok, "dtypes")
    layouts = _split(args.layouts, ("nchw", "cl"), "layouts")
    if args.full or modes or dtypes or layouts:
        modes = modes or ["infer", "train"]
        dtypes = dtypes or (["fp32", "bf16"] if args.full else ["fp32"])
        layouts = layouts or ["nchw", "cl"]
        return [(m, d, tuple(layouts)) for m in modes for d in dtypes]
    if device_type == "cuda":
        return [
            ("infer", "fp32", ("nchw", "cl")),
            ("infer", "bf16", ("cl",)),
            ("train", "bf16", ("cl",)),
        ]
    return [(m, d, tuple(ls)) for m, d, ls in DEFAULT_GROUPS]


def run(args: argparse.Namespace) -> int:
    if args.child is not None:
        return _child(args.child)
    import torch

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu, cuda or auto, got {args.device!r}")
    if args.batch_size is None:
        args.batch_size = 64 if device.type == "cuda" else 16
    for name in ("batch_size", "input_size", "threads", "rounds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.input_size < 32:
        raise ValueError("--input-size must be >= 32 (the networks' total stride)")
    torch.set_num_threads(args.threads)
    contenders = [c.strip() for c in args.models.split(",") if c.strip()]
    if not contenders:
        raise ValueError("--models: give at least one contender")
    import sknet

    for c in contenders:
        base = c.removesuffix("+deploy")
        if base.startswith("timm:"):
            if c.endswith("+deploy"):
                raise ValueError(f"{c}: +deploy applies to sknet models only")
            _timm()
        else:
            sknet.get_entry(base)
    plan = _plan(args, device.type)
    if device.type == "cpu" and any(d == "bf16" for _, d, _ in plan):
        flags = _cpu_flags()
        if not ({"avx512_bf16", "amx_bf16"} & flags):
            print("note: this CPU has no native bf16 (avx512_bf16/amx_bf16)", file=sys.stderr)

    timm_version = "-"
    with contextlib.suppress(ImportError):
        import timm

        timm_version = timm.__version__
    env = Env(
        device=device.type,
        cpu=_cpu_name(),
        cores=os.cpu_count() or 0,
        threads=args.threads,
        torch=torch.__version__,
        timm=timm_version,
        batch_size=args.batch_size,
        input_size=args.input_size,
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    )
    with contextlib.suppress(OSError):
        env.load_before = os.getloadavg()
    print(
        f"sknet bench on {env.cpu} ({env.cores} CPUs), torch {env.torch}, {args.threads} "
        f"threads, device {device}, batch {args.batch_size}, {args.input_size}px",
        file=sys.stderr,
    )

    base_models = {c.removesuffix("+deploy"): None for c in contenders}
    for name in base_models:
        base_models[name] = _build(name).eval()
    if not args.no_share_weights:
        env.weights = _share_weights(base_models, min(args.input_size, 64))

    groups: list[tuple[str, str, bool, list[Result]]] = []
    compile_opts = (False, True) if args.compile else (False,)
    for mode, dtype, layouts in plan:
        for compiled in compile_opts:
            variants = [
                Variant(c, lay, compiled)
                for c in contenders
                for lay in layouts
                if not (mode == "train" and c.endswith("+deploy"))
            ]
            if not variants:
                continue
            print(
                f"[{mode} {dtype}{' compiled' if compiled else ''}] {len(variants)} variants",
                file=sys.stderr,
                flush=True,
            )
            results = _time_group(mode, dtype, variants, base_models, args, device)
            want_mem = args.memory == "all" or (args.memory == "train" and mode == "train")
            if device.type == "cpu" and want_mem and not compiled:
                for v, res in zip(variants, results):
                    if res.images_per_s > 0:
                        res.peak_mem_mib = _memory_cpu(v, mode, dtype, args)
            groups.append((mode, dtype, compiled, results))
    with contextlib.suppress(OSError):
        env.load_after = os.getloadavg()
    report = _report(env, groups)
    print(report)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(report + "\n")
    if args.json_out:
        payload = {"env": asdict(env), "results": [asdict(r) for *_, rs in groups for r in rs]}
        with open(args.json_out, "w") as fh:
            json.dump(payload, fh, indent=2)
    return 0


if __name__ == "__main__":  # the memory subprocess and `python -m sknet.cli.bench`
    sys.exit(main())

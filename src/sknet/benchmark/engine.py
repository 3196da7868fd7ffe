"""Building the contenders, their timed steps, and the interleaved timing loop.

Everything is measured in one process: for each (mode, dtype, compile) group, every (contender,
layout) variant is built and warmed up, then timed in rounds, one iteration per variant per
round, the order rotating every round (ABCD, BCDA, ...), so that slow drifts of a shared machine
hit all variants alike. Per variant the per-round times are kept; the report takes medians and
paired ratios from them.

Contenders: sknet model names (suffix ``+deploy`` for the :func:`sknet.deploy` form, inference
only) and timm models (prefix ``timm:``). sknet's ``sknet50`` / ``resnext50_32x4d`` can take the
(random) weights of timm's ``skresnext50_32x4d`` / ``resnext50_32x4d`` through
:func:`sknet.hub.from_timm`, with a check that the outputs then agree.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from sknet._device import autocast, resolve_device
from sknet.deploy import deploy
from sknet.errors import ConfigError, DependencyError
from sknet.hub.convert import from_timm
from sknet.models import create_model, get_entry

__all__ = [
    "DEFAULT_GROUPS",
    "DEFAULT_MODELS",
    "BenchConfig",
    "Group",
    "Result",
    "Variant",
    "autocast",
    "build_contender",
    "cuda_peak_mib",
    "make_inputs",
    "make_step",
    "parse_groups",
    "share_timm_weights",
    "time_interleaved",
    "variant_model",
    "warm_up",
]

Mode = Literal["infer", "train"]
DType = Literal["fp32", "bf16", "fp16"]
Layout = Literal["nchw", "cl"]
K = TypeVar("K", bound=Hashable)

DEFAULT_MODELS: tuple[str, ...] = (
    "sknet50",
    "sknet50+deploy",
    "resnext50_32x4d",
    "resnext50_32x4d+deploy",
    "timm:skresnext50_32x4d",
    "timm:resnext50_32x4d",
)
# (mode, dtype, layouts) measured by default on the CPU and on CUDA
DEFAULT_GROUPS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "cpu": (
        ("infer", "fp32", ("nchw", "cl")),
        ("infer", "bf16", ("cl",)),
        ("train", "fp32", ("nchw", "cl")),
    ),
    "cuda": (
        ("infer", "fp32", ("nchw", "cl")),
        ("infer", "bf16", ("cl",)),
        ("train", "bf16", ("cl",)),
    ),
}
MODES: tuple[str, ...] = ("infer", "train")
LAYOUTS: tuple[str, ...] = ("nchw", "cl")
DTYPES: dict[str, tuple[str, ...]] = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")}
# sknet model <- timm model whose weights it can take
TIMM_TWINS: dict[str, str] = {"sknet50": "skresnext50_32x4d", "resnext50_32x4d": "resnext50_32x4d"}


# ----------------------------------------------------------------------------- descriptions


@dataclass(frozen=True)
class Variant:
    """One timed configuration of a contender."""

    contender: str  # e.g. "sknet50", "sknet50+deploy", "timm:skresnext50_32x4d"
    layout: str  # "nchw" | "cl" (channels_last)
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
    """The measurement of one variant in one (mode, dtype) group."""

    mode: str
    dtype: str
    contender: str  # Variant.label
    layout: str
    compiled: bool
    images_per_s: float  # median over the rounds; 0 when the variant failed
    times_s: list[float]
    batch_size: int
    compile_s: float | None = None
    peak_mem_mib: float | None = None
    note: str = ""

    @property
    def best_images_per_s(self) -> float:
        return self.batch_size / min(self.times_s) if self.times_s else 0.0


@dataclass(frozen=True)
class Group:
    """One (mode, dtype) group, timed with every layout in ``layouts``."""

    mode: str
    dtype: str
    layouts: tuple[str, ...]


def _split(text: str | None, allowed: Sequence[str], what: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ConfigError(f"--{what}: unknown {bad or text!r}; choose from {', '.join(allowed)}")
    return items


def parse_groups(
    device_type: str,
    modes: str | None = None,
    dtypes: str | None = None,
    layouts: str | None = None,
    full: bool = False,
) -> tuple[Group, ...]:
    """The groups to time from comma-separated ``modes``/``dtypes``/``layouts``.

    Nothing given (and not ``full``): the default groups of the device type. Otherwise every
    combination, with unspecified modes = both, dtypes = fp32 (``full``: fp32 and bf16),
    layouts = both.
    """
    if device_type not in DTYPES:
        raise ConfigError(f"device type must be cpu or cuda, got {device_type!r}")
    m = _split(modes, MODES, "modes")
    d = _split(dtypes, DTYPES[device_type], "dtypes")
    ls = _split(layouts, LAYOUTS, "layouts")
    if full or m or d or ls:
        m = m or list(MODES)
        d = d or (["fp32", "bf16"] if full else ["fp32"])
        ls = ls or list(LAYOUTS)
        return tuple(Group(mi, di, tuple(ls)) for mi in m for di in d)
    return tuple(Group(mi, di, tuple(li)) for mi, di, li in DEFAULT_GROUPS[device_type])


@dataclass
class BenchConfig:
    """What :func:`sknet.benchmark.run_benchmark` measures.

    ``groups=None`` takes the device's default groups; ``batch_size=None`` 16 on CPU, 64 on CUDA.
    ``memory``: which groups get a peak-memory measurement (``"train"``, ``"all"``, ``"none"``).
    """

    models: tuple[str, ...] = DEFAULT_MODELS
    groups: tuple[Group, ...] | None = None
    compile: bool = False
    batch_size: int | None = None
    input_size: int = 224
    device: str = "auto"
    threads: int = 2
    rounds: int = 5
    warmup: int = 2
    memory: str = "train"
    share_weights: bool = True

    def resolve_device(self) -> torch.device:
        return resolve_device(self.device)

    def validate(self, device: torch.device) -> None:
        """Check every field; fills in the device-dependent defaults."""
        if self.batch_size is None:
            self.batch_size = 64 if device.type == "cuda" else 16
        for name in ("batch_size", "input_size", "threads", "rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
        if self.input_size < 32:
            raise ConfigError("--input-size must be >= 32 (the networks' total stride)")
        if self.memory not in ("train", "all", "none"):
            raise ConfigError(f"--memory must be train, all or none, got {self.memory!r}")
        if not self.models:
            raise ConfigError("--models: give at least one contender")
        for c in self.models:
            base = c.removesuffix("+deploy")
            if base.startswith("timm:"):
                if c.endswith("+deploy"):
                    raise ConfigError(f"{c}: +deploy applies to sknet models only")
                _timm()
            else:
                get_entry(base)
        if self.groups is None:
            self.groups = parse_groups(device.type)
        for g in self.groups:
            if g.mode not in MODES or g.dtype not in DTYPES[device.type]:
                raise ConfigError(f"cannot time {g.mode} {g.dtype} on {device.type}")


# ----------------------------------------------------------------------------- contenders


def _timm() -> Any:
    try:
        import timm
    except ImportError as exc:
        raise DependencyError("timm contenders need timm (pip install timm)") from exc
    return timm


def build_contender(name: str, num_classes: int = 1000) -> nn.Module:
    """A fresh, randomly initialised model for a contender's base name (``timm:`` prefix for
    timm's models), in eval mode."""
    if name.startswith("timm:"):
        model = _timm().create_model(name[5:], pretrained=False, num_classes=num_classes)
        return model.eval()
    return create_model(name, num_classes=num_classes).eval()


def share_timm_weights(models: dict[str, nn.Module], size: int) -> dict[str, str]:
    """Load the benchmarked timm models' weights into their sknet twins; check outputs agree.

    Returns a note per sknet model. Raises ``RuntimeError`` when the outputs differ by > 1e-3.
    """
    notes: dict[str, str] = {}
    for ours, theirs in TIMM_TWINS.items():
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
            # A self-check of sknet.hub.convert, not of the user's input: a failure is a bug, so
            # it is a plain RuntimeError on purpose (the CLI prints its traceback).
            raise RuntimeError(f"{ours} with {key}'s weights differs from it by {diff:.3g}")
        notes[ours] = f"{key} weights via sknet.hub.from_timm; max |out diff| {diff:.1e}"
    return notes


def variant_model(
    base_models: Mapping[str, nn.Module], v: Variant, mode: str, device: torch.device
) -> nn.Module:
    """A copy of ``v``'s base model on ``device`` in ``v``'s layout (deployed if ``v`` says so),
    in training mode for ``mode="train"``."""
    model = copy.deepcopy(base_models[v.base]).to(device)
    if v.deployed:
        fmt: Literal["channels_last", "contiguous"] = (
            "channels_last" if v.layout == "cl" else "contiguous"
        )
        return deploy(model, memory_format=fmt, inplace=True)
    mf = torch.channels_last if v.layout == "cl" else torch.contiguous_format
    model = model.to(memory_format=mf)
    return model.train(mode == "train")


# ----------------------------------------------------------------------------- steps


def make_inputs(
    layout: str, batch: int, size: int, device: torch.device, num_classes: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch ``(x, y)`` in ``layout``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    return x, y


def make_step(
    model: nn.Module,
    mode: str,
    dtype: str,
    device: torch.device,
    x: torch.Tensor,
    y: torch.Tensor,
    compiled: bool = False,
) -> Callable[[], None]:
    """One iteration: inference (``"infer"``: forward under inference mode, or ``no_grad`` for a
    compiled model) or a training step (``"train"``: forward, cross-entropy, backward, SGD with
    momentum; fp16 through a ``GradScaler``, as fp16 training needs)."""
    if mode == "infer":
        grad_ctx = torch.no_grad if compiled else torch.inference_mode

        def step() -> None:
            with grad_ctx(), autocast(device, dtype):
                model(x)

        return step
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type) if dtype == "fp16" else None

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    return train_step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(
    steps: dict[K, Callable[[], None]], iterations: int, device: torch.device
) -> tuple[dict[K, float], dict[K, str]]:
    """Run every step ``iterations`` times (at least once). A step that raises is removed from
    ``steps`` and reported in the second dict (``"failed: Type: message"``); the first dict has
    each surviving step's warm-up seconds (its compile time, for a compiled model)."""
    seconds: dict[K, float] = {}
    failed: dict[K, str] = {}
    for key in list(steps):
        t0 = time.perf_counter()
        try:
            for _ in range(max(1, iterations)):
                steps[key]()
            synchronize(device)
        except Exception as exc:  # report a variant that cannot run instead of aborting all
            first = (str(exc).splitlines() or [""])[0][:160]
            failed[key] = f"failed: {type(exc).__name__}: {first}"
            del steps[key]
            continue
        seconds[key] = time.perf_counter() - t0
    return seconds, failed


def time_interleaved(
    steps: Mapping[K, Callable[[], None]],
    rounds: int,
    device: torch.device,
    *,
    deadline: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[K, list[float]]:
    """Per-step wall times over ``rounds`` rounds; each round runs every step once, the order
    rotating by one each round. Stops early (fewer rounds, at least one) past ``deadline``
    (a ``time.perf_counter()`` value)."""
    order = list(steps)
    times: dict[K, list[float]] = {k: [] for k in order}
    for r in range(rounds):
        if r > 0 and deadline is not None and time.perf_counter() > deadline:
            break
        k = r % len(order) if order else 0
        for key in order[k:] + order[:k]:
            synchronize(device)
            t0 = time.perf_counter()
            steps[key]()
            synchronize(device)
            times[key].append(time.perf_counter() - t0)
        if progress is not None:
            progress(f"  round {r + 1}/{rounds}")
    return times


def cuda_peak_mib(step: Callable[[], None], device: torch.device, iterations: int = 2) -> float:
    """Growth of ``torch.cuda.max_memory_allocated`` over ``iterations`` runs of ``step``, MiB."""
    synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(iterations):
        step()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


@contextlib.contextmanager
def inductor_freezing(enabled: bool) -> Iterator[None]:
    """Inductor's ``freezing`` (folds BN, pre-packs weights; inference only), restored after."""
    import torch._inductor.config as inductor_config

    previous = inductor_config.freezing
    inductor_config.freezing = enabled
    try:
        yield
    finally:
        inductor_config.freezing = previous


def time_group(
    group: Group,
    compiled: bool,
    variants: Sequence[Variant],
    base_models: Mapping[str, nn.Module],
    cfg: BenchConfig,
    device: torch.device,
) -> list[Result]:
    """Build, warm up and time ``variants`` of one group, interleaved; peak CUDA memory too."""
    mode, dtype = group.mode, group.dtype
    batch = int(cfg.batch_size or 1)
    steps: dict[Variant, Callable[[], None]] = {}
    with inductor_freezing(compiled and mode == "infer"):
        for v in variants:
            model = variant_model(base_models, v, mode, device)
            if compiled:
                model = cast(nn.Module, torch.compile(model))  # an OptimizedModule
            x, y = make_inputs(v.layout, batch, cfg.input_size, device)
            steps[v] = make_step(model, mode, dtype, device, x, y, compiled)
        warm_s, failed = warm_up(steps, cfg.warmup, device)
        for v in steps:
            _log(f"  warmed up {v.label:<34} {v.layout:<4}")
        times = time_interleaved(steps, cfg.rounds, device, progress=_log)
    results = []
    for v in variants:
        if v not in times:
            results.append(
                Result(mode, dtype, v.label, v.layout, compiled, 0.0, [], batch, note=failed[v])
            )
            continue
        med = statistics.median(times[v])
        res = Result(mode, dtype, v.label, v.layout, compiled, batch / med, times[v], batch)
        res.compile_s = warm_s[v] if compiled else None
        if device.type == "cuda" and _wants_memory(cfg, mode):
            res.peak_mem_mib = cuda_peak_mib(steps[v], device)
        results.append(res)
    steps.clear()
    return results


def _wants_memory(cfg: BenchConfig, mode: str) -> bool:
    return cfg.memory == "all" or (cfg.memory == "train" and mode == "train")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where unavailable)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def load_average() -> tuple[float, float, float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return os.getloadavg()
    return None

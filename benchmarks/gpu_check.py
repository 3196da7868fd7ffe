"""One prepared GPU check: environment, correctness, DDP, throughput, compile, a real training run.

Run it on the GPU machine through ``bash benchmarks/gpu_check.sh OUT_DIR`` (which adds ``src`` to
``PYTHONPATH``, keeps a copy of the log and a hard 7-minute stop), or directly::

    python benchmarks/gpu_check.py --device cuda --out OUT_DIR          # the full run, <= 390 s
    python benchmarks/gpu_check.py --device cpu --quick --out OUT_DIR   # CI: same code, tiny

Results go to ``OUT_DIR/gpu_check.json`` and ``OUT_DIR/gpu_check.md``, rewritten after every
section, so a run stopped early still leaves what it measured. Each section has a time budget
(``--budget`` in all); a section that would overrun is recorded as ``"skipped: budget"``, and a
failure as ``"failed: ..."``, and the next section runs. Sections, in order:

``environment``
    GPU, driver, CUDA/cuDNN/NCCL, torch/timm/triton versions, CPU, git commit.
``correctness``
    sknet50 (quick: sknet_tiny) against the plain SK formulas (stack, sum, mean, softmax over
    the branches, product, sum; branch convolutions called as declared), its ``sknet.deploy``
    form against the eval model, and timm's ``skresnext50_32x4d`` converted with
    ``sknet.hub.from_timm`` against timm itself; fp32 and bf16 autocast; outputs (eval) and
    gradients (training mode). The Triton epilogue switch against the torch code. TF32 is off.
``ddp``
    One process, world size 1: NCCL (gloo on the CPU) process group, SyncBatchNorm-converted
    sknet, DDP training steps that must leave the same weights as plain steps, an all-reduce.
``throughput``
    Paired, interleaved rounds in one process (``sknet.benchmark``): sknet50, sknet50 with the
    Triton epilogue switched on, sknet's resnext50_32x4d, timm's skresnext50_32x4d and
    resnext50_32x4d; inference and training step; bf16 autocast and fp16 with GradScaler; NCHW
    and channels_last; batch 256 and 64 at 224; peak memory (``torch.cuda.max_memory_allocated``
    growth over two iterations) per variant.
``train_run``
    ``sknet train`` (the real CLI, in a subprocess): sknet50 on the built-in synthetic data
    rendered at 224 px, bf16 AMP, channels_last, sized to ~60 s from the measured throughput;
    images/s, time the main process waited in ``DataLoader.__next__`` (data-loader stall, an
    upper bound on GPU idle time from data loading), and whether the loss fell.
``compile``
    ``torch.compile`` (inductor; inference with freezing) of sknet50 and resnext50_32x4d (then
    timm's pair, while the budget lasts), bf16 channels_last, batch 256, interleaved as above.
    A compile that fails is recorded with its error.
``torchrun``
    With more than one GPU: ``sknet train`` under torchrun with NCCL and ``--sync-bn``; every
    rank must end with the same weights.
``summary``
    The GPU goals of ``benchmarks/README.md``: SK / ResNeXt throughput >= 0.85 for bf16
    channels_last training and inference (best of eager, the epilogue switch and compiled for
    SK; best of eager and compiled for ResNeXt), and SK's training peak memory within 10% of
    ResNeXt's plus the second branches' activations (estimated from their output shapes).

``--quick`` shrinks everything (sknet_tiny / resnext_tiny at 48 px, batch 2, a few steps; timm's
SKNet-50 at 64 px for the conversion check; compile with the ``eager`` backend) but runs the same
code.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import sknet
from sknet.benchmark import (
    build_contender,
    cuda_peak_mib,
    make_inputs,
    make_step,
    time_interleaved,
    variant_model,
    warm_up,
)
from sknet.benchmark.engine import Variant, inductor_freezing
from sknet.benchmark.reference import randomize_bn, reference_model
from sknet.benchmark.report import cpu_name
from sknet.layers import triton_select
from sknet.layers.sk import SKConv

SECTIONS = (
    "environment",
    "correctness",
    "ddp",
    "throughput",
    "train_run",
    "compile",
    "torchrun",
    "summary",
)
GOAL_RATIO = 0.85  # SK / ResNeXt, bf16 channels_last (benchmarks/README.md, "Goals")
GOAL_MEMORY = 1.10  # SK training peak <= 1.10 x ResNeXt's + the second branches' activations


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Plan:
    """Everything the run's size depends on (full GPU run or quick CPU run)."""

    sk: str
    rx: str
    timm_sk: str
    timm_rx: str
    size: int
    batches: tuple[int, ...]
    correct_size: int
    correct_batch: int
    timm_size: int
    timm_batch: int
    rounds: int
    warmup: int
    groups: tuple[tuple[str, str, str, int], ...]  # (mode, dtype, layout, batch), by priority
    compile_groups: tuple[tuple[str, str, str, int, tuple[str, ...]], ...]
    compile_backend: str
    timm_in_throughput: bool
    train_seconds: float
    budgets: dict[str, float]  # nominal seconds per section
    total_budget: float


def make_plan(quick: bool, device: torch.device, compile_backend: str | None) -> Plan:
    if quick:
        return Plan(
            sk="sknet_tiny",
            rx="resnext_tiny",
            timm_sk="timm:skresnext50_32x4d",
            timm_rx="timm:resnext50_32x4d",
            size=48,
            batches=(2,),
            correct_size=32,
            correct_batch=4,
            timm_size=32,
            timm_batch=2,
            rounds=1,
            warmup=1,
            groups=(("infer", "bf16", "cl", 2), ("train", "fp16", "nchw", 2)),
            compile_groups=(("infer", "bf16", "cl", 2, ("sknet_tiny",)),),
            compile_backend=compile_backend or "eager",
            timm_in_throughput=False,
            train_seconds=5.0,
            budgets={
                "environment": 20,
                "correctness": 60,
                "ddp": 30,
                "throughput": 60,
                "train_run": 60,
                "compile": 60,
                "torchrun": 60,
                "summary": 10,
            },
            total_budget=300.0,
        )
    big, small = 256, 64
    return Plan(
        sk="sknet50",
        rx="resnext50_32x4d",
        timm_sk="timm:skresnext50_32x4d",
        timm_rx="timm:resnext50_32x4d",
        size=224,
        batches=(big, small),
        correct_size=160,
        correct_batch=8,
        timm_size=160,
        timm_batch=8,
        rounds=8,
        warmup=3,
        groups=(
            ("infer", "bf16", "cl", big),
            ("train", "bf16", "cl", big),
            ("infer", "bf16", "cl", small),
            ("train", "bf16", "cl", small),
            ("infer", "bf16", "nchw", big),
            ("train", "bf16", "nchw", big),
            ("infer", "fp16", "cl", big),
            ("train", "fp16", "cl", big),
        ),
        compile_groups=(
            ("infer", "bf16", "cl", big, ("sknet50", "resnext50_32x4d")),
            ("train", "bf16", "cl", big, ("sknet50", "resnext50_32x4d")),
            ("infer", "bf16", "cl", big, ("timm:skresnext50_32x4d", "timm:resnext50_32x4d")),
            ("train", "bf16", "cl", big, ("timm:skresnext50_32x4d", "timm:resnext50_32x4d")),
        ),
        compile_backend=compile_backend or "inductor",
        timm_in_throughput=True,
        train_seconds=35.0,
        budgets={
            "environment": 15,
            "correctness": 40,
            "ddp": 20,
            "throughput": 95,
            "train_run": 100,
            "compile": 150,
            "torchrun": 60,
            "summary": 5,
        },
        total_budget=390.0,
    )


class BudgetExceeded(Exception):
    """Raised by the alarm when a section runs past its hard limit."""


@contextlib.contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`BudgetExceeded` in the main thread after ``seconds`` (SIGALRM; a backstop
    for steps that cannot check a deadline themselves, such as a compile). Nests: an outer limit
    that expires first still fires, and is re-armed with its remaining time on exit."""
    if not hasattr(signal, "setitimer") or seconds <= 0:
        yield
        return
    outer_left = signal.getitimer(signal.ITIMER_REAL)[0]  # 0: no outer limit

    def fire(signum: int, frame: Any) -> None:
        raise BudgetExceeded(f"stopped after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, fire)
    t0 = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer_left) if outer_left else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:
            rest = outer_left - (time.perf_counter() - t0)
            signal.setitimer(signal.ITIMER_REAL, max(rest, 1e-3))


@dataclass
class Ctx:
    device: torch.device
    plan: Plan
    out_dir: Path
    quick: bool
    t0: float
    report: dict[str, Any]

    def left(self) -> float:
        return self.plan.total_budget - (time.perf_counter() - self.t0)


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- environment


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except Exception as exc:  # report any import failure as a value
        return f"not importable ({type(exc).__name__})"
    return str(getattr(mod, "__version__", "?"))


def _run_text(cmd: list[str], timeout: float = 10) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip()


def _nccl_version() -> str | None:
    try:
        v = torch.cuda.nccl.version()
    except Exception:  # report, do not fail: NCCL is checked for real in the ddp section
        return None
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def section_environment(ctx: Ctx, out: dict[str, Any], deadline: float) -> None:
    dev = ctx.device
    out.update(
        device=dev.type,
        python=platform.python_version(),
        torch=torch.__version__,
        cuda_runtime=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        sknet=sknet.__version__,
        timm=_version("timm"),
        triton=_version("triton"),
        numpy=_version("numpy"),
        cpu=cpu_name(),
        cpu_cores=os.cpu_count(),
        gpu_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
        git_commit=_run_text(["git", "rev-parse", "--short", "HEAD"]),
        git_dirty=bool(_run_text(["git", "status", "--porcelain", "--untracked-files=no"])),
    )
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        out.update(
            gpu=p.name,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            compute_capability=f"{p.major}.{p.minor}",
            sm_count=p.multi_processor_count,
            nccl=_nccl_version(),
        )
        smi = _run_text(
            [
                "nvidia-smi",
                f"--id={dev.index or 0}",
                "--query-gpu=driver_version,power.limit,clocks.max.sm",
                "--format=csv,noheader",
            ]
        )
        out["driver"] = smi


# ----------------------------------------------------------------------------- correctness


TOL = {
    ("fp32", "forward"): 1e-4,
    ("fp32", "backward"): 1e-3,
    ("bf16", "forward"): 3e-2,
    ("bf16", "backward"): 1e-1,
}
TOL_NOTE = (
    "Reference: the same model evaluated in float64 (for sknet: with the SK units computing the "
    "plain formulas). forward: max |ours - reference| / max |reference| of the logits (eval "
    "mode); backward: ||g - g_ref|| / ||g_ref|| over the input gradient and every parameter "
    "gradient together (training mode, cross-entropy). A check passes when the error is at most "
    "the tolerance (fp32: 1e-4 forward, 1e-3 backward, TF32 off; bf16 autocast: 3e-2 forward, "
    "1e-1 backward) or, where it is not, at most twice the error of the reference model itself "
    "in the same precision (train-mode BN over a small batch amplifies rounding), but never "
    "above ten times the tolerance."
)


def _amp(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    if dtype in ("fp32", "fp64"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16}[dtype])


def _cast(x: torch.Tensor, dtype: str) -> torch.Tensor:
    return x.double() if dtype == "fp64" else x


@dataclass
class Reference:
    """A model's float64 outputs (eval mode) and gradients (training mode) on one batch."""

    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    grads: list[torch.Tensor]
    dtype: str = "fp64"
    train: bool = True  # gradients in training mode (BN over the batch) or eval mode
    baselines: dict[tuple[int, str, str], float] = field(default_factory=dict)

    def baseline(self, model: nn.Module, kind: str, dtype: str) -> float:
        """The error of the reference model itself in ``dtype`` (computed once)."""
        key = (id(model), kind, dtype)
        if key not in self.baselines:
            fn = _forward_err if kind == "forward" else _backward_err
            self.baselines[key] = fn(model, self, dtype)
        return self.baselines[key]


def _logits(model: nn.Module, x: torch.Tensor, dtype: str) -> torch.Tensor:
    m = copy.deepcopy(model).double() if dtype == "fp64" else model
    with torch.no_grad(), _amp(x.device, dtype):
        return m.eval()(_cast(x, dtype)).double()


def _grads(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: str, train: bool = True
) -> list[torch.Tensor]:
    """Gradients of the input and every parameter (training or eval mode), on a copy (BN
    statistics of ``model`` stay as they are)."""
    m = copy.deepcopy(model).train(train)
    if dtype == "fp64":
        m = m.double()
    xg = _cast(x, dtype).clone().requires_grad_()
    with _amp(x.device, dtype):
        logits = m(xg)
    loss = F.cross_entropy(logits.double(), y)
    grads = torch.autograd.grad(loss, [xg, *(p for p in m.parameters() if p.requires_grad)])
    return [g.double() for g in grads]


def _reference(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    grads: bool = True,
    dtype: str = "fp64",
    train: bool = True,
) -> Reference:
    """``model``'s outputs and gradients in ``dtype`` (float64 unless stated)."""
    g = _grads(model, x, y, dtype, train) if grads else []
    return Reference(x, y, _logits(model, x, dtype), g, dtype=dtype, train=train)


def _forward_err(model: nn.Module, ref: Reference, dtype: str) -> float:
    ya = _logits(model, ref.x, dtype)
    return float((ya - ref.logits).abs().max() / ref.logits.abs().max().clamp(min=1e-30))


def _backward_err(model: nn.Module, ref: Reference, dtype: str) -> float:
    ga = _grads(model, ref.x, ref.y, dtype, ref.train)
    if len(ga) != len(ref.grads):
        raise RuntimeError(f"{len(ga)} gradients against the reference's {len(ref.grads)}")
    diff = torch.cat([(p - q).flatten() for p, q in zip(ga, ref.grads)])
    scale = torch.cat([q.flatten() for q in ref.grads]).norm().clamp(min=1e-30)
    return float(diff.norm() / scale)


def _check(
    checks: list[dict[str, Any]],
    name: str,
    dtype: str,
    kind: str,
    err: float | None,
    baseline: float | None = None,
    note: str = "",
) -> None:
    tol = TOL[(dtype, kind)]
    if baseline is not None:  # widened to the reference's own error, at most tenfold
        tol = max(tol, min(2 * baseline, 10 * tol))
    row: dict[str, Any] = {"check": name, "dtype": dtype, "kind": kind, "error": err}
    row.update(tolerance=tol, reference_own_error=baseline, note=note)
    row["passed"] = None if err is None else bool(math.isfinite(err) and err <= tol)
    checks.append(row)
    verdict = {None: "skipped", True: "ok", False: "FAIL"}[row["passed"]]
    shown = "-" if err is None else f"{err:.2e}"
    log(f"  {name} {dtype} {kind}: {shown} (tol {tol:.1e}) {verdict} {note}")


def _bf16_runs(model: nn.Module, device: torch.device) -> str:
    """Why ``model`` cannot run under bf16 autocast here ('' if it can): oneDNN's fused CPU
    convolutions (deployed models) need bf16-capable CPUs."""
    if device.type != "cpu":
        return ""
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model.eval()(torch.zeros(1, 3, 32, 32))
    except RuntimeError as exc:
        return f"skipped: bf16 not supported here ({str(exc).splitlines()[0][:100]})"
    return ""


def _compare(
    checks: list[dict[str, Any]],
    name: str,
    model: nn.Module,
    ref: Reference,
    ref_model: nn.Module,
    backward: bool = True,
    dtypes: tuple[str, ...] = ("fp32", "bf16"),
) -> None:
    """``model`` in fp32 and under bf16 autocast against the reference; the baseline is
    ``ref_model``'s own error in the same precision."""
    for dtype in dtypes:
        why = _bf16_runs(model, ref.x.device) if dtype == "bf16" else ""
        if why:
            _check(checks, name, dtype, "forward", None, note=why)
            continue
        for kind in ("forward", "backward") if backward else ("forward",):
            err = (_forward_err if kind == "forward" else _backward_err)(model, ref, dtype)
            # the reference's own error only matters where ours exceeds the fixed tolerance
            base = ref.baseline(ref_model, kind, dtype) if err > TOL[(dtype, kind)] else None
            _check(checks, name, dtype, kind, err, base)


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """fp32 as fp32 (no TF32), and no cuDNN autotuning (every dtype and mode of a check would
    be tuned once, for a handful of passes)."""
    cudnn = torch.backends.cudnn
    prev = (torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = False
    cudnn.allow_tf32 = False
    cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = prev


def section_correctness(ctx: Ctx, out: dict[str, Any], deadline: float) -> None:
    dev, plan = ctx.device, ctx.plan
    out["tolerances"] = TOL_NOTE
    checks: list[dict[str, Any]] = out.setdefault("checks", [])
    gen = torch.Generator().manual_seed(0)
    n, size = plan.correct_batch, plan.correct_size
    x = torch.randn(n, 3, size, size, generator=gen).to(dev)
    y = torch.randint(0, 100, (n,), generator=gen).to(dev)
    with no_tf32():
        torch.manual_seed(0)
        model = randomize_bn(sknet.create_model(plan.sk, num_classes=100)).to(dev).eval()
        formulas = reference_model(model)
        ref = _reference(formulas, x, y)
        _compare(checks, f"{plan.sk} vs SK formulas", model, ref, formulas)
        eval_ref = _reference(model, x, y, grads=False)
        for layout in ("contiguous", "channels_last"):
            fast = sknet.deploy(model, memory_format=layout)
            name = f"{plan.sk} deploy ({layout}) vs eval model"
            _compare(checks, name, fast, eval_ref, model, backward=False)
        active = triton_select.kernels_run_on(dev)
        out["fused_epilogue_active"] = active
        name = f"{plan.sk} + Triton epilogue vs SK formulas"
        if active:
            with triton_select.fused_epilogue():
                _compare(checks, name, model, ref, formulas)
        else:
            why = "skipped: the Triton kernels do not run here (CUDA, or TRITON_INTERPRET=1)"
            _check(checks, name, "fp32", "forward", None, note=why)
        if time.perf_counter() > deadline:
            raise BudgetExceeded("out of time after the sknet checks")
        _timm_checks(ctx, out, checks)
    out["all_passed"] = all(c["passed"] is not False for c in checks)


def _timm_checks(ctx: Ctx, out: dict[str, Any], checks: list[dict[str, Any]]) -> None:
    try:
        import timm
    except ImportError:
        out["timm"] = "skipped: timm not importable"
        return
    from sknet.hub import from_timm

    dev, plan = ctx.device, ctx.plan
    torch.manual_seed(0)
    theirs = randomize_bn(timm.create_model("skresnext50_32x4d", num_classes=100)).to(dev).eval()
    ours = sknet.create_model("sknet50", num_classes=100)
    ours.load_state_dict(from_timm(theirs.state_dict(), "sknet50"), strict=True)
    ours = ours.to(dev).eval()
    gen = torch.Generator().manual_seed(1)
    s, n = plan.timm_size, plan.timm_batch
    x = torch.randn(n, 3, s, s, generator=gen).to(dev)
    y = torch.randint(0, 100, (n,), generator=gen).to(dev)
    name = "sknet50 (timm weights) vs timm skresnext50_32x4d"
    if ctx.quick:  # SKNet-50 in float64, with gradients, takes minutes on a small CPU
        ref = _reference(theirs, x, y, grads=False, dtype="fp32")
        name += " (fp32 reference)"
        _compare(checks, name, ours, ref, theirs, backward=False, dtypes=("fp32",))
    else:
        _compare(checks, name, ours, _reference(theirs, x, y), theirs)
    out["timm"] = "checked"


# ----------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def section_ddp(ctx: Ctx, out: dict[str, Any], deadline: float) -> None:
    """World size 1 through the trainer's distributed helpers: NCCL (gloo on CPU)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from sknet.train.distributed import DistInfo, cleanup_distributed, resolve_device

    dev = resolve_device(ctx.device.type if ctx.device.type == "cpu" else str(ctx.device))
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dist.is_initialized():
        raise RuntimeError("a process group is already initialised")
    kwargs: dict[str, Any] = {}
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        kwargs["device_id"] = dev
    t0 = time.perf_counter()
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1, **kwargs
    )
    info = DistInfo(rank=0, world_size=1, device=dev, backend=backend, owns_group=True)
    out.update(backend=backend, world_size=1, init_s=round(time.perf_counter() - t0, 2))
    try:
        t = torch.full((4,), 3.0, device=dev)
        dist.all_reduce(t)
        out["all_reduce_ok"] = bool(torch.equal(t, torch.full_like(t, 3.0)))
        plan = ctx.plan
        torch.manual_seed(0)
        plain = sknet.create_model(plan.sk, num_classes=10).to(dev)
        synced = copy.deepcopy(plain)
        if dev.type == "cuda":  # DDP refuses SyncBatchNorm in CPU modules
            synced = nn.SyncBatchNorm.convert_sync_batchnorm(synced)
        else:
            out["sync_bn"] = "skipped on the CPU: DDP accepts SyncBatchNorm only in GPU modules"
        out["sync_bn_layers"] = sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
        ddp = DDP(synced, device_ids=[dev.index] if dev.type == "cuda" else None)
        gen = torch.Generator().manual_seed(0)
        b, s = max(4, plan.correct_batch), plan.size
        x = torch.randn(b, 3, s, s, generator=gen).to(dev)
        y = torch.randint(0, 10, (b,), generator=gen).to(dev)

        def steps(model: nn.Module, dtype: str, layout: str, k: int) -> float:
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            xi = x.contiguous(memory_format=torch.channels_last) if layout == "cl" else x
            model.train()
            loss = torch.zeros(())
            for _ in range(k):
                opt.zero_grad(set_to_none=True)
                with _amp(dev, dtype):
                    loss = F.cross_entropy(model(xi).float(), y)
                loss.backward()
                opt.step()
            return float(loss.detach())

        k = 1 if ctx.quick else 2
        with no_tf32():
            l_ddp = steps(ddp, "fp32", "nchw", k)
            l_plain = steps(plain, "fp32", "nchw", k)
        with torch.no_grad():
            pairs = zip(ddp.module.parameters(), plain.parameters())
            diff = max(float((p - q).abs().max()) for p, q in pairs)
        out.update(
            fp32_steps=k,
            loss_ddp=l_ddp,
            loss_plain=l_plain,
            max_weight_diff_vs_plain=diff,
            weights_match=diff <= 1e-4,
        )
        t0 = time.perf_counter()
        cl = copy.deepcopy(ddp.module).to(memory_format=torch.channels_last)
        ddp_cl = DDP(cl, device_ids=[dev.index] if dev.type == "cuda" else None)
        amp_dtype = "bf16" if dev.type == "cuda" else "fp32"
        l_amp = steps(ddp_cl, amp_dtype, "cl", k)
        sync(dev)
        out.update(
            amp_steps=f"{k} step(s), {amp_dtype}, channels_last",
            amp_loss=l_amp,
            amp_finite=math.isfinite(l_amp),
            amp_seconds=round(time.perf_counter() - t0, 2),
            note="SyncBatchNorm at world size 1 runs as plain BN (torch skips the sync); the "
            "sync itself runs in the torchrun section on a machine with >1 GPU.",
        )
    finally:
        cleanup_distributed(info)
    out["passed"] = bool(
        out.get("all_reduce_ok") and out.get("weights_match") and out["amp_finite"]
    )


# ----------------------------------------------------------------------------- throughput


@dataclass(frozen=True)
class Contender:
    label: str
    base: str
    fused: bool = False  # the Triton epilogue switch on


def _contenders(ctx: Ctx, include_timm: bool) -> list[Contender]:
    p = ctx.plan
    out = [Contender(p.sk, p.sk), Contender(p.sk + " +epilogue", p.sk, True), Contender(p.rx, p.rx)]
    if include_timm:
        with contextlib.suppress(ImportError):
            import timm  # noqa: F401

            out += [Contender(p.timm_sk, p.timm_sk), Contender(p.timm_rx, p.timm_rx)]
    if not triton_select.triton_available():
        out = [c for c in out if not c.fused]
    return out


def _fused_step(step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with triton_select.fused_epilogue():
            step()

    return run


def _time_variants(
    ctx: Ctx,
    mode: str,
    dtype: str,
    layout: str,
    batch: int,
    contenders: list[Contender],
    base_models: dict[str, nn.Module],
    deadline: float,
    compiled: bool = False,
) -> dict[str, Any]:
    dev, plan = ctx.device, ctx.plan
    steps: dict[str, Callable[[], None]] = {}
    notes: dict[str, str] = {}
    compile_s: dict[str, float] = {}
    for c in contenders:
        v = Variant(c.base, layout, compiled)
        model = variant_model(base_models, v, mode, dev)
        x, y = make_inputs(layout, batch, plan.size, dev)
        if compiled:
            left = deadline - time.perf_counter()
            guess = 60.0 if mode == "train" else 40.0
            if ctx.quick:
                guess = 5.0
            guess = max([guess, *(1.2 * s for s in compile_s.values())])
            if left < guess:
                notes[c.label] = f"skipped: budget ({left:.0f} s left, compile needs ~{guess:.0f})"
                continue
            with inductor_freezing(mode == "infer"):
                model = torch.compile(model, backend=plan.compile_backend)
                step = make_step(model, mode, dtype, dev, x, y, compiled=True)
                t0 = time.perf_counter()
                try:
                    with hard_limit(left):
                        step()
                        sync(dev)
                except BudgetExceeded as exc:
                    notes[c.label] = f"skipped: budget (compile {exc})"
                    continue
                except Exception as exc:  # record why a compile failed
                    notes[c.label] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
                    continue
                compile_s[c.label] = time.perf_counter() - t0
        else:
            step = make_step(model, mode, dtype, dev, x, y)
        steps[c.label] = _fused_step(step) if c.fused else step
    freezing = inductor_freezing(mode == "infer") if compiled else contextlib.nullcontext()
    with freezing:
        _, failed = warm_up(steps, plan.warmup, dev)
        notes.update(failed)
        times = time_interleaved(steps, plan.rounds, dev, deadline=deadline)
        mem: dict[str, float | None] = {}
        for label, step in steps.items():
            mem[label] = cuda_peak_mib(step, dev) if dev.type == "cuda" else None
    steps.clear()
    rows = []
    for c in contenders:
        t = times.get(c.label, [])
        rows.append(
            {
                "contender": c.label,
                "images_per_s": batch / statistics.median(t) if t else 0.0,
                "best_images_per_s": batch / min(t) if t else 0.0,
                "times_s": t,
                "peak_mem_mib": mem.get(c.label),
                "compile_s": compile_s.get(c.label),
                "note": notes.get(c.label, ""),
            }
        )
    group = {
        "mode": mode,
        "dtype": dtype,
        "layout": layout,
        "batch": batch,
        "size": plan.size,
        "compiled": compiled,
        "results": rows,
    }
    group["ratios_vs_resnext"] = _paired_ratios(rows, plan.rx)
    return group


def _paired_ratios(rows: list[dict[str, Any]], rx: str) -> dict[str, float]:
    """Each contender's throughput over ``rx``'s: median of the per-round ratios."""
    by = {r["contender"]: r for r in rows}
    ref = by.get(rx)
    if ref is None or not ref["times_s"]:
        return {}
    out = {}
    for r in rows:
        if r["times_s"] and len(r["times_s"]) == len(ref["times_s"]):
            out[r["contender"]] = statistics.median(
                tb / ta for ta, tb in zip(r["times_s"], ref["times_s"])
            )
    return out


def _base_models(contenders: list[Contender]) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {c.base: build_contender(c.base) for c in contenders}


def section_throughput(ctx: Ctx, out: dict[str, Any], deadline: float) -> None:
    plan = ctx.plan
    contenders = _contenders(ctx, plan.timm_in_throughput)
    out["contenders"] = [asdict(c) for c in contenders]
    out["fused_epilogue_active"] = ctx.device.type == "cuda" and any(c.fused for c in contenders)
    base = _base_models(contenders)
    out["branch_activation_mib_per_image"] = _branch_activation_mib(base[plan.sk], ctx)
    groups: list[dict[str, Any]] = out.setdefault("groups", [])
    skipped: list[str] = out.setdefault("skipped", [])
    for mode, dtype, layout, batch in plan.groups:  # by priority: later ones may be skipped
        left = deadline - time.perf_counter()
        need = 8.0 if ctx.quick else (20.0 if mode == "train" else 10.0)
        if groups and left < need:
            skipped.append(f"{mode} {dtype} {layout} batch {batch}: skipped: budget")
            continue
        cap = min(left, 2.0 * need) if not ctx.quick else left  # rounds stop at the cap
        log(f"  throughput {mode} {dtype} {layout} batch {batch} (up to {cap:.0f} s)")
        g = _time_variants(
            ctx, mode, dtype, layout, batch, contenders, base,
            deadline=time.perf_counter() + cap,
        )  # fmt: skip
        groups.append(g)
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def _branch_activation_mib(model: nn.Module, ctx: Ctx) -> float:
    """Estimated training activations of the SK units' extra branches, MiB per image at the
    plan's size in bf16: 2 saved tensors (convolution output for BN; BN+ReLU output for ReLU
    and Select) of each branch's output shape, for every branch after the first."""
    numel = 0
    handles = []

    def hook(mod: nn.Module, inp: Any, outp: torch.Tensor) -> None:
        nonlocal numel
        numel += outp.numel()

    for m in model.modules():
        if isinstance(m, SKConv):
            for b in list(m.branches)[1:]:
                handles.append(b.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, ctx.plan.size, ctx.plan.size))
    finally:
        for h in handles:
            h.remove()
    return 2 * numel * 2 / 2**20


# ----------------------------------------------------------------------------- compile


def section_compile(ctx: Ctx, out: dict[str, Any], deadline: float) -> None:
    plan = ctx.plan
    out["backend"] = plan.compile_backend
    groups: list[dict[str, Any]] = out.setdefault("groups", [])
    for mode, dtype, layout, batch, names in plan.compile_groups:
        contenders = [Contender(n, n) for n in names]
        if any(n.startswith("timm:") for n in names):
            try:
                import timm  # noqa: F401
            except ImportError:
                out.setdefault("skipped", []).append(f"{names}: timm not importable")
                continue
        guess = (5.0 if ctx.quick else (60.0 if mode == "train" else 40.0)) * len(names)
        if deadline - time.perf_counter() < guess:  # a group is timed whole or not at all
            left = deadline - time.perf_counter()
            note = f"skipped: budget ({left:.0f} s left, ~{guess:.0f} s needed)"
            out.setdefault("skipped", []).append(f"{mode} {', '.join(names)}: {note}")
            continue
        log(f"  compile {mode} {dtype} {layout} batch {batch}: {', '.join(names)}")
        base = _base_models(contenders)
        g = _time_variants(
            ctx, mode, dtype, layout, batch, contenders, base, deadline=deadline, compiled=True
        )
        groups.append(g)
        torch._dynamo.reset()
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- training run

# Runs `sknet train` (sknet.cli.main) unchanged, timing the main process's waits in
# DataLoader.__next__ per sampler type; writes them to the file named by SKNET_GPU_CHECK_WAITS.
_TRAIN_PROBE = """
import atexit, json, os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # atexit still writes the waits
from torch.utils.data import dataloader as _dl
_waits = {}
_orig = _dl._BaseDataLoaderIter.__next__
def _next(self):
    t0 = time.perf_counter()
    try:
        return _orig(self)
    finally:
        sampler = getattr(getattr(self, "_index_sampler", None), "sampler", None)
        key = type(sampler).__name__
        w = _waits.setdefault(key, [0.0, 0, 0.0])
        dt = time.perf_counter() - t0
        w[0] += dt; w[1] += 1; w[2] = max(w[2], dt)
_dl._BaseDataLoaderIter.__next__ = _next
def _dump():
    with open(os.environ["SKNET_GPU_CHECK_WAITS"], "w") as fh:
        json.dump({k: {"seconds": v[0], "batches": v[1], "max_s": v[2]}
                   for k, v in _waits.items()}, fh)
atexit.register(_dump)
from sknet.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _render_seconds_per_image(size: int) -> float:
    from sknet.data.synthetic import SyntheticShapes

    ds = SyntheticShapes(num_samples=8, image_size=size)
    t0 = time.perf_counter()
    for i in range(8):
        ds[i]
    return (time.perf_counter() - t0) / 8


def _read_metrics(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def section_train_run(ctx: Ctx, out: dict[str, Any], deadline: float) -> None:
    dev, plan = ctx.device, ctx.plan
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # the run is another process on the same GPU
    run_dir = ctx.out_dir / "train_run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    # Size the run from the measured eager bf16 channels_last training throughput.
    ips = _measured_ips(ctx, plan.sk, "train", "bf16", "cl") or (800.0 if dev.type == "cuda" else 8)
    per_image = _render_seconds_per_image(plan.size)
    batch = 128 if dev.type == "cuda" else 8
    workers = min(8, max(0, (os.cpu_count() or 1) - 2)) if dev.type == "cuda" else 0
    render_budget = 25.0 if dev.type == "cuda" else 3.0
    target_images = plan.train_seconds * ips
    # as many distinct images as the render budget allows (at most 3000: they are kept in
    # memory, 0.6 MB each at 224 px), and few enough for at least two epochs in the target time
    samples = min(3000, render_budget / max(per_image, 1e-4), target_images / 2)
    samples = max((2 if ctx.quick else 4) * batch, int(samples) // batch * batch)
    epochs = int(max(2, min(200, round(target_images / samples))))
    val = 256 if dev.type == "cuda" else 16
    argv = [
        *("train", "--preset", "demo", "--model", plan.sk, "--image-size", str(plan.size)),
        *("--set", f"num_samples={samples}", "--set", f"val_samples={val}"),
        *("--epochs", str(epochs), "--batch-size", str(batch), "--amp", "bf16"),
        *("--channels-last", "--workers", str(workers), "--threads", "0" if workers else "1"),
        *("--device", dev.type, "--no-progress", "--no-tensorboard", "--out", str(run_dir)),
        *("--set", f"eval_every={epochs}", "--set", "checkpoint_every=0"),
        *("--set", f"log_every={max(1, samples // batch)}"),
    ]
    waits_file = ctx.out_dir / "train_run_waits.json"
    env = dict(os.environ, SKNET_GPU_CHECK_WAITS=str(waits_file))
    src = str(Path(sknet.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-c", _TRAIN_PROBE, *argv]
    out.update(
        command="sknet " + " ".join(argv),
        planned={
            "images_per_s_assumed": round(ips, 1),
            "render_s_per_image": round(per_image, 4),
            "samples": samples,
            "epochs": epochs,
            "batch": batch,
            "workers": workers,
        },
    )
    left = deadline - time.perf_counter() - 8  # leave time to stop it and read its files
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    status = None
    try:
        _, err = proc.communicate(timeout=max(left, 1.0))
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the run stops, its epochs so far stay in metrics.csv
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        status = f"partial: budget (stopped after {left:.0f} s)"
    out["returncode"] = proc.returncode
    out["stderr_tail"] = (err or "")[-1500:]
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    rows = _read_metrics(run_dir / "metrics.csv")
    waits = json.loads(waits_file.read_text()) if waits_file.is_file() else {}
    train_wait = waits.get("PositionedSampler", {})
    losses = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    ips_rows = [float(r["img_per_s"]) for r in rows if r.get("img_per_s")]
    epoch_s = sum(float(r["epoch_seconds"]) for r in rows if r.get("epoch_seconds"))
    out.update(
        epochs_done=len(rows),
        images_per_s_median=statistics.median(ips_rows[1:] or ips_rows) if ips_rows else None,
        images_per_s_first_epoch=ips_rows[0] if ips_rows else None,
        train_seconds=round(epoch_s, 1),
        loader_wait_s=train_wait.get("seconds"),
        loader_wait_fraction=(train_wait["seconds"] / epoch_s) if train_wait and epoch_s else None,
        loader_wait_max_s=train_wait.get("max_s"),
        loader_batches=train_wait.get("batches"),
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        loss_fell=bool(len(losses) >= 2 and losses[-1] < losses[0]),
    )
    summary = run_dir / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        out.update(val_acc=s.get("val_acc"), seconds_total=s.get("seconds"), steps=s.get("steps"))
    if status:
        out["status"] = f"{status}; {len(rows)} epoch(s) done"
        return
    if out["returncode"]:
        raise RuntimeError(f"sknet train exited with {out['returncode']}")


def _measured_ips(ctx: Ctx, label: str, mode: str, dtype: str, layout: str) -> float | None:
    best = None
    for g in ctx.report.get("throughput", {}).get("groups", []):
        if (g["mode"], g["dtype"], g["layout"]) != (mode, dtype, layout):
            continue
        for r in g["results"]:
            if r["contender"] == label and r["images_per_s"] > 0:
                best = max(best or 0.0, r["images_per_s"])
    return best


# ----------------------------------------------------------------------------- torchrun


def section_torchrun(ctx: Ctx, out: dict[str, Any], deadline: float) -> None:
    n = torch.cuda.device_count() if ctx.device.type == "cuda" else 0
    if n < 2:
        out["status"] = (
            f"skipped: {n} GPU(s); the single-process NCCL step is in the ddp section"
            if ctx.device.type == "cuda"
            else "skipped: CPU run (the gloo path is in the ddp section)"
        )
        return
    run_dir = ctx.out_dir / "torchrun"
    argv = [
        *("-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"),
        *("-m", "sknet.cli.main", "train", "--preset", "demo", "--model", ctx.plan.sk),
        *("--image-size", "128", "--set", "num_samples=1024", "--set", "val_samples=256"),
        *("--epochs", "1", "--batch-size", str(32 * n), "--amp", "bf16", "--channels-last"),
        *("--sync-bn", "--device", "cuda", "--no-progress", "--no-tensorboard"),
        *("--set", "rank_summaries=true", "--out", str(run_dir)),
    ]
    env = dict(os.environ)
    src = str(Path(sknet.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out["command"] = "python " + " ".join(argv)
    res = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=max(5.0, deadline - time.perf_counter()),
        env=env,
    )
    out["returncode"] = res.returncode
    out["stderr_tail"] = res.stderr[-1500:]
    ranks = sorted((run_dir / "ranks").glob("rank*.json"))
    digests = {json.loads(p.read_text())["weights_sha256"] for p in ranks}
    out.update(world_size=n, rank_files=len(ranks), replicas_identical=len(digests) == 1)
    out["passed"] = res.returncode == 0 and len(ranks) == n and len(digests) == 1


# ----------------------------------------------------------------------------- summary


def _best(groups: list[dict[str, Any]], mode: str, labels: tuple[str, ...], batch: int):
    best = None
    for g in groups:
        if (g["mode"], g["dtype"], g["layout"], g["batch"]) != (mode, "bf16", "cl", batch):
            continue
        for r in g["results"]:
            if r["contender"] in labels and r["images_per_s"] > 0:
                cand = (r["images_per_s"], r["contender"], g["compiled"], r.get("peak_mem_mib"))
                best = max(best, cand) if best else cand
    return best


def section_summary(ctx: Ctx, out: dict[str, Any], deadline: float) -> None:
    plan = ctx.plan
    groups = ctx.report.get("throughput", {}).get("groups", []) + ctx.report.get("compile", {}).get(
        "groups", []
    )
    sk_labels = (plan.sk, plan.sk + " +epilogue")
    measured = ctx.device.type == "cuda" and not ctx.quick  # goals are judged on the GPU only
    goals = []
    for batch in plan.batches:
        for mode in ("infer", "train"):
            a = _best(groups, mode, sk_labels, batch)
            b = _best(groups, mode, (plan.rx,), batch)
            if a is None or b is None:
                continue
            ratio = a[0] / b[0]
            goals.append(
                {
                    "goal": f"{mode} bf16 channels_last batch {batch}: SK / ResNeXt",
                    "sk": f"{a[1]}{' (compiled)' if a[2] else ''}: {a[0]:.1f} images/s",
                    "resnext": f"{b[1]}{' (compiled)' if b[2] else ''}: {b[0]:.1f} images/s",
                    "ratio": ratio,
                    "minimum": GOAL_RATIO,
                    "met": ratio >= GOAL_RATIO if measured else None,
                }
            )
    big = plan.batches[0]
    sk_mem = _eager_mem(groups, plan.sk, big)
    rx_mem = _eager_mem(groups, plan.rx, big)
    per_image = ctx.report.get("throughput", {}).get("branch_activation_mib_per_image")
    if sk_mem is not None and rx_mem is not None and per_image is not None:
        allowed = GOAL_MEMORY * rx_mem + per_image * big
        goals.append(
            {
                "goal": f"train bf16 channels_last batch {big}: SK peak memory <= 1.10 x "
                "ResNeXt's + second branches' activations",
                "sk": f"{sk_mem:.0f} MiB",
                "resnext": f"{rx_mem:.0f} MiB (+ {per_image * big:.0f} MiB branches)",
                "ratio": sk_mem / allowed,
                "minimum": None,
                "met": sk_mem <= allowed if measured else None,
            }
        )
    out["goals"] = goals
    out["device_measured"] = measured
    statuses = {k: ctx.report.get(k, {}).get("status", "missing") for k in SECTIONS[:-1]}
    out["section_status"] = statuses


def _eager_mem(groups: list[dict[str, Any]], label: str, batch: int) -> float | None:
    for g in groups:
        key = (g["mode"], g["dtype"], g["layout"], g["batch"], g["compiled"])
        if key == ("train", "bf16", "cl", batch, False):
            for r in g["results"]:
                if r["contender"] == label:
                    return r.get("peak_mem_mib")
    return None


# ----------------------------------------------------------------------------- report


DDP_KEYS = (
    "backend",
    "all_reduce_ok",
    "sync_bn",
    "sync_bn_layers",
    "max_weight_diff_vs_plain",
    "weights_match",
    "amp_steps",
    "amp_finite",
    "note",
)
TRAIN_KEYS = (
    "command",
    "planned",
    "epochs_done",
    "images_per_s_median",
    "images_per_s_first_epoch",
    "train_seconds",
    "loader_wait_s",
    "loader_wait_fraction",
    "loader_wait_max_s",
    "first_loss",
    "last_loss",
    "loss_fell",
    "val_acc",
)


def render_markdown(report: dict[str, Any]) -> str:
    meta, env = report.get("meta", {}), report.get("environment", {})
    lines = [
        "# sknet GPU check",
        "",
        f"Mode: {meta.get('mode')}, device {meta.get('device')}; started {meta.get('started')}, "
        f"{meta.get('elapsed_s', 0):.0f} s of a {meta.get('budget_s', 0):.0f} s budget.",
        "",
        "## Environment",
        "",
    ]
    for k, v in env.items():
        if k not in ("status", "seconds", "budget_s"):
            lines.append(f"- {k}: {v}")
    lines += ["", _status_line("Correctness", report.get("correctness", {}))]
    corr = report.get("correctness", {})
    if corr.get("checks"):
        lines += ["", corr.get("tolerances", ""), ""]
        lines += [
            "| check | dtype | kind | error | tolerance | passed |",
            "|---|---|---|---:|---:|---|",
        ]
        for c in corr["checks"]:
            err = "-" if c["error"] is None else f"{c['error']:.2e}"
            ok = {None: c.get("note") or "skipped", True: "yes", False: "**no**"}[c["passed"]]
            lines.append(
                f"| {c['check']} | {c['dtype']} | {c['kind']} | {err} | "
                f"{c['tolerance']:.1e} | {ok} |"
            )
    ddp = report.get("ddp", {})
    lines += ["", _status_line("DDP (world size 1)", ddp)]
    for k in DDP_KEYS:
        if k in ddp:
            lines.append(f"- {k}: {ddp[k]}")
    for name, title in (("throughput", "Throughput (eager)"), ("compile", "torch.compile")):
        sec = report.get(name, {})
        lines += ["", _status_line(title, sec)]
        for g in sec.get("groups", []):
            lines += ["", _group_title(g), ""]
            lines += [
                "| contender | images/s | best round | vs our ResNeXt (paired) | peak mem (MiB) "
                "| compile (s) | note |",
                "|---|---:|---:|---:|---:|---:|---|",
            ]
            ratios = g.get("ratios_vs_resnext", {})
            for r in g["results"]:
                mem = f"{r['peak_mem_mib']:.0f}" if r.get("peak_mem_mib") is not None else "-"
                comp = f"{r['compile_s']:.0f}" if r.get("compile_s") else "-"
                ratio = f"{ratios[r['contender']]:.3f}x" if r["contender"] in ratios else "-"
                lines.append(
                    f"| {r['contender']} | {r['images_per_s']:.1f} | "
                    f"{r['best_images_per_s']:.1f} | {ratio} | {mem} | {comp} | {r['note']} |"
                )
        for s in sec.get("skipped", []):
            lines.append(f"- {s}")
    tr = report.get("train_run", {})
    lines += ["", _status_line("Training run (sknet train)", tr)]
    for k in TRAIN_KEYS:
        if k in tr:
            lines.append(f"- {k}: {tr[k]}")
    lines += ["", _status_line("torchrun (multi-GPU)", report.get("torchrun", {}))]
    summ = report.get("summary", {})
    lines += ["", _status_line("Goals", summ)]
    if summ.get("goals"):
        lines += ["", "| goal | SK | ResNeXt | ratio | met |", "|---|---|---|---:|---|"]
        for g in summ["goals"]:
            met = {None: "n/a (not a GPU run)", True: "yes", False: "no"}[g["met"]]
            lines.append(f"| {g['goal']} | {g['sk']} | {g['resnext']} | {g['ratio']:.3f} | {met} |")
    if not summ.get("device_measured", False):
        lines += ["", "Not a GPU measurement (CPU or --quick): a code-path check only."]
    return "\n".join(lines) + "\n"


def _status_line(title: str, sec: dict[str, Any]) -> str:
    status = sec.get("status", "not run")
    took = f", {sec['seconds']:.0f} s" if "seconds" in sec else ""
    return f"## {title}\n\nstatus: {status}{took}"


def _group_title(g: dict[str, Any]) -> str:
    mode = {"infer": "inference", "train": "training step"}[g["mode"]]
    comp = ", torch.compile" if g["compiled"] else ""
    return f"### {mode}, {g['dtype']}, {g['layout']}, batch {g['batch']} at {g['size']}{comp}"


def write_outputs(ctx: Ctx) -> None:
    ctx.report["meta"]["elapsed_s"] = round(time.perf_counter() - ctx.t0, 1)
    text = json.dumps(ctx.report, indent=2, default=str)
    tmp = ctx.out_dir / "gpu_check.json.tmp"
    tmp.write_text(text + "\n")
    tmp.replace(ctx.out_dir / "gpu_check.json")
    (ctx.out_dir / "gpu_check.md").write_text(render_markdown(ctx.report))


# ----------------------------------------------------------------------------- driver

SECTION_FUNCS: dict[str, Callable[[Ctx, dict[str, Any], float], None]] = {
    "environment": section_environment,
    "correctness": section_correctness,
    "ddp": section_ddp,
    "throughput": section_throughput,
    "train_run": section_train_run,
    "compile": section_compile,
    "torchrun": section_torchrun,
    "summary": section_summary,
}


def run_section(ctx: Ctx, name: str) -> None:
    out: dict[str, Any] = {}
    ctx.report[name] = out
    nominal = ctx.plan.budgets[name]
    avail = min(nominal, ctx.left())
    out["budget_s"] = round(avail, 1)
    if name != "summary" and avail < min(5.0, nominal):
        out["status"] = "skipped: budget"
        write_outputs(ctx)
        return
    log(f"{name} (budget {avail:.0f} s)")
    t0 = time.perf_counter()
    try:
        # a hard backstop 20 s past the section's budget; sections keep to it themselves
        with hard_limit(avail + 20):
            SECTION_FUNCS[name](ctx, out, t0 + avail)
        out.setdefault("status", "ok")
    except BudgetExceeded as exc:
        out["status"] = f"skipped: budget ({exc})"
    except Exception as exc:  # a failing section must not stop the others
        out["status"] = f"failed: {type(exc).__name__}: {str(exc)[:400]}"
        out["traceback"] = traceback.format_exc()[-3000:]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    log(f"{name}: {out['status']} ({out['seconds']:.0f} s)")
    write_outputs(ctx)


def _process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere), so that the budget includes
    the interpreter's start and the imports."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="benchmarks/gpu_check.py",
        description="One prepared GPU check of sknet: correctness, DDP, throughput, compile and "
        "a real training run; JSON + Markdown under --out.",
    )
    p.add_argument("--out", required=True, help="folder for gpu_check.json / gpu_check.md")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="tiny models and steps (CI, seconds)")
    p.add_argument("--budget", type=float, default=None, help="seconds in all (default 390)")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)}",
    )
    p.add_argument(
        "--compile-backend", default=None, help="inductor (default) or eager (quick default)"
    )
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        p.error(f"--sections: unknown {bad or args.sections!r}; choose from {', '.join(SECTIONS)}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available (use --device cpu --quick)")
    if device.type not in ("cpu", "cuda"):
        p.error(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    plan = make_plan(args.quick, device, args.compile_backend)
    if args.budget is not None:
        if args.budget <= 0:
            p.error("--budget must be positive")
        plan = Plan(**{**asdict(plan), "total_budget": args.budget})
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(device, plan, out_dir, args.quick, time.perf_counter() - _process_age(), {})
    ctx.report["meta"] = {
        "script": "benchmarks/gpu_check.py",
        "mode": "quick" if args.quick else "full",
        "device": str(device),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "budget_s": plan.total_budget,
        "plan": asdict(plan),
    }
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    threads = torch.get_num_threads()

    def on_term(signum: int, frame: Any) -> None:
        raise BudgetExceeded("terminated by signal")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        for name in SECTIONS:
            if name in sections:
                run_section(ctx, name)
            else:
                ctx.report[name] = {"status": "skipped: not selected"}
    except BudgetExceeded:
        ctx.report["meta"]["terminated"] = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        torch.set_num_threads(threads)
        write_outputs(ctx)
    log(f"wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

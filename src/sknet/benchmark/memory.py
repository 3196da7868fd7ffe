"""Peak memory of one variant on the CPU, measured in a fresh process.

torch's CPU allocations do not go through Python's tracemalloc, so each (contender, layout,
mode) runs once more in a fresh subprocess (:func:`cpu_peak_mib`; the probe is :func:`main`): it
builds the model, runs one single-image eval forward (so torch's lazily loaded code and thread
pools are in place), builds the input batch, notes its resident set size (RSS), runs two
iterations (a training iteration includes the gradients and the SGD momentum buffers), and
reports the growth of the RSS high-water mark (``VmHWM`` in ``/proc/self/status``; not
``getrusage``, whose ``ru_maxrss`` carries over the forked parent's size across ``exec``) over
that baseline: activations, gradients, optimizer state, temporaries and allocator slack, as the
OS sees them. Linux only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence

import torch

from sknet.benchmark.engine import (
    Variant,
    autocast,
    build_contender,
    make_inputs,
    make_step,
    variant_model,
)
from sknet.errors import UnsupportedError

__all__ = ["cpu_peak_mib"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    """This process's own RSS high-water mark (VmHWM; Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise UnsupportedError("no VmHWM in /proc/self/status (peak memory needs Linux)")


def _probe(spec: dict) -> dict[str, float]:
    """In the fresh process: peak RSS growth over two iterations of one variant."""
    torch.set_num_threads(int(spec["threads"]))
    v = Variant(spec["contender"], spec["layout"])
    device = torch.device("cpu")
    model = variant_model({v.base: build_contender(v.base)}, v, spec["mode"], device)
    # Touch the libraries' code and thread pools first (an eval forward of one image), so the
    # measured growth is the tensors' memory, not torch's lazily loaded code pages.
    x1, _ = make_inputs(v.layout, 1, spec["size"], device)
    training = model.training
    with torch.inference_mode(), autocast(device, spec["dtype"]):
        model.eval()(x1)
    model.train(training)
    x, y = make_inputs(v.layout, spec["batch"], spec["size"], device)
    step = make_step(model, spec["mode"], spec["dtype"], device, x, y)
    before = _rss_bytes()
    step()
    step()
    peak = _hwm_bytes()
    return {"growth_mib": max(0, peak - before) / 2**20, "peak_mib": peak / 2**20}


def cpu_peak_mib(
    contender: str,
    layout: str,
    mode: str,
    dtype: str,
    *,
    batch: int,
    size: int,
    threads: int,
    timeout_s: float = 1800,
) -> float | None:
    """RSS high-water-mark growth (MiB) of two iterations of a variant in a fresh process;
    None (with a note on stderr) where the probe fails."""
    spec = {
        "contender": contender,
        "layout": layout,
        "mode": mode,
        "dtype": dtype,
        "batch": batch,
        "size": size,
        "threads": threads,
    }
    code = "import sys; from sknet.benchmark.memory import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, json.dumps(spec)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True)
        return float(json.loads(out.stdout.strip().splitlines()[-1])["growth_mib"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError) as exc:
        print(f"  memory run for {contender} {layout} failed: {exc}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: main([SPEC_JSON]) (see cpu_peak_mib)", file=sys.stderr)
        return 2
    print(json.dumps(_probe(json.loads(args[0]))))
    return 0

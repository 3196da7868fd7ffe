"""A/B of sknet's SKConv implementation: the first (plain) version against the current one.

``python benchmarks/sk_ab.py [--modes infer,train] [--layouts nchw,cl] [--rounds 5]``

"before" is SKConv as first written: ``U = U_0 + U_1`` materialised, ``s = mean(U)``,
``V = addcmul(U_1, a_0, U_0 - U_1)``, every branch convolution called as declared. "after" is
the current code: ``s = sum(U_0) + sum(U_1)`` divided once, one ``lerp`` pass (in place where
autograd allows), the stride-2 dilated branch as a stride-1 convolution of the even pixels.
Both run sknet50 (eager, same weights) at batch 16, 224x224, interleaved, with medians of
paired per-round ratios, as ``benchmarks/throughput.py`` does.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

import sknet
from sknet.layers.sk import SKConv


def _before_forward(self: SKConv, x: torch.Tensor) -> torch.Tensor:
    self._check_input(x)
    if self.split_input:
        xs = torch.chunk(x, self.num_branches, dim=1)
        feats = [b.act(b.bn(b.conv(xi))) for b, xi in zip(self.branches, xs)]
    else:
        feats = [b.act(b.bn(b.conv(x))) for b in self.branches]
    u = feats[0]
    for f in feats[1:]:
        u = u + f
    if self.attn is None:
        return u
    a = self.attn(u.mean(dim=(2, 3), keepdim=True)).unsqueeze(-1).unsqueeze(-1)
    if len(feats) == 2:
        return torch.addcmul(feats[1], a[:, 0], feats[0] - feats[1])
    out = feats[0] * a[:, 0]
    for i in range(1, len(feats)):
        out = torch.addcmul(out, feats[i], a[:, i])
    return out


class _Before(torch.nn.Module):
    """Wraps a model so that its SK units run the "before" forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = SKConv.forward
        SKConv.forward = _before_forward  # type: ignore[method-assign]
        try:
            return self.model(x)
        finally:
            SKConv.forward = current  # type: ignore[method-assign]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="infer,train")
    p.add_argument("--layouts", default="nchw,cl")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = sknet.create_model("sknet50")
    x0 = torch.randn(args.batch_size, 3, 224, 224)
    y = torch.randint(0, 1000, (args.batch_size,))
    for mode in args.modes.split(","):
        steps = {}
        for layout in args.layouts.split(","):
            mf = torch.channels_last if layout == "cl" else torch.contiguous_format
            x = x0.contiguous(memory_format=mf)
            for name in ("before", "after"):
                m = copy.deepcopy(base).to(memory_format=mf).train(mode == "train")
                net = _Before(m) if name == "before" else m
                if mode == "infer":

                    def step(net=net, x=x) -> None:
                        with torch.inference_mode():
                            net(x)
                else:
                    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)

                    def step(net=net, x=x, opt=opt) -> None:
                        opt.zero_grad(set_to_none=True)
                        F.cross_entropy(net(x), y).backward()
                        opt.step()

                step()
                steps[(layout, name)] = step
        times: dict = {k: [] for k in steps}
        keys = list(steps)
        for r in range(args.rounds):
            for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                t0 = time.perf_counter()
                steps[k]()
                times[k].append(time.perf_counter() - t0)
        for layout in args.layouts.split(","):
            tb, ta = times[(layout, "before")], times[(layout, "after")]
            gain = statistics.median(b / a for a, b in zip(ta, tb))
            print(
                f"{mode:5s} {layout:4s} before {args.batch_size / statistics.median(tb):6.2f} "
                f"img/s, after {args.batch_size / statistics.median(ta):6.2f} img/s, "
                f"after/before {gain:.3f}x (paired median)"
            )


if __name__ == "__main__":
    main()

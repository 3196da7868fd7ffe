"""Throughput of SKNet-50 vs ResNeXt-50, sknet vs timm: ``python benchmarks/throughput.py``.

The same benchmark as ``sknet bench`` (see ``sknet bench --help`` or ``--help`` here for the
options). Defaults: CPU, 2 torch threads, batch 16 at 224x224; inference fp32 (NCHW and
channels_last), inference bf16 autocast (channels_last), training fp32 (NCHW and channels_last);
``--full`` for every combination, ``--compile`` to add torch.compile'd variants (slow to
compile on a small CPU). Prints a markdown table with the machine, images/s, ratios, peak memory
and the issue's targets.
"""

from __future__ import annotations

import sys

from sknet.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())

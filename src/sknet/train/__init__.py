"""Training and evaluation of SKNet-family models (plain PyTorch; DDP under ``torchrun``).

>>> from sknet.train import load_preset, train, evaluate
>>> cfg = load_preset("demo", epochs=1, num_samples=512)
>>> summary = train(cfg, run_dir="runs/quick")            # doctest: +SKIP
>>> model, record = sknet.load("runs/quick")             # doctest: +SKIP

Presets (``sknet/presets/*.toml``, see :func:`list_presets`): ``demo`` (the default of
``sknet train``: a small SK model on built-in synthetic data, minutes on a CPU), ``cifar``,
``imagenet`` and ``imagenet-light`` (the paper's recipes), ``finetune`` (from trained
weights, ``init``; see :mod:`sknet.train.finetune`) and ``detect-demo`` / ``segment-demo``
(SK detectors and segmenters on built-in scenes; beyond the paper, see :mod:`sknet.train.dense`).

Modules: :mod:`~sknet.train.config` (``TrainConfig``, presets), :mod:`~sknet.train.trainer`
(the loop), :mod:`~sknet.train.state` (``TrainState``, what a checkpoint holds),
:mod:`~sknet.train.rundir` (the run directory), :mod:`~sknet.train.checkpoint`,
:mod:`~sknet.train.pipeline` (data), :mod:`~sknet.train.evaluate`,
:mod:`~sknet.train.distributed` and :mod:`~sknet.train.finetune`.
"""

import sknet.train.dense  # noqa: F401 - registers the trainer of the dense tasks
from sknet.train.checkpoint import load_checkpoint, save_checkpoint
from sknet.train.config import (
    AMP_MODES,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    apply_overrides,
    list_presets,
    load_config_file,
    load_preset,
    parse_set_options,
    preset_path,
)
from sknet.train.dense import evaluate_dense_source
from sknet.train.distributed import DistInfo, setup_distributed
from sknet.train.evaluate import default_eval_sizes, evaluate, evaluate_source
from sknet.train.trainer import (
    RESUME_MUTABLE_KEYS,
    NonFiniteLossError,
    learning_rate,
    train,
    weights_digest,
)

__all__ = [
    "AMP_MODES",
    "OPTIMIZERS",
    "RESUME_MUTABLE_KEYS",
    "SCHEDULES",
    "DistInfo",
    "NonFiniteLossError",
    "TrainConfig",
    "apply_overrides",
    "default_eval_sizes",
    "evaluate",
    "evaluate_dense_source",
    "evaluate_source",
    "learning_rate",
    "list_presets",
    "load_checkpoint",
    "load_config_file",
    "load_preset",
    "parse_set_options",
    "preset_path",
    "save_checkpoint",
    "setup_distributed",
    "train",
    "weights_digest",
]

"""Classify image files with a trained SKNet, optionally with what its SK units selected.

>>> import sknet
>>> results = sknet.predict("runs/demo", ["photos/", "more/*.png"], topk=3, explain=True)
>>> results[0].labels, results[0].scores
(('circle', 'ring', 'star'), (0.97, 0.02, 0.004))
>>> results[0].attention["SK_2_1"]   # mean Select weight of each branch, sums to 1
{'3x3 D1': 0.61, '3x3 D2': 0.39}

One job per module:

* :mod:`sknet.predict.inputs`: inputs expanded to image files (:func:`expand_inputs`), images
  read (:func:`sknet.data.load_image`) and preprocessed as the weights say
  (:func:`preprocess_transform`);
* :mod:`sknet.predict.inference`: :func:`predict` and its :class:`Prediction` results, the SK
  attention of the same forward pass (:func:`branch_names`);
* :mod:`sknet.predict.explain`: the explanation figure (:func:`save_explanation`) and its file
  names (:func:`explain_names`).

``sknet`` re-exports :func:`predict`, so ``sknet.predict`` is the *function* once ``sknet`` is
imported (``from sknet.predict import ...`` still finds this package in ``sys.modules``).
"""

from __future__ import annotations

from sknet.predict.explain import explain_names, save_explanation
from sknet.predict.inference import (
    Prediction,
    ProgressFn,
    branch_names,
    create_transform,
    predict,
    resolve_data_config,
)
from sknet.predict.inputs import (
    IMAGE_EXTENSIONS,
    ImageInput,
    _read,  # noqa: F401  (private; tests read files through it as predict does)
    expand_inputs,
    preprocess_transform,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageInput",
    "Prediction",
    "ProgressFn",
    "branch_names",
    "create_transform",
    "expand_inputs",
    "explain_names",
    "predict",
    "preprocess_transform",
    "resolve_data_config",
    "save_explanation",
]

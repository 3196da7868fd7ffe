"""torch.hub entry points: one per sknet registry model.

    model = torch.hub.load("/path/to/clone", "sknet50", source="local", pretrained=False,
                           num_classes=10)

Each entry point is ``sknet.create_model(name, pretrained=..., **kwargs)``; ``pretrained=True``
loads the registry's default weights (downloaded by sknet's own hub code, verified by digest).
sknet is imported from this clone's ``src/`` (put first on ``sys.path``, so that the clone's
code is what runs even where another sknet is installed), unless sknet is already imported.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision", "safetensors"]

_SRC = _Path(__file__).resolve().parent / "src"
if "sknet" not in _sys.modules and (_SRC / "sknet" / "__init__.py").is_file():
    _sys.path.insert(0, str(_SRC))
import sknet as _sknet  # noqa: E402


def _entry(name: str):  # type: ignore[no-untyped-def]
    def entry(pretrained: bool = False, **kwargs):  # type: ignore[no-untyped-def]
        return _sknet.create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"sknet model {name!r}: sknet.create_model({name!r}, pretrained, **kwargs)."
    return entry


for _name in _sknet.list_models():
    globals()[_name] = _entry(_name)
del _name

"""Packaging: torch.hub entry points of a clone, and a wheel that installs and runs in an empty
virtual environment."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import sknet

ROOT = Path(__file__).resolve().parents[2]
DIST = "sknet-pytorch"


def _hubconf():
    spec = importlib.util.spec_from_file_location("_sknet_hubconf", ROOT / "hubconf.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_hubconf_lists_every_registry_model():
    mod = _hubconf()
    entries = {f for f in dir(mod) if callable(getattr(mod, f)) and not f.startswith("_")}
    assert entries == set(sknet.list_models())
    assert mod.dependencies == ["torch", "torchvision", "safetensors"]


def test_torch_hub_load_from_a_local_clone():
    model = torch.hub.load(str(ROOT), "sknet_tiny", source="local", num_classes=3)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 48, 48))
    assert out.shape == (2, 3)


def test_license_and_changelog():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    log = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in log and "## [0.1.0]" in log


@pytest.mark.slow
def test_wheel_installs_and_runs_in_an_empty_venv(tmp_path):
    # Build from a copy of the sources (the tree is left alone), offline, without isolation.
    src = tmp_path / "src_copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(wheels),
         str(src)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = wheels.glob("sknet_pytorch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for need in (
        "sknet/py.typed",
        "sknet/data/imagenet_synsets.txt",
        "sknet/presets/demo.toml",
        "sknet/presets/finetune.toml",
        "sknet/presets/imagenet.toml",
    ):
        assert need in names, need
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith("tests/") or n == "hubconf.py" for n in names)

    # An empty venv (no system site-packages; pip from ensurepip), the wheel installed offline.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "--disable-pip-version-check", "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        check=True, capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    # Without dependencies: the distribution is there, torch is not.
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=env,
    ).stdout.strip()  # fmt: skip
    assert (Path(site) / "sknet" / "presets" / "finetune.toml").is_file()
    meta = subprocess.run(
        [str(py), "-c", f"import importlib.metadata as m; print(m.version({DIST!r}))"],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert meta.stdout.strip() == sknet.__version__
    # Then the dependencies (torch, ...) of this interpreter are made visible by a .pth file
    # listing their directory (appended after the venv's own site-packages).
    deps = Path(torch.__file__).resolve().parents[1]
    (Path(site) / "_test_deps.pth").write_text(str(deps) + "\n", encoding="utf-8")
    check = (
        "import sknet, torch; "
        "m = sknet.create_model('sknet_tiny', num_classes=3); "
        "print(sknet.__file__); print(tuple(m(torch.rand(2, 3, 48, 48)).shape)); "
        "import sknet.train; print(sknet.train.list_presets())"
    )
    out = subprocess.run(
        [str(py), "-c", check], check=True, capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=120,
    ).stdout.splitlines()  # fmt: skip
    assert Path(out[0]).resolve().is_relative_to(venv.resolve()), out[0]
    assert out[1] == "(2, 3)"
    assert "finetune" in out[2]
    cli = subprocess.run(
        [str(venv / "bin" / "sknet"), "--help"], check=True, capture_output=True, text=True,
        env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert "train" in cli.stdout

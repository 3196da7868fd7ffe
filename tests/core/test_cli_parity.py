"""CLI parity with the Python API: --checkpoint-path, offline errors that say what to do, progress
only on a terminal, CLI-worded messages, and run locks that leave no file behind."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sknet
from sknet import hub
from sknet._files import RunLock
from sknet.cli import show_progress
from sknet.cli.main import main
from sknet.errors import ConfigError, RunDirError, WeightsUnavailableError
from sknet.hub.metadata import save_weights
from sknet.hub.table import PretrainedCfg


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A published-weights tag whose server is down, and a local copy of its file."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(hub.table, "_REGISTRY", dict(hub.table._REGISTRY))
    monkeypatch.setattr(hub.table, "_DEFAULT_TAGS", dict(hub.table._DEFAULT_TAGS))
    copy = tmp_path / "copy.safetensors"
    save_weights(sknet.create_model("sknet_tiny", num_classes=10), copy)
    sha = hashlib.sha256(copy.read_bytes()).hexdigest()
    url = f"http://127.0.0.1:{_closed_port()}/w.safetensors"
    hub.register_pretrained(
        PretrainedCfg("sknet_tiny", "local", "sknet", "test", "w", "mit", 0, url=url, sha256=sha)
    )
    return "sknet_tiny.local", copy


def _images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


# --------------------------------------------------------------------- offline errors


def test_unreachable_server_fails_at_once_saying_what_to_do(tag: tuple[str, Path]) -> None:
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        hub.fetch_pretrained(tag[0], progress=False)
    assert time.perf_counter() - t0 < 10  # no retry loop
    msg = str(info.value)
    assert "no network" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "--checkpoint-path FILE" in msg
    assert "w.safetensors" in msg and str(Path(os.environ["TORCH_HOME"])) in msg  # the cache path


def test_unreachable_hub_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        hub.fetch_pretrained("skresnet18.ra_in1k", cache_dir=tmp_path / "c", progress=False)
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert "HF_HUB_OFFLINE=1" in msg and "--checkpoint-path FILE" in msg
    assert str(tmp_path / "c") in msg


# ------------------------------------------------------------------- --checkpoint-path


def test_predict_with_checkpoint_path(tag: tuple[str, Path], tmp_path: Path, capsys) -> None:
    name, copy = tag
    imgs = _images(tmp_path)
    out = tmp_path / "p.json"
    assert (
        main(["predict", name, str(imgs), "--checkpoint-path", str(copy), "--out", str(out)]) == 0
    )
    rows = json.loads(out.read_text())
    assert len(rows["predictions"] if isinstance(rows, dict) else rows) == 2
    # without it, the download is tried and the error names the flag
    capsys.readouterr()
    assert main(["predict", name, str(imgs)]) == 1
    assert "--checkpoint-path FILE" in capsys.readouterr().err


def test_eval_with_checkpoint_path(tag: tuple[str, Path], tmp_path: Path) -> None:
    name, copy = tag
    out = tmp_path / "e.json"
    argv = ["eval", name, "--checkpoint-path", str(copy), "--data", "synthetic"]
    argv += ["--val-samples", "8", "--sizes", "48", "--out", str(out), "--json"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["results"][0]["n"] == 8


def test_checkpoint_path_copy_is_checked(tag: tuple[str, Path], tmp_path: Path, capsys) -> None:
    name, _ = tag
    other = tmp_path / "other.safetensors"
    save_weights(sknet.create_model("sknet_tiny", num_classes=10), other)
    argv = ["eval", name, "--checkpoint-path", str(other), "--data", "synthetic"]
    assert main([*argv, "--val-samples", "4", "--sizes", "48"]) == 1
    assert "sha256" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "eval", "analyze", "export"])
def test_checkpoint_path_needs_a_tag(command: str, tag, tmp_path: Path, capsys) -> None:
    _, copy = tag
    extra = {"predict": [str(_images(tmp_path))], "analyze": ["--out", str(tmp_path / "a")]}
    extra["export"] = ["--out", str(tmp_path / "m.onnx")]
    for source, words in (
        ("sknet_tiny", "MODEL.TAG"),
        (str(copy), "is a file or folder already"),
    ):
        argv = [command, source, *extra.get(command, []), "--checkpoint-path", str(copy)]
        assert main(argv) == 1
        assert words in capsys.readouterr().err
    argv = [command, "sknet_tiny.local", *extra.get(command, [])]
    assert main([*argv, "--checkpoint-path", str(tmp_path / "missing.safetensors")]) == 1
    assert "no weights file" in capsys.readouterr().err


def test_every_source_command_has_checkpoint_path(capsys) -> None:
    for command in ("predict", "eval", "analyze", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--checkpoint-path FILE" in capsys.readouterr().out


# ------------------------------------------------------------------------ messages


def test_unknown_model_message_speaks_cli() -> None:
    with pytest.raises(ConfigError, match="sknet info --list"):
        sknet.create_model("no_such_model")


def test_progress_defaults_to_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    ns = argparse.Namespace(progress=None)
    monkeypatch.setattr("sys.stderr", Tty(False))
    assert show_progress(ns) is False
    monkeypatch.setattr("sys.stderr", Tty(True))
    assert show_progress(ns) is True
    assert show_progress(argparse.Namespace(progress=False)) is False


def test_progress_flags_parse(capsys) -> None:
    for command in ("train", "eval", "analyze", "ablate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--progress, --no-progress" in capsys.readouterr().out


# ----------------------------------------------------------------------- run locks


def test_run_lock_leaves_no_file_and_stays_exclusive(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunLock(run):
        assert (run / ".lock").exists()
        with pytest.raises(RunDirError, match="in use by another sknet process"):
            RunLock(run).acquire()
    assert not (run / ".lock").exists()  # a finished run leaves no lock behind
    with RunLock(run):  # and can be locked again
        pass
    assert not (run / ".lock").exists()


def test_run_lock_release_race_never_gives_two_owners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B opens the lock file, A releases (removing it) before B locks it: B must not own the
    removed file while a third process locks a new one."""
    run = tmp_path / "run"
    a = RunLock(run).acquire()
    real_open = os.open
    calls = []

    def open_then_release(path, flags, mode=0o777):  # type: ignore[no-untyped-def]
        fd = real_open(path, flags, mode)
        if not calls:
            calls.append(path)
            a.release()  # A finishes between B's open and B's flock
        return fd

    monkeypatch.setattr(os, "open", open_then_release)
    b = RunLock(run).acquire()
    monkeypatch.setattr(os, "open", real_open)
    assert len(calls) == 1
    assert (run / ".lock").exists()  # B holds the file now at RUN/.lock, not the removed one
    with pytest.raises(RunDirError):
        RunLock(run).acquire()
    b.release()
    assert not (run / ".lock").exists()


# ------------------------------------------------------------------ convert --tag


def test_convert_with_tag_keeps_classes_and_preprocessing(tmp_path: Path, capsys) -> None:
    timm = pytest.importorskip("timm")
    src = tmp_path / "timm.pth"
    torch.save(timm.create_model("skresnet18", pretrained=False).state_dict(), src)
    dst = tmp_path / "plain.safetensors"
    assert main(["convert", "--from", "timm", str(src), str(dst)]) == 0
    assert "--tag" in capsys.readouterr().out  # the hint: SRC matches skresnet18.ra_in1k
    tagged = tmp_path / "tagged.safetensors"
    argv = ["convert", "--from", "timm", str(src), str(tagged), "--tag", "skresnet18.ra_in1k"]
    assert main(argv) == 0
    _, record = sknet.load(tagged)
    cfg = hub.get_pretrained_cfg("skresnet18.ra_in1k")
    assert record.classes is not None and len(record.classes) == 1000
    assert record.classes[0] == hub.class_names("imagenet-1k")[0]
    assert record.preprocess == cfg.preprocess.to_preprocess()
    # a tag of another architecture is refused before anything is written
    bad = tmp_path / "bad.safetensors"
    assert main(["convert", "--from", "timm", str(src), str(bad), "--tag", "sknet50.ra_in1k"]) == 1
    assert "is weights for sknet50" in capsys.readouterr().err and not bad.exists()
    # timm's name of the tag works too
    assert main(["convert", str(src), str(bad), "--tag", "skresnet18"]) == 0

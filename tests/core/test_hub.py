"""Pretrained-weights registry and download (sknet.hub), against a local HTTP server.

The real download code runs: ``huggingface_hub.hf_hub_download`` against a Hub-layout endpoint
(``HF_ENDPOINT``: ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` answered with
``X-Repo-Commit``, ``ETag`` = the file's sha256, ``Content-Length``) and
``torch.hub.download_url_to_file`` against plain URLs, both served on 127.0.0.1 by a server that
counts requests and stops by itself. Files are built from randomly initialised timm models
(sknet50 end to end) or small stand-ins where the content does not matter. Every cache lives in
``tmp_path`` (``HF_HOME``, ``TORCH_HOME``).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import sknet
from sknet import hub
from sknet.errors import FileFormatError
from sknet.hub import (
    ChecksumError,
    PretrainedCfg,
    WeightsUnavailableError,
    fetch_pretrained,
    get_pretrained_cfg,
    list_pretrained,
    load_pretrained_state,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    """A Hub-layout and plain-file HTTP server on 127.0.0.1 that counts requests.

    ``files`` maps a URL path to ``(body, etag)``; an ``etag`` of None is the body's sha256 (what
    the Hub sends for LFS files). It stops after ``lifetime`` seconds even if nobody stops it.
    """

    def __init__(self, lifetime: float = 120.0) -> None:
        self.files: dict[str, tuple[bytes, str | None]] = {}
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # seconds per connection: a stuck client cannot hold a thread forever

            def _answer(self, with_body: bool) -> None:
                path = self.path.split("?", 1)[0]
                server.requests[(self.command, path)] += 1
                if path not in server.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, etag = server.files[path]
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{etag or hashlib.sha256(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                self._answer(False)

            def do_GET(self) -> None:
                self._answer(True)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._timer = threading.Timer(lifetime, self.httpd.shutdown)
        self._timer.daemon = True

    def start(self) -> HubServer:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def hub_path(self, repo_id: str, filename: str, revision: str = "main") -> str:
        return f"/{repo_id}/resolve/{revision}/{filename}"

    def count(self, method: str, path: str) -> int:
        return self.requests[(method, path)]


@pytest.fixture(scope="module")
def server() -> Iterator[HubServer]:
    srv = HubServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: HubServer) -> Path:
    """Caches in tmp_path, the Hub endpoint on the local server, online."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch.hub.get_dir() follows TORCH_HOME
    return tmp_path


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, PretrainedCfg]:
    """A private copy of the registry: entries added by a test vanish after it."""
    monkeypatch.setattr(hub.table, "_REGISTRY", dict(hub.table._REGISTRY))
    monkeypatch.setattr(hub.table, "_DEFAULT_TAGS", dict(hub.table._DEFAULT_TAGS))
    return hub.table._REGISTRY


def _randomise_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def _safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _small_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv1.weight": torch.randn(4, 3, 3, 3, generator=g),
        "fc.bias": torch.randn(4, generator=g),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------
REQUIRED = [
    "sknet50.ra_in1k",
    "sknet50.caffe_in1k",
    "sknet101.caffe_in1k",
    "skresnet18.ra_in1k",
    "skresnet34.ra_in1k",
    "senet50.racm_in1k",
    "resnext50_32x4d.tv_in1k",
    "resnext50_32x4d.tv2_in1k",
    "resnext101_32x4d.gluon_in1k",
]


def test_registry_lists_every_source_with_reported_accuracy() -> None:
    names = list_pretrained()
    assert names == sorted(names) and set(REQUIRED) <= set(names)
    assert sknet.list_pretrained is hub.list_pretrained
    assert get_pretrained_cfg("sknet50").name == "sknet50.ra_in1k"  # the default tag
    assert list_pretrained("skresnet*") == ["skresnet18.ra_in1k", "skresnet34.ra_in1k"]
    assert list_pretrained("*.caffe_in1k") == ["sknet101.caffe_in1k", "sknet50.caffe_in1k"]
    for name in names:
        cfg = get_pretrained_cfg(name)
        assert cfg.name == name and cfg.reported, name
        assert all(not r.measured_here and 50 < r.top1 < 90 for r in cfg.reported), name
        assert cfg.classes == "imagenet-1k" and cfg.num_classes == 1000
    caffe = get_pretrained_cfg("sknet50.caffe_in1k")
    assert [(r.top1, r.resolution) for r in caffe.reported] == [(79.21, 224), (80.68, 320)]
    assert [r.top1 for r in get_pretrained_cfg("sknet101.caffe_in1k").reported] == [79.81, 81.60]


def test_registry_lookup_errors() -> None:
    with pytest.raises(ValueError, match="sknet50 has: sknet50.caffe_in1k, sknet50.ra_in1k"):
        get_pretrained_cfg("sknet50.nope")
    with pytest.raises(ValueError, match="models with weights: .*sknet50"):
        get_pretrained_cfg("sknet_tiny")
    assert hub.resolve_pretrained("sknet50", False) is None
    assert hub.resolve_pretrained("sknet50", "caffe_in1k").name == "sknet50.caffe_in1k"
    assert hub.resolve_pretrained("sknet50", True).tag == "ra_in1k"
    with pytest.raises(TypeError, match="pretrained must be"):
        hub.resolve_pretrained("sknet50", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one of"):
        PretrainedCfg("m", "t", "timm", "s", "s", "mit", 1)
    with pytest.raises(ValueError, match="converter must be"):
        PretrainedCfg("m", "t", "keras", "s", "s", "mit", 1, url="http://x/y")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sha256 must be"):
        PretrainedCfg("m", "t", "timm", "s", "s", "mit", 1, url="http://x/y", sha256="xyz")


def test_num_params_match_the_sknet_models(monkeypatch: pytest.MonkeyPatch) -> None:
    for fn in ("kaiming_normal_", "kaiming_uniform_", "normal_", "uniform_"):  # shapes only
        monkeypatch.setattr(torch.nn.init, fn, lambda t, *a, **k: t)
    known = set(sknet.list_models())
    counts: dict[str, int] = {}
    for name in list_pretrained():
        cfg = get_pretrained_cfg(name)
        if cfg.model not in known:  # skresnet18/34 until they are registered
            continue
        if cfg.model not in counts:
            with torch.device("meta"):  # no memory, no init time
                model = sknet.create_model(cfg.model, num_classes=cfg.num_classes)
            counts[cfg.model] = sum(p.numel() for p in model.parameters())
        assert counts[cfg.model] == cfg.num_params, name
    assert len(counts) >= 6


def test_timm_entries_match_timm_pretrained_cfgs() -> None:
    timm = pytest.importorskip("timm")
    for name in list_pretrained():
        cfg = get_pretrained_cfg(name)
        if cfg.converter != "timm":
            continue
        src = timm.models.get_pretrained_cfg(cfg.source_model.split(".")[0])
        src = timm.models.get_pretrained_cfg(cfg.source_model) or src
        src = src.to_dict() if hasattr(src, "to_dict") else dict(src)
        assert cfg.hf_hub_id == f"timm/{cfg.source_model}", name
        pre = cfg.preprocess
        assert (pre.interpolation, pre.mean, pre.std) == (
            src["interpolation"],
            tuple(src["mean"]),
            tuple(src["std"]),
        ), name
        assert pre.crop_size == src["input_size"][-1]
        assert pre.resize_size == int(pre.crop_size / src["crop_pct"]), name
        if src.get("test_input_size"):
            assert pre.test_crop_size == src["test_input_size"][-1], name
        assert cfg.license == src.get("license", cfg.license), name


def test_torchvision_entries_match_torchvision_enums() -> None:
    from torchvision.models import ResNeXt50_32X4D_Weights

    for tag, enum in [("tv_in1k", "IMAGENET1K_V1"), ("tv2_in1k", "IMAGENET1K_V2")]:
        cfg = get_pretrained_cfg(f"resnext50_32x4d.{tag}")
        w = ResNeXt50_32X4D_Weights[enum]
        assert cfg.url == w.url and cfg.converter == "torchvision"
        assert cfg.sha256 is not None and w.url.endswith(f"-{cfg.sha256}.pth")
        assert cfg.num_params == w.meta["num_params"]
        acc = w.meta["_metrics"]["ImageNet-1K"]
        assert (cfg.reported[0].top1, cfg.reported[0].top5) == (acc["acc@1"], acc["acc@5"])
        t = w.transforms()
        assert (cfg.preprocess.resize_size, cfg.preprocess.crop_size) == (
            t.resize_size[0],
            t.crop_size[0],
        )
        assert cfg.preprocess.interpolation == t.interpolation.value
        assert (cfg.preprocess.mean, cfg.preprocess.std) == (tuple(t.mean), tuple(t.std))


def test_caffe_preprocessing_is_bgr_mean_subtraction_on_0_255() -> None:
    pre = get_pretrained_cfg("sknet50.caffe_in1k").preprocess
    assert (pre.channel_order, pre.pixel_scale, pre.mean, pre.std) == (
        "BGR",
        255.0,
        (104.0, 117.0, 123.0),
        (1.0, 1.0, 1.0),
    )
    assert not pre.confirmed and "SENet" in pre.note
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 1.0  # pure red, RGB in [0, 1]
    y = pre.normalize(x)
    assert y[0, :, 0, 0].tolist() == [-104.0, -117.0, 255.0 - 123.0]  # B, G, R
    rgb = get_pretrained_cfg("sknet50.ra_in1k").preprocess
    assert torch.allclose(rgb.normalize(x)[0, 0, 0, 0], torch.tensor((1 - 0.485) / 0.229))
    with pytest.raises(ValueError, match="RGB batch"):
        pre.normalize(torch.zeros(3, 2, 2))


def test_imagenet_classes_offline() -> None:
    synsets, names = hub.imagenet_classes()
    assert len(synsets) == len(set(synsets)) == 1000 and synsets == sorted(synsets)
    assert synsets[0] == "n01440764" and names[0] == "tench"
    assert synsets[-1] == "n15075141" and names[-1] == "toilet tissue"
    assert hub.class_names("imagenet-1k") == names
    with pytest.raises(ValueError, match="unknown class list"):
        hub.class_names("imagenet-21k")


# ----------------------------------------------------------------------------------------------
# Download from the Hub (hf_hub_download against the local server)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def timm_sknet50(server: HubServer) -> torch.nn.Module:
    """A random timm skresnext50_32x4d (BN statistics randomised), served at its Hub path."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("skresnext50_32x4d", pretrained=False)
    _randomise_bn(model)
    path = server.hub_path("timm/skresnext50_32x4d.ra_in1k", "model.safetensors")
    server.files[path] = (_safetensors_bytes(model.state_dict()), None)
    return model.eval()


def test_hub_download_convert_record_and_cache_hit(
    env: Path, server: HubServer, timm_sknet50: torch.nn.Module
) -> None:
    """pretrained=True end to end: download, convert, record; then no request on reuse."""
    path = server.hub_path("timm/skresnext50_32x4d.ra_in1k", "model.safetensors")
    before = server.count("GET", path)
    model, record = hub.load_pretrained("sknet50", progress=False)
    assert server.count("GET", path) == before + 1
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - timm_sknet50(x)).abs().max().item() <= 1e-4
        feats = model.forward_features(x)
    assert (record.name, record.source, record.source_kind) == (
        "sknet50",
        "sknet50.ra_in1k",
        "pretrained",
    )
    assert (record.preprocess.resize, record.preprocess.input_size) == (256, 224)
    assert record.preprocess.interpolation == "bicubic" and record.classes is not None
    assert record.classes[0] == "tench" and len(record.classes) == record.num_classes == 1000
    prov = record.provenance
    assert prov["license"] == "apache-2.0" and prov["converted_from"] == "timm"
    assert prov["reported_accuracy"][0]["measured_here"] is False
    local = Path(prov["file"])
    assert str(local).startswith(str(env / "hf" / "hub"))  # HF_HOME is read at call time

    n = sum(server.requests.values())
    assert fetch_pretrained("sknet50.ra_in1k", progress=False) == local  # cache hit
    state, cfg = load_pretrained_state("sknet50.ra_in1k", progress=False)
    assert cfg.converter == "timm" and "layer1.0.conv2.paths.0.conv.weight" in state  # raw
    # the one loading path, with another head: backbone kept, fresh classifier
    from sknet import loading

    model10, record10 = loading.load("sknet50.ra_in1k", num_classes=10)
    # and the README's one call: create_model(pretrained=True) is timm's ImageNet SKNet-50
    created = sknet.create_model("sknet50", pretrained=True).eval()
    assert sum(server.requests.values()) == n  # no request at all, not even a HEAD
    with torch.no_grad():
        assert (created(x) - timm_sknet50(x)).abs().max().item() <= 1e-4
    assert record10.num_classes == 10 and record10.classes is None
    with torch.no_grad():
        assert torch.equal(model10.forward_features(x), feats)
        assert model10(x).shape == (1, 10)


def test_hub_offline_and_server_down(
    env: Path, server: HubServer, timm_sknet50: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = sum(server.requests.values())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        fetch_pretrained("sknet50.ra_in1k", progress=False)
    msg = str(info.value)
    assert "model.safetensors" in msg and "timm/skresnext50_32x4d.ra_in1k" in msg
    assert "offline" in msg and "checkpoint_path=" in msg
    assert sum(server.requests.values()) == n  # offline means no request
    assert isinstance(info.value, OSError)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_free_port()}")  # nobody listens
    with monkeypatch.context() as m:
        m.setattr(time, "sleep", lambda s: None)  # the Hub client's backoff: 5 retries, ~23 s
        with pytest.raises(WeightsUnavailableError, match=r"model\.safetensors.*checkpoint_path="):
            fetch_pretrained("sknet50.ra_in1k", progress=False)

    monkeypatch.setenv("HF_ENDPOINT", server.url)  # the server is back: downloads, then offline
    local = fetch_pretrained("sknet50.ra_in1k", progress=False)  # works from the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch_pretrained("sknet50.ra_in1k", progress=False) == local


def test_hub_sha256_mismatch_is_refused_and_deleted(
    env: Path, server: HubServer, registry: dict[str, PretrainedCfg]
) -> None:
    body = _safetensors_bytes(_small_state())
    path = server.hub_path("org/pinned", "w.safetensors")
    server.files[path] = (body, None)
    good = PretrainedCfg(
        "sknet_tiny",
        "pinned",
        "sknet",
        "test",
        "w",
        "mit",
        0,
        hf_hub_id="org/pinned",
        hf_filename="w.safetensors",
        sha256=hashlib.sha256(body).hexdigest(),
    )
    hub.register_pretrained(good)
    state, _ = load_pretrained_state("sknet_tiny.pinned", progress=False)
    assert torch.equal(state["fc.bias"], _small_state()["fc.bias"])

    server.files[server.hub_path("org/other", "w.safetensors")] = (body, None)
    wrong = dataclasses.replace(good, tag="wrong", hf_hub_id="org/other", sha256="0" * 64)
    hub.register_pretrained(wrong)
    blobs = env / "hf" / "hub" / "models--org--other" / "blobs"
    with pytest.raises(ChecksumError, match="sknet_tiny.wrong.*deleted"):
        fetch_pretrained("sknet_tiny.wrong", progress=False)
    assert not list(blobs.iterdir())  # the blob is gone, so the next call downloads again
    with pytest.raises(ChecksumError):
        fetch_pretrained("sknet_tiny.wrong", progress=False)
    assert server.count("GET", server.hub_path("org/other", "w.safetensors")) == 2

    # no recorded sha256: the Hub's own LFS id (the ETag) is checked
    lie = server.hub_path("org/lying", "w.safetensors")
    server.files[lie] = (body, "f" * 64)
    hub.register_pretrained(
        dataclasses.replace(good, tag="lying", hf_hub_id="org/lying", sha256=None)
    )
    with pytest.raises(ChecksumError, match="expected ffffffff"):
        fetch_pretrained("sknet_tiny.lying", progress=False)


# ----------------------------------------------------------------------------------------------
# Plain URLs (torch.hub.download_url_to_file against the local server)
# ----------------------------------------------------------------------------------------------
def test_url_download_cache_hit_and_checksum(
    env: Path, server: HubServer, registry: dict[str, PretrainedCfg]
) -> None:
    body = _torch_bytes({"state_dict": _small_state(1)})
    server.files["/models/w-1.pth"] = (body, None)
    cfg = PretrainedCfg(
        "sknet_tiny",
        "url",
        "torchvision",
        "test",
        "w",
        "mit",
        0,
        url=f"{server.url}/models/w-1.pth",
        sha256=hashlib.sha256(body).hexdigest()[:8],  # a prefix, as torchvision publishes
    )
    hub.register_pretrained(cfg)
    state, got = load_pretrained_state("sknet_tiny.url", progress=False)
    assert got == cfg and torch.equal(state["conv1.weight"], _small_state(1)["conv1.weight"])
    local = fetch_pretrained("sknet_tiny.url", progress=False)
    assert local == env / "torch" / "hub" / "checkpoints" / "w-1.pth"
    assert server.count("GET", "/models/w-1.pth") == 1  # the second call was a cache hit

    # the real torchvision entry, pointed at a random file: its sha256 prefix refuses it
    real = get_pretrained_cfg("resnext50_32x4d.tv_in1k")
    server.files["/models/" + real.file_name] = (_torch_bytes(_small_state(2)), None)
    hub.register_pretrained(
        dataclasses.replace(real, url=f"{server.url}/models/{real.file_name}"), overwrite=True
    )
    with pytest.raises(ChecksumError, match="expected 7cdf4587"):
        fetch_pretrained("resnext50_32x4d.tv_in1k", progress=False)
    assert not (env / "torch" / "hub" / "checkpoints" / real.file_name).exists()


def test_url_offline_missing_and_server_down(
    env: Path,
    server: HubServer,
    registry: dict[str, PretrainedCfg],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = PretrainedCfg(
        "sknet_tiny", "gone", "sknet", "test", "w", "mit", 0, url=f"{server.url}/models/gone.pth"
    )
    hub.register_pretrained(cfg)
    with pytest.raises(WeightsUnavailableError, match=r"gone\.pth.*404.*checkpoint_path="):
        fetch_pretrained("sknet_tiny.gone", progress=False)
    down = dataclasses.replace(cfg, tag="down", url=f"http://127.0.0.1:{_free_port()}/w.pth")
    hub.register_pretrained(down)
    with pytest.raises(WeightsUnavailableError, match=r"w\.pth for sknet_tiny\.down"):
        fetch_pretrained("sknet_tiny.down", progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = sum(server.requests.values())
    with pytest.raises(WeightsUnavailableError, match="offline"):
        fetch_pretrained("sknet_tiny.gone", progress=False)
    assert sum(server.requests.values()) == n


def test_caffe_release_has_no_direct_download(env: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        fetch_pretrained("sknet50.caffe_in1k")
    msg = str(info.value)
    assert "SKNet-50.caffemodel" in msg and "drive.google.com" in msg and "implus/SKNet" in msg
    assert "sknet convert --from caffe" in msg and "checkpoint_path=" in msg


# ----------------------------------------------------------------------------------------------
# Reading files safely
# ----------------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_checkpoint_path_is_read_safely(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(marker)}, evil)
    with pytest.raises(FileFormatError, match="weights_only=True"):
        load_pretrained_state("sknet50.ra_in1k", checkpoint_path=evil)
    assert not marker.exists()

    with pytest.raises(FileNotFoundError, match="not found"):
        load_pretrained_state("sknet50.ra_in1k", checkpoint_path=tmp_path / "missing.pth")
    caffemodel = tmp_path / "SKNet-50.caffemodel"
    caffemodel.write_bytes(b"\x0a\x05sknet")
    with pytest.raises(FileFormatError, match="sknet convert --from caffe"):
        load_pretrained_state("sknet50.caffe_in1k", checkpoint_path=caffemodel)
    notstate = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], notstate)
    with pytest.raises(FileFormatError, match="state dict"):
        load_pretrained_state("sknet50.ra_in1k", checkpoint_path=notstate)

    # a file already in sknet's layout (e.g. from `sknet convert`) needs no conversion
    native = tmp_path / "native.safetensors"
    native.write_bytes(_safetensors_bytes({"stem.conv.weight": torch.zeros(2, 3, 3, 3)}))
    state, cfg = load_pretrained_state("sknet50.caffe_in1k", checkpoint_path=native)
    assert cfg.converter == "sknet" and cfg.preprocess.channel_order == "BGR"
    assert list(state) == ["stem.conv.weight"]


# ----------------------------------------------------------------------------------------------
# Official Caffe release: the model from a .caffemodel
# ----------------------------------------------------------------------------------------------
def test_load_pretrained_from_an_official_caffemodel(tmp_path: Path) -> None:
    caffe = pytest.importorskip("sknet.convert_caffe")
    cfg = get_pretrained_cfg("sknet50.caffe_in1k")
    torch.manual_seed(0)
    src = sknet.create_model("sknet50", **cfg.overrides)
    _randomise_bn(src)
    path = caffe.write_caffemodel(caffe.to_caffe_layers(src), tmp_path / cfg.file_name)
    model, record = hub.load_pretrained("sknet50.caffe_in1k", checkpoint_path=path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - src.eval()(x)).abs().max().item() <= 1e-4
    pre = record.preprocess
    assert pre.channel_order == "BGR" and pre.mean[0] == pytest.approx(104 / 255)
    assert pre.std == pytest.approx((1 / 255,) * 3)
    assert record.model_overrides == {"stem_pool": "ceil"}
    assert record.provenance["converted_from"] == "caffe"
    assert record.provenance["preprocess_confirmed"] is False


# ----------------------------------------------------------------------------------------------
# The other converters through the same path: timm skresnet18 (Hub), torchvision (plain URL)
# ----------------------------------------------------------------------------------------------
def test_skresnet18_from_the_hub(env: Path, server: HubServer) -> None:
    if "skresnet18" not in sknet.list_models():
        pytest.skip("the skresnet18 registry model is not there yet")
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    ref = timm.create_model("skresnet18", pretrained=False)
    _randomise_bn(ref)
    path = server.hub_path("timm/skresnet18.ra_in1k", "model.safetensors")
    server.files[path] = (_safetensors_bytes(ref.state_dict()), None)
    model, record = hub.load_pretrained("skresnet18", progress=False)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - ref.eval()(x)).abs().max().item() <= 1e-4
    assert record.source == "skresnet18.ra_in1k" and record.num_classes == 1000


def test_torchvision_weights_from_a_url(
    env: Path, server: HubServer, registry: dict[str, PretrainedCfg]
) -> None:
    from torchvision.models import resnext50_32x4d

    torch.manual_seed(2)
    ref = resnext50_32x4d()
    _randomise_bn(ref)
    body = _torch_bytes(ref.state_dict())
    real = get_pretrained_cfg("resnext50_32x4d.tv2_in1k")
    server.files["/tv/" + real.file_name] = (body, None)
    local = dataclasses.replace(
        real, url=f"{server.url}/tv/{real.file_name}", sha256=hashlib.sha256(body).hexdigest()
    )
    hub.register_pretrained(local, overwrite=True)
    model, record = hub.load_pretrained("resnext50_32x4d.tv2_in1k", progress=False)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - ref.eval()(x)).abs().max().item() <= 1e-4
    assert record.provenance["converted_from"] == "torchvision"
    assert (record.preprocess.resize, record.preprocess.interpolation) == (232, "bilinear")
    assert record.provenance["license"] == "bsd-3-clause"

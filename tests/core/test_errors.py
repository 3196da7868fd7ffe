"""Bad input gives a ValueError/TypeError naming the problem, never a deep torch trace."""

from __future__ import annotations

import pytest
import torch

import sknet


@pytest.fixture(scope="module")
def model() -> sknet.SKNetModel:
    return sknet.create_model("sknet_tiny").eval()


def test_non_4d_input(model: sknet.SKNetModel) -> None:
    with pytest.raises(ValueError, match="4-D image batch.*unsqueeze"):
        model(torch.randn(3, 48, 48))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.randn(1, 1, 3, 48, 48))


def test_wrong_channels(model: sknet.SKNetModel) -> None:
    with pytest.raises(ValueError, match="3 input channels, got 1.*in_chans=1"):
        model(torch.randn(2, 1, 48, 48))


def test_integer_dtype(model: sknet.SKNetModel) -> None:
    with pytest.raises(TypeError, match="floating-point input, got torch.uint8"):
        model(torch.zeros(1, 3, 48, 48, dtype=torch.uint8))


def test_not_a_tensor(model: sknet.SKNetModel) -> None:
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[1.0]])


def test_too_small_for_total_stride() -> None:
    m = sknet.create_model("resnext50_32x4d", num_classes=10).eval()
    assert m.min_input_size == 32
    with pytest.raises(ValueError, match="total stride is 32"):
        m(torch.randn(1, 3, 31, 64))
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'sknet5'.*sknet50"):
        sknet.create_model("sknet5")


def test_invalid_model_configs() -> None:
    with pytest.raises(ValueError, match="divisible by cardinality"):
        sknet.create_model("resnext_tiny", mid_widths=(30, 64, 128))
    with pytest.raises(ValueError, match="odd"):
        sknet.create_model("sknet_tiny", sk_branches=(3, 6))
    with pytest.raises(ValueError, match="M >= 1"):
        sknet.create_model("sknet_tiny", sk_branches=())
    with pytest.raises(ValueError, match="stage_out needs 3"):
        sknet.create_model("sknet_tiny", stage_out=(64, 128))
    with pytest.raises(ValueError, match="num_classes"):
        sknet.create_model("sknet_tiny", num_classes=-1)
    with pytest.raises(ValueError, match="in_chans"):
        sknet.create_model("sknet_tiny", in_chans=0)


def test_in_chans_override_works() -> None:
    m = sknet.create_model("sknet_tiny", in_chans=1, num_classes=4).eval()
    assert m(torch.randn(2, 1, 48, 48)).shape == (2, 4)


def test_cli_decides_user_error_or_bug_by_type_alone(capsys: pytest.CaptureFixture) -> None:
    """An SKNetError and an OSError naming a file are one line (exit 1); anything else, a plain
    ValueError raised inside sknet included, is a bug: traceback and exit 2."""
    from sknet.cli.main import is_user_error, report_error
    from sknet.errors import ConfigError, MissingFileError

    named = FileNotFoundError(2, "No such file or directory", "/no/such/file")
    assert is_user_error(ConfigError("bad option")) and is_user_error(named)
    assert is_user_error(MissingFileError("no such file: x"))
    for bug in (ValueError("oops"), TypeError("oops"), KeyError("k"), OSError("no filename")):
        assert not is_user_error(bug)
    assert report_error("info", ConfigError("bad option")) == 1
    err = capsys.readouterr().err
    assert err == "sknet info: error: bad option\n"
    try:
        raise ValueError("not deliberate")
    except ValueError as exc:
        assert report_error("info", exc) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error (ValueError): this is a bug" in err

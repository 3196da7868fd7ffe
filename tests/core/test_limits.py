"""The bounds on what files and arguments from strangers can make sknet do (``sknet._limits``),
and CLI sizes that are one-line errors instead of C++ frames (issue 15, finding 9)."""

from __future__ import annotations

import pytest

import sknet
from sknet import _limits
from sknet.cli.main import main
from sknet.errors import ConfigError, FileFormatError


def test_max_params_default_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_limits.MAX_PARAMS_ENV, raising=False)
    assert _limits.max_params() == _limits.DEFAULT_MAX_PARAMS
    monkeypatch.setenv(_limits.MAX_PARAMS_ENV, "2e9")
    assert _limits.max_params() == 2_000_000_000
    monkeypatch.setenv(_limits.MAX_PARAMS_ENV, "lots")
    with pytest.raises(ConfigError, match="SKNET_MAX_PARAMS='lots'"):
        _limits.max_params()


def test_param_count_over_the_limit_names_the_file_and_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(_limits.MAX_PARAMS_ENV, "1000")
    _limits.check_param_count(1000, "w.safetensors")
    with pytest.raises(
        FileFormatError, match=r"w.safetensors: .*1,001 parameters.*SKNET_MAX_PARAMS"
    ):
        _limits.check_param_count(1001, "w.safetensors")


@pytest.mark.parametrize(
    "value",
    [0, -3, 2**70, 10**5000, "9" * 5000, "12x", 1.5, True, None, [3], "99999999999999999999"],
    ids=lambda v: type(v).__name__,
)
def test_bounded_int_refuses_what_is_not_a_sane_int(value: object) -> None:
    with pytest.raises(FileFormatError, match="num_classes"):
        _limits.bounded_int(value, "num_classes", hi=_limits.MAX_CLASSES, where="f")


def test_bounded_int_accepts_integral_values() -> None:
    assert _limits.bounded_int("7", "n", hi=10) == 7
    assert _limits.bounded_int(7.0, "n", hi=10) == 7
    with pytest.raises(ConfigError, match="--sizes = 5000 is outside"):
        _limits.check_image_side(5000, "--sizes", config=True)


def test_json_depth_and_deeply_nested_metadata() -> None:
    assert _limits.json_depth([1, {"a": [2]}]) == 3
    assert _limits.parse_json('{"a": [1, 2]}', "k", "f") == {"a": [1, 2]}
    with pytest.raises(FileFormatError, match="nested"):
        _limits.parse_json("[" * 100_000 + "]" * 100_000, "sknet_arch", "f")
    with pytest.raises(FileFormatError, match="nested deeper than 32"):
        _limits.parse_json("[" * 40 + "]" * 40, "sknet_arch", "f")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        _limits.parse_json("{", "sknet_arch", "f")
    with pytest.raises(FileFormatError, match="'num_classes' cannot be read"):
        _limits.parse_json("9" * 5000, "num_classes", "f")


@pytest.mark.parametrize("size", ["99999999999999999999", "0", "-5", "1048577"])
def test_info_input_size_out_of_range_is_one_line(
    size: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", "sknet50", "--input-size", size]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--input-size must be in [1, 1048576]" in err
    with pytest.raises(ConfigError, match="input_size must be an int"):
        sknet.complexity(sknet.create_model("sknet_tiny"), int(size) if size[0] != "9" else 2**64)

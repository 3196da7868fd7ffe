"""Every command follows the CLI convention written down in ``sknet.cli``'s docstring."""

from __future__ import annotations

import argparse

import pytest

from sknet.cli.main import COMMANDS, build_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_an_example_and_every_option_says_what_it_does(name: str) -> None:
    p = _commands()[name]
    assert p.epilog and "examples:" in p.epilog and f"sknet {name}" in p.epilog, name
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"sknet {name}: {action.option_strings or action.dest} has no help"
    p.format_help()  # renders with the defaults filled in


@pytest.mark.parametrize("name", COMMANDS)
def test_shared_options_mean_the_same_everywhere(name: str) -> None:
    p = _commands()[name]
    opts = {o: a for a in p._actions for o in a.option_strings}
    if "--device" in opts:
        default = opts["--device"].default
        if default is None:  # `sknet train`: flags override the preset, whose default it is
            from sknet.train import load_preset

            default = load_preset("demo").device
        assert default == "auto", f"sknet {name} --device"
    for flag in ("--json", "--markdown", "--force"):
        if flag in opts:
            assert opts[flag].nargs == 0 and opts[flag].const is True, f"sknet {name} {flag}"
    for choice in ("--data", "--amp", "--format"):
        if choice in opts:
            assert opts[choice].choices, f"sknet {name} {choice} must validate its values"


def test_defaults_are_shown() -> None:
    text = _commands()["eval"].format_help()
    assert "(default: 100)" in text and "(default: auto)" in text

"""``--help`` of every subcommand states what each option defaults to."""
from __future__ import annotations

import argparse

import pytest

from parm.cli import build_parser

SUBCOMMANDS = ("up", "serve", "worker", "fault", "bench", "simulate", "demo", "train-base", "train-parity", "eval",
               "train-demo")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def has_default(action: argparse.Action) -> bool:
    """An option whose default is a value worth stating (not unset, not an off switch)."""
    default = action.default
    unset = default is None or default is False or default is argparse.SUPPRESS or default in ("", [], ())
    return bool(action.option_strings) and not unset and not isinstance(action, argparse._HelpAction)


def option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return formatter.format_help()


def test_every_subcommand_is_registered() -> None:
    assert set(SUBCOMMANDS) <= set(subcommands())


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_option_with_a_default_states_it(name: str) -> None:
    parser = subcommands()[name]
    assert "default" in parser.format_help()
    for action in filter(has_default, parser._actions):
        assert "default" in option_help(parser, action), f"parm {name} {action.option_strings[-1]}"


def test_parm_up_help_shows_the_defaults_a_bare_parm_up_runs_with() -> None:
    text = " ".join(subcommands()["up"].format_help().split())
    for expected in ("(default: 8080)", "(default: builtin:linear)", "(default: auto)", "(default: 2)",
                     "(default: coded)"):
        assert expected in text, expected

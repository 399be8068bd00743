"""``--help`` that states every option's default: the parser class ``parm`` and all its
subcommands are built with, so a subcommand registered by any package gets it without asking."""
from __future__ import annotations

import argparse
import copy
import re
from typing import Any

# a help text that already states its default: "(default 32)", "(default: the p95 of ...)", "default: 30, or ..."
STATES_ITS_DEFAULT = re.compile(r"\(default\b|\bdefault:", re.IGNORECASE)


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to each option's help, also to options with no help text (the stock
    formatter skips those), unless the help already speaks of its default or there is none to
    state (unset, an off switch)."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and _states_default(action):
            action = copy.copy(action)  # the parser's own action keeps help=None
            action.help = "default: %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if STATES_ITS_DEFAULT.search(text) or not _states_default(action):
            return text  # e.g. "(default: the p95 of recent latencies)" says more than the value would
        return super()._get_help_string(action)


def _states_default(action: argparse.Action) -> bool:
    default = action.default
    # identity, not ==: a default of 0 is a value to state, False an off switch
    if default is None or default is False or default is argparse.SUPPRESS or default in ("", [], ()):
        return False
    return bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults; ``add_subparsers`` makes subcommands of this class."""

    def __init__(self, *args: Any, formatter_class: type[argparse.HelpFormatter] = DefaultsFormatter,
                 **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

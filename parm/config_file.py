"""TOML deployment files that mirror the CLI flags one to one: ``parm up --config cluster.toml``.

Each top-level key is a flag of the subcommand without its dashes (``deadline_ms`` or
``deadline-ms``); the file is turned into flags placed before the command line's own, so flags
given on the command line win. Lists become comma-separated values, or repeated flags for
repeatable options; ``true`` switches a flag on. Unknown keys are refused, naming the valid ones.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


class ConfigFileError(ValueError):
    """The file cannot be read or names a setting the command does not have."""


def load(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc}") from exc


def to_argv(settings: dict[str, Any], parser: argparse.ArgumentParser) -> list[str]:
    """The flags that ``settings`` stands for, checked against ``parser``'s options."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    argv: list[str] = []
    for key, value in settings.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None or dest in ("help", "config"):
            valid = ", ".join(sorted(d for d in actions if d not in ("help", "config")))
            raise ConfigFileError(f"unknown setting {key!r} for 'parm {parser.prog.split()[-1]}'; valid: {valid}")
        argv += _flag_tokens(action, value)
    return argv


def _flag_tokens(action: argparse.Action, value: Any) -> list[str]:
    flag = action.option_strings[-1]
    if isinstance(action, argparse._StoreTrueAction):
        return [flag] if value else []
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [t for item in items for t in (flag, _text(item))]
    if isinstance(value, list):
        return [flag, ",".join(_text(v) for v in value)]
    return [flag, _text(value)]


def _text(value: Any) -> str:
    if isinstance(value, dict):
        raise ConfigFileError(f"tables are not settings: {value!r}")
    return str(value).lower() if isinstance(value, bool) else str(value)

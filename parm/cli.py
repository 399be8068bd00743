"""The ``parm`` command: one entry point whose subcommands each package registers.

Each module of ``command_modules()`` has ``register(subparsers)``, adding its subcommands with
``set_defaults(func=...)``; heavy imports (torch) happen inside those functions, so
``parm --help`` and ``parm serve`` start fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from parm import config_file
from parm.help_format import Parser


def command_modules() -> tuple[ModuleType, ...]:
    """The modules registering parm's subcommands, in ``parm --help`` order."""
    from harness import sim_cli
    from parity_models import cli as parity_cli
    from parm import bench_command, commands, demo, fault_command, up_command
    from workers import cli as worker_cli

    return commands, up_command, fault_command, demo, worker_cli, parity_cli, bench_command, sim_cli


CONFIG_COMMANDS = ("serve", "up")  # subcommands that take --config FILE.toml


def build_parser(modules: Sequence[ModuleType] | None = None) -> argparse.ArgumentParser:
    """The whole ``parm`` parser, or one with only ``modules``' subcommands."""
    # every subcommand's parser is a Parser too (add_subparsers makes its own class): --help shows defaults
    parser = Parser(prog="parm", description="Prediction serving with erasure-coded resilience.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"], help="json: one object per line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in command_modules() if modules is None else modules:
        module.register(sub)
    for name in CONFIG_COMMANDS:
        if name not in sub.choices:  # a parser built from some of the modules
            continue
        sub.choices[name].add_argument("--config", metavar="FILE.toml",
                                       help="settings file mirroring these flags; flags given here win")
    return parser


def expand_config(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Replace ``--config FILE`` after a config-taking subcommand by the flags the file stands for."""
    for i, token in enumerate(argv):
        if token in CONFIG_COMMANDS:
            rest = argv[i + 1:]
            if "--config" not in rest:
                return argv
            j = rest.index("--config")
            if j + 1 >= len(rest):
                parser.error("--config needs a file")
            sub = parser._subparsers._group_actions[0].choices[token]  # type: ignore[union-attr]
            try:
                flags = config_file.to_argv(config_file.load(rest[j + 1]), sub)
            except config_file.ConfigFileError as exc:
                parser.error(str(exc))
            return argv[:i + 1] + flags + rest[:j] + rest[j + 2:]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    expanded = expand_config(parser, list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(expanded)
    args.argv = expanded  # what parm serve --processes N starts each serving process with
    configure_logging(args.log_level, args.log_format)
    return int(args.func(args) or 0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


if __name__ == "__main__":
    sys.exit(main())

"""The ``parm`` command: one entry point whose subcommands each package registers.

Each module in ``COMMAND_MODULES`` has ``register(subparsers)``, adding its subcommands with
``set_defaults(func=...)``; heavy imports (torch) happen inside those functions, so
``parm --help`` and ``parm serve`` start fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = ("frontend.commands", "frontend.demo", "workers.cli", "parity_models.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parm", description="Prediction serving with erasure-coded resilience.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

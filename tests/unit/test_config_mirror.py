"""FrontendConfig and ``parm serve``'s flags mirror each other one to one: every field has its flag
with the same default, every flag reaches its field, and no flag is left without one."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from frontend.config import FrontendConfig
from parm.cli import build_parser
from parm.commands import config_from_args

DATA, PARITY = (("127.0.0.1", 1), ("127.0.0.1", 2)), (("127.0.0.1", 3),)
FILE_FLAGS = {"auth_token": "auth_token_file", "worker_secret": "worker_secret_file"}  # secrets come from files
CLI_ONLY = {"help", "config", "drain_timeout_s", "event_loop",  # flags of the command, not the frontend's settings
            "processes", "process_index", "peers_dir", "supervisor_pid"}
FIELDS = {f.name: f for f in dataclasses.fields(FrontendConfig)}


def serve_parser() -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]


def dests() -> dict[str, argparse.Action]:
    return {a.dest: a for a in serve_parser()._actions}


def test_every_field_has_a_flag_and_every_flag_a_field() -> None:
    flags = dests()
    assert [name for name in FIELDS if FILE_FLAGS.get(name, name) not in flags] == []
    assert sorted(set(flags) - CLI_ONLY - {FILE_FLAGS.get(n, n) for n in FIELDS}) == []


@pytest.mark.parametrize("name", sorted(set(FIELDS) - set(FILE_FLAGS) - {"data", "parity"}))
def test_flag_and_field_share_their_default(name: str) -> None:
    assert dests()[name].default == FIELDS[name].default, name


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.type in ("int", "float", "bool", "float | None")
                                  and n not in ("k", "r")])
def test_each_flag_reaches_its_field(name: str) -> None:
    args = serve_parser().parse_args(["--data", "h:1", "--decode-policy", "grace"])
    value = getattr(args, name)
    changed = (not value) if isinstance(value, bool) else (value or 0) + 1  # default + 1 stays valid
    setattr(args, name, changed)
    assert getattr(config_from_args(args, DATA, PARITY, worker_secret="s"), name) == changed

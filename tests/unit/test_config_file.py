"""TOML files mirror the CLI flags one to one; flags on the command line win; bad keys are refused."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from parm.cli import build_parser, configure_logging, expand_config
from parm.up_command import plan_up

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster.toml"


def parse(tmp_path, toml: str, *argv: str):
    path = tmp_path / "cluster.toml"
    path.write_text(toml)
    parser = build_parser()
    return parser.parse_args(expand_config(parser, [*argv[:1], "--config", str(path), *argv[1:]]))


def test_every_setting_becomes_its_flag(tmp_path) -> None:
    args = parse(tmp_path, """
port = 9000
k = 3
code = "sum"
mode = "equal"
data = ["127.0.0.1:9001", "127.0.0.1:9002"]
parity = "127.0.0.1:9003"
deadline-ms = 250.0
default_output = [0.0, 1.0]
""", "serve")
    assert (args.port, args.k, args.code, args.mode) == (9000, 3, "sum", "equal")
    assert args.data == "127.0.0.1:9001,127.0.0.1:9002" and args.parity == "127.0.0.1:9003"
    assert args.deadline_ms == 250.0 and args.default_output == "0.0,1.0"


def test_command_line_flags_win_and_repeatable_flags_repeat(tmp_path) -> None:
    args = parse(tmp_path, 'workers = 4\nk = 2\nfault = ["0=stall", "1=delay:ms=5"]\n', "up", "--k", "4")
    assert args.k == 4 and args.workers == 4 and args.fault == ["0=stall", "1=delay:ms=5"]


def test_the_example_file_is_a_valid_cluster() -> None:
    parser = build_parser()
    args = parser.parse_args(expand_config(parser, ["up", "--config", str(EXAMPLE)]))
    plan = plan_up(args)
    assert plan.code == "sum" and [s.role for s in plan.specs].count("parity") == 2  # 4 data workers, k=2


def test_unknown_settings_and_bad_files_are_refused(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        parse(tmp_path, "portt = 1\n", "serve")
    assert "unknown setting 'portt'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(tmp_path, "port = \n", "serve")
    assert "cannot read config file" in capsys.readouterr().err


def test_json_logs_are_one_object_per_line(capsys) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("parm.test").warning("hello %s", "world")
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["message"] == "hello world" and entry["level"] == "WARNING" and entry["logger"] == "parm.test"
    configure_logging("WARNING", "text")

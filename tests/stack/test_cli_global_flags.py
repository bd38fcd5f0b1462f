"""Global flags (``--data-dir``, ``--log-json``, ``-v``) are accepted before the command
name and after it, at any depth, as the README says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stack.cli import build_parser, main
from stack.cli import _subcommands


@pytest.mark.parametrize("argv", [
    ["trust", "list", "--json"],
    ["announce", "sign", "--out", "{tmp}/a.ann"],
    ["id", "--json"],
])
def test_data_dir_after_a_nested_command(argv: list[str], tmp_path: Path, capsys) -> None:
    data_dir = tmp_path / "d"
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    assert main([*argv, "--data-dir", str(data_dir)]) == 0
    assert (data_dir / "identity.key").exists() or argv[0] == "trust"
    out = capsys.readouterr().out
    if argv[0] == "trust":
        assert json.loads(out)["path"] == str(data_dir / "trusted_peers.json")


def test_the_flag_after_the_command_wins_and_before_is_kept(tmp_path: Path, capsys) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    assert main(["--data-dir", str(before), "trust", "list", "--data-dir", str(after),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(after / "trusted_peers.json")
    assert main(["--data-dir", str(before), "trust", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(before / "trusted_peers.json")


def test_every_command_at_every_depth_takes_the_global_flags() -> None:
    leaves = _subcommands(build_parser())
    assert len(leaves) > 10  # the walk found the nested ones (trust list, announce sign...)
    for parser in leaves:
        options = {opt for action in parser._actions for opt in action.option_strings}
        assert {"--data-dir", "--log-json", "--verbose"} <= options, parser.prog

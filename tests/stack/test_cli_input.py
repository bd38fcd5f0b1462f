"""Bad command lines are usage errors (exit 2) with one line that names the problem,
before any node starts or any name goes to DNS (issue 14, section 3)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from stack.base.errors import LocalError, UsageError
from stack.base.net import check_host, resolve_error
from stack.cli import main

PEER = "12D3KooWGSGcZSbbRiEaV3eq2RRH2ZV9b5d2JcHNd2DsUbGkX3kC"


def exit_code_and_err(argv: list[str], tmp_path: Path, capsys) -> tuple[int, str]:
    try:
        code = main(["--data-dir", str(tmp_path), *argv])
    except SystemExit as exc:  # argparse's own checks exit while parsing
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "says"), [
    (["demo", "--timeout", "nan"], "positive number of seconds"),   # used to hang
    (["demo", "--timeout", "0"], "positive number of seconds"),
    (["lookup", PEER, "--timeout", "-1"], "positive number of seconds"),
    (["ping", "127.0.0.1:9", "--timeout", "inf"], "positive number of seconds"),
    (["connect", "999.1.1.1:5"], "not an IPv4 address: '999.1.1.1'"),  # not sent to DNS
    (["nat", "--stun", "999.1.1.1"], "not an IPv4 address"),
    (["nat", "--stun", "bad_name:3478"], "not a host name or IPv4 address"),
    (["connect", "127.0.0.1"], "neither HOST:PORT, a multiaddr nor a peer id"),
    (["connect", PEER, "--bootstrap", "garbage"], "neither HOST:PORT"),
    (["connect", PEER, "--bootstrap", PEER], "--bootstrap needs HOST:PORT"),
    (["connect", "127.0.0.1:9", "--message", "x" * 70_000], "--message is 70000 bytes"),
    (["trust", "frob"], "invalid choice: 'frob'"),
    (["connect"], "required"),
    (["nat"], "give --stun HOST:PORT, or run 'p2pstack node'"),  # no node runs here
    (["node", "--stun", "10.0.0.1:http"], "bad port in '10.0.0.1:http'"),
    (["node", "--keepalive", "-5"], "positive number of seconds"),
    (["node", "--keepalive", "nan"], "positive number of seconds"),
])
def test_a_bad_command_line_is_one_line_and_exit_2(argv, says, tmp_path, capsys) -> None:
    code, err = exit_code_and_err(argv, tmp_path, capsys)
    assert code == 2, err
    assert says in err
    assert err.count("\n") == 1, err  # one line, not argparse's usage block


def test_host_syntax() -> None:
    assert check_host("localhost") == "localhost"
    assert check_host("relay-1.example.org") == "relay-1.example.org"
    assert check_host("192.0.2.1") == "192.0.2.1"
    # 010.1.1.1 is octal to inet_aton and decimal to others: refused, not guessed
    for bad in ("999.1.1.1", "1.2.3", "010.1.1.1", "-lead.example", "a..b", "under_score",
                "h" * 254):
        with pytest.raises(UsageError):
            check_host(bad)


def test_a_name_that_does_not_exist_is_a_usage_error_a_dead_resolver_is_not() -> None:
    no_such = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert isinstance(resolve_error("garbage", no_such), UsageError)
    again = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    err = resolve_error("example.org", again)
    assert isinstance(err, LocalError) and not isinstance(err, UsageError)

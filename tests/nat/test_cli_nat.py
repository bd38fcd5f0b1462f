"""``p2pstack nat`` on 127.0.0.1: against our own RFC 5780 server (127.0.0.1 + 127.0.0.2,
two ports), an unanswered server (udp-blocked, exit 1), and bad flags (exit 2)."""

from __future__ import annotations

import asyncio
import json
import random
import socket

import pytest

from nat.stun.server import ServerConfig
from nat.stun.service import StunService, serve
from stack.cli import main
from stack.base.clock import SystemClock
from stack.base.errors import LocalError
from stack.base.net import UdpNetwork


async def rfc5780_server() -> StunService:
    """Both loopback addresses x two ports; retried on the rare taken port."""
    rng = random.Random()
    for _ in range(20):
        port = rng.randrange(20000, 60000, 2)
        config = ServerConfig(primary=("127.0.0.1", port), alternate_ip="127.0.0.2",
                              alternate_port=port + 1)
        try:
            return await serve(UdpNetwork(), config, SystemClock())
        except LocalError:
            continue
    raise RuntimeError("no free loopback port pair")


async def run_cli(*argv: str) -> int:
    # The command runs its own asyncio.run: give it a thread while our loop serves STUN.
    return await asyncio.get_running_loop().run_in_executor(None, main, list(argv))


async def test_json_report_against_an_rfc5780_server(capsys: pytest.CaptureFixture[str],
                                                     tmp_path) -> None:
    service = await rfc5780_server()
    primary = service.server.config.primary
    try:
        code = await run_cli("--data-dir", str(tmp_path), "nat", "--stun",
                             f"{primary[0]}:{primary[1]}", "--json", "--timeout", "2")
    finally:
        service.close()
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"public_address", "nat", "mapping", "filtering", "hairpin", "type"}
    assert report["nat"] is False and report["type"] == "open"
    assert report["public_address"].startswith("127.0.0.1:")
    assert report["mapping"] == report["filtering"] == "endpoint-independent"
    assert report["hairpin"] is None
    assert service.server.answered >= 4  # test I, two filtering tests, II, III


async def test_human_output_and_listen_flag(capsys: pytest.CaptureFixture[str],
                                            tmp_path) -> None:
    service = await rfc5780_server()
    primary = service.server.config.primary
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    try:
        code = await run_cli("--data-dir", str(tmp_path), "nat", "--stun",
                             f"localhost:{primary[1]}", "--listen", f"127.0.0.1:{free}")
    finally:
        service.close()
    out = capsys.readouterr().out
    assert code == 0
    assert f"public address  127.0.0.1:{free}" in out
    assert "type            open" in out and "hairpin         null (untested)" in out


async def test_nothing_answering_is_udp_blocked_exit_1(capsys: pytest.CaptureFixture[str],
                                                       tmp_path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))  # bound and silent: our requests go unanswered
        port = s.getsockname()[1]
        code = await run_cli("--data-dir", str(tmp_path), "nat", "--stun",
                             f"127.0.0.1:{port}", "--json", "--timeout", "0.3")
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["type"] == "udp-blocked"
    assert captured.err.strip() == "p2pstack: no STUN server answered"


@pytest.mark.parametrize("argv", [
    ["nat", "--stun", "127.0.0.1:3478", "--timeout", "0"],
    ["nat", "--stun", "127.0.0.1:notaport"],
    ["nat", "--stun", "127.0.0.1:3478", "--listen", "127.0.0.1:70000"],
])
def test_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str],
                          tmp_path) -> None:
    try:
        code = main(["--data-dir", str(tmp_path), *argv])
    except SystemExit as exc:  # argparse's own checks (--timeout's type) exit from parsing
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(("p2pstack: error:", "p2pstack nat: error:"))
    assert err.count("\n") == 1  # one line, not the usage block


def test_missing_stun_flag_exits_2(tmp_path, capsys) -> None:
    """No --stun and no node running in the data directory to ask: a usage error."""
    assert main(["--data-dir", str(tmp_path), "nat"]) == 2
    assert "give --stun HOST:PORT" in capsys.readouterr().err

"""``p2pstack room create|invite|join|list|graph|kick`` as processes, through running nodes: a
rendezvous (``node --rendezvous``), A creates and invites, B joins, A draws the graph, B may
not kick; A invites C with ``--pin``: A's command prints the PIN, C's prompts for it and
is admitted; exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.stack.test_node_cli import CLI, ROOT, first_line, run


def spawn(data_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--data-dir", str(data_dir), "node", "--listen",
                             "127.0.0.1:0", "--json", "--no-mdns", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT)


def test_create_invite_join_through_the_cli(tmp_path: Path) -> None:
    # started together: each CLI process spends seconds importing on a busy machine
    procs = [spawn(tmp_path / "r", "--rendezvous"), spawn(tmp_path / "a"),
             spawn(tmp_path / "b"), spawn(tmp_path / "c")]
    try:
        r_info, a_info, b_info, c_info = (json.loads(first_line(p)) for p in procs)
        rv = r_info["addrs"][0]
        A, B = ("--data-dir", str(tmp_path / "a")), ("--data-dir", str(tmp_path / "b"))
        out = run(*A, "room", "create", "club", "--rendezvous", rv)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("created room club (admin, rendezvous ")
        out = run(*A, "room", "invite", "club", "--json")
        assert out.returncode == 0, out.stderr
        invite = json.loads(out.stdout)
        assert set(invite) == {"code", "expires", "room", "number", "pin"} and not invite["pin"]
        number = invite["code"].split("-")[0]
        typo = run(*B, "room", "join", "club", f"{number}-notaword-x", "--rendezvous", rv)
        assert typo.returncode == 2 and "notaword" in typo.stderr
        out = run(*B, "room", "join", "club", invite["code"], "--rendezvous", rv, "--json")
        assert out.returncode == 0, out.stderr
        joined = json.loads(out.stdout)
        assert joined["admitted_by"] == a_info["peer_id"] and joined["room"] == "club"
        trust = json.loads((tmp_path / "b" / "trusted_peers.json").read_text())
        assert trust["peers"][a_info["peer_id"]]["source"] == "invite"
        # the trust graph as A sees it, as JSON and as a picture
        png = tmp_path / "club.png"
        out = run(*A, "room", "graph", "club", "--json", "--png", str(png))
        assert out.returncode == 0, out.stderr
        graph = json.loads(out.stdout)
        # (B is in it once A's own bookkeeping of the admission is done: not awaited here)
        assert {a_info["peer_id"]} <= {m["peer_id"] for m in graph["members"]} \
            <= {a_info["peer_id"], b_info["peer_id"]}
        assert graph["admin"] == a_info["peer_id"] and graph["outsiders"] == []
        assert all({"kind", "why"} <= set(g) for g in graph["gaps"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        out = run(*A, "room", "graph", "club")
        assert out.returncode == 0 and out.stdout.startswith("room club as "), out.stderr
        out = run(*A, "room", "graph", "nowhere")
        assert out.returncode == 2 and "no room called" in out.stderr
        out = run(*B, "room", "kick", "club", a_info["peer_id"])
        assert out.returncode == 2 and "only the room's admin" in out.stderr
        # the PIN flow: A's invite waits and shows the PIN; C types it in when asked
        C = ("--data-dir", str(tmp_path / "c"))
        inviter = subprocess.Popen([*CLI, *A, "room", "invite", "club", "--pin", "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd=ROOT)
        procs.append(inviter)
        invite = json.loads(first_line(inviter))
        assert invite["pin"] is True
        newcomer = subprocess.Popen([*CLI, *C, "room", "join", "club", invite["code"],
                                     "--rendezvous", rv], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    cwd=ROOT)
        procs.append(newcomer)
        shown = json.loads(first_line(inviter))
        assert shown["state"] == "pin" and shown["newcomer"] == c_info["peer_id"]
        out, err = newcomer.communicate(f"12\n{shown['pin']}\n", timeout=30)
        assert newcomer.returncode == 0, err
        assert "6-digit PIN" in err and "has 6 digits" in err   # asked again after a typo
        assert out.startswith(f"joined room club (admitted by {a_info['peer_id']}")
        done = json.loads(first_line(inviter))
        assert done["state"] == "admitted" and done["peer_id"] == c_info["peer_id"]
        assert inviter.wait(timeout=10) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
    out = run("--data-dir", str(tmp_path / "b"), "room", "list")  # b has stopped
    assert out.returncode == 1 and "no node is running" in out.stderr

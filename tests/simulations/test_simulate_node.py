"""``p2pstack simulate`` with the ``node`` engine (issue 11 sections 1-2): the ``nat-matrix``
and ``mobility`` built-ins run full production Nodes on the simulator. Each run is small
(a few wall seconds); the report's figures are recomputed from the run's own records, the
plots are real PNGs, and one seed gives a byte-identical report.json in two fresh
processes with different hash seeds."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from simulations.report import build_report, prepare_out_dir, render_markdown, write_report
from simulations.runner import run_scenario
from simulations.scenario import resolve_scenario
from stack.cli import main

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
KINDS = ("none", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric")
#: no punch of ours opens it (README; tests/simulations/test_punch_sim.py): relayed
INFEASIBLE = {("symmetric", "symmetric")}
#: only the birthday technique opens these, and only once both NAT reports show the
#: pair: this scenario's nodes ask no RFC 5780 server, and what DHT servers tell them
#: (often no filtering, sometimes no mapping yet) decides: punched or relayed
BIRTHDAY = {("port-restricted-cone", "symmetric"), ("symmetric", "port-restricted-cone")}
SMALL_MOBILITY = ["nodes=7", "duration=90", "ip_change_at=[10, 50]", "rebind_at=[30]",
                  "ip_changes_per_minute=0", "rebinds_per_minute=0",
                  "nat={none=0.5, full-cone=0.25, symmetric=0.25}"]


def _run(name: str, settings: list[str], out: Path):
    result = run_scenario(resolve_scenario(name, settings), 1)
    report = build_report(result, wall_seconds=0.0, started_at="t")
    files = write_report(prepare_out_dir(out), report)
    return result, report, files


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory):
    return _run("nat-matrix", [], tmp_path_factory.mktemp("nm") / "out")


@pytest.fixture(scope="module")
def mobility_run(tmp_path_factory):
    return _run("mobility", SMALL_MOBILITY, tmp_path_factory.mktemp("mob") / "out")


def test_every_nat_pair_connects_by_peer_id_on_the_path_it_should(matrix_run):
    result, _report, _ = matrix_run
    got = {(p["dialer"], p["target"]): p["path"] for p in result.paths}
    assert set(got) == {(d, t) for d in KINDS for t in KINDS}
    for (d, t), path in got.items():
        if (d, t) in INFEASIBLE:
            assert path == "relayed", (d, t, path)
        elif (d, t) in BIRTHDAY:
            assert path in ("punched", "relayed"), (d, t, path)
        elif d == "none" or t in ("none", "full-cone") or (t == "port-restricted-cone"
                                                          and d == "full-cone"):
            assert path == "direct", (d, t, path)
        else:
            assert path in ("direct", "punched"), (d, t, path)
    assert result.joins == Counter(ok=11)


def test_the_matrix_report_agrees_with_the_run(matrix_run):
    result, report, files = matrix_run
    counts = Counter(p["path"] for p in result.paths)
    assert report["summary"]["matrix"] == {"pairs": 25, **{p: counts[p] for p in
                                                          ("direct", "punched", "relayed",
                                                           "failed")}}
    assert report["matrix"]["connects"] == result.paths
    assert report["network"] == dataclasses.asdict(result.net.stats)
    assert report["summary"]["datagrams"]["total"] == result.net.stats.sent  # nothing moved
    assert report["summary"]["nodes"]["initial"] == 11
    md = render_markdown(report)
    assert "## Connection paths by NAT pair" in md
    assert "| symmetric | direct" in md and "relayed" in md
    for f in files:
        assert f.stat().st_size > 0
    png = files[0].parent / "connection_paths.png"
    assert png.read_bytes().startswith(PNG)


def test_moves_are_measured_and_the_report_agrees(mobility_run):
    result, report, files = mobility_run
    moves = sorted(result.moves, key=lambda m: m["at"])
    assert [m["how"] for m in moves] == ["ip_change", "rebind", "ip_change"]
    reconnect = sorted(t for m in moves for t in m["reconnect_s"] if t is not None)
    assert reconnect, "no observer reconnected"
    mob = report["mobility"]
    assert mob["moves"] == 3 and mob["list"] == moves
    assert mob["reconnect"]["seconds"] == reconnect
    assert mob["reconnect"]["p50"] == reconnect[int(0.5 * len(reconnect))]
    assert mob["reconnect"]["p99"] == reconnect[min(len(reconnect) - 1,
                                                    int(0.99 * len(reconnect)))]
    probes = sum(len(m["reconnect_s"]) for m in moves)
    assert mob["reconnect"]["probes"] == probes
    assert mob["reconnect"]["failed"] == probes - len(reconnect)
    found = [m["found_again_s"] for m in moves if m["stranger"]]
    assert mob["found_again"]["probes"] == len(found)
    assert report["summary"]["mobility"]["reconnect"]["p50"] == mob["reconnect"]["p50"]
    assert report["node_stats"] == dict(sorted(result.node_stats.items()))
    assert report["network"] == dataclasses.asdict(result.net.stats)
    assert "## Time to reconnect after a move" in render_markdown(report)
    png = files[0].parent / "reconnect_histogram.png"
    assert png.read_bytes().startswith(PNG) and png.stat().st_size > 5000


def test_a_room_keeps_reaching_its_members_after_its_rendezvous_goes_down(tmp_path):
    """The ``rendezvous-down`` built-in, small: three members behind NATs admitted
    through the rendezvous; once its host crashed, every member still reaches every
    other by peer id, and a join on a fresh invite still works (inviter and newcomer
    find the rendezvous down and go through the room's DHT record); the report's
    figures are the run's own records."""
    result, report, files = _run("rendezvous-down", [
        "nodes=6", "members=3", "nat={none=0.25, full-cone=0.25, port-restricted-cone=0.25, "
        "symmetric=0.25}"], tmp_path / "out")
    room = result.room
    assert len(room["members"]) == 3 and room["down_at"] is not None, room
    admissions = room["admissions"]
    assert [a["error"] for a in admissions] == [None, None], admissions
    assert admissions[1]["checked_by"] == 1 and admissions[1]["connected"] == 1, admissions
    assert all(a["synced_s"] is not None and a["synced_s"] >= a["in_room_s"]
               for a in admissions), admissions   # each newcomer holds the room's state
    echoes = room["echoes"]
    assert len(echoes) == 6 and all(e["reached_s"] is not None for e in echoes), echoes
    after = room["state_after_down"]["reached_s"]    # a change after the crash reaches all
    assert len(after) == 2 and None not in after, room["state_after_down"]
    late = room["late_join"]
    assert late is not None and late["error"] is None and late["in_room_s"] > 0, late
    assert late["synced_s"] is not None, late
    section = report["room"]
    assert section["admission"]["seconds"] == sorted(a["in_room_s"] for a in admissions)
    assert section["echoes_after_down"]["reached"] == 6
    assert section["state_synced"]["seconds"] == sorted(a["synced_s"] for a in admissions)
    assert section["state_after_down"]["reached"] == 2
    assert section["echoes_after_down"]["p99"] == max(e["reached_s"] for e in echoes)
    assert report["summary"]["room"]["late_join"] == "admitted"
    assert result.node_stats["rooms rendezvous_unreachable"] == 2, result.node_stats
    md = render_markdown(report)
    assert "## The room and its rendezvous going down" in md and "6 of 6 pairs" in md, md
    assert files[0].parent.joinpath("datagrams_by_kind.png").read_bytes().startswith(PNG)


def test_the_cli_runs_a_node_builtin(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["simulate", "nat-matrix", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    summary = json.loads(captured.out)["summary"]
    assert summary["matrix"]["pairs"] == 25 and summary["matrix"]["failed"] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "connection_paths.png", "datagrams_by_kind.png", "report.json", "report.md"]


def _strip_wall(text: str) -> str:
    stripped, count = re.subn(r'\n  "wall": \{[^}]*\}', "", text)
    assert count == 1
    return stripped


def test_the_same_seed_gives_a_byte_identical_node_report(tmp_path):
    """Two fresh processes (different hash seeds), one seed: the same report.json apart
    from its wall time, moves (QUIC migration, replacement, pushes) included."""
    def simulate(out: Path, hashseed: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hashseed}
        subprocess.run([sys.executable, "-m", "stack.cli", "simulate", "mobility",
                        *[f"--set={s}" for s in SMALL_MOBILITY], "--seed", "3",
                        "--out", str(out), "--json"],
                       check=True, cwd=tmp_path, env=env, capture_output=True, timeout=120)
        return (out / "report.json").read_text()

    first = simulate(tmp_path / "a", "1")
    assert _strip_wall(simulate(tmp_path / "b", "2")) == _strip_wall(first)
    assert json.loads(first)["mobility"]["moves"] == 3

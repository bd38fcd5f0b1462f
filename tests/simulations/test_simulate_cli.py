"""``p2pstack simulate`` (issue 11 sections 1, 2 and 6): the runner, the report and the command.

Runs are small (tens of nodes, minutes of simulated time), each a few wall seconds. The
figures of the report are checked against the simulator's own counters (``SimNetwork.stats``,
the endpoints' ``EndpointStats``, the NAT boxes' ``NatStats``), the report is reproduced
byte for byte from the seed in fresh processes (with different hash seeds), the plots
are real PNGs, and ``--out`` never overwrites a non-empty directory without ``--force``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from simulations.report import build_report, prepare_out_dir, render_markdown, write_report
from simulations.runner import OUTCOMES, datagram_kind, run_scenario
from simulations.scenario import BUILTINS, builtin, resolve_scenario
from stack.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]

SMALL = ["nodes=24", "duration=120", "idle=60", "lookups_per_minute=120"]
CHURNY = [*SMALL, "joins_per_minute=4", "leaves_per_minute=4", "crashes_per_minute=4",
          "rejoin_after=30", "nat={none=0.6, full-cone=0.2, symmetric=0.2}", "loss=0.01",
          "bucket=30"]
PNG = b"\x89PNG\r\n\x1a\n"


def _strip_wall(text: str) -> str:
    """report.json minus its wall-time fields (the only ones allowed to differ)."""
    stripped, count = re.subn(r'\n  "wall": \{[^}]*\}', "", text)
    assert count == 1
    return stripped


@pytest.fixture(scope="module")
def churn_run(tmp_path_factory):
    """One small churn run with NATs and loss: the result, its report and its files."""
    scenario = resolve_scenario("churn", CHURNY)
    start = time.perf_counter()
    result = run_scenario(scenario, 5)
    report = build_report(result, wall_seconds=time.perf_counter() - start, started_at="t")
    out = prepare_out_dir(tmp_path_factory.mktemp("report") / "out")
    files = write_report(out, report)
    return result, report, out, files


def test_the_report_agrees_with_the_simulator(churn_run):
    result, report, _out, _files = churn_run
    stats = result.net.stats
    assert report["network"] == dataclasses.asdict(stats)
    assert stats.sent == (stats.delivered + stats.dropped_loss + stats.dropped_nat
                          + stats.dropped_crashed + stats.dropped_unroutable
                          + stats.dropped_no_port)
    s = report["summary"]
    # every datagram the network carried was counted by kind, in one bucket, in one phase,
    # and by the endpoints that sent it
    assert s["datagrams"]["total"] == stats.sent == result.endpoint_sent
    by_kind = sum(sum(b["kinds"].values()) for b in report["series"]["datagrams"])
    assert by_kind == stats.sent
    assert sum(p["datagrams"] for p in report["phases"]) == stats.sent
    assert stats.dropped_loss > 0 and stats.dropped_crashed > 0  # loss and crashes happened
    # NAT boxes: the report sums what each box counted
    nat_total = Counter()
    for peer_nat in _nats(result):
        nat_total.update(dataclasses.asdict(peer_nat.stats))
    assert report["nat"] == dict(sorted(nat_total.items()))
    assert report["nat"]["translated_out"] > 0
    # lookups: the outcome counts are the samples' own
    outcomes = Counter(sample.outcome for sample in result.lookups)
    for outcome in OUTCOMES:
        assert s["lookups"][outcome] == outcomes[outcome]
    assert s["lookups"]["total"] == len(result.lookups) > 50
    counted = [x for x in result.lookups if x.outcome != "aborted"]
    ok = [x for x in counted if x.outcome in ("found", "stale")]
    assert s["lookups"]["success_rate"] == len(ok) / len(counted)
    assert sum(b["lookups"] for b in report["series"]["success"]) == len(counted)
    latencies = sorted(x.latency for x in ok)
    assert report["lookup_latencies_seconds"] == latencies
    assert s["latency_seconds"]["max"] == latencies[-1]
    # churn happened and the node counts add up
    churn = s["churn"]
    assert churn["join"] and churn["leave"] and churn["crash"] and churn["rejoin"]
    assert s["nodes"]["started"] == 24 + churn["join"] + churn["rejoin"]
    assert s["joins"]["ok"] + s["joins"]["failed"] == s["nodes"]["started"]
    assert s["nodes"]["nat_kinds"] == {"full-cone": 5, "none": 14, "symmetric": 5}
    # routing health: one sample per bucket, and departed nodes show up as dead entries
    routing = report["series"]["routing"]
    assert len(routing) == int(result.sim_time // 30)
    assert max(r["dead_fraction"] for r in routing) > 0
    assert all(r["live_servers"] > 0 and r["min_size"] <= r["mean_size"] for r in routing)


def test_a_partition_cuts_and_heals():
    scenario = resolve_scenario("partition", ["nodes=30", "duration=150", "idle=30",
                                              "at=30", "heal_after=60", "fraction=0.4"])
    result = run_scenario(scenario, 2)
    report = build_report(result, wall_seconds=0.0, started_at="")
    split = report["summary"]["partition"]
    workload = next(p for p in report["phases"] if p["name"] == "workload")
    assert split["start"] == pytest.approx(workload["start"] + 30)
    assert split["healed"] == pytest.approx(split["start"] + 60)
    assert split["nodes_cut_off"] == 12
    assert report["network"]["dropped_partition"] == result.net.stats.dropped_partition > 0
    assert not result.net._sides  # healed
    assert "12 nodes cut off" in render_markdown(report)


def _nats(result):
    from simulations.nat import Nat

    return [node for node in result.net._public.values() if isinstance(node, Nat)]


def test_plots_are_written_and_not_empty(churn_run):
    _result, report, out, files = churn_run
    assert [f.name for f in files] == ["report.json", "report.md", *report["plots"]]
    assert set(report["plots"]) == {"lookup_latency_cdf.png", "success_rate.png",
                                    "datagrams_by_kind.png", "routing_health.png"}
    from matplotlib.image import imread

    for name in report["plots"]:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
        pixels = imread(out / name)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 600
        assert pixels.std() > 0.05, f"{name} is blank"
    md = (out / "report.md").read_text()
    assert md.startswith("# p2pstack simulate: churn (seed 5)\n")
    assert md.index("| figure | value |") < md.index("## Phases")  # the summary first
    for name in report["plots"]:
        assert f"]({name})" in md
    assert json.loads((out / "report.json").read_text()) == report


def test_progress_changes_nothing():
    """The progress ticker only reads: with it the run is the same run."""
    scenario = resolve_scenario("dht", ["nodes=12", "duration=30", "idle=30"])
    seen = []
    quiet = build_report(run_scenario(scenario, 3), wall_seconds=0, started_at="")
    loud = build_report(run_scenario(scenario, 3, seen.append), wall_seconds=0, started_at="")
    assert quiet == loud
    assert len(seen) > 30 and seen[-1].sim_time <= seen[-1].planned + 1
    assert [p.phase for p in seen][-1] == "idle"


def test_the_same_seed_gives_a_byte_identical_report(tmp_path):
    """Two fresh processes (different hash seeds) with the same scenario and seed write the
    same report.json except its wall-time fields; another seed gives another run."""
    def simulate(out: Path, seed: int, hashseed: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hashseed}
        subprocess.run([sys.executable, "-m", "stack.cli", "simulate", "churn",
                        *[f"--set={s}" for s in CHURNY], "--seed", str(seed),
                        "--out", str(out), "--json"],
                       check=True, cwd=tmp_path, env=env, capture_output=True, timeout=120)
        return (out / "report.json").read_text()

    first = simulate(tmp_path / "a", 11, "1")
    second = simulate(tmp_path / "b", 11, "2")
    assert _strip_wall(first) == _strip_wall(second)
    other = simulate(tmp_path / "c", 12, "1")
    assert _strip_wall(other) != _strip_wall(first)
    assert json.loads(first)["seed"] == 11


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", sorted(n for n in BUILTINS if builtin(n).engine == "dht"))
def test_every_builtin_runs_small(tmp_path, name, capsys):
    """The DHT built-ins; the node engine's are in test_simulate_node.py."""
    out = tmp_path / "out"
    args = ["simulate", name, "--set", "nodes=20", "--set", "duration=60", "--set", "idle=30",
            "--out", str(out), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --json: no progress
    summary = json.loads(captured.out)
    assert summary["scenario"] == name and summary["seed"] == 1
    assert summary["summary"]["lookups"]["success_rate"] == 1.0
    assert summary["summary"]["nodes"]["initial"] == 20
    report = json.loads((out / "report.json").read_text())
    assert report["scenario"]["name"] == name and report["summary"] == summary["summary"]
    assert report["versions"]["p2pstack"] and report["versions"]["matplotlib"]
    for plot in report["plots"]:
        assert (out / plot).stat().st_size > 0


def test_out_is_never_overwritten_without_force(tmp_path, capsys, monkeypatch):
    quick = ["--set", "nodes=6", "--set", "duration=10", "--set", "idle=0"]
    monkeypatch.chdir(tmp_path)
    # default: a new directory simulate-<scenario>-<seed> here
    assert main(["simulate", "dht", *quick, "--seed", "4"]) == 0
    out = tmp_path / "simulate-dht-4"
    assert (out / "report.json").exists() and (out / "report.md").exists()
    printed = capsys.readouterr().out
    assert "report: simulate-dht-4/report.md" in printed
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # again: refused, one line, exit 2, nothing touched
    assert main(["simulate", "dht", *quick, "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a file that is not a directory is refused even with --force
    (tmp_path / "file").write_text("mine")
    assert main(["simulate", "dht", *quick, "--out", "file", "--force"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"
    # --force writes the report files; someone else's file there stays
    (out / "notes.txt").write_text("keep")
    assert main(["simulate", "dht", *quick, "--seed", "4", "--force"]) == 0
    assert (out / "notes.txt").read_text() == "keep"
    # an empty directory is fine without --force
    (tmp_path / "empty").mkdir()
    assert main(["simulate", "dht", *quick, "--out", "empty", "--json"]) == 0
    assert (tmp_path / "empty" / "report.json").exists()


def test_progress_goes_to_stderr(tmp_path, capsys, monkeypatch):
    from stack.cli import simulate

    monkeypatch.setattr(simulate, "PROGRESS_AFTER", 0.0)
    assert main(["simulate", "dht", "--set", "nodes=6", "--set", "duration=20",
                 "--set", "idle=0", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "datagrams" in captured.err and "sim " in captured.err
    assert "dht seed 1: 6 nodes" in captured.out


def test_datagram_kinds():
    from discovery.wire import FIND_NODE, REPLY_BIT

    assert datagram_kind(bytes([0x04, 0x98, FIND_NODE])) == "FIND_NODE"
    assert datagram_kind(bytes([0x04, 0x99, 0xCC, FIND_NODE | REPLY_BIT])) == "FIND_NODE reply"
    assert datagram_kind(bytes([0x04, 0x99, 0x05])) == "PROVE"
    assert datagram_kind(bytes([0x00, 0x01, 0, 8, 0x21, 0x12, 0xA4, 0x42])) == "STUN"
    assert datagram_kind(bytes([0xC0, 0, 0, 0, 1])) == "QUIC"
    assert datagram_kind(bytes([0x05, 1])) == "p2p 0x05"
    assert datagram_kind(b"") == "other"


def test_the_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[network]\nnodes = 1\n")
    assert main(["simulate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "network.nodes: must be an integer >= 2" in err
    assert not (tmp_path / "out").exists()
    assert main(["simulate", "dht", "--set", "nodes=x", "--out", str(tmp_path / "o")]) == 2
    assert "network.nodes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["simulate", "dht", "--seed", "-1"])
    assert info.value.code == 2


def test_show_prints_the_scenario_as_toml(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "churn", "--show", "--set", "nodes=5"]) == 0
    text = capsys.readouterr().out
    assert "nodes = 5" in text and "[churn]" in text
    (tmp_path / "mine.toml").write_text(text)
    assert resolve_scenario(str(tmp_path / "mine.toml")) == resolve_scenario("churn",
                                                                             ["nodes=5"])
    assert list(tmp_path.iterdir()) == [tmp_path / "mine.toml"]  # --show runs nothing


@pytest.mark.parametrize("argv, mode, seed, settings", [
    (["simulate", "--seed", "3", "dht"], "run", 3, []),
    (["simulate", "--seed=3", "--set", "nodes=5", "dht", "--json"], "run", 3, ["nodes=5"]),
    (["simulate", "--data-dir", "/nowhere", "--seed", "4", "sweep", "dht"], "sweep", 4, []),
    (["simulate", "dht", "--seed", "5"], "run", 5, []),
])
def test_a_run_flag_may_come_before_the_scenario(argv, mode, seed, settings):
    """``simulate --seed 3 dht`` is ``simulate dht --seed 3``: argparse alone took 3 for
    the scenario and called --seed unknown."""
    args = build_parser().parse_args(argv)
    assert (args.simulate_mode, args.scenario, args.seed, args.settings) == (
        mode, "dht", seed, settings)


def test_an_unknown_flag_before_the_scenario_is_still_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["simulate", "--bogus", "dht"])
    assert info.value.code == 2 and "--bogus" in capsys.readouterr().err


def test_the_help_names_every_built_in(capsys):
    from stack.cli.simulate import BUILTIN_NAMES
    assert sorted(BUILTIN_NAMES) == sorted(BUILTINS)
    with pytest.raises(SystemExit):
        main(["simulate", "dht", "--help"])
    assert "rendezvous-down" in capsys.readouterr().out

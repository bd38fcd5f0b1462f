"""``p2pstack simulate sweep`` (issue 11 sections 3 and 6): grids, Dask, the combined report.

The grid is checked as ``--set`` checks a key, before anything runs. One tiny sweep (4 cells
x 2 seeds of 8-12 nodes, well under a second each) runs on a local Dask cluster through
the CLI; the same sweep then runs on a Dask cluster this test starts itself (``dask
scheduler`` and ``dask worker`` processes on 127.0.0.1) and must give the same sweep.json
apart from ``wall`` and ``engine``: the results depend on the grid and the seeds, not on
the engine, the workers or the order the runs finished in. One run of the sweep is also
run directly (``run_scenario``) and must give the figures the sweep recorded for it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.report import build_report
from simulations.runner import run_scenario
from simulations.scenario import parse_scenario
from simulations.sweep import (GridError, RunOutcome, SweepError, SweepResult, plan_sweep,
                               run_sweep, split_values)
from simulations.sweep_report import (FIGURES, build_sweep_report, plot_figure,
                                      render_sweep_markdown, sweep_json, without_run_context)
from stack.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["nodes=8", "duration=30", "idle=10", "publish_spread=5", "settle=2"]
GRID = ["loss=0,0.05", "nodes=8,12"]
PNG = b"\x89PNG\r\n\x1a\n"


def _cli_args(out: Path, *extra: str) -> list[str]:
    args = ["simulate", "sweep", "dht"]
    for setting in TINY:
        args += ["--set", setting]
    for param in GRID:
        args += ["--param", param]
    return [*args, "--seeds", "2", "--seed", "3", "--out", str(out), "--json", *extra]


# ---- the grid -------------------------------------------------------------------------------

def test_a_grid_is_every_combination_with_the_same_seeds():
    plan = plan_sweep("dht", ["nodes=8"], ["loss=0,0.02,0.05", "nodes=8,12"], seeds=2, seed=5)
    assert [(p.key, p.values) for p in plan.params] == [
        ("network.loss", (0.0, 0.02, 0.05)), ("network.nodes", (8, 12))]
    assert [dict(c.values) for c in plan.cells] == [
        {"network.loss": loss, "network.nodes": nodes}
        for loss in (0.0, 0.02, 0.05) for nodes in (8, 12)]
    assert plan.seeds == (5, 6) and plan.runs == 12
    cell = parse_scenario(plan.cells[3].table)  # what a worker runs
    assert (cell.network.loss, cell.network.nodes) == (0.02, 12)
    assert plan.scenario.network.nodes == 8  # the base keeps its --set
    # seeds: from the scenario's own seed without --seed
    assert plan_sweep("dht", [], ["loss=0"], seeds=3).seeds == (1, 2, 3)


def test_values_split_outside_tables_and_strings():
    assert split_values("0, 0.02,0.05") == ["0", "0.02", "0.05"]
    assert split_values("{none=1.0},{none=0.5, symmetric=0.5}") == [
        "{none=1.0}", "{none=0.5, symmetric=0.5}"]
    assert split_values('"a,b",[1, 2]') == ['"a,b"', "[1, 2]"]
    plan = plan_sweep("dht", [], ["nat={none=1.0},{none=0.5, symmetric=0.5}"], seeds=1)
    assert plan.params[0].key == "network.nat"
    assert plan.params[0].values == ({"none": 1.0}, {"none": 0.5, "symmetric": 0.5})
    assert parse_scenario(plan.cells[1].table).network.nat == {"none": 0.5, "symmetric": 0.5}


@pytest.mark.parametrize(("params", "seeds", "message"), [
    (["loss"], 2, "--param 'loss': expected KEY=V1,V2,..."),
    (["bogus=1,2"], 2, "--param bogus: unknown key"),
    (["network.bogus=1"], 2, "--param network.bogus: unknown key"),
    (["loss="], 2, "--param network.loss: no values"),
    (["loss=0,,0.1"], 2, "--param network.loss: value 2 of 3 is empty"),
    (["loss=0,2"], 2, "--param network.loss: must be a number >= 0 and <= 0.99, not 2"),
    (["nodes=8,x"], 2, "--param network.nodes: must be an integer"),
    (["nodes.x=1"], 2, "--param network.nodes.x: network.nodes is not a table"),
    (["loss=0,0.0"], 2, "--param network.loss: value 0.0 is given twice"),
    (["loss=0", "network.loss=0.1"], 2, "--param network.loss: given twice"),
    (["nat={none=1.0}", "nat.none=1"], 2, "--param network.nat.none: overlaps --param "
                                          "network.nat"),
    (["seed=1,2"], 2, "--param seed: the seeds are --seed"),
    ([], 2, "a sweep needs at least one --param"),
    (["loss=0"], 0, "--seeds: must be >= 1"),
    ([f"nodes={','.join(str(n) for n in range(2, 202))}",
      f"loss={','.join(str(i / 100) for i in range(51))}"], 1,
     "--param: grid too large: 200 network.nodes x 51 network.loss x 1 seeds = 10,200 runs"),
])
def test_a_bad_grid_is_one_line_naming_the_key(params, seeds, message):
    with pytest.raises(GridError) as info:
        plan_sweep("dht", [], params, seeds=seeds)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_seeds_stay_below_2_63():
    with pytest.raises(GridError, match="seeds must stay below 2"):
        plan_sweep("dht", [], ["loss=0"], seeds=2, seed=2**63 - 1)


def test_the_cli_refuses_bad_sweeps_before_running(tmp_path, capsys):
    def refused(*args: str) -> str:
        with pytest.raises(SystemExit) as info:
            main(["simulate", "sweep", "dht", *args])
        assert info.value.code == 2
        return capsys.readouterr().err

    assert main(["simulate", "sweep", "dht", "--param", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--param bogus: unknown key" in err
    assert "not allowed with argument" in refused("--param", "loss=0", "--workers", "2",
                                                  "--dask", "tcp://127.0.0.1:8786")
    assert "not a Dask scheduler address" in refused("--param", "loss=0", "--dask", "nowhere")
    assert "not a Dask scheduler address" in refused("--param", "loss=0", "--dask",
                                                     "tcp://h:99999")
    assert "--seeds: must be >= 1" in refused("--param", "loss=0", "--seeds", "0")
    assert "--workers: must be >= 1" in refused("--param", "loss=0", "--workers", "0")
    # a non-empty --out is refused before the cluster starts
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine").write_text("keep")
    assert main(_cli_args(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err
    # "simulate SCENARIO" is still one run, with its own flags
    with pytest.raises(SystemExit):
        main(["simulate", "dht", "--param", "loss=0"])
    err = capsys.readouterr().err
    assert "error: unrecognized arguments: --param loss=0" in err


# ---- the combined report from made-up runs ----------------------------------------------------

def _fake_summary(success: float | None, p50: float) -> dict:
    return {"lookups": {"success_rate": success}, "latency_seconds": {"p50": p50, "p95": p50},
            "datagrams": {"per_lookup": 9.0, "idle_per_minute": 1.0, "total": 100},
            "routing_at_end": None, "publishes": {"replicas_min": 3}}


def test_the_report_aggregates_across_seeds_and_plots_categories(tmp_path):
    plan = plan_sweep("dht", [], ["nat={none=1.0},{none=0.5, symmetric=0.5}", "loss=0,0.1"],
                      seeds=2, seed=7)
    runs = []
    for cell in plan.cells:
        for seed in plan.seeds:
            success = None if (cell.index, seed) == (3, 8) else 0.9 + 0.01 * seed
            runs.append(RunOutcome(cell.index, seed, {"summary": _fake_summary(
                success, 0.1 * (cell.index + 1) + 0.001 * seed)}, {"python": "3"}, 0.5))
    result = SweepResult(plan, tuple(runs), {"kind": "local", "workers": 2}, 3.0, "t")
    report = build_sweep_report(result)
    cell0 = report["cells"][0]["figures"]
    assert cell0["lookup_success"]["values"] == pytest.approx([97.0, 98.0])
    assert cell0["lookup_success"]["mean"] == pytest.approx(97.5)
    assert (cell0["latency_p50"]["min"], cell0["latency_p50"]["max"]) == pytest.approx(
        (107.0, 108.0))
    assert cell0["dead_routing_entries"] == {"mean": None, "min": None, "max": None, "n": 0,
                                             "values": [None, None]}
    last = report["cells"][3]["figures"]["lookup_success"]
    assert last["n"] == 1 and last["values"][1] is None
    md = render_sweep_markdown(report)
    assert md.startswith("# p2pstack simulate sweep: dht\n")
    assert "| `network.nat` | none=1, none=0.5 symmetric=0.5 |" in md
    assert "[1 of 2 seeds]" in md and "97.50 (97.00-98.00)" in md
    headline = [s.name for s in FIGURES if s.headline]
    assert sorted(report["plots"]) == sorted(
        f"{name}-by-{key}.png" for name in headline for key in ("network.nat", "network.loss"))
    # categories on the x axis (NAT mixes), one line per loss; a figure no run measured
    from matplotlib.image import imread

    specs = {s.name: s for s in FIGURES}
    for name in ("lookup_success", "dead_routing_entries"):
        path = tmp_path / f"{name}.png"
        plot_figure(report, specs[name], "network.nat", path)
        assert path.read_bytes().startswith(PNG)
        assert imread(path).std() > 0.05, f"{path.name} is blank"


# ---- real sweeps: local, then on a Dask cluster the test starts -----------------------------

@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The tiny sweep through the CLI on the local Dask cluster (2 worker processes)."""
    out = tmp_path_factory.mktemp("sweep") / "local"
    import io
    from contextlib import redirect_stderr, redirect_stdout

    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(_cli_args(out, "--workers", "2"))
    assert code == 0, stderr.getvalue()
    return out, json.loads(stdout.getvalue()), stderr.getvalue()


@pytest.mark.timeout(120)
def test_a_local_sweep_writes_the_combined_report(local_sweep):
    out, printed, stderr = local_sweep
    assert stderr == ""  # --json: no progress, no Dask chatter
    assert printed["engine"] == {"kind": "local", "workers": 2}
    assert printed["runs"] == 8 and printed["seeds"] == [3, 4]
    report = json.loads((out / "sweep.json").read_text())
    assert [(r["cell"], r["seed"]) for r in report["runs"]] == [
        (c, s) for c in range(4) for s in (3, 4)]
    assert [c["values"] for c in report["cells"]] == [
        {"network.loss": loss, "network.nodes": n} for loss in (0.0, 0.05) for n in (8, 12)]
    assert report["versions"]["dask"] and report["versions"]["distributed"]
    [workers] = report["worker_versions"]  # every worker ran this code
    for package in ("p2pstack", "matplotlib", "python"):
        assert workers[package] == report["versions"][package]
    for run in report["runs"]:
        s = run["summary"]
        assert s["lookups"]["success_rate"] == 1.0 and s["lookups"]["counted"] > 20
        assert s["nodes"]["initial"] == report["cells"][run["cell"]]["values"]["network.nodes"]
    # loss costs datagrams and latency: the figures follow the parameter
    lossless, lossy = report["cells"][0]["figures"], report["cells"][2]["figures"]
    assert lossy["datagrams_per_lookup"]["mean"] > lossless["datagrams_per_lookup"]["mean"]
    assert printed["cells"][2]["figures"]["latency_p95"] == {
        k: lossy["latency_p95"][k] for k in ("mean", "min", "max", "n")}
    # the files: sweep.json, sweep.md, one PNG per headline figure and parameter
    assert printed["files"][:2] == ["sweep.json", "sweep.md"]
    assert sorted(printed["files"][2:]) == sorted(report["plots"]) and len(report["plots"]) == 10
    for name in report["plots"]:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    md = (out / "sweep.md").read_text()
    assert "4 cells x 2 seeds (seeds 3-4, the same in every cell) = 8 runs" in md
    assert "| 0.05 | 12 | 100.00 |" in md


@pytest.mark.timeout(120)
def test_a_sweep_run_is_the_run_simulate_makes(local_sweep):
    """One cell and seed of the sweep, run here directly, gives the figures it recorded."""
    out, _printed, _stderr = local_sweep
    report = json.loads((out / "sweep.json").read_text())
    plan = plan_sweep("dht", TINY, GRID, seeds=2, seed=3)
    direct = build_report(run_scenario(parse_scenario(plan.cells[3].table), 4),
                          wall_seconds=0.0, started_at="")
    recorded = next(r for r in report["runs"] if (r["cell"], r["seed"]) == (3, 4))
    assert recorded["summary"] == direct["summary"]
    assert recorded["network"] == direct["network"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group this test started (the worker's nannies and workers too),
    then wait for it; SIGKILL what does not go."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.timeout(150)
def test_the_same_sweep_on_a_dask_cluster_gives_the_same_results(local_sweep, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    started = [scheduler]
    try:
        address = None
        assert scheduler.stderr is not None
        for line in scheduler.stderr:  # the scheduler says where it listens, then serves
            found = re.search(r"Scheduler at:\s+(tcp://127\.0\.0\.1:\d+)", line)
            if found:
                address = found.group(1)
                break
        assert address, "the scheduler exited without saying its address"
        plan = plan_sweep("dht", TINY, GRID, seeds=2, seed=3)
        # a scheduler with no workers yet: refused after the timeout, not a hang
        with pytest.raises(SweepError, match="no worker joined the scheduler within 1 s"):
            run_sweep(plan, address=address, connect_timeout=1.0)

        worker = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nworkers", "2",
             "--nthreads", "1", "--memory-limit", "0", "--no-dashboard", "--host",
             "127.0.0.1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(worker)
        from distributed import Client

        with Client(address, timeout=30) as client:  # both worker processes are up
            client.wait_for_workers(2, timeout=60)
        # (the CLI's --dask is this call; the plots are the local test's business)
        remote = build_sweep_report(run_sweep(plan, address=address))
        assert remote["engine"] == {"kind": "dask", "address": address, "workers": 2}
        local = json.loads((local_sweep[0] / "sweep.json").read_text())
        assert sweep_json(without_run_context(remote)) == sweep_json(without_run_context(local))

        # a run that fails stops the sweep with one line naming the run, and a hint
        def missing_module(table, seed):
            raise ModuleNotFoundError("No module named 'simulations'")

        with pytest.raises(SweepError) as info:
            run_sweep(plan, address=address, task=missing_module)
        text = str(info.value)
        assert re.fullmatch(r"run network\.loss=\S+ network\.nodes=\d+ seed [34] failed: "
                            r"ModuleNotFoundError: No module named 'simulations' \(the Dask "
                            r"workers need p2pstack installed, the same version as here\)",
                            text), text
    finally:
        for proc in reversed(started):
            _stop(proc)
        assert scheduler.stderr is not None
        scheduler.stderr.close()


@pytest.mark.timeout(30)
def test_an_unreachable_scheduler_is_one_line():
    plan = plan_sweep("dht", TINY, ["loss=0"], seeds=1)
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(SweepError) as info:
        run_sweep(plan, address=address, connect_timeout=1.0)
    assert str(info.value).startswith(f"--dask {address}: cannot reach the scheduler: ")
    assert "\n" not in str(info.value)


@pytest.mark.timeout(60)
def test_without_dask_the_sweep_says_what_to_install(tmp_path):
    """A machine without the sweep extra: one line naming it, exit 1, nothing written."""
    code = ("import sys; sys.modules['distributed'] = None\n"  # as if not installed
            "from stack.cli import main\n"
            f"sys.exit(main({_cli_args(tmp_path / 'out')!r}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1
    assert done.stderr == ("p2pstack: simulate sweep runs on Dask, which is not installed: "
                           "pip install 'p2pstack[sweep]'\n")
    assert not (tmp_path / "out").exists()

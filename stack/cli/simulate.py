"""``p2pstack simulate SCENARIO``: run a network simulation and write its report (issue 11).

SCENARIO is a built-in name (``dht``, ``churn``, ``partition``, ``nat-matrix``,
``mobility``) or a TOML file (the format is in ``simulations.scenario``). The production
code (the DHT core and driver, or full Nodes for ``nat-matrix`` and ``mobility``) runs on
the simulated network and virtual clock, seeded: the same scenario and ``--seed`` give
the same ``report.json`` (apart from its ``wall`` key). The report goes to ``--out``
(default: a new directory ``simulate-<scenario>-<seed>`` here); a non-empty directory is
refused without ``--force``. Progress (simulated time, datagrams, wall time) goes to
stderr once a run has taken a second; ``--json`` prints the summary as one JSON object
instead and shows no progress.

``p2pstack simulate sweep SCENARIO --param KEY=V1,V2 ... [--seeds N]`` runs the grid of
``--param`` values x seeds on a local Dask cluster (``--workers``) or on the one at
``--dask ADDRESS`` (``simulations.sweep``) and writes the combined report
(``simulations.sweep_report``). ``simulate`` reads the word after it: ``sweep`` is the
sweep, any other word the scenario of a single run.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import Any

from stack.cli._common import add_json_flag, print_json, quiet_logging

#: simulations.scenario.BUILTINS' names, spelled out so that every command's start-up does
#: not import the simulator for a help text (a test keeps the two the same)
BUILTIN_NAMES = ("dht", "churn", "partition", "nat-matrix", "mobility", "rendezvous-down")

__all__ = ["register"]

PROGRESS_AFTER = 1.0  # wall seconds before the progress display appears
DEFAULT_SEEDS = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a network simulation (built-in or TOML "
                                        "scenario) and write a report with plots; "
                                        "'simulate sweep' runs a grid of them on Dask")
    # "simulate SCENARIO ..." runs one scenario, "simulate sweep SCENARIO ..." a grid: the
    # word after "simulate" picks the parser, anything but "sweep" is a scenario
    modes = p.add_subparsers(dest="simulate_mode", metavar="SCENARIO | sweep SCENARIO",
                             action=_ScenarioOrSweep, required=True)
    one = modes.add_parser("run", prog=p.prog,
                           help="'simulate SCENARIO ...' runs one scenario "
                                "('p2pstack simulate dht --help': its flags)")
    one.add_argument("scenario", metavar="SCENARIO",
                     help=f"a built-in scenario ({', '.join(BUILTIN_NAMES)}) or a TOML file")
    _add_scenario_flags(one)
    one.add_argument("--out", metavar="DIR", default=None,
                     help="where the report goes (default: ./simulate-SCENARIO-SEED)")
    one.add_argument("--force", action="store_true",
                     help="write into a non-empty --out directory (overwriting report files)")
    one.add_argument("--show", action="store_true",
                     help="print the scenario (with --set applied) as TOML and exit: a "
                          "built-in to copy and edit")
    add_json_flag(one)
    one.set_defaults(handler=run)

    grid = modes.add_parser(
        "sweep", help="run SCENARIO over a grid of --param values and --seeds in parallel "
                      "(local cores, or a Dask cluster) and write a combined report")
    grid.add_argument("scenario", metavar="SCENARIO",
                      help=f"a built-in scenario ({', '.join(BUILTIN_NAMES)}) or a TOML file")
    grid.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2,...",
                      dest="params",
                      help="a grid axis: a key --set takes and its values (network.loss=0,"
                           "0.02,0.05; nodes=1000,5000); repeatable: the grid is every "
                           "combination")
    grid.add_argument("--seeds", type=_count, default=DEFAULT_SEEDS, metavar="N",
                      help=f"runs per cell, seeds --seed, --seed + 1, ... (default "
                           f"{DEFAULT_SEEDS})")
    _add_scenario_flags(grid, seed_help="the first seed (default: the scenario's, else 1)")
    where = grid.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_count, default=None, metavar="N",
                       help="worker processes of the local Dask cluster (default: the cores)")
    where.add_argument("--dask", metavar="ADDRESS", default=None, type=_dask_address,
                       help="run on the Dask cluster whose scheduler is at ADDRESS "
                            "(tcp://HOST:8786); its workers need p2pstack installed")
    grid.add_argument("--out", metavar="DIR", default=None,
                      help="where the report goes (default: ./sweep-SCENARIO-SEED)")
    grid.add_argument("--force", action="store_true",
                      help="write into a non-empty --out directory (overwriting report files)")
    add_json_flag(grid)
    grid.set_defaults(handler=run_sweep)
    _flags_before_the_scenario(p, (one, grid))


def _flags_before_the_scenario(p: argparse.ArgumentParser,
                               modes: tuple[argparse.ArgumentParser, ...]) -> None:
    """``simulate --seed 3 dht`` means ``simulate dht --seed 3``. argparse hands the
    word after ``simulate`` and everything behind it to the mode's parser, so a run's or a
    sweep's flag given before the scenario would be an unknown flag of ``simulate`` (and
    its value taken for the scenario). ``p`` parses its arguments with those flags (and
    their values) moved to the end, where the mode's parser reads them."""
    own = {opt for action in p._actions for opt in action.option_strings}
    takes_value: dict[str, bool] = {}
    for mode in modes:
        for action in mode._actions:
            for opt in action.option_strings:
                if opt not in own:
                    takes_value[opt] = action.nargs != 0
    parse = p.parse_known_args

    def reordered(args: Any = None, namespace: Any = None) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        moved: list[str] = []
        i = 0
        while i < len(words) and words[i].startswith("-"):
            flag = words[i].split("=", 1)[0]
            if flag not in takes_value:
                i += 1 + (flag == "--data-dir" and "=" not in words[i])
                continue
            width = 2 if takes_value[flag] and "=" not in words[i] else 1
            moved += words[i:i + width]
            del words[i:i + width]
        return parse(words + moved, namespace)

    p.parse_known_args = reordered  # type: ignore[method-assign]


class _AnyName(Mapping[str, argparse.ArgumentParser]):
    """The subparsers by name, where every word is a valid choice (argparse checks the word
    against ``choices`` before the action sees it): the default one takes any scenario."""

    def __init__(self, parsers: dict[str, argparse.ArgumentParser]) -> None:
        self._parsers = parsers

    def __contains__(self, name: object) -> bool:
        return True

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        return self._parsers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsers)

    def __len__(self) -> int:
        return len(self._parsers)


class _ScenarioOrSweep(argparse._SubParsersAction):
    """Subcommands where the default one takes the word itself: ``simulate dht`` is
    ``simulate run dht``, ``simulate sweep dht`` the sweep."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = _AnyName(self._name_parser_map)  # type: ignore[assignment]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if not values or values[0] != "sweep":
            values = ["run", *values]
        super().__call__(parser, namespace, values, option_string)


def _add_scenario_flags(p: argparse.ArgumentParser, seed_help: str | None = None) -> None:
    p.add_argument("--seed", type=_seed, default=None, metavar="N",
                   help=seed_help or "seed of every random choice (default: the scenario's, "
                                     "else 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="override a scenario key (network.loss=0.05, nodes=10000); repeatable")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text}")
    return value


def _dask_address(text: str) -> str:
    """``tcp://HOST:PORT`` (or ``HOST:PORT``, Dask's default tcp), as a scheduler prints it."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    host, colon, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls", "ws", "wss") or not colon or not host \
            or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not a Dask scheduler address (tcp://HOST:PORT): "
                                         f"{text!r}")
    return f"{scheme}://{rest}"


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be >= 0 and < 2**63, not {text}")
    return value


class _Progress:
    """A rich progress bar on stderr, shown once the run has taken ``PROGRESS_AFTER`` s."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._wall0 = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, p: Any) -> None:  # p: simulations.runner.Progress
        if self._bar is None:
            if time.perf_counter() - self._wall0 < PROGRESS_AFTER:
                return
            from rich.console import Console
            from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn)

            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(),
                TextColumn("sim {task.completed:,.0f}/{task.total:,.0f} s"),
                TextColumn("{task.fields[phase]}"),
                TextColumn("{task.fields[events]:,} datagrams"),
                TextColumn("{task.fields[live]:,} live"),
                TextColumn("wall"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self._name, total=max(p.planned, 1.0),
                                            phase=p.phase, events=0, live=0)
        self._bar.update(self._task, completed=min(p.sim_time, p.planned), phase=p.phase,
                         events=p.datagrams, live=p.live_nodes)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def run(args: argparse.Namespace) -> int:
    from simulations.report import build_report, prepare_out_dir, write_report
    from simulations.runner import run_scenario
    from simulations.scenario import resolve_scenario, to_toml

    quiet_logging(args, logging.ERROR)
    scenario = resolve_scenario(args.scenario, args.settings)
    if args.show:
        sys.stdout.write(to_toml(scenario))
        return 0
    seed = scenario.seed if args.seed is None else args.seed
    out = Path(args.out) if args.out is not None else Path(f"simulate-{scenario.name}-{seed}")
    _check_out(out, args.force)  # before the run: a refusal should not cost the run

    progress = None if args.json else _Progress(f"{scenario.name} (seed {seed})")
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    wall0 = time.perf_counter()
    try:
        result = run_scenario(scenario, seed, progress)
    finally:
        if progress is not None:
            progress.close()
    wall = time.perf_counter() - wall0
    report = build_report(result, wall_seconds=round(wall, 3), started_at=started)
    written = write_report(prepare_out_dir(out, args.force), report)
    summary = report["summary"]
    if args.json:
        print_json({"scenario": scenario.name, "seed": seed, "out": str(out),
                    "files": [p.name for p in written], "wall_seconds": report["wall"]["seconds"],
                    "summary": summary})
        return 0
    lk, lat = summary["lookups"], summary["latency_seconds"]
    rate = "-" if lk["success_rate"] is None else f"{100 * lk['success_rate']:.2f}%"
    p50 = "-" if lat["p50"] is None else f"{1000 * lat['p50']:.0f} ms"
    if scenario.engine == "node":  # connections and moves, no lookups of its own
        figures = _node_figures(summary)
    else:
        figures = f"lookups {lk['succeeded']}/{lk['counted']} ({rate}), median {p50}"
    print(f"{scenario.name} seed {seed}: {summary['nodes']['initial']} nodes, "
          f"{summary['sim_seconds']:.0f} s simulated in {wall:.1f} s wall; "
          f"{figures}; {summary['datagrams']['total']:,} datagrams")
    print(f"report: {out / 'report.md'}")
    sys.stdout.flush()
    return 0


def _node_figures(summary: dict[str, Any]) -> str:
    parts = []
    if "matrix" in summary:
        m = summary["matrix"]
        parts.append(f"{m['pairs']} pairs: direct {m['direct']}, punched {m['punched']}, "
                     f"relayed {m['relayed']}, failed {m['failed']}")
    if "mobility" in summary:
        def s(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f} s"
        r, f = summary["mobility"]["reconnect"], summary["mobility"]["found_again"]
        parts.append(f"{summary['mobility']['moves']} moves: reconnect p50 {s(r['p50'])} "
                     f"p99 {s(r['p99'])} ({r['failed']} failed), found again p50 "
                     f"{s(f['p50'])} p99 {s(f['p99'])} ({f['failed']} failed)")
    return "; ".join(parts) or "no matrix, no moves"


def _check_out(out: Path, force: bool) -> None:
    from simulations.report import ReportError

    if out.exists() and not force:
        if not out.is_dir():
            raise ReportError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()):
            raise ReportError(f"--out {out}: directory is not empty (use --force to "
                              "overwrite the report files in it, or another --out)")


class _SweepProgress:
    """Runs done out of the grid, on stderr (rich), from the first report on."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, p: Any) -> None:  # p: simulations.sweep.SweepProgress
        if self._bar is None:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("runs on {task.fields[workers]} workers, wall"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self._name, total=p.total, workers=p.workers)
        self._bar.update(self._task, completed=p.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def run_sweep(args: argparse.Namespace) -> int:
    from simulations.report import prepare_out_dir
    from simulations.sweep import plan_sweep
    from simulations.sweep import run_sweep as sweep
    from simulations.sweep_report import (FIGURES, build_sweep_report, spread_text,
                                          write_sweep_report)

    quiet_logging(args, logging.ERROR)
    if not args.verbose:  # Dask's own logs (scheduler, workers, client): errors only
        logging.getLogger("distributed").setLevel(logging.ERROR)
    plan = plan_sweep(args.scenario, args.settings, args.params, seeds=args.seeds,
                      seed=args.seed)
    name = plan.scenario.name
    out = Path(args.out) if args.out is not None else Path(f"sweep-{name}-{plan.seeds[0]}")
    _check_out(out, args.force)  # before the runs: a refusal should not cost them

    progress = None if args.json else _SweepProgress(f"sweep {name}")
    try:
        result = sweep(plan, address=args.dask, workers=args.workers, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    report = build_sweep_report(result)
    written = write_sweep_report(prepare_out_dir(out, args.force), report)
    keep = ("mean", "min", "max", "n")
    if args.json:
        print_json({
            "scenario": name, "out": str(out), "files": [p.name for p in written],
            "runs": len(result.runs), "seeds": list(plan.seeds), "engine": result.engine,
            "wall_seconds": result.wall_seconds,
            "cells": [{"values": c["values"],
                       "figures": {f: {k: agg[k] for k in keep}
                                   for f, agg in c["figures"].items()}}
                      for c in report["cells"]]})
        return 0
    where = ("a local Dask cluster" if result.engine["kind"] == "local"
             else f"the Dask cluster at {result.engine['address']}")
    print(f"sweep {name}: {len(plan.cells)} cells x {len(plan.seeds)} seeds = "
          f"{len(result.runs)} runs on {where} ({result.engine['workers']} workers) in "
          f"{result.wall_seconds:.1f} s wall")
    headline = [s for s in FIGURES if s.headline][:2]
    for cell in report["cells"]:
        values = " ".join(f"{k}={v}" for k, v in cell["values"].items())
        shown = [f"{s.label} {spread_text(cell['figures'][s.name], s.digits, len(plan.seeds))}"
                 f" {s.unit.split(',')[0]}" for s in headline]
        print(f"  {values}: {'; '.join(shown)}")
    print(f"report: {out / 'sweep.md'}")
    sys.stdout.flush()
    return 0

"""``p2pstack simulate SCENARIO``: run a network simulation and write its report (issue 11).

SCENARIO is a built-in name (``dht``, ``churn``) or a TOML file (the format is in
``simulations.scenario``). The production DHT code runs on the simulated network and
virtual clock, seeded: the same scenario and ``--seed`` give the same ``report.json``
(apart from its ``wall`` key). The report goes to ``--out`` (default: a new directory
``simulate-<scenario>-<seed>`` here); a non-empty directory is refused without
``--force``. Progress (simulated time, datagrams, wall time) goes to stderr once a run
has taken a second; ``--json`` prints the summary as one JSON object instead and shows
no progress.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
from pathlib import Path
from typing import Any

from stack.cli._common import add_json_flag, print_json, quiet_logging

__all__ = ["register"]

PROGRESS_AFTER = 1.0  # wall seconds before the progress display appears


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a network simulation (built-in or TOML "
                                        "scenario) and write a report with plots")
    p.add_argument("scenario", metavar="SCENARIO",
                   help="a built-in scenario (dht, churn) or a TOML file")
    p.add_argument("--seed", type=_seed, default=None, metavar="N",
                   help="seed of every random choice (default: the scenario's, else 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="override a scenario key (network.loss=0.05, nodes=10000); repeatable")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="where the report goes (default: ./simulate-SCENARIO-SEED)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out directory (overwriting report files)")
    p.add_argument("--show", action="store_true",
                   help="print the scenario (with --set applied) as TOML and exit: a "
                        "built-in to copy and edit")
    add_json_flag(p)
    p.set_defaults(handler=run)


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
    print(f"{scenario.name} seed {seed}: {summary['nodes']['initial']} nodes, "
          f"{summary['sim_seconds']:.0f} s simulated in {wall:.1f} s wall; "
          f"lookups {lk['succeeded']}/{lk['counted']} ({rate}), median {p50}; "
          f"{summary['datagrams']['total']:,} datagrams")
    print(f"report: {out / 'report.md'}")
    sys.stdout.flush()
    return 0


def _check_out(out: Path, force: bool) -> None:
    from simulations.report import ReportError

    if out.exists() and not force:
        if not out.is_dir():
            raise ReportError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()):
            raise ReportError(f"--out {out}: directory is not empty (use --force to "
                              "overwrite the report files in it, or another --out)")

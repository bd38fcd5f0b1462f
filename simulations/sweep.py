"""Sweeps: one scenario over a grid of parameter values and seeds, on Dask (issue 11 section 3).

``plan_sweep(spec, settings, params, seeds=3, seed=None) -> SweepPlan``
    Expands ``--param KEY=V1,V2,...`` (repeatable) into the cartesian grid of cells. A KEY
    is what ``--set`` takes (a dotted path or a unique leaf name, ``simulations.scenario.
    canonical_key``), each value a TOML value, and every value and every cell is checked as
    ``--set`` checks it, so a bad grid is refused before anything runs: a ``GridError`` (a
    ``UsageError``: one line, exit 2) naming the key. Values split on commas outside
    brackets, braces and quotes, so ``--param 'nat={none=1.0},{none=0.5, symmetric=0.5}'``
    is two values. The seeds are ``seed, seed + 1, ...`` (``seed``: ``--seed``, else the
    scenario's): the same seeds in every cell, so cells differ by their parameters only.
``run_sweep(plan, address=None, workers=None, progress=None) -> SweepResult``
    Every cell x seed is one ``run_scenario`` call (``run_one``) in a Dask worker process.
    ``address=None``: a ``distributed.LocalCluster`` on 127.0.0.1 with ``workers`` single-
    threaded worker processes (default: the cores this process may use), started and
    stopped here; else the scheduler at ``address`` (``tcp://HOST:8786``), whose workers
    need p2pstack importable (the same version: ``sweep.json`` records theirs). One engine
    both ways (Dask's scheduler, futures and failure handling), so a sweep on a cluster is
    the sweep on the laptop, more widely spread. Runs are independent and seeded, so the
    results do not depend on which worker ran what or in which order they finished: they
    are put in (cell, seed) order. A failed run stops the sweep (``SweepError``, exit 1,
    naming the cell and the seed) and cancels the runs not yet done.

``simulations.sweep_report`` turns a ``SweepResult`` into sweep.json, sweep.md and plots.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simulations.errors import SimulationError
from simulations.scenario import (Scenario, ScenarioError, apply_overrides, canonical_key,
                                  parse_scenario, resolve_scenario)

__all__ = ["GridError", "SweepError", "Param", "Cell", "SweepPlan", "RunOutcome",
           "SweepResult", "SweepProgress", "plan_sweep", "split_values", "run_one",
           "run_sweep", "default_workers", "MAX_RUNS", "MAX_SEEDS", "CONNECT_TIMEOUT"]

MAX_RUNS = 10_000        # cells x seeds: a bigger grid is a typo more often than a plan
MAX_SEEDS = 1_000
CONNECT_TIMEOUT = 10.0   # seconds to reach a scheduler, and for its first worker to show up
_NOT_SWEPT = ("seed",)   # the seeds come from --seed and --seeds


class GridError(ScenarioError):
    """A grid that cannot run as written (``--param``, ``--seeds``); names the key."""


class SweepError(SimulationError):
    """The sweep could not run: the cluster is unreachable, a run failed."""


@dataclass(frozen=True)
class Param:
    key: str                   # dotted path, e.g. network.loss
    values: tuple[Any, ...]    # as the scenario reads them back (0 -> 0.0 for a float key)
    texts: tuple[str, ...]     # as given


@dataclass(frozen=True)
class Cell:
    index: int
    values: Mapping[str, Any]  # key -> value, in --param order
    table: Mapping[str, Any]   # the cell's scenario, TOML-shaped (what a worker runs)


@dataclass(frozen=True)
class SweepPlan:
    scenario: Scenario         # the base: SCENARIO with --set applied
    params: tuple[Param, ...]
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]

    @property
    def runs(self) -> int:
        return len(self.cells) * len(self.seeds)


@dataclass(frozen=True)
class RunOutcome:
    cell: int
    seed: int
    figures: dict[str, Any]    # the run's report minus its series: summary, network, ...
    versions: dict[str, str]   # of the worker that ran it
    wall_seconds: float


@dataclass(frozen=True)
class SweepResult:
    plan: SweepPlan
    runs: tuple[RunOutcome, ...]   # in (cell, seed) order
    engine: dict[str, Any]         # local or dask, workers, scheduler address
    wall_seconds: float
    started_at: str


@dataclass(frozen=True)
class SweepProgress:
    done: int
    total: int
    workers: int


# ---- the grid ---------------------------------------------------------------------------

def split_values(text: str) -> list[str]:
    """``0,0.02,0.05`` -> three texts; commas inside ``[]``, ``{}`` or quotes do not split."""
    out, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [t.strip() for t in out]


def _lookup(table: Mapping[str, Any], key: str) -> Any:
    node: Any = table
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _checked(base: dict[str, Any], overrides: list[str]) -> Scenario:
    try:
        return parse_scenario(apply_overrides(base, overrides))
    except ScenarioError as exc:  # "network.loss: must be ..." or "--set KEY: ..."
        raise GridError("--param " + str(exc).removeprefix("--set ")) from None


def _parse_param(text: str, base: dict[str, Any]) -> Param:
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise GridError(f"--param {text!r}: expected KEY=V1,V2,... (e.g. network.loss=0,0.02)")
    try:
        key = canonical_key(key, "--param")
    except ScenarioError as exc:
        raise GridError(str(exc)) from None
    if key in _NOT_SWEPT:
        raise GridError(f"--param {key}: the seeds are --seed (the first) and --seeds (how "
                        "many); they are not a grid parameter")
    if not rest.strip():
        raise GridError(f"--param {key}: no values (expected {key}=V1,V2,...)")
    texts = split_values(rest)
    values: list[Any] = []
    for position, value_text in enumerate(texts, 1):
        if not value_text:
            raise GridError(f"--param {key}: value {position} of {len(texts)} is empty")
        scenario = _checked(base, [f"{key}={value_text}"])
        value = _lookup(scenario.to_dict(), key)
        if value is None:  # a key to_dict leaves out (a NAT kind at 0): keep what was given
            value = _lookup(apply_overrides({}, [f"{key}={value_text}"]), key)
        if value in values:
            raise GridError(f"--param {key}: value {value_text} is given twice")
        values.append(value)
    return Param(key, tuple(values), tuple(texts))


def plan_sweep(spec: str, settings: Sequence[str], params: Sequence[str], *, seeds: int = 3,
               seed: int | None = None) -> SweepPlan:
    """The grid of ``spec`` (a built-in or TOML file, ``--set`` applied) over ``params``."""
    base = resolve_scenario(spec, settings)
    if not params:
        raise GridError("a sweep needs at least one --param KEY=V1,V2,... "
                        "(e.g. --param network.loss=0,0.02)")
    if not 1 <= seeds <= MAX_SEEDS:
        raise GridError(f"--seeds: must be >= 1 and <= {MAX_SEEDS}, not {seeds}")
    first = base.seed if seed is None else seed
    if first + seeds > 2**63:
        raise GridError(f"--seed {first} + --seeds {seeds}: seeds must stay below 2**63")
    table = base.to_dict()
    parsed: list[Param] = []
    for text in params:
        param = _parse_param(text, table)
        if any(p.key == param.key for p in parsed):
            raise GridError(f"--param {param.key}: given twice (list every value in one "
                            f"--param {param.key}=V1,V2,...)")
        if any(p.key.startswith(param.key + ".") or param.key.startswith(p.key + ".")
               for p in parsed):
            other = next(p.key for p in parsed if p.key.startswith(param.key + ".")
                         or param.key.startswith(p.key + "."))
            raise GridError(f"--param {param.key}: overlaps --param {other}")
        parsed.append(param)
    runs = math.prod(len(p.values) for p in parsed) * seeds
    if runs > MAX_RUNS:
        sizes = " x ".join(f"{len(p.values)} {p.key}" for p in parsed)
        raise GridError(f"--param: grid too large: {sizes} x {seeds} seeds = {runs:,} runs "
                        f"(at most {MAX_RUNS:,})")
    cells = []
    for index, combo in enumerate(itertools.product(*(range(len(p.values)) for p in parsed))):
        # each value passed alone; a check across keys would still stop here, naming the key
        scenario = _checked(table, [f"{p.key}={p.texts[i]}"
                                    for p, i in zip(parsed, combo, strict=True)])
        cells.append(Cell(index, {p.key: p.values[i] for p, i in zip(parsed, combo,
                                                                       strict=True)},
                          scenario.to_dict()))
    return SweepPlan(base, tuple(parsed), tuple(cells), tuple(range(first, first + seeds)))


# ---- one run (in a worker process) --------------------------------------------------------

def run_one(table: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Run one cell with one seed; what comes back is small, plain data (a worker sends it
    to the client): the report's figures without its series, the worker's versions and
    the wall time."""
    from simulations.report import build_report
    from simulations.runner import run_scenario

    scenario = parse_scenario(table)
    wall0 = time.perf_counter()
    result = run_scenario(scenario, seed)
    wall = time.perf_counter() - wall0
    report = build_report(result, wall_seconds=round(wall, 3), started_at="")
    return {"figures": {k: report[k] for k in ("summary", "network", "nat", "dht_stats")},
            "versions": report["versions"], "wall_seconds": round(wall, 3)}


# ---- running the grid on Dask -----------------------------------------------------------

def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_sweep(plan: SweepPlan, *, address: str | None = None, workers: int | None = None,
              progress: Callable[[SweepProgress], None] | None = None,
              connect_timeout: float = CONNECT_TIMEOUT,
              task: Callable[[Mapping[str, Any], int], dict[str, Any]] = run_one) -> SweepResult:
    """Run every cell x seed of ``plan`` on a local Dask cluster or the one at ``address``.

    ``task`` is what each run calls (``run_one``); another one is for tests."""
    import datetime

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SweepError("simulate sweep runs on Dask, which is not installed: "
                         "pip install 'p2pstack[sweep]'") from None

    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    wall0 = time.perf_counter()
    cluster: Any = None
    if address is None:
        count = max(1, min(workers or default_workers(), plan.runs))
        # processes: the simulator is pure Python (the GIL); one thread each; no memory
        # limit (the nanny would kill a big run the OS can hold); no dashboard
        try:
            cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=None,
                                   memory_limit=0, silence_logs=logging.ERROR)
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise SweepError(f"cannot start a local Dask cluster of {count} workers: "
                             f"{_one_line(exc)}") from None
        engine: dict[str, Any] = {"kind": "local", "workers": count}
    try:
        try:
            client = Client(cluster if cluster is not None else address,
                            timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            where = "the local Dask cluster" if cluster is not None else f"--dask {address}"
            raise SweepError(f"{where}: cannot reach the scheduler: {_one_line(exc)}") from None
        try:
            if cluster is None:
                try:
                    client.wait_for_workers(1, timeout=connect_timeout)
                except TimeoutError:
                    raise SweepError(f"--dask {address}: no worker joined the scheduler "
                                     f"within {connect_timeout:g} s") from None
                engine = {"kind": "dask", "address": address,
                          "workers": len(client.scheduler_info(n_workers=-1)["workers"])}
            runs = _gather(client, plan, task, progress, engine["workers"])
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
    return SweepResult(plan, runs, engine, round(time.perf_counter() - wall0, 3), started)


def _gather(client: Any, plan: SweepPlan, task: Callable[..., dict[str, Any]],
            progress: Callable[[SweepProgress], None] | None, workers: int
            ) -> tuple[RunOutcome, ...]:
    from distributed import as_completed

    tag = uuid.uuid4().hex[:8]
    name = plan.scenario.name
    which: dict[str, tuple[Cell, int]] = {}
    futures = []
    for cell in plan.cells:
        for seed in plan.seeds:
            key = f"p2pstack-sweep-{name}-cell{cell.index}-seed{seed}-{tag}"
            which[key] = (cell, seed)
            futures.append(client.submit(task, dict(cell.table), seed, key=key, pure=False))
    done: dict[tuple[int, int], RunOutcome] = {}
    if progress is not None:
        progress(SweepProgress(0, len(futures), workers))
    try:
        for future in as_completed(futures):
            cell, seed = which[future.key]
            if future.status == "error":
                exc = future.exception()
                raise SweepError(f"run {_cell_text(cell)} seed {seed} failed: "
                                 f"{_one_line(exc)}{_hint(exc)}")
            if future.status != "finished":
                raise SweepError(f"run {_cell_text(cell)} seed {seed}: {future.status} "
                                 "on the Dask cluster")
            out = future.result()
            done[(cell.index, seed)] = RunOutcome(cell.index, seed, out["figures"],
                                                  out["versions"], out["wall_seconds"])
            if progress is not None:
                progress(SweepProgress(len(done), len(futures), workers))
    finally:
        client.cancel([f for f in futures if not f.done()])
    return tuple(done[key] for key in sorted(done))


def _cell_text(cell: Cell) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.values.items())


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return "no error given"
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"


def _hint(exc: BaseException | None) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return " (the Dask workers need p2pstack installed, the same version as here)"
    return ""

"""The combined report of a sweep (issue 11 section 3): sweep.json, sweep.md and plots.

``build_sweep_report(result) -> dict``
    Plain JSON data: the base scenario, the grid (parameters, cells), the seeds, every run's
    figures (its report's summary and counters), per cell and figure the mean, minimum,
    maximum and per-seed values, the versions here and on the workers. Only ``wall`` (wall
    times) and ``engine`` (local or Dask, how many workers, where) depend on how and where
    the sweep ran; the rest is a function of the scenario, the grid and the seeds
    (``without_run_context`` strips those two, for comparing sweeps).
``write_sweep_report(out_dir, report) -> list[Path]``
    ``sweep.json`` (sorted keys: byte-identical for equal sweeps), ``sweep.md`` (the grid,
    then one row per cell: each figure's mean and min-max across the seeds) and one PNG per
    headline figure and swept parameter (a parameter with one value is not plotted): the
    figure against that parameter's values, one line per combination of the other
    parameters, each point the mean across the seeds with a min-max error bar and the
    seeds' own values as faint dots; titled with the scenario, the seeds and the units.

Extension point: ``FIGURES`` (a new figure: where it is in a run's summary, its unit).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulations.sweep import SweepResult

__all__ = ["FIGURES", "FigureSpec", "build_sweep_report", "without_run_context", "sweep_json",
           "render_sweep_markdown", "write_sweep_report", "plot_name", "spread_text", "FORMAT"]

FORMAT = 1  # sweep.json's format version
_VERSIONED = ("p2pstack", "pynacl", "msgpack", "matplotlib", "dask", "distributed")


@dataclass(frozen=True)
class FigureSpec:
    name: str
    label: str
    unit: str
    path: tuple[str, ...]     # where it is in a run's report summary
    scale: float = 1.0        # summary value -> unit
    headline: bool = False    # plotted against every parameter
    digits: int = 1           # decimals in sweep.md


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("lookup_success", "lookup success", "%", ("lookups", "success_rate"), 100.0,
               True, 2),
    FigureSpec("latency_p50", "lookup latency p50", "ms, simulated",
               ("latency_seconds", "p50"), 1000.0, True, 0),
    FigureSpec("latency_p95", "lookup latency p95", "ms, simulated",
               ("latency_seconds", "p95"), 1000.0, True, 0),
    FigureSpec("datagrams_per_lookup", "datagrams per lookup", "datagrams",
               ("datagrams", "per_lookup"), 1.0, True, 1),
    FigureSpec("idle_datagrams_per_minute", "datagrams per idle minute", "datagrams/min",
               ("datagrams", "idle_per_minute"), 1.0, True, 0),
    FigureSpec("dead_routing_entries", "dead routing entries at end", "%",
               ("routing_at_end", "dead_fraction"), 100.0, False, 2),
    FigureSpec("replicas_min", "fewest replicas of a publish", "nodes",
               ("publishes", "replicas_min"), 1.0, False, 0),
    FigureSpec("datagrams_total", "datagrams in the run", "datagrams", ("datagrams", "total"),
               1.0, False, 0),
)

# what a swept key's values are in, for the x axis
KEY_UNITS: dict[str, str] = {
    "network.nodes": "hosts at the start", "network.latency": "s, one way",
    "network.jitter": "s", "network.loss": "drop probability per datagram",
    "duration": "s simulated", "idle": "s simulated", "join.spacing": "s",
    "join.settle": "s", "workload.publish_spread": "s", "workload.lookup_timeout": "s",
    "workload.lookups_per_minute": "per minute", "churn.joins_per_minute": "per minute",
    "churn.leaves_per_minute": "per minute", "churn.crashes_per_minute": "per minute",
    "churn.rejoin_after": "s", "partition.fraction": "share of the live nodes",
    "partition.at": "s into the workload", "partition.heal_after": "s",
}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _figure_value(summary: Mapping[str, Any], spec: FigureSpec) -> float | None:
    node: Any = summary
    for part in spec.path:
        if not isinstance(node, Mapping) or node.get(part) is None:
            return None
        node = node[part]
    return float(node) * spec.scale


def _aggregate(values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {"mean": statistics.fmean(present) if present else None,
            "min": min(present) if present else None,
            "max": max(present) if present else None,
            "n": len(present), "values": values}


def build_sweep_report(result: SweepResult) -> dict[str, Any]:
    plan = result.plan
    by_cell: dict[int, list[Any]] = {}
    for run in result.runs:
        by_cell.setdefault(run.cell, []).append(run)
    cells = []
    for cell in plan.cells:
        runs = by_cell.get(cell.index, [])
        cells.append({
            "index": cell.index, "values": dict(cell.values),
            "figures": {spec.name: _aggregate([_figure_value(r.figures["summary"], spec)
                                               for r in runs]) for spec in FIGURES}})
    versions = {**{p: _version(p) for p in _VERSIONED}, "python": platform.python_version()}
    worker_versions: list[dict[str, str]] = []
    for run in result.runs:
        if run.versions not in worker_versions:
            worker_versions.append(run.versions)
    plots = [plot_name(spec.name, p.key) for p in plan.params if len(p.values) > 1
             for spec in FIGURES if spec.headline]
    return {
        "format": FORMAT,
        "scenario": plan.scenario.to_dict(),
        "grid": {"params": [{"key": p.key, "values": list(p.values)} for p in plan.params],
                 "cells": [{"index": c.index, "values": dict(c.values)} for c in plan.cells]},
        "seeds": list(plan.seeds),
        "figures": [{"name": s.name, "label": s.label, "unit": s.unit,
                     "from": "summary." + ".".join(s.path), "scale": s.scale}
                    for s in FIGURES],
        "runs": [{"cell": r.cell, "seed": r.seed, **r.figures} for r in result.runs],
        "cells": cells,
        "versions": versions,
        "worker_versions": worker_versions,
        "plots": plots,
        "engine": dict(result.engine),
        "wall": {"seconds": result.wall_seconds, "started_at": result.started_at,
                 "run_seconds": [r.wall_seconds for r in result.runs]},
    }


def plot_name(figure: str, key: str) -> str:
    return f"{figure}-by-{key}.png"


def without_run_context(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report minus what depends on the clock and on where it ran."""
    return {k: v for k, v in report.items() if k not in ("wall", "engine")}


def sweep_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_sweep_report(out_dir: Path, report: dict[str, Any]) -> list[Path]:
    """Write sweep.json, sweep.md and the plots into ``out_dir`` (which exists)."""
    out_dir = Path(out_dir)
    written = []
    specs = {s.name: s for s in FIGURES}
    for param in report["grid"]["params"]:
        if len(param["values"]) < 2:
            continue
        for spec in FIGURES:
            if spec.headline:
                path = out_dir / plot_name(spec.name, param["key"])
                plot_figure(report, specs[spec.name], param["key"], path)
                written.append(path)
    md = out_dir / "sweep.md"
    md.write_text(render_sweep_markdown(report))
    js = out_dir / "sweep.json"
    js.write_text(sweep_json(report))
    return [js, md, *written]


# ---- sweep.md -----------------------------------------------------------------------------

def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return " ".join(f"{k}={_value_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return str(value)


def spread_text(agg: Mapping[str, Any], digits: int, seeds: int) -> str:
    """``mean (min-max)`` of one figure in one cell; the range only where the seeds differ,
    ``[n of N seeds]`` where some runs did not measure it, ``-`` where none did."""
    if agg["mean"] is None:
        return "-"
    text = f"{agg['mean']:,.{digits}f}"
    if agg["min"] != agg["max"]:
        text += f" ({agg['min']:,.{digits}f}-{agg['max']:,.{digits}f})"
    if agg["n"] < seeds:
        text += f" [{agg['n']} of {seeds} seeds]"
    return text


def _engine_text(engine: Mapping[str, Any]) -> str:
    workers = engine.get("workers")
    if engine.get("kind") == "dask":
        return f"the Dask cluster at {engine.get('address')} ({workers} workers)"
    return f"a local Dask cluster ({workers} worker processes)"


def render_sweep_markdown(report: Mapping[str, Any]) -> str:
    sc = report["scenario"]
    params = report["grid"]["params"]
    seeds = report["seeds"]
    cells = report["cells"]
    runs = len(report["runs"])
    wall = report["wall"]
    seeds_text = (f"seed {seeds[0]}" if len(seeds) == 1
                  else f"seeds {seeds[0]}-{seeds[-1]}")
    run_walls = sorted(wall["run_seconds"])
    out = [f"# p2pstack simulate sweep: {sc['name']}", ""]
    if sc.get("description"):
        out += [sc["description"], ""]
    out += [f"{len(cells)} cells x {len(seeds)} seeds ({seeds_text}, the same in every cell) "
            f"= {runs} runs on {_engine_text(report['engine'])}, in {wall['seconds']:.1f} s "
            f"wall (a run: median {statistics.median(run_walls) if run_walls else 0:.1f} s, "
            f"longest {run_walls[-1] if run_walls else 0:.1f} s).", ""]
    out += ["## Grid", "", "| parameter | values |", "|---|---|"]
    out += [f"| `{p['key']}` | {', '.join(_value_text(v) for v in p['values'])} |"
            for p in params]
    specs = list(FIGURES)
    out += ["", f"## Figures per cell (mean across the {len(seeds)} seeds; min-max in "
            "parentheses)", ""]
    header = [f"`{p['key']}`" for p in params] + [f"{s.label} ({s.unit})" for s in specs]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in cells:
        row = [_value_text(cell["values"][p["key"]]) for p in params]
        row += [spread_text(cell["figures"][s.name], s.digits, len(seeds)) for s in specs]
        out.append("| " + " | ".join(row) + " |")
    if report["plots"]:
        out += ["", "## Plots", ""]
        out += [f"![{name}]({name})" for name in report["plots"]]
    here = report["versions"]
    differ = [v for v in report["worker_versions"]
              if any(v.get(k) != here.get(k) for k in v)]
    out += ["", "## Base scenario", "", "```json", json.dumps(sc, indent=2, sort_keys=True),
            "```", "", "Versions: " + ", ".join(f"{k} {v}" for k, v in here.items())]
    if differ:
        out += ["", "**Workers ran other versions:** " + "; ".join(
            ", ".join(f"{k} {v}" for k, v in d.items()) for d in differ)]
    keys = " ".join(f"--set {p['key']}=V" for p in params)
    out += ["", f"Reproduce one run: `p2pstack simulate SCENARIO {keys} --seed S` with the "
            "base scenario above gives that run's full report (its summary is the run's "
            "entry in sweep.json). sweep.json is byte-identical for the same sweep apart "
            "from `wall` and `engine`.", ""]
    return "\n".join(out)


# ---- plots ----------------------------------------------------------------------------------

def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def plot_figure(report: Mapping[str, Any], spec: FigureSpec, key: str, path: Path) -> None:
    """``spec`` against the swept ``key``: one line per combination of the other keys."""
    params = report["grid"]["params"]
    xs_values = next(p["values"] for p in params if p["key"] == key)
    others = [p["key"] for p in params if p["key"] != key]
    numeric = _numeric(xs_values)
    positions = ([float(v) for v in xs_values] if numeric
                 else [float(i) for i in range(len(xs_values))])
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for cell in report["cells"]:
        label = tuple(f"{k}={_value_text(cell['values'][k])}" for k in others)
        groups.setdefault(label, []).append(cell)
    fig = Figure(figsize=(8, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # series with equal values would hide each other: each is shifted a little sideways
    span = (max(positions) - min(positions)) or 1.0
    shift = 0.008 * span
    plotted = False
    for n, (label, group) in enumerate(groups.items()):
        offset = (n - (len(groups) - 1) / 2) * shift
        xs, means, low, high, dots_x, dots_y = [], [], [], [], [], []
        for cell in group:
            agg = cell["figures"][spec.name]
            if agg["mean"] is None:
                continue
            x = positions[xs_values.index(cell["values"][key])] + offset
            xs.append(x)
            means.append(agg["mean"])
            low.append(agg["mean"] - agg["min"])
            high.append(agg["max"] - agg["mean"])
            for v in agg["values"]:
                if v is not None:
                    dots_x.append(x)
                    dots_y.append(v)
        if not xs:
            continue
        plotted = True
        line = ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=4,
                           label=", ".join(label) or None)
        ax.scatter(dots_x, dots_y, s=12, alpha=0.35, color=line[0].get_color(), lw=0)
    if not plotted:
        ax.text(0.5, 0.5, "no values (no run measured this figure)", ha="center",
                va="center", transform=ax.transAxes)
    if not numeric or len(positions) <= 12:
        ax.set_xticks(positions, [_value_text(v) for v in xs_values], fontsize="small")
    if spec.unit == "%" and plotted:
        ax.set_ylim(top=101.0)  # a share never passes 100 %
    if plotted and others:
        ax.legend(fontsize="small", loc="best")
    unit = KEY_UNITS.get(key)
    ax.set_xlabel(f"{key} ({unit})" if unit else key)
    ax.set_ylabel(f"{spec.label} ({spec.unit})")
    ax.grid(True, alpha=0.3)
    seeds = report["seeds"]
    seeds_text = (f"seed {seeds[0]}" if len(seeds) == 1
                  else f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]})")
    ax.set_title(pad=10, label=f"{spec.label.capitalize()} against {key}\n"
                 f"scenario {report['scenario']['name']}, {seeds_text}: mean, bars min-max, "
                 "dots one seed each")
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})

"""The report of a ``p2pstack simulate`` run (issue 11 section 2).

``build_report(result, wall_seconds=..., started_at=...) -> dict``
    Every figure of a ``RunResult`` as plain JSON data: the scenario, the seed, the
    versions, a summary, the phases, the time series and every lookup latency. Only the
    ``wall`` key depends on the machine's clock; the rest is a function of the scenario
    and the seed (``without_wall`` strips it, for comparing runs).
``prepare_out_dir(path, force=False) -> Path``
    Creates the output directory; an existing non-empty one is refused
    (``ReportError``, a ``UsageError``) unless ``force``.
``write_report(out_dir, report) -> list[Path]``
    ``report.json`` (sorted keys, two-space indent: byte-identical for equal reports),
    ``report.md`` (a summary table first) and one PNG per plot the scenario asks for
    (matplotlib's Agg canvas, no pyplot state): lookup-latency CDF, success rate over
    time, datagrams per minute by message kind, routing-table health. Each plot has a
    title naming the scenario and the seed, and axis units.

Extension point: ``PLOTTERS`` maps a plot name (``simulations.scenario.PLOTS`` and
``NODE_PLOTS``) to the function drawing it from the report. A ``node`` engine run adds
``matrix``, ``mobility``, ``room`` and ``node_stats`` to report.json (``simulations.node_report``),
their figures to ``summary`` and report.md, and draws the NAT-pair heat map and the
time-to-reconnect histogram.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import platform
import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulations.node_report import (node_markdown, node_rows, node_sections, node_summary,
                                     plot_connection_paths, plot_reconnect_histogram)
from simulations.runner import OUTCOMES, RunResult
from stack.base.errors import UsageError

__all__ = ["build_report", "write_report", "prepare_out_dir", "without_wall", "report_json",
           "render_markdown", "ReportError",
           "FORMAT", "PLOTTERS"]

FORMAT = 1  # report.json's format version
_SUCCESS = ("found", "stale")  # a lookup that returned the peer's own signed record
_VERSIONED = ("p2pstack", "pynacl", "msgpack", "rich", "matplotlib")


class ReportError(UsageError):
    """The report cannot be written where asked (the directory is not empty, ...)."""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_report(result: RunResult, *, wall_seconds: float, started_at: str) -> dict[str, Any]:
    sc = result.scenario
    bucket = sc.measure.bucket
    counted = [s for s in result.lookups if s.outcome != "aborted"]
    outcomes = Counter(s.outcome for s in result.lookups)
    succeeded = sum(outcomes[o] for o in _SUCCESS)
    latencies = sorted(s.latency for s in result.lookups if s.latency is not None)
    phases: list[dict[str, Any]] = [
        {"name": name, "start": start, "end": end, "datagrams": sent}
        for name, start, end, sent in result.phases]
    by_phase = {p["name"]: p for p in phases}
    workload = by_phase.get("workload")
    idle = by_phase.get("idle")

    series_len = int(result.sim_time // bucket) + 1
    # the last bucket may be cut short by the end of the run: "seconds" is its length
    datagrams = [{"start": i * bucket, "seconds": min(bucket, result.sim_time - i * bucket),
                  "kinds": dict(sorted(result.datagrams.get(i, Counter()).items()))}
                 for i in range(series_len)]
    success = []
    per_bucket: dict[int, Counter[str]] = {}
    for s in counted:
        per_bucket.setdefault(int(s.start // bucket), Counter())[s.outcome] += 1
    bucket_latencies: dict[int, list[float]] = {}
    for s in counted:
        if s.latency is not None:
            bucket_latencies.setdefault(int(s.start // bucket), []).append(s.latency)
    for i in range(series_len):
        c = per_bucket.get(i, Counter())
        total = sum(c.values())
        ok = sum(c[o] for o in _SUCCESS)
        lat = sorted(bucket_latencies.get(i, []))
        success.append({"start": i * bucket, "lookups": total, "succeeded": ok,
                        "rate": ok / total if total else None,
                        "latency_p50": _quantile(lat, 0.5), "latency_p95": _quantile(lat, 0.95)})
    last = result.routing[-1] if result.routing else None
    summary: dict[str, Any] = {
        "nodes": {"initial": sc.network.nodes, "started": result.nodes_started,
                  "live_at_end": result.live_at_end,
                  "nat_kinds": dict(sorted(result.nat_kinds.items()))},
        "sim_seconds": result.sim_time,
        "lookups": {
            "total": len(result.lookups), "counted": len(counted),
            **{o: outcomes[o] for o in OUTCOMES},
            "succeeded": succeeded,
            "success_rate": succeeded / len(counted) if counted else None,
        },
        "latency_seconds": {
            "p50": _quantile(latencies, 0.50), "p90": _quantile(latencies, 0.90),
            "p95": _quantile(latencies, 0.95), "p99": _quantile(latencies, 0.99),
            "max": latencies[-1] if latencies else None,
            "mean": statistics.fmean(latencies) if latencies else None,
        },
        "datagrams": {
            "total": result.datagrams_total,
            "per_lookup": (workload["datagrams"] / len(result.lookups)
                           if workload and result.lookups else None),
            "idle_per_minute": (idle["datagrams"] * 60.0 / (idle["end"] - idle["start"])
                                if idle and idle["end"] > idle["start"] else None),
        },
        # issue 11 section 5: lookups target live published nodes only, so this is the
        # share of live nodes' records found, overall and in the worst bucket
        "records_found_ratio": {
            "overall": succeeded / len(counted) if counted else None,
            "min_per_bucket": min((b["rate"] for b in success if b["rate"] is not None),
                                  default=None)},
        "joins": {"ok": result.joins["ok"], "failed": result.joins["failed"]},
        "publishes": {"ok": result.publishes["ok"], "failed": result.publishes["failed"],
                      "replicas_min": min(result.replicas) if result.replicas else None,
                      "replicas_median": (statistics.median(result.replicas)
                                          if result.replicas else None)},
        "churn": {k: result.churn[k] for k in ("join", "leave", "crash", "rejoin")},
        "routing_at_end": last,
        "partition": (None if result.partition is None else
                      {"start": result.partition[0], "healed": result.partition[1],
                       "nodes_cut_off": result.partition[2]}),
    }
    report = {
        "format": FORMAT,
        "scenario": sc.to_dict(),
        "seed": result.seed,
        "versions": {**{p: _version(p) for p in _VERSIONED},
                     "python": platform.python_version()},
        "summary": summary,
        "phases": phases,
        "network": dataclasses.asdict(result.net.stats),
        "nat": dict(sorted(result.nat_stats.items())),
        "dht_stats": dict(sorted(result.dht_stats.items())),
        "series": {"bucket_seconds": bucket, "datagrams": datagrams, "success": success,
                   "routing": result.routing},
        "lookup_latencies_seconds": latencies,
        "plots": [f"{name}.png" for name in sc.measure.plots],
        "wall": {"seconds": wall_seconds, "started_at": started_at},
    }
    if sc.engine == "node":
        sections = node_sections(result)
        report.update(sections)
        summary.update(node_summary(sections))
        summary["nodes"]["initial"] = result.nodes_started  # the engine placed them
    return report


def without_wall(report: dict[str, Any]) -> dict[str, Any]:
    """The report minus what depends on the machine's clock."""
    return {k: v for k, v in report.items() if k != "wall"}


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"


# ---- the output directory -------------------------------------------------------------

def prepare_out_dir(path: Path, force: bool = False) -> Path:
    """Create ``path`` (parents too); refuse a non-empty one unless ``force``."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ReportError(f"--out {path}: exists and is not a directory")
        if any(path.iterdir()) and not force:
            raise ReportError(f"--out {path}: directory is not empty (use --force to "
                              "overwrite the report files in it)")
    else:
        path.mkdir(parents=True)
    return path


def write_report(out_dir: Path, report: dict[str, Any]) -> list[Path]:
    """Write report.json, report.md and the plots into ``out_dir`` (which exists)."""
    out_dir = Path(out_dir)
    written = []
    for name in report["plots"]:
        path = out_dir / name
        PLOTTERS[name.removesuffix(".png")](report, path)
        written.append(path)
    md = out_dir / "report.md"
    md.write_text(render_markdown(report))
    js = out_dir / "report.json"
    js.write_text(report_json(report))
    return [js, md, *written]


# ---- report.md -------------------------------------------------------------------------

def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def render_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    sc = report["scenario"]
    lk, lat, dg = s["lookups"], s["latency_seconds"], s["datagrams"]
    routing = s["routing_at_end"]
    rows = [
        ("nodes (initial / started / live at end)",
         f"{s['nodes']['initial']} / {s['nodes']['started']} / {s['nodes']['live_at_end']}"),
        ("NAT kinds (initial)", ", ".join(f"{k} {v}" for k, v in s["nodes"]["nat_kinds"].items())),
        ("lookup success", f"{_pct(lk['success_rate'])} ({lk['succeeded']} of {lk['counted']}; "
                           f"{lk['aborted']} aborted)"),
        ("live nodes' records found (overall / worst bucket)",
         f"{_pct(s['records_found_ratio']['overall'])} / "
         f"{_pct(s['records_found_ratio']['min_per_bucket'])}"),
        ("lookup outcomes", ", ".join(f"{o} {lk[o]}" for o in OUTCOMES)),
        ("lookup latency p50 / p95 / p99", f"{_ms(lat['p50'])} / {_ms(lat['p95'])} / "
                                           f"{_ms(lat['p99'])}"),
        ("datagrams (total)", f"{dg['total']:,}"),
        ("datagrams per lookup (workload phase)",
         "-" if dg["per_lookup"] is None else f"{dg['per_lookup']:.1f}"),
        ("datagrams per idle minute",
         "-" if dg["idle_per_minute"] is None else f"{dg['idle_per_minute']:.0f}"),
        ("joins ok / failed", f"{s['joins']['ok']} / {s['joins']['failed']}"),
        ("publishes ok / failed (replicas min, median)",
         f"{s['publishes']['ok']} / {s['publishes']['failed']} "
         f"({s['publishes']['replicas_min']}, {s['publishes']['replicas_median']})"),
        ("churn: joins / leaves / crashes / rejoins",
         " / ".join(str(s["churn"][k]) for k in ("join", "leave", "crash", "rejoin"))),
        ("routing table at end: mean / min size, dead entries",
         "-" if routing is None else f"{routing['mean_size']:.1f} / {routing['min_size']}, "
                                     f"{_pct(routing['dead_fraction'])}"),
        ("partition", "-" if s["partition"] is None else
         f"{s['partition']['nodes_cut_off']} nodes cut off at {s['partition']['start']:.0f} s, "
         + ("never healed" if s["partition"]["healed"] is None
            else f"healed at {s['partition']['healed']:.0f} s")),
        ("simulated time", f"{s['sim_seconds']:.0f} s"),
        ("wall time", f"{report['wall']['seconds']:.1f} s"),
    ]
    if sc.get("engine") == "node":  # no lookups, publishes or churn of its own to show
        rows = node_rows(report) + [r for r in rows if r[0].startswith(
            ("nodes", "NAT kinds", "datagrams (total)", "joins", "simulated", "wall"))]
    out = [f"# p2pstack simulate: {sc['name']} (seed {report['seed']})", ""]
    if sc.get("description"):
        out += [sc["description"], ""]
    out += ["| figure | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    out += node_markdown(report)
    out += ["", "## Phases (simulated time)", "", "| phase | start s | end s | datagrams |",
            "|---|---|---|---|"]
    out += [f"| {p['name']} | {p['start']:.1f} | {p['end']:.1f} | {p['datagrams']:,} |"
            for p in report["phases"]]
    kinds: Counter[str] = Counter()
    for b in report["series"]["datagrams"]:
        kinds.update(b["kinds"])
    out += ["", "## Datagrams by message kind", "", "| kind | datagrams |", "|---|---|"]
    out += [f"| {k} | {v:,} |" for k, v in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))]
    net = report["network"]
    out += ["", "## Network counters", "", "| counter | value |", "|---|---|"]
    out += [f"| {k} | {v:,} |" for k, v in net.items()]
    if report["plots"]:
        out += ["", "## Plots", ""]
        out += [f"![{name}]({name})" for name in report["plots"]]
    out += ["", "## Scenario", "", "```json", json.dumps(sc, indent=2, sort_keys=True), "```",
            "", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
            f"Reproduce: `p2pstack simulate SCENARIO --seed {report['seed']}` with the "
            "scenario above (report.json is byte-identical apart from `wall`).", ""]
    return "\n".join(out)


# ---- plots -----------------------------------------------------------------------------

def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _title(ax: Any, what: str, report: dict[str, Any]) -> None:
    ax.set_title(pad=14, label=f"{what}\nscenario {report['scenario']['name']}, "
                 f"{report['summary']['nodes']['initial']} nodes, seed {report['seed']}")


def _shade_phases(ax: Any, report: dict[str, Any], scale: float = 60.0) -> None:
    colours = {"join": "#dddddd", "publish": "#e8e0f0", "workload": "#ffffff", "idle": "#e0f0e0"}
    for p in report["phases"]:
        ax.axvspan(p["start"] / scale, p["end"] / scale, color=colours.get(p["name"], "#f4f4f4"),
                   alpha=0.5, lw=0)
        ax.text((p["start"] + p["end"]) / 2 / scale, 1.0, p["name"], ha="center", va="bottom",
                fontsize="x-small", color="#666666", transform=ax.get_xaxis_transform())
    split = report["summary"]["partition"]
    if split is not None:
        end = split["healed"] if split["healed"] is not None else report["summary"]["sim_seconds"]
        ax.axvspan(split["start"] / scale, end / scale, color="#f4c0c0", alpha=0.4, lw=0,
                   label=f"partition ({split['nodes_cut_off']} nodes cut off)")


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def plot_latency_cdf(report: dict[str, Any], path: Path) -> None:
    fig, ax = _figure()
    lat = report["lookup_latencies_seconds"]
    if lat:
        xs = [1000 * x for x in lat]
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post")
        ax.set_ylim(0, 1.02)
    else:
        _empty(ax, "no successful lookups")
    ax.set_xlabel("lookup latency (ms, simulated)")
    ax.set_ylabel("fraction of successful lookups")
    ax.grid(True, alpha=0.3)
    _title(ax, "Lookup latency CDF", report)
    _save(fig, path)


def plot_success_rate(report: dict[str, Any], path: Path) -> None:
    fig, ax = _figure()
    bucket = report["series"]["bucket_seconds"]
    points = [(b["start"] / 60.0, 100 * b["rate"]) for b in report["series"]["success"]
              if b["rate"] is not None]
    _shade_phases(ax, report)
    if points:
        ax.plot([p[0] + bucket / 120.0 for p in points], [p[1] for p in points], marker="o",
                label="lookups that found the peer's record")
        ax.set_ylim(min(0.0, *(p[1] for p in points)) - 2, 102)
        ax.legend(loc="lower left", fontsize="small")
    else:
        _empty(ax, "no lookups")
    ax.set_xlabel(f"simulated time (min; {bucket:g} s buckets, by lookup start)")
    ax.set_ylabel("lookup success (%)")
    ax.grid(True, alpha=0.3)
    _title(ax, "Lookup success rate over time", report)
    _save(fig, path)


def plot_datagrams(report: dict[str, Any], path: Path) -> None:
    fig, ax = _figure()
    bucket = report["series"]["bucket_seconds"]
    buckets = report["series"]["datagrams"]
    totals: Counter[str] = Counter()
    for b in buckets:
        totals.update(b["kinds"])
    kinds = [k for k, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    _shade_phases(ax, report)
    if kinds:
        xs = [b["start"] / 60.0 for b in buckets]
        ys = [[b["kinds"].get(k, 0) * 60.0 / b["seconds"] if b["seconds"] > 0 else 0.0
               for b in buckets] for k in kinds]
        ax.stackplot(xs, ys, labels=kinds, step="post")
        ax.legend(loc="upper right", fontsize="small", ncol=2)
    else:
        _empty(ax, "no datagrams")
    ax.set_xlabel(f"simulated time (min; {bucket:g} s buckets)")
    ax.set_ylabel("datagrams per minute (stacked by kind)")
    ax.grid(True, alpha=0.3)
    _title(ax, "Datagrams per minute by message kind", report)
    _save(fig, path)


def plot_routing(report: dict[str, Any], path: Path) -> None:
    fig, ax = _figure()
    samples = report["series"]["routing"]
    _shade_phases(ax, report)
    if samples:
        xs = [s["time"] / 60.0 for s in samples]
        ax.plot(xs, [s["mean_size"] for s in samples], marker="o", label="mean table size")
        ax.plot(xs, [s["min_size"] for s in samples], marker=".", label="min table size")
        ax.set_ylabel("routing-table entries (live server nodes)")
        right = ax.twinx()
        right.plot(xs, [100 * s["dead_fraction"] for s in samples], color="tab:red",
                   marker="x", label="entries pointing at departed nodes")
        right.set_ylabel("dead entries (%)", color="tab:red")
        right.set_ylim(0, max(5.0, *(100 * s["dead_fraction"] for s in samples)) * 1.1)
        lines = ax.get_legend_handles_labels()
        more = right.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize="small")
    else:
        _empty(ax, "no samples (the run is shorter than one bucket)")
        ax.set_ylabel("routing-table entries")
    ax.set_xlabel("simulated time (min)")
    ax.grid(True, alpha=0.3)
    _title(ax, "Routing-table health", report)
    _save(fig, path)


PLOTTERS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "lookup_latency_cdf": plot_latency_cdf,
    "success_rate": plot_success_rate,
    "datagrams_by_kind": plot_datagrams,
    "routing_health": plot_routing,
    "connection_paths": plot_connection_paths,
    "reconnect_histogram": plot_reconnect_histogram,
}

"""The ``node`` engine's part of a ``p2pstack simulate`` report (issue 11 section 2).

``node_sections(result) -> dict``
    ``matrix`` (every connect: dialer and target kind, path, simulated seconds to the first
    echo byte and to the direct path, the hole punch's outcome, the error; and the counts
    per path) and ``mobility`` (every move in the order they happened, the reconnect and
    found-again times with p50 / p90 / p99 / max, failures counted) and ``room`` (every
    admission with its time or error, the rendezvous's crash, each member's echoes to the
    others after it with their spread, the admission tried after it), ``None`` for a part
    the scenario has not, and ``node_stats`` (the nodes' migration and announcement-push
    counters, the probes' failed attempts). Plain JSON data, a function of the run.
``node_summary(sections)``, ``node_rows(report)``, ``node_markdown(report)``
    The short figures for ``summary``, the rows of report.md's first table, and its
    sections: the matrix as dialer rows x target columns, the time-to-reconnect table.
``plot_connection_paths``, ``plot_reconnect_histogram``
    The heat map "connection paths by NAT pair" and the time-to-reconnect histogram
    (``simulations.report.PLOTTERS``); each has a title with the scenario and the seed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from simulations.node_engine import PATHS
from simulations.runner import RunResult

__all__ = ["node_sections", "node_summary", "node_rows", "node_markdown",
           "plot_connection_paths", "plot_reconnect_histogram", "KIND_LABELS"]

KIND_LABELS = {"none": "public", "full-cone": "full cone", "restricted-cone": "restricted",
               "port-restricted-cone": "port-restr.", "symmetric": "symmetric"}
_COLOURS = {"direct": "#4caf50", "punched": "#2196f3", "relayed": "#ff9800",
            "failed": "#e53935"}


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _spread(samples: list[float | None]) -> dict[str, Any]:
    done = sorted(s for s in samples if s is not None)
    return {"probes": len(samples), "reached": len(done), "failed": len(samples) - len(done),
            "p50": _quantile(done, 0.50), "p90": _quantile(done, 0.90),
            "p99": _quantile(done, 0.99), "max": done[-1] if done else None,
            "seconds": done}


def node_sections(result: RunResult) -> dict[str, Any]:
    sc = result.scenario
    matrix = None
    if sc.matrix.kinds:
        counts = Counter(p["path"] for p in result.paths)
        matrix = {"kinds": list(sc.matrix.kinds), "pairs": len(result.paths),
                  "paths": {path: counts[path] for path in PATHS},
                  "connects": result.paths}
    mobility = None
    if sc.mobility.active:
        moves = sorted(result.moves, key=lambda m: (m["at"], m["mover"]))
        reconnect = [s for m in moves for s in m["reconnect_s"]]
        found = [m["found_again_s"] for m in moves if m["stranger"]]
        mobility = {"moves": len(moves),
                    "by_how": dict(sorted(Counter(m["how"] for m in moves).items())),
                    "reconnect": _spread(reconnect), "found_again": _spread(found),
                    "list": moves}
    room = None
    if sc.rooms.active:
        r = result.room
        admissions = r.get("admissions", [])
        room = {"members": r.get("members", []), "kinds": r.get("kinds", []),
                "error": r.get("error"), "down_at": r.get("down_at"),
                "admissions": admissions,
                "admission": _spread([a["in_room_s"] for a in admissions]),
                "state_synced": _spread([a["synced_s"] for a in admissions]),
                "echoes_after_down": _spread([e["reached_s"] for e in r.get("echoes", [])]),
                "echoes": r.get("echoes", []),
                "state_after_down": _spread(r.get("state_after_down", {}).get("reached_s", [])),
                "state_writer": r.get("state_after_down", {}).get("writer"),
                "late_join": r.get("late_join")}
    return {"matrix": matrix, "mobility": mobility, "room": room,
            "node_stats": dict(sorted(result.node_stats.items()))}


def node_summary(sections: dict[str, Any]) -> dict[str, Any]:
    """The figures a person reads first (report.json's ``summary``, the CLI's line)."""
    out: dict[str, Any] = {}
    if sections["matrix"] is not None:
        m = sections["matrix"]
        out["matrix"] = {"pairs": m["pairs"], **m["paths"]}
    if sections["mobility"] is not None:
        mob = sections["mobility"]
        out["mobility"] = {"moves": mob["moves"], **{
            what: {k: mob[what][k] for k in ("probes", "reached", "failed", "p50", "p99")}
            for what in ("reconnect", "found_again")}}
    if sections["room"] is not None:
        room = sections["room"]
        late = room["late_join"]
        out["room"] = {
            "members": len(room["members"]),
            **{what: {k: room[what][k] for k in ("probes", "reached", "failed", "p50", "p99")}
               for what in ("admission", "state_synced", "echoes_after_down",
                         "state_after_down")},
            "late_join": None if late is None else (late["error"] or "admitted")}
    return out


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def node_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    s = report["summary"]
    rows = []
    if "matrix" in s:
        m = s["matrix"]
        rows.append(("connection paths (dialer x target pairs)",
                     f"{m['pairs']} pairs: " + ", ".join(f"{p} {m[p]}" for p in PATHS)))
    if "mobility" in s:
        mob = s["mobility"]
        for what, label in (("reconnect", "time to reconnect (observers)"),
                            ("found_again", "time to be found again by peer id (strangers)")):
            f = mob[what]
            rows.append((f"{label} p50 / p99",
                         f"{_s(f['p50'])} / {_s(f['p99'])} ({f['reached']} of {f['probes']} "
                         f"probes; {f['failed']} failed)"))
        rows.append(("moves", f"{mob['moves']}"))
    if "room" in s:
        room = s["room"]
        for what, label in (("admission", "room admission, invite to checked by all"),
                            ("state_synced", "room admission, invite to state synced"),
                            ("echoes_after_down", "members reached by peer id after the "
                                                  "rendezvous went down"),
                            ("state_after_down", "a change reaching the other members "
                                                 "after the rendezvous went down")):
            f = room[what]
            rows.append((f"{label} p50 / p99",
                         f"{_s(f['p50'])} / {_s(f['p99'])} ({f['reached']} of {f['probes']}; "
                         f"{f['failed']} failed)"))
        rows.append(("a join tried after the rendezvous went down",
                     room["late_join"] or "no node left to try"))
    return rows


def _cell(c: dict[str, Any]) -> str:
    if c["path"] == "failed":
        return f"**failed** ({c['error']})"
    ms = f"{1000 * c['first_byte_s']:.0f} ms"
    up = "" if c["upgrade_s"] is None else f" / {1000 * c['upgrade_s']:.0f} ms"
    return f"{c['path']} {ms}{up}"


def node_markdown(report: dict[str, Any]) -> list[str]:
    out: list[str] = []
    m = report.get("matrix")
    if m is not None:
        by = {(c["dialer"], c["target"]): c for c in m["connects"]}
        kinds = m["kinds"]
        out += ["", "## Connection paths by NAT pair", "",
                "Each dialer connects to each target by peer id (`p2pstack connect PEER_ID`); "
                "a cell is the path it ended on, the simulated time to the first echo byte "
                "and, after a hole punch or a reversal, to the direct path.", "",
                "| dialer \\ target | " + " | ".join(KIND_LABELS[k] for k in kinds) + " |",
                "|---" * (len(kinds) + 1) + "|"]
        for d in kinds:
            out.append(f"| {KIND_LABELS[d]} | " + " | ".join(
                _cell(by[(d, t)]) if (d, t) in by else "-" for t in kinds) + " |")
    mob = report.get("mobility")
    if mob is not None:
        out += ["", "## Time to reconnect after a move", "",
                "| probe | probes | reached | failed | p50 | p90 | p99 | max |",
                "|---|---|---|---|---|---|---|---|"]
        for what, label in (("reconnect", "observer (was connected)"),
                            ("found_again", "stranger (by peer id)")):
            f = mob[what]
            out.append(f"| {label} | {f['probes']} | {f['reached']} | {f['failed']} | "
                       f"{_s(f['p50'])} | {_s(f['p90'])} | {_s(f['p99'])} | {_s(f['max'])} |")
        out += ["", "| at s | move | mover's NAT | observers reconnected after | "
                "stranger found it after |", "|---|---|---|---|---|"]
        for mv in mob["list"]:
            times = ", ".join(_s(t) if t is not None else "failed" for t in mv["reconnect_s"])
            found = ("no stranger" if not mv["stranger"] else
                     "failed" if mv["found_again_s"] is None else _s(mv["found_again_s"]))
            out.append(f"| {mv['at']:.1f} | {mv['how']} | {KIND_LABELS[mv['kind']]} | "
                       f"{times or '-'} | {found} |")
    room = report.get("room")
    if room is not None:
        out += _room_markdown(room)
    stats = report.get("node_stats")
    if stats:
        out += ["", "## Node counters (summed over the nodes)", "", "| counter | value |",
                "|---|---|"]
        out += [f"| {k} | {v:,} |" for k, v in stats.items()]
    return out


def _room_markdown(room: dict[str, Any]) -> list[str]:
    out = ["", "## The room and its rendezvous going down", ""]
    if room["error"]:
        return [*out, f"No room: {room['error']}."]
    out += ["Admissions (seed 002: a random member already in invites the next node; time "
            "from the invite until the newcomer holds its welcome and every other member "
            "checked it; state synced: until the newcomer holds the room's shared state):",
            "", "| newcomer | its NAT | inviter | in the room after | state synced after | "
            "checked by | connected |", "|---|---|---|---|---|---|---|"]
    for a in room["admissions"]:
        took = a["error"] or _s(a["in_room_s"])
        out.append(f"| {a['newcomer']} | {KIND_LABELS[a['kind']]} | {a['inviter']} | {took} | "
                   f"{_s(a['synced_s'])} | {a['checked_by']} | {a['connected']} |")
    f = room["echoes_after_down"]
    out += ["", f"The rendezvous crashed at {room['down_at']} s. Then each member echoed each "
            f"other by peer id: {f['reached']} of {f['probes']} pairs answered (p50 "
            f"{_s(f['p50'])}, p99 {_s(f['p99'])}, max {_s(f['max'])}); {f['failed']} did not."]
    st = room["state_after_down"]
    out += ["", f"Then member {room['state_writer']} set a key: {st['reached']} of "
            f"{st['probes']} other members held it (p50 {_s(st['p50'])}, max {_s(st['max'])});"
            f" {st['failed']} did not within the give-up time."]
    failed = [e for e in room["echoes"] if e["reached_s"] is None]
    if failed:
        out += ["", "| from | its NAT | to | its NAT |", "|---|---|---|---|"]
        out += [f"| {e['from']} | {KIND_LABELS[e['from_kind']]} | {e['to']} | "
                f"{KIND_LABELS[e['to_kind']]} |" for e in failed]
    late = room["late_join"]
    if late is not None:
        done = (f"admitted after {_s(late['in_room_s'])}, state synced after "
                f"{_s(late['synced_s'])}")
        out += ["", f"A join on a fresh invite after the crash (node {late['newcomer']}): "
                f"{late['error'] or done}."]
    return out


# ---- plots -----------------------------------------------------------------------------

def _figure(size: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _title(ax: Any, what: str, report: dict[str, Any]) -> None:
    ax.set_title(pad=14, label=f"{what}\nscenario {report['scenario']['name']}, "
                 f"{report['summary']['nodes']['started']} nodes, seed {report['seed']}")


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def plot_connection_paths(report: dict[str, Any], path: Path) -> None:
    fig, ax = _figure((8, 6.5))
    m = report.get("matrix")
    if not m or not m["connects"]:
        ax.text(0.5, 0.5, "no matrix in this scenario", ha="center", va="center",
                transform=ax.transAxes)
    else:
        kinds = m["kinds"]
        by = {(c["dialer"], c["target"]): c for c in m["connects"]}
        grid = [[PATHS.index(by[(d, t)]["path"]) if (d, t) in by else float("nan")
                 for t in kinds] for d in kinds]
        ax.imshow(grid, cmap=ListedColormap([_COLOURS[p] for p in PATHS]), vmin=-0.5,
                  vmax=len(PATHS) - 0.5, aspect="auto")
        for i, d in enumerate(kinds):
            for j, t in enumerate(kinds):
                c = by.get((d, t))
                if c is None:
                    continue
                label = c["path"] if c["path"] == "failed" else (
                    f"{c['path']}\n{1000 * c['first_byte_s']:.0f} ms")
                ax.text(j, i, label, ha="center", va="center", fontsize="small",
                        color="white" if c["path"] != "relayed" else "black")
        ax.set_xticks(range(len(kinds)), [KIND_LABELS[k] for k in kinds])
        ax.set_yticks(range(len(kinds)), [KIND_LABELS[k] for k in kinds])
        counts = m["paths"]
        ax.legend(handles=[Patch(color=_COLOURS[p], label=f"{p} ({counts[p]})") for p in PATHS],
                  loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(PATHS),
                  fontsize="small")
    ax.set_xlabel("target's NAT kind")
    ax.set_ylabel("dialer's NAT kind")
    _title(ax, "Connection paths by NAT pair (cells: ms to the first echo byte, simulated)",
           report)
    _save(fig, path)


def plot_reconnect_histogram(report: dict[str, Any], path: Path) -> None:
    fig, ax = _figure((8, 4.5))
    mob = report.get("mobility")
    series = [] if mob is None else [
        (mob["reconnect"], "observers: time to reconnect", "tab:blue"),
        (mob["found_again"], "strangers: time to be found again by peer id", "tab:orange")]
    values = [t for f, _, _ in series for t in f["seconds"]]
    if not values:
        ax.text(0.5, 0.5, "no moves" if mob is None or not mob["moves"] else
                "no probe reached a mover", ha="center", va="center", transform=ax.transAxes)
    else:
        top = max(values)
        bins = [top * i / 30 for i in range(31)] if top > 0 else [0.0, 1.0]
        for f, label, colour in series:
            if f["seconds"]:
                ax.hist(f["seconds"], bins=bins, alpha=0.6, color=colour,
                        label=f"{label} (p50 {_s(f['p50'])}, p99 {_s(f['p99'])}; "
                              f"{f['failed']} failed)")
                ax.axvline(f["p50"], color=colour, linestyle="--", lw=1)
                ax.axvline(f["p99"], color=colour, linestyle=":", lw=1)
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlabel("seconds after the move (simulated)")
    ax.set_ylabel("probes")
    ax.grid(True, alpha=0.3)
    _title(ax, "Time to reconnect after an address change", report)
    _save(fig, path)

"""``p2pstack room graph NAME [--json] [--png FILE]``: the room's trust graph as this node
sees it (``rooms.graph.build_graph``, through the control API's ``room_graph``).

Text: the members (admin, how we verified each, whether we hold its statement), who
verified whom, and the gaps with their reasons. ``--json``: the graph as the node returns
it (``members``, ``outsiders``, ``removed``, ``edges``, ``gaps`` each with ``kind`` and
``why``). ``--png FILE``: a picture (networkx's layout, matplotlib's Agg canvas, no pyplot
state): members green, the admin with a thick edge, outsiders red, removed grey;
``verified`` edges grey, ``admitted`` blue, a member's connection to an outsider dashed
red; the gaps listed under the graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from stack.base.errors import UsageError

__all__ = ["render_text", "write_png", "short"]

_EDGE_STYLES: tuple[tuple[str, str, Literal["solid", "dashed"], float], ...] = (
    ("verified", "#808080", "solid", 0.1), ("admitted", "#3060d0", "solid", 0.1),
    ("connected", "#e05050", "dashed", -0.2))


def short(peer: str) -> str:
    """A peer id people can tell apart in a picture: its last 6 characters."""
    return f"...{peer[-6:]}"


def render_text(graph: dict[str, Any]) -> str:
    lines = [f"room {graph['room']} as {graph['viewer']} sees it "
             f"(admin {graph['admin'] or 'unknown'})",
             f"members ({len(graph['members'])}):"]
    for m in graph["members"]:
        role = "admin, " if m["admin"] else ""
        held = "statement held" if m["statement"] is not None else "no statement"
        lines.append(f"  {m['peer_id']} ({role}via {m['via']}, {held})")
    if graph["outsiders"]:
        lines.append(f"outsiders ({len(graph['outsiders'])}):")
        lines += [f"  {p}" for p in graph["outsiders"]]
    if graph["removed"]:
        lines.append(f"removed ({len(graph['removed'])}):")
        lines += [f"  {r['peer_id']} ({r['reason']})" for r in graph["removed"]]
    lines.append(f"edges ({len(graph['edges'])}):")
    lines += [f"  {short(e['from'])} -> {short(e['to'])} {e['kind']}" for e in graph["edges"]]
    lines.append(f"gaps ({len(graph['gaps'])}):" if graph["gaps"] else "gaps: none")
    lines += [f"  {g['kind']}: {g['why']}" for g in graph["gaps"]]
    return "\n".join(lines)


def _gap_line(gap: dict[str, Any]) -> str:
    if "member" in gap:
        return f"{gap['kind']}: {short(gap['member'])} -- {short(gap['peer'])}"
    return f"{gap['kind']}: {short(gap['peer'])}"


def write_png(graph: dict[str, Any], path: Path) -> None:
    """Draw the graph into ``path`` (``UsageError`` if it cannot be written there)."""
    # Imported here: matplotlib and networkx cost every other command ~1 s at start.
    import networkx as nx
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    g = nx.DiGraph()
    members = {m["peer_id"] for m in graph["members"]}
    admin = graph["admin"]
    removed = {r["peer_id"] for r in graph["removed"]}
    for peer in (*members, *graph["outsiders"], *removed):
        g.add_node(peer)
    for e in graph["edges"]:
        g.add_edge(e["from"], e["to"])
    pos = nx.circular_layout(g) if len(g) > 1 else {n: (0.0, 0.0) for n in g}
    fig = Figure(figsize=(7, 7.5))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.05, 0.25, 0.9, 0.68))
    ax.set_axis_off()
    colors = ["#d0d0d0" if n in removed else "#e05050" if n not in members else "#60c060"
              for n in g.nodes]
    widths = [3.0 if n == admin else 1.0 for n in g.nodes]
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, edgecolors="black",
                           linewidths=widths, node_size=900)
    nx.draw_networkx_labels(g, pos, ax=ax, labels={n: n[-6:] for n in g.nodes},
                            font_size=7)
    handles = []
    # a connection to an outsider is drawn beside the vouch for it, bent the other way
    for kind, color, style, rad in _EDGE_STYLES:
        edges = [(e["from"], e["to"]) for e in graph["edges"] if e["kind"] == kind]
        if edges:
            nx.draw_networkx_edges(g, pos, ax=ax, edgelist=edges, edge_color=color,
                                   style=style, arrows=True, node_size=900,
                                   connectionstyle=f"arc3,rad={rad}")
            handles.append(Line2D([], [], color=color, linestyle=style, label=kind))
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7)
    ax.set_title(f"room {graph['room']}: {len(members)} members, "
                 f"{len(graph['gaps'])} gaps (as {short(graph['viewer'])} sees it)",
                 fontsize=9)
    gaps = "\n".join(_gap_line(gap) for gap in graph["gaps"][:12])
    fig.text(0.05, 0.22, gaps or "no gaps", fontsize=7, va="top", family="monospace")
    try:
        fig.savefig(path, format="png", metadata={"Software": None})
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None

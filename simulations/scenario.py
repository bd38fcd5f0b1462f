"""Scenarios for ``p2pstack simulate``: the model, the TOML format, the built-ins (issue 11).

A scenario says what network to build, how its population behaves over time, what work
it does and what to measure. It is pure data: ``load_scenario`` reads one TOML file (the
only I/O here), ``parse_scenario`` checks a parsed table, ``builtin`` returns a built-in.
Every mistake is a ``ScenarioError`` (a ``UsageError``: the CLI prints one line and exits
2) naming the key, e.g. ``network.nodes: must be an integer >= 2, not 1``.

The format (every key optional; the defaults are the ``dht`` built-in)::

    name = "my-run"              # used in the default output directory
    description = "..."
    engine = "dht"               # what runs on each simulated host: "dht", the production
                                 # DHT core and driver; "node", full production Nodes
                                 # (QUIC, trust, DHT, relays, hole punching, mobility) for
                                 # the [matrix] and [mobility] scenarios
                                 # (``simulations.node_engine``)
    seed = 1                     # default seed (``--seed`` overrides it)
    duration = 120.0             # simulated seconds of the workload phase
    idle = 120.0                 # simulated seconds of idling at the end (no lookups)

    [network]
    nodes = 200                  # hosts at the start (node 0, public, founds the DHT)
    latency = 0.025              # one-way seconds
    jitter = 0.010               # half-width of the uniform spread around it, seconds
    loss = 0.0                   # drop probability per datagram, whole run
    [network.nat]                # fractions per RFC 4787 kind, summing to 1
    none = 1.0                   # none, full-cone, restricted-cone,
                                 # port-restricted-cone, symmetric

    [join]
    spacing = 0.05               # seconds between two initial joins
    settle = 5.0                 # seconds after the last join, and after publishing

    [workload]
    publish = true               # every node publishes its signed announcement
    publish_spread = 30.0        # publishes start uniformly within this many seconds
    lookups_per_minute = 300.0   # Poisson rate of resolves (random live node -> random
                                 # live published node) during ``duration``
    lookup_timeout = 60.0

    [churn]                      # Poisson rates during ``duration`` (0 = none)
    joins_per_minute = 0.0       # brand-new nodes join (and publish)
    leaves_per_minute = 0.0      # graceful: the process closes its socket
    crashes_per_minute = 0.0     # the host drops everything from that moment
    rejoin_after = 0.0           # a departed node comes back this many seconds later with
                                 # its identity (new process: empty table, seq + 1);
                                 # 0 = it stays away

    [partition]                  # split the network during the workload (0 = never)
    fraction = 0.0               # share of the live nodes cut off from the rest (and from
                                 # node 0); nodes that join meanwhile are on node 0's side
    at = 60.0                    # seconds into the workload phase
    heal_after = 120.0           # seconds until it heals (0 = it never does)

    [matrix]                     # engine "node": connections by peer id across NATs
    kinds = []                   # NAT kinds of the matrix (empty: no matrix). The run
                                 # places its own nodes: node 0 (public: bootstrap node
                                 # and relay), then per kind a dialer and a target, each
                                 # behind a NAT box of its own; network.nodes and
                                 # network.nat are not used. Once all are ready, each
                                 # dialer connects to each target by peer id, one pair at
                                 # a time (``p2pstack connect PEER_ID``'s operation)
    timeout = 20.0               # seconds per connect (echo and hole punch included)
    idle_before = 0.0            # seconds of quiet before the connects (NAT mappings that
                                 # only a connect would use time out meanwhile)

    [mobility]                   # engine "node": address changes during ``duration``
    ip_changes_per_minute = 0.0  # Poisson rate: a random node (not node 0) gets a new IP
                                 # (public: a new public address; NATed: a new private one,
                                 # so its NAT maps it anew)
    rebinds_per_minute = 0.0     # Poisson rate: a random NATed node's NAT box forgets its
                                 # mappings (a reboot, a carrier NAT's rebinding); the
                                 # next one takes a new public port
    ip_change_at = []            # and at these seconds into the workload phase
    rebind_at = []
    observers = 2                # nodes that connect to the mover just before it moves;
                                 # each measures its time to reconnect
    probe_timeout = 1.0          # seconds per echo attempt of an observer's probe; a
                                 # failed attempt is retried (0.2 s later)
    find_timeout = 10.0          # the same for the stranger's probe (DHT lookup, dial,
                                 # relay or punch included: `p2pstack connect`'s default)
    reconnect_timeout = 120.0    # seconds after the move a probe gives up ("failed")

    [rooms]                      # engine "node": a private room and its rendezvous going
                                 # down (issue 13); node 1 is then a public rendezvous
                                 # (``p2pstack node --rendezvous``) and kinds by
                                 # network.nat go to nodes 2..
    members = 0                  # room size (0: no room): the first ready nodes 2.. in
                                 # order; the first creates the room, each next one is
                                 # invited by a random member already in it (seed 002)
    down_after = 10.0            # seconds after the last admission the rendezvous's host
                                 # crashes
    echo_timeout = 10.0          # then every member echoes every other by peer id: seconds
                                 # per attempt (retried 0.2 s later)
    give_up_after = 120.0        # seconds after the crash an echo, or the admission tried
                                 # after it, counts as failed

    [measure]
    bucket = 60.0                # seconds per bucket of the time series
    plots = ["lookup_latency_cdf", "success_rate", "datagrams_by_kind", "routing_health"]
                                 # also "connection_paths" (the matrix's heat map) and
                                 # "reconnect_histogram" (mobility)

Phases on the simulated clock: join (node i starts at ``i * spacing``) + settle, publish
(+ settle), workload (``duration``, with churn), idle. NATed nodes sit each behind its own
NAT box of their kind and run the DHT in client mode (they cannot be dialed, so they
must not enter routing tables); node 0 is always public. ``--set KEY=VALUE`` overrides one
key: a dotted path (``network.loss=0.05``) or a leaf name that is unique (``nodes=10000``);
VALUE is a TOML value (a bare word is a string).

The ``node`` engine (``simulations.node_engine``) runs full Nodes through join (+ settle),
then the matrix (if ``matrix.kinds``), then the workload (``duration``, with the moves of
[mobility]), then the room (if ``rooms.members``: admissions, the rendezvous down,
members reaching each other without it), then idle; [workload], [churn] and [partition]
are the ``dht`` engine's: setting one of them (or [matrix] / [mobility] / [rooms] under
``engine = "dht"``) is an error naming the key. In a mobility run node 0 is public
(bootstrap node and relay), nodes 1.. get kinds by ``network.nat`` and NATed ones hold a
reservation on node 0's relay; their NAT boxes give new mappings random ports (so that a
rebinding moves them).

Extension points: ``ENGINES`` (a new engine, e.g. ``node``), ``SECTIONS`` (a new table,
e.g. ``[partition]``, with its dataclass), ``BUILTINS`` (a new built-in scenario).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from simulations.nat import NAT_KINDS
from stack.base.errors import UsageError

__all__ = ["ScenarioError", "Scenario", "NetworkSpec", "JoinSpec", "WorkloadSpec",
           "ChurnSpec", "PartitionSpec", "MatrixSpec", "MobilitySpec", "RoomsSpec", "MeasureSpec",
           "PLOTS",
           "NODE_PLOTS", "ENGINES", "BUILTINS", "builtin",
           "load_scenario", "parse_scenario", "to_toml", "apply_overrides", "canonical_key",
           "resolve_scenario"]

PLOTS = ("lookup_latency_cdf", "success_rate", "datagrams_by_kind", "routing_health")
NODE_PLOTS = ("connection_paths", "reconnect_histogram")  # the node engine's figures
ENGINES = ("dht", "node")
MAX_NODES = 1_000_000


class ScenarioError(UsageError):
    """A scenario that cannot run as written; the message names the key."""


@dataclass(frozen=True)
class NetworkSpec:
    nodes: int = 200
    latency: float = 0.025
    jitter: float = 0.010
    loss: float = 0.0
    nat: Mapping[str, float] = field(default_factory=lambda: {"none": 1.0})


@dataclass(frozen=True)
class JoinSpec:
    spacing: float = 0.05
    settle: float = 5.0


@dataclass(frozen=True)
class WorkloadSpec:
    publish: bool = True
    publish_spread: float = 30.0
    lookups_per_minute: float = 300.0
    lookup_timeout: float = 60.0


@dataclass(frozen=True)
class ChurnSpec:
    joins_per_minute: float = 0.0
    leaves_per_minute: float = 0.0
    crashes_per_minute: float = 0.0
    rejoin_after: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.joins_per_minute or self.leaves_per_minute or self.crashes_per_minute)


@dataclass(frozen=True)
class PartitionSpec:
    fraction: float = 0.0
    at: float = 60.0
    heal_after: float = 120.0


@dataclass(frozen=True)
class MatrixSpec:
    kinds: tuple[str, ...] = ()
    timeout: float = 20.0
    idle_before: float = 0.0


@dataclass(frozen=True)
class MobilitySpec:
    ip_changes_per_minute: float = 0.0
    rebinds_per_minute: float = 0.0
    ip_change_at: tuple[float, ...] = ()
    rebind_at: tuple[float, ...] = ()
    observers: int = 2
    probe_timeout: float = 1.0
    find_timeout: float = 10.0
    reconnect_timeout: float = 120.0

    @property
    def active(self) -> bool:
        return bool(self.ip_changes_per_minute or self.rebinds_per_minute
                    or self.ip_change_at or self.rebind_at)


@dataclass(frozen=True)
class RoomsSpec:
    members: int = 0
    down_after: float = 10.0
    echo_timeout: float = 10.0
    give_up_after: float = 120.0

    @property
    def active(self) -> bool:
        return self.members > 0


@dataclass(frozen=True)
class MeasureSpec:
    bucket: float = 60.0
    plots: tuple[str, ...] = PLOTS


@dataclass(frozen=True)
class Scenario:
    name: str = "dht"
    description: str = ""
    engine: str = "dht"
    seed: int = 1
    duration: float = 120.0
    idle: float = 120.0
    network: NetworkSpec = field(default_factory=NetworkSpec)
    join: JoinSpec = field(default_factory=JoinSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    churn: ChurnSpec = field(default_factory=ChurnSpec)
    partition: PartitionSpec = field(default_factory=PartitionSpec)
    matrix: MatrixSpec = field(default_factory=MatrixSpec)
    mobility: MobilitySpec = field(default_factory=MobilitySpec)
    rooms: RoomsSpec = field(default_factory=RoomsSpec)
    measure: MeasureSpec = field(default_factory=MeasureSpec)

    def to_dict(self) -> dict[str, Any]:
        """The scenario as a TOML-shaped table (what ``parse_scenario`` reads back)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECTIONS:
                table = {}
                for sf in fields(value):
                    item = getattr(value, sf.name)
                    table[sf.name] = (dict(item) if isinstance(item, Mapping)
                                      else list(item) if isinstance(item, tuple) else item)
                out[f.name] = table
            else:
                out[f.name] = value
        return out


def to_toml(scenario: Scenario) -> str:
    """The scenario as a TOML file that ``load_scenario`` reads back to the same value
    (``p2pstack simulate SCENARIO --show``: a built-in to copy and edit)."""
    table = scenario.to_dict()
    lines = []
    for key, value in table.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_literal(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"]
            nested = []
            for sub, item in value.items():
                if isinstance(item, dict):
                    nested.append((sub, item))
                else:
                    lines.append(f"{sub} = {_toml_literal(item)}")
            for sub, item in nested:
                lines += ["", f"[{key}.{sub}]"]
                lines += [f"{k} = {_toml_literal(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


# ---- checking values: each returns the value or raises ValueError(what was expected) ----

Check = Callable[[Any], Any]


def _number(lo: float = 0.0, hi: float = math.inf, *, lo_open: bool = False) -> Check:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or v < lo or v > hi or (lo_open and v == lo):
            bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
            raise ValueError(f"must be a number {bound}"
                             + (f" and <= {hi:g}" if hi < math.inf else ""))
        return float(v)
    return check


def _integer(lo: int, hi: int) -> Check:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"must be an integer >= {lo} and <= {hi}")
        return v
    return check


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a string")
    return v


def _name(v: Any) -> str:
    if not isinstance(v, str) or not v or not all(c.isalnum() or c in "-_." for c in v):
        raise ValueError("must be a non-empty name of letters, digits, '-', '_' or '.'")
    return v


def _engine(v: Any) -> str:
    if v not in ENGINES:
        raise ValueError(f"must be one of {', '.join(ENGINES)}")
    return str(v)


def _plots(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
        raise ValueError("must be a list of plot names")
    unknown = [p for p in v if p not in PLOTS + NODE_PLOTS]
    if unknown:
        raise ValueError(f"unknown plot {unknown[0]!r}; known: {', '.join(PLOTS + NODE_PLOTS)}")
    return tuple(dict.fromkeys(v))


def _nat_mix(v: Any) -> dict[str, float]:
    if not isinstance(v, dict) or not v:
        raise ValueError(f"must be a table of fractions per NAT kind ({', '.join(NAT_KINDS)})")
    return v  # each kind is checked (and named) in _parse_nat


def _kinds(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(k, str) for k in v):
        raise ValueError("must be a list of NAT kinds")
    unknown = [k for k in v if k not in NAT_KINDS]
    if unknown:
        raise ValueError(f"unknown NAT kind {unknown[0]!r}; known: {', '.join(NAT_KINDS)}")
    if len(set(v)) != len(v):
        raise ValueError("must name each NAT kind once")
    return tuple(v)


def _times(v: Any) -> tuple[float, ...]:
    if not isinstance(v, list):
        raise ValueError("must be a list of seconds into the workload phase")
    check = _number(0.0, 86400.0 * 365)
    return tuple(sorted(check(t) for t in v))


# section -> (dataclass, {key: check}); top-level scalars under ""
SECTIONS: dict[str, tuple[type, dict[str, Check]]] = {
    "network": (NetworkSpec, {
        "nodes": _integer(2, MAX_NODES),
        "latency": _number(0.0, 60.0),
        "jitter": _number(0.0, 60.0),
        "loss": _number(0.0, 0.99),
        "nat": _nat_mix,
    }),
    "join": (JoinSpec, {"spacing": _number(0.0, 3600.0), "settle": _number(0.0, 86400.0)}),
    "workload": (WorkloadSpec, {
        "publish": _boolean,
        "publish_spread": _number(0.0, 86400.0),
        "lookups_per_minute": _number(0.0, 1e6),
        "lookup_timeout": _number(0.0, 3600.0, lo_open=True),
    }),
    "churn": (ChurnSpec, {
        "joins_per_minute": _number(0.0, 1e5),
        "leaves_per_minute": _number(0.0, 1e5),
        "crashes_per_minute": _number(0.0, 1e5),
        "rejoin_after": _number(0.0, 86400.0 * 365),
    }),
    "partition": (PartitionSpec, {
        "fraction": _number(0.0, 0.99),
        "at": _number(0.0, 86400.0 * 365),
        "heal_after": _number(0.0, 86400.0 * 365),
    }),
    "matrix": (MatrixSpec, {
        "kinds": _kinds,
        "timeout": _number(0.0, 3600.0, lo_open=True),
        "idle_before": _number(0.0, 86400.0),
    }),
    "mobility": (MobilitySpec, {
        "ip_changes_per_minute": _number(0.0, 1e4),
        "rebinds_per_minute": _number(0.0, 1e4),
        "ip_change_at": _times,
        "rebind_at": _times,
        "observers": _integer(0, 64),
        "probe_timeout": _number(0.0, 3600.0, lo_open=True),
        "find_timeout": _number(0.0, 3600.0, lo_open=True),
        "reconnect_timeout": _number(0.0, 86400.0, lo_open=True),
    }),
    "rooms": (RoomsSpec, {
        "members": _integer(0, 256),
        "down_after": _number(0.0, 86400.0),
        "echo_timeout": _number(0.0, 3600.0, lo_open=True),
        "give_up_after": _number(0.0, 86400.0, lo_open=True),
    }),
    "measure": (MeasureSpec, {"bucket": _number(1.0, 86400.0), "plots": _plots}),
}
#: the sections each engine reads; a non-default one the engine ignores is an error
_ENGINE_SECTIONS = {"dht": ("workload", "churn", "partition"),
                    "node": ("matrix", "mobility", "rooms")}
TOP: dict[str, Check] = {
    "name": _name, "description": _text, "engine": _engine,
    "seed": _integer(0, 2**63 - 1),
    "duration": _number(0.0, 86400.0 * 365), "idle": _number(0.0, 86400.0 * 365),
}


def _bad(key: str, problem: str, value: Any = ...) -> ScenarioError:
    shown = "" if value is ... or "unknown" in problem else f", not {_show(value)}"
    return ScenarioError(f"{key}: {problem}{shown}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_nat(mix: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for kind, fraction in mix.items():
        key = f"network.nat.{kind}"
        if kind not in NAT_KINDS:
            raise _bad(key, f"unknown NAT kind; known: {', '.join(NAT_KINDS)}")
        try:
            out[kind] = _number(0.0, 1.0)(fraction)
        except ValueError as exc:
            raise _bad(key, str(exc), fraction) from None
    total = sum(out.values())
    if abs(total - 1.0) > 1e-9:
        raise _bad("network.nat", f"fractions must sum to 1, not {total:g}")
    return {kind: out[kind] for kind in NAT_KINDS if out.get(kind)}


def parse_scenario(table: Mapping[str, Any]) -> Scenario:
    """A ``Scenario`` from a parsed TOML table; ``ScenarioError`` naming the first bad key."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise _bad(key, "must be a table ([" + key + "])", value)
            values[key] = _parse_section(key, value)
        elif key in TOP:
            try:
                values[key] = TOP[key](value)
            except ValueError as exc:
                raise _bad(key, str(exc), value) from None
        else:
            raise _bad(key, "unknown key; known: " + ", ".join([*TOP, *SECTIONS]))
    scenario = Scenario(**values)
    _check_engine_sections(scenario)
    _check_rooms(scenario)
    return scenario


def _check_rooms(sc: Scenario) -> None:
    members = sc.rooms.members
    if members == 1:
        raise _bad("rooms.members", "must be 0 (no room) or at least 2", members)
    if members and sc.matrix.kinds:
        raise _bad("rooms.members", "a room runs in its own scenario, not beside [matrix]")
    if members > sc.network.nodes - 2:
        raise _bad("rooms.members", f"must leave node 0 (bootstrap) and node 1 (rendezvous): "
                   f"at most network.nodes - 2 = {sc.network.nodes - 2}", members)


def _check_engine_sections(sc: Scenario) -> None:
    """A section only the other engine reads must keep its defaults: a run that would
    silently ignore what the file says is refused, naming the first key it ignores."""
    theirs = [s for engine, names in _ENGINE_SECTIONS.items() if engine != sc.engine
              for s in names]
    for section in theirs:
        value, default = getattr(sc, section), SECTIONS[section][0]()
        for f in fields(value):
            if getattr(value, f.name) != getattr(default, f.name):
                raise _bad(f"{section}.{f.name}", f"is not read by engine {sc.engine!r}; "
                           f"remove it, or set engine = "
                           f"\"{'node' if sc.engine == 'dht' else 'dht'}\"")


def _parse_section(section: str, table: dict[str, Any]) -> Any:
    cls, checks = SECTIONS[section]
    values: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{section}.{key}"
        if key not in checks:
            raise _bad(dotted, f"unknown key; known in [{section}]: {', '.join(checks)}")
        try:
            values[key] = checks[key](value)
        except ValueError as exc:
            raise _bad(dotted, str(exc), value) from None
        if section == "network" and key == "nat":
            values[key] = _parse_nat(values[key])
    return cls(**values)


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file (the name defaults to the file's stem)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    table.setdefault("name", _stem_name(path))
    try:
        return parse_scenario(table)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def _stem_name(path: Path) -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in path.stem)
    return name or "scenario"


# ---- --set KEY=VALUE -----------------------------------------------------------------

def _leaf_paths() -> dict[str, list[str]]:
    leaves: dict[str, list[str]] = {}
    for key in TOP:
        leaves.setdefault(key, []).append(key)
    for section, (_cls, checks) in SECTIONS.items():
        for key in checks:
            leaves.setdefault(key, []).append(f"{section}.{key}")
    return leaves


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def canonical_key(key: str, flag: str = "--set") -> str:
    """The dotted path ``key`` names: itself, or the one path of a unique leaf name
    (``nodes`` -> ``network.nodes``, ``nat.none`` -> ``network.nat.none``). Whether that
    path exists is ``parse_scenario``'s to say; ``flag`` only words the error."""
    leaves = _leaf_paths()
    head, dot, rest = key.partition(".")
    if dot and head not in TOP and head not in SECTIONS and len(leaves.get(head, ())) == 1:
        return f"{leaves[head][0]}.{rest}"  # nat.none -> network.nat.none
    if "." not in key and key not in SECTIONS:
        paths = leaves.get(key)
        if paths is None:
            raise ScenarioError(f"{flag} {key}: unknown key; use a dotted path "
                                "(network.nodes) or one of: " + ", ".join(leaves))
        if len(paths) > 1:
            raise ScenarioError(f"{flag} {key}: ambiguous; say {' or '.join(paths)}")
        return paths[0]
    return key


def apply_overrides(table: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """``table`` (a scenario's TOML-shaped dict) with each ``KEY=VALUE`` applied."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in table.items()}
    for setting in settings:
        key, sep, text = setting.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ScenarioError(f"--set {setting!r}: expected KEY=VALUE")
        key = canonical_key(key)
        parts = key.split(".")
        node: dict[str, Any] = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ScenarioError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a table")
            else:
                child = node[part] = dict(child)
            node = child
        node[parts[-1]] = _toml_value(text.strip())
    return out


def resolve_scenario(spec: str, settings: Sequence[str] = ()) -> Scenario:
    """A built-in name or a TOML file path, with ``--set`` overrides applied."""
    if spec in BUILTINS:
        table = tomllib.loads(BUILTINS[spec])
        where = f"built-in {spec}"
    elif spec.endswith(".toml") or "/" in spec or Path(spec).is_file():
        base = load_scenario(spec)  # checks the file itself, naming it
        table = base.to_dict()
        where = spec
    else:
        raise ScenarioError(f"no such scenario {spec!r}: a built-in "
                            f"({', '.join(BUILTINS)}) or a .toml file")
    if settings:
        table = apply_overrides(table, list(settings))
    try:
        return parse_scenario(table)
    except ScenarioError as exc:
        raise ScenarioError(f"{where}{' with --set' if settings else ''}: {exc}") from None


def builtin(name: str) -> Scenario:
    return parse_scenario(tomllib.loads(BUILTINS[name]))


BUILTINS: dict[str, str] = {
    "dht": """
name = "dht"
description = "Join, publish, random lookups, idle: the DHT at rest."
duration = 120.0
idle = 120.0
[network]
nodes = 200
latency = 0.025
jitter = 0.010
[workload]
lookups_per_minute = 300.0
""",
    "churn": """
name = "churn"
description = "Joins, graceful leaves, crashes and rejoins at steady rates while lookups run."
duration = 600.0
idle = 60.0
[network]
nodes = 200
latency = 0.025
jitter = 0.010
[workload]
lookups_per_minute = 120.0
[churn]
joins_per_minute = 2.0
leaves_per_minute = 2.0
crashes_per_minute = 2.0
rejoin_after = 120.0
""",
    "partition": """
name = "partition"
description = "A third of the network is cut off for two minutes, then the split heals."
duration = 360.0
idle = 60.0
[network]
nodes = 200
latency = 0.025
jitter = 0.010
[workload]
lookups_per_minute = 240.0
[partition]
fraction = 0.33
at = 60.0
heal_after = 120.0
[measure]
bucket = 30.0
""",
    "nat-matrix": """
name = "nat-matrix"
description = "Nodes behind every NAT kind connect by peer id: direct, punched or relayed."
engine = "node"
duration = 0.0
idle = 0.0
[network]
latency = 0.020
jitter = 0.005
[join]
spacing = 1.0
settle = 5.0
[matrix]
kinds = ["none", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric"]
timeout = 20.0
[measure]
bucket = 30.0
plots = ["connection_paths", "datagrams_by_kind"]
""",
    "rendezvous-down": """
name = "rendezvous-down"
description = "A room behind NATs loses its rendezvous: its members still reach each other."
engine = "node"
duration = 0.0
idle = 0.0
[network]
nodes = 8
latency = 0.020
jitter = 0.005
[network.nat]
none = 0.2
full-cone = 0.2
restricted-cone = 0.2
port-restricted-cone = 0.2
symmetric = 0.2
[join]
spacing = 1.0
settle = 5.0
[rooms]
members = 5
down_after = 10.0
echo_timeout = 10.0
give_up_after = 120.0
[measure]
bucket = 30.0
plots = ["datagrams_by_kind"]
""",
    "mobility": """
name = "mobility"
description = "Nodes change IP or get rebound by their NAT: time to reconnect, to be found."
engine = "node"
duration = 600.0
idle = 0.0
[network]
nodes = 12
latency = 0.020
jitter = 0.005
[network.nat]
none = 0.4
full-cone = 0.2
port-restricted-cone = 0.2
symmetric = 0.2
[join]
spacing = 1.0
settle = 5.0
[mobility]
ip_changes_per_minute = 1.0
rebinds_per_minute = 1.0
observers = 2
[measure]
bucket = 60.0
plots = ["reconnect_histogram", "datagrams_by_kind"]
""",
}

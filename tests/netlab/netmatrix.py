"""The real-NAT connect matrix (issue 9 sections 4 and 5): ``p2pstack node`` processes
behind real nftables routers of every NAT kind, a public bootstrap/relay node, and
``p2pstack connect PEER_ID --json`` for every dialer x target pair after the targets sat
idle past the routers' UDP mapping timeout.

Set-up (``tests/netlab/lab.py``; root, network namespaces, nftables, coturn):

* one public host runs the bootstrap/relay node: ``p2pstack node --relay-service full``;
* for each of the five kinds (``none`` = a public host, then full cone, restricted cone,
  port-restricted cone, symmetric) two hosts, each behind a router of its own: the
  *dialer* of that row and the *target* of that column (so symmetric <-> symmetric is two
  nodes behind two symmetric NATs, as in the wild). Each runs
  ``p2pstack node --bootstrap B --stun COTURN --keepalive K --no-mdns --no-tls``, and
  the NATed ones ``--relay B`` (what the README tells a user behind a NAT to do);
* every router forgets an idle UDP mapping after ``mapping_timeout`` seconds (the
  test and the benchmark use 10: conntrack's ``nf_conntrack_udp_timeout`` and
  ``..._stream`` in the router's namespace, and the cone routers' inbound sets),
  instead of the kernel's 30/120 s, so the idle period costs seconds; the nodes'
  ``--keepalive`` is scaled with it (default 5 s, the node's minimum; its default 25 s
  is below the 30 s of real routers);
* ``--no-mdns``: the lab's public hosts share one bridge, which would make them LAN
  peers of each other; ``--no-tls``: the routers translate UDP only.

Then: every node has published its announcement and the bootstrap node's ``lookup``
returns what it announces (its relayed address included), every NATed node holds its
reservation; the whole lab idles at least ``idle`` seconds (default ``mapping_timeout +
5``) with no traffic but the nodes' own (keepalives, QUIC keep-alives, DHT); then the 25
connects run at once (``rounds``: in 5 rounds of a Latin square, no node in two connects
at a time), each the CLI a user types, inside the dialer's namespace, through the
running dialer node's control socket. The 25 CLI processes start during the idle period
and wait for their cue (``cli_on_cue.py``): importing the CLI costs ~0.5 s of CPU each,
which would otherwise compete with the connects on a 2-core machine.

Per pair: reachable (exit 0 and the echo came back), ``path`` (direct | punched |
relayed), ``first_byte_ms`` (connect to the first echo reply), ``upgrade_ms``, the
``holepunch`` outcome, and on failure the CLI's error line.

    sudo python3 benchmarks/netmatrix.py     # this matrix and its baseline, tables

``traversal=False`` is that baseline: the same nodes with ``--keepalive 0
--no-hole-punch`` and no ``--relay`` (issue 9's keepalives, relay fallback and hole
punching off; AutoNAT and the NAT report stay, they cannot be turned off).
``birthday=False``: the nodes run ``--no-birthday`` (the matrix as it was before the
birthday technique: port-restricted cone <-> symmetric relayed too).

Everything the run creates (namespaces ``<prefix>*``, default ``p2ps-<pid>-``; the test
and the benchmark use ``p2ps-<pid>-nm-``; processes) is removed by :meth:`close`, which
callers run in ``finally``; a run killed outright leaves namespaces that the next run's
``sweep_stale`` removes (the processes die with their parent: ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlab.lab import NAT_KINDS, Lab, LabError, Site, _die_with_parent
from stack.base.errors import StackError
from stack.node.control import ControlClient

__all__ = ["NetMatrix", "Pair", "KIND_LABELS", "INFEASIBLE", "BIRTHDAY", "markdown"]

REPO = Path(__file__).resolve().parents[2]
CUE = Path(__file__).with_name("cli_on_cue.py")
PORT = 39001
KIND_LABELS = {"full-cone": "full cone", "restricted-cone": "restricted",
               "port-restricted-cone": "port-restr.", "symmetric": "symmetric",
               "none": "public"}
#: short names for data directories (a control socket path has at most 107 bytes)
SHORT = {"full-cone": "fc", "restricted-cone": "rc", "port-restricted-cone": "prc",
         "symmetric": "sym", "none": "pub"}
#: the issue's column order
KINDS = ("full-cone", "restricted-cone", "port-restricted-cone", "symmetric", "none")
#: pairs no punch of ours can open (README: no port is predictable on either side; no
#: TURN in this lab): relayed
INFEASIBLE = frozenset({("symmetric", "symmetric")})
#: pairs only the birthday technique opens (relayed with ``birthday=False``)
BIRTHDAY = frozenset({("port-restricted-cone", "symmetric"),
                      ("symmetric", "port-restricted-cone")})
assert set(KINDS) == set(NAT_KINDS)


@dataclass
class Member:
    """One ``p2pstack node`` of the matrix."""

    name: str
    kind: str
    site: Site
    data: Path
    proc: subprocess.Popen[str] | None = None
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)
    up_s: float = 0.0     #: seconds from the matrix's start to its first line (started)
    ready_s: float = 0.0  #: ... to ready (joined, published, findable, reserved)


@dataclass
class Pair:
    """One connect: dialer row, target column, what the CLI said."""

    dialer: str
    target: str
    reachable: bool
    path: str | None
    first_byte_ms: float | None
    upgrade_ms: float | None
    holepunch: str | None
    wall_ms: float
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class NetMatrix:
    """Build with :meth:`start`, measure with :meth:`run_pairs`, always :meth:`close`."""

    def __init__(self, workdir: Path, *, mapping_timeout: int = 15, keepalive: float = 5.0,
                 connect_timeout: float = 20.0, ready_timeout: float = 120.0,
                 prefix: str | None = None, traversal: bool = True,
                 birthday: bool = True) -> None:
        if not keepalive < mapping_timeout:
            raise ValueError("the keepalive must come before the mapping timeout")
        self.workdir = workdir
        self.mapping_timeout = mapping_timeout
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.ready_timeout = ready_timeout
        self.traversal = traversal
        self.birthday = birthday
        self.lab = Lab(workdir / "lab", prefix=prefix, mapping_timeout=mapping_timeout)
        self.boot: Member | None = None
        self.dialers: dict[str, Member] = {}
        self.targets: dict[str, Member] = {}
        self.idled_s = 0.0
        #: (seconds since start, node, what it lacked): each change while getting ready
        self.trace: list[tuple[float, str, str]] = []
        self.t0 = time.monotonic()

    # -- set-up -------------------------------------------------------------------------

    def start(self) -> None:
        """The lab, the bootstrap/relay node, then the ten nodes (started together), and
        wait until each is joined, published, findable and (NATed) holds its reservation."""
        self.t0 = time.monotonic()
        (self.workdir / "lab").mkdir(parents=True, exist_ok=True)
        self.lab.start()
        self.boot = self._member("boot", "none")
        self._launch(self.boot, "--relay-service", "full")
        self._await_first_line(self.boot)
        boot_addr = f"/ip4/{self.boot.site.public_ip}/udp/{PORT}/quic-v1/p2p/{self.boot.peer_id}"
        for role, table in (("dialer", self.dialers), ("target", self.targets)):
            for kind in KINDS:
                table[kind] = self._member(f"{role[0]}-{SHORT[kind]}", kind)
        stun = "{}:{}".format(*self.lab.stun_primary)
        members = self.members()[1:]
        for m in members:
            if not self.traversal:
                extra = ["--keepalive", "0", "--no-hole-punch"]
            else:
                extra = ["--keepalive", f"{self.keepalive:g}"]
                extra += ["--relay", boot_addr] if m.site.nat else []
                extra += [] if self.birthday else ["--no-birthday"]
            self._launch(m, "--bootstrap", boot_addr, "--stun", stun, *extra)
        for m in members:
            self._await_first_line(m)
        self._await_ready(members)

    def members(self) -> list[Member]:
        assert self.boot is not None
        return [self.boot, *self.dialers.values(), *self.targets.values()]

    def _member(self, name: str, kind: str) -> Member:
        return Member(name, kind, self.lab.add_site(kind), self.workdir / name)

    def _launch(self, m: Member, *args: str) -> None:
        m.data.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / f"{m.name}.log").open("w")
        try:
            m.proc = subprocess.Popen(
                ["ip", "netns", "exec", m.site.host_ns, sys.executable, "-m", "stack.cli",
                 "--data-dir", str(m.data), "--log-json", "node",
                 "--listen", f"0.0.0.0:{PORT}", "--no-tls", "--no-mdns", "--json", *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True,
                cwd=REPO, env=_env(), preexec_fn=_die_with_parent)
        finally:
            log.close()

    def _await_first_line(self, m: Member) -> None:
        assert m.proc is not None and m.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(m.proc.stdout, selectors.EVENT_READ)
            line = m.proc.stdout.readline() if sel.select(self.ready_timeout) else ""
        if not line:
            raise LabError(f"{m.name} did not start: {self.log_tail(m)}")
        first = json.loads(line)
        m.peer_id, m.addrs = first["peer_id"], first["addrs"]
        m.up_s = round(time.monotonic() - self.t0, 2)

    def _await_ready(self, members: list[Member]) -> None:
        """Poll the nodes' control sockets (no fixed wait) until every one is ready."""
        deadline = time.monotonic() + self.ready_timeout
        waiting = {m.name: m for m in members}
        why: dict[str, str] = {}
        while waiting:
            for name, m in list(waiting.items()):
                if (reason := self._not_ready(m)) is None:
                    del waiting[name]
                    m.ready_s = round(time.monotonic() - self.t0, 2)
                elif why.get(name) != reason:
                    why[name] = reason
                    self.trace.append((round(time.monotonic() - self.t0, 2), name, reason))
            if waiting and time.monotonic() > deadline:
                raise LabError("not ready within "
                               f"{self.ready_timeout:g}s: "
                               + "; ".join(f"{n}: {why[n]}" for n in waiting))
            if waiting:
                time.sleep(0.25)  # a poll interval, not a wait for a condition

    def _not_ready(self, m: Member) -> str | None:
        """None when ``m`` is ready, else what it still lacks."""
        assert m.proc is not None and self.boot is not None
        if m.proc.poll() is not None:
            raise LabError(f"{m.name} exited {m.proc.returncode}: {self.log_tail(m)}")
        status = self.call(m, "status", {})
        if status["nat"]["behaviour"] is None:
            return "no NAT report yet"
        if not status["dht"]["published_seq"]:
            return "not published yet"
        if self.traversal and m.site.nat and not status["relay"]["reservations"]:
            return "no relay reservation yet"
        try:
            found = self.call(self.boot, "lookup", {"peer_id": m.peer_id, "timeout": 5.0})
        except StackError as exc:  # not found (yet) is a reason to wait
            return f"lookup: {exc}"
        if sorted(found["addrs"]) != sorted(status["announced"]):
            return f"the DHT has {found['addrs']}, it announces {status['announced']}"
        return None

    def call(self, m: Member, method: str, params: dict[str, Any],
             timeout: float = 10.0) -> dict[str, Any]:
        """A control-API call to ``m``'s node (for set-up and status; the measured
        connects go through the CLI)."""
        client = ControlClient.open(m.data)
        if client is None:
            raise LabError(f"{m.name}: no node serves {m.data}")
        try:
            return client.call(method, params, timeout=timeout)
        finally:
            client.close()

    # -- measurement --------------------------------------------------------------------

    def connect(self, dialer: str, target: str) -> Pair:
        """``p2pstack connect TARGET_ID --json`` through the running dialer node, now."""
        return self.run_pairs(pairs=[(dialer, target)])[0]

    def _spawn_connect(self, dialer: str, target: str) -> subprocess.Popen[str]:
        """The dialer's ``p2pstack connect TARGET_ID --json``, started in its namespace,
        waiting for its cue (``cli_on_cue.py``)."""
        d, t = self.dialers[dialer], self.targets[target]
        argv = ["ip", "netns", "exec", d.site.host_ns, sys.executable, str(CUE),
                "--data-dir", str(d.data), "connect", t.peer_id, "--json",
                "--timeout", f"{self.connect_timeout:g}", "--message", f"{dialer} -> {target}"]
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env(),
                                preexec_fn=_die_with_parent)

    def run_pairs(self, rounds: bool = False, idle: float | None = 0.0,
                  pairs: list[tuple[str, str]] | None = None) -> list[Pair]:
        """Every dialer x target pair (or ``pairs``): the CLI processes are started,
        ``idle`` seconds pass (None: the mapping timeout + 5) with no traffic but the
        nodes' own, so that every router mapping only a connect would use has timed
        out, and every process has imported the CLI; then they are cued.
        By default all at once (each node dials 5 targets and is dialed by 5 dialers at
        the same time); with ``rounds``, 5 rounds of a Latin square (round r pairs dialer
        i with target (i + r) mod 5: no node dials or is dialed twice at a time)."""
        n = len(KINDS)
        if pairs is not None:
            schedule = [pairs]
        else:
            schedule = [[(KINDS[i], KINDS[(i + r) % n]) for i in range(n)] for r in range(n)]
            if not rounds:
                schedule = [[pair for batch in schedule for pair in batch]]
        idle = self.mapping_timeout + 5.0 if idle is None else idle
        started = time.monotonic()
        out: list[Pair] = []
        for batch in schedule:
            procs = [self._spawn_connect(d, t) for d, t in batch]
            try:
                for proc in procs:  # imported: each says so before it waits
                    assert proc.stdout is not None
                    if proc.stdout.readline() != "ready\n":
                        proc.kill()
                        raise LabError(f"the CLI did not start: {proc.communicate()[1][-2000:]}")
                if (left := idle - (time.monotonic() - started)) > 0:
                    time.sleep(left)  # the idle period is what is tested, not a wait
                self.idled_s = time.monotonic() - started
                out += self._cue(batch, procs)
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            idle = 0.0
        order = {k: i for i, k in enumerate(KINDS)}
        return sorted(out, key=lambda p: (order[p.dialer], order[p.target]))

    def _cue(self, batch: list[tuple[str, str]],
             procs: list[subprocess.Popen[str]]) -> list[Pair]:
        """Release ``procs`` together and read what each printed."""
        cued = time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

        def finish(job: tuple[tuple[str, str], subprocess.Popen[str]]) -> Pair:
            (dialer, target), proc = job
            try:
                stdout, stderr = proc.communicate(timeout=self.connect_timeout + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return Pair(dialer, target, False, None, None, None, None,
                            round((time.monotonic() - cued) * 1000, 1), "the CLI did not return")
            return self._pair(dialer, target, proc.returncode, stdout, stderr,
                              round((time.monotonic() - cued) * 1000, 1))

        with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
            return list(pool.map(finish, zip(batch, procs, strict=True)))

    def _pair(self, dialer: str, target: str, code: int, stdout: str, stderr: str,
              wall: float) -> Pair:
        if code != 0:
            lines = stderr.strip().splitlines()
            return Pair(dialer, target, False, None, None, None, None, wall,
                        lines[-1] if lines else f"exit {code}")
        out = json.loads(stdout)
        ok = (out["reply"] == f"{dialer} -> {target}"
              and out["peer_id"] == self.targets[target].peer_id)
        return Pair(dialer, target, ok, out["path"], out["first_byte_ms"],
                    out.get("upgrade_ms"), out.get("holepunch"), wall,
                    "" if ok else f"wrong reply or peer: {out}")

    # -- reporting and tear-down --------------------------------------------------------

    def log_tail(self, m: Member, lines: int = 15) -> str:
        path = self.workdir / f"{m.name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL), then the lab. Idempotent."""
        procs = [m.proc for m in (self.members() if self.boot else []) if m.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.lab.close()


def _env() -> dict[str, str]:
    """The caller's environment with this tree first on the path (not an installed copy)."""
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{path}" if path else str(REPO))


def cell(p: Pair) -> str:
    """``path first-byte-ms``, and ``/ direct-path-ms`` after an upgrade."""
    if not p.reachable:
        return "**fail**"
    ms = f"{p.first_byte_ms:.0f}" if p.first_byte_ms is not None else "?"
    up = f" / {p.upgrade_ms:.0f}" if p.upgrade_ms is not None else ""
    return f"{p.path} {ms}{up}"


def markdown(pairs: list[Pair]) -> str:
    """The issue's table: dialer rows x target columns; each cell the path, the ms from
    connect to the first echo byte and, after an upgrade, to the direct path."""
    by = {(p.dialer, p.target): p for p in pairs}
    head = "| dialer \\ target | " + " | ".join(KIND_LABELS[k] for k in KINDS) + " |"
    rows = [head, "|---" * (len(KINDS) + 1) + "|"]
    for d in KINDS:
        rows.append(f"| {KIND_LABELS[d]} | "
                    + " | ".join(cell(by[(d, t)]) for t in KINDS) + " |")
    return "\n".join(rows)


def summary(pairs: list[Pair]) -> dict[str, int]:
    return {"pairs": len(pairs), "reachable": sum(p.reachable for p in pairs),
            "direct": sum(p.reachable and p.path in ("direct", "punched") for p in pairs),
            "relayed": sum(p.reachable and p.path == "relayed" for p in pairs)}

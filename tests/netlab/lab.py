"""A real-NAT lab on this machine: network namespaces, a bridge as the internet, nftables
routers, coturn as the RFC 5780 STUN server (DESIGN.md section 7, tier 5; issue 3 section 5).

Topology (every name starts with this run's prefix ``p2ps-<pid>-``, so parallel or aborted
runs never collide)::

    <prefix>inet     bridge br0 = "the internet", 203.0.113.1/24; coturn listens on
                     203.0.113.2 and 203.0.113.3 (RFC 5780 needs two addresses)
    <prefix>r<i>     a router: wan 203.0.113.(10+i)/24 on br0, lan 10.<i>.0.1/24, nftables NAT
    <prefix>h<i>     a host: 10.<i>.0.2/24 behind router i, or for kind "none" a public
                     203.0.113.(100+i)/24 straight on br0
    <prefix>h<i>-<j> with ``add_lan``: host j of a home network, 10.<i>.0.(1+j)/24, on a
                     bridge ``lan`` inside router i (one LAN segment, multicast included)

Only documentation-range public addresses are used, and private ones only inside
namespaces this lab created; nothing is configured on the machine's own interfaces.

NAT kinds (the names the simulator shares), as RFC 4787 mapping + filtering:

    none                  no router; the host's address is public          (nat: false)
    full-cone             EIM + EIF: masquerade keeps the port, a dnat rule forwards any
                          inbound datagram for a mapped port to the host, hairpins
    restricted-cone       EIM + ADF: as full cone, but inbound is forwarded only from an IP
                          the host's port has sent to (nft set ``contacted``), hairpins
    port-restricted-cone  EIM + APDF: plain masquerade; conntrack admits replies only
    symmetric             APDM + APDF: ``masquerade fully-random`` (a new random port per
                          destination)

Facts that make the kernel behave like a real router (learnt the hard way):
- a router drops unsolicited inbound datagrams (input chain) instead of answering ICMP
  port-unreachable. Dropping before conntrack confirms the entry also keeps the stray
  packet from leaving a conntrack entry behind, which would otherwise make a later
  outbound flow to that peer clash and get a new port (a fake address-dependent mapping).
- ``net.bridge.bridge-nf-call-iptables`` lets bridged traffic through netfilter and breaks
  hairpinning; it is set to 0 in every lab namespace where the sysctl exists.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NAT_KINDS", "Lab", "Site", "LabError", "skip_reason", "sweep", "sweep_stale",
           "run_prefix", "STUN_PROBE"]

NAT_KINDS = ("none", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric")
#: kinds whose router forwards a host's datagram to its own public address back inside
HAIRPIN_KINDS = frozenset({"full-cone", "restricted-cone"})

NS_ROOT = "p2ps-"
STUN_PRIMARY = "203.0.113.2"
STUN_ALTERNATE = "203.0.113.3"
STUN_PORT = 3478
STUN_ALT_PORT = 3479
#: seconds a router keeps an idle UDP mapping by default (RFC 4787 REQ-5: at least 120)
MAPPING_TIMEOUT = 120
#: the lab's own STUN check (aioice codec), run inside a namespace as a script
STUN_PROBE = Path(__file__).with_name("stunprobe.py")

_PR_SET_PDEATHSIG = 1
_BRIDGE_NF = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables")


class LabError(RuntimeError):
    """A lab set-up step failed; the message carries the command and its stderr."""


def run_prefix(pid: int | None = None) -> str:
    """The namespace-name prefix of one test run: ``p2ps-<pid>-``."""
    return f"{NS_ROOT}{os.getpid() if pid is None else pid}-"


def skip_reason() -> str | None:
    """Why the lab cannot run here (None when it can): root, ``ip netns``, nft, coturn."""
    if os.geteuid() != 0:
        return "the real-NAT lab needs root (network namespaces, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("turnserver", "coturn")):
        if shutil.which(tool) is None:
            return (f"the real-NAT lab needs `{tool}` "
                    f"(Debian package {package}; .ci/run installs it)")
    probe = f"{run_prefix()}probe"
    try:
        _sh("ip", "netns", "add", probe)
    except LabError as exc:
        return f"`ip netns` does not work here: {exc}"
    try:
        _sh("ip", "netns", "exec", probe, "nft", "list", "ruleset")
    except LabError as exc:
        return f"nftables does not work inside a network namespace here: {exc}"
    finally:
        _sh("ip", "netns", "delete", probe, check=False)
    return None


def _sh(*argv: str, check: bool = True, timeout: float = 10.0,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from exc
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Kill the child when the test process dies, so an aborted run leaves no coturn."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def list_namespaces() -> list[str]:
    out = _sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_namespace_processes(ns: str) -> None:
    pids = _sh("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def sweep(prefix: str) -> list[str]:
    """Kill every process in, and delete, each namespace named ``prefix*``; return them."""
    swept = [ns for ns in list_namespaces() if ns.startswith(prefix)]
    for ns in swept:
        _kill_namespace_processes(ns)
        _sh("ip", "netns", "delete", ns, check=False)
    return swept


def sweep_stale() -> list[str]:
    """Sweep the namespaces of earlier runs whose test process no longer exists."""
    stale: list[str] = []
    for ns in list_namespaces():
        parts = ns.split("-")
        if ns.startswith(NS_ROOT) and len(parts) > 2 and parts[1].isdigit():
            pid = int(parts[1])
            if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
                stale += sweep(run_prefix(pid))
    return stale


@dataclass(frozen=True)
class Site:
    """One host on the lab internet, behind a router of ``kind`` (or none)."""

    kind: str
    host_ns: str
    router_ns: str | None
    host_ip: str
    public_ip: str  #: the router's wan address, or the host's own for kind "none"

    @property
    def nat(self) -> bool:
        return self.kind != "none"

    @property
    def hairpin(self) -> bool:
        return self.kind in HAIRPIN_KINDS


def _ruleset(kind: str, lan: str, host_ip: str, public_ip: str,
             mapping_timeout: int = MAPPING_TIMEOUT) -> str:
    """The router's nftables ruleset for one NAT kind (see the module docstring); a cone
    router's inbound rules forget a mapped port ``mapping_timeout`` seconds after the
    host last sent from it."""
    cone = kind in ("full-cone", "restricted-cone")
    masquerade = "masquerade fully-random" if kind == "symmetric" else "masquerade"
    sets = forward_updates = ""
    inbound = ""
    if cone:
        # A mapped port stays open for two minutes after the host last sent from it.
        sets += ("  set mapped { type inet_service; flags timeout; "
                 f"timeout {mapping_timeout}s; }}\n")
        forward_updates += "    iifname \"lan\" oifname \"wan\" update @mapped { udp sport }\n"
        # Hairpin: the host sending to its own public address comes back inside.
        inbound += (f"    iifname \"lan\" ip daddr {public_ip} udp dport @mapped "
                    f"dnat to {host_ip}\n")
    if kind == "full-cone":
        inbound += f"    iifname \"wan\" udp dport @mapped dnat to {host_ip}\n"
    if kind == "restricted-cone":
        # Per mapping (the host's port, kept by masquerade), the IPs it has sent to.
        sets += ("  set contacted { type inet_service . ipv4_addr; flags timeout; "
                 f"timeout {mapping_timeout}s; }}\n")
        forward_updates += ("    iifname \"lan\" oifname \"wan\" "
                            "update @contacted { udp sport . ip daddr }\n")
        inbound += (f"    iifname \"wan\" udp dport . ip saddr @contacted "
                    f"dnat to {host_ip}\n")
    hairpin_snat = (f"    oifname \"lan\" ip saddr {lan} ct status dnat snat to {public_ip}\n"
                    if cone else "")
    return (
        "table ip lab {\n"
        f"{sets}"
        "  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        f"{inbound}"
        "  }\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    oifname \"wan\" {masquerade}\n"
        f"{hairpin_snat}"
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy drop;\n"
        f"{forward_updates}"
        "    ct state established,related accept\n"
        "    iifname \"lan\" accept\n"
        "    ct status dnat accept\n"
        "  }\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy drop;\n"
        "    iifname \"lo\" accept\n"
        "    ct state established,related accept\n"
        "    iifname \"lan\" accept\n"
        "  }\n"
        "}\n")


class Lab:
    """The lab of one test run. Build with :meth:`start`, add sites, always :meth:`close`.

    ``workdir`` holds coturn's log and database; ``mapping_timeout`` shortens every
    router's UDP mapping timeout (see ``__init__``). Every method raises
    :class:`LabError` with the failing command on a set-up failure.
    """

    def __init__(self, workdir: Path, prefix: str | None = None,
                 mapping_timeout: int | None = None) -> None:
        self.prefix = prefix or run_prefix()
        #: None: the kernel's conntrack UDP timeouts (30 s unreplied, 120 s for a flow
        #: with replies) and 120 s for the cone routers' inbound sets. A number: every
        #: router forgets an idle UDP mapping after that many seconds, both in conntrack
        #: (``nf_conntrack_udp_timeout`` and ``..._stream``, per namespace) and in those
        #: sets, so a test can idle past it in seconds instead of minutes.
        self.mapping_timeout = mapping_timeout
        self.workdir = workdir
        self.inet = f"{self.prefix}inet"
        self.stun_primary = (STUN_PRIMARY, STUN_PORT)
        self.stun_alternate = (STUN_ALTERNATE, STUN_ALT_PORT)
        self.sites: list[Site] = []
        self._turnserver: subprocess.Popen[bytes] | None = None

    # -- set-up -------------------------------------------------------------------------

    def start(self, ready_timeout: float = 10.0) -> None:
        """Create the internet namespace and bridge, start coturn and wait until it answers."""
        self._add_namespace(self.inet)
        self._ip(self.inet, "link", "add", "br0", "type", "bridge")
        self._ip(self.inet, "addr", "add", "203.0.113.1/24", "dev", "br0")
        for ip in (STUN_PRIMARY, STUN_ALTERNATE):
            self._ip(self.inet, "addr", "add", f"{ip}/24", "dev", "br0")
        self._ip(self.inet, "link", "set", "br0", "up")
        self._start_turnserver()
        self.wait_stun_ready(ready_timeout)

    def _start_turnserver(self) -> None:
        log = self.workdir / "turnserver.log"
        argv = ["ip", "netns", "exec", self.inet, "turnserver", "-n",
                "--listening-ip", STUN_PRIMARY, "--listening-ip", STUN_ALTERNATE,
                "--listening-port", str(STUN_PORT), "--alt-listening-port", str(STUN_ALT_PORT),
                "--stun-only", "--no-tls", "--no-dtls", "--no-tcp", "--no-cli",
                "--relay-threads", "1",
                "--log-file", str(log), "--simple-log", "--no-stdout-log",
                "--pidfile", str(self.workdir / "turnserver.pid"),
                "--db", str(self.workdir / "turndb")]
        self._turnserver = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL,
                                            preexec_fn=_die_with_parent)

    def wait_stun_ready(self, timeout: float) -> None:
        """Poll both STUN addresses with binding requests until they answer (no fixed sleep)."""
        for ip in (STUN_PRIMARY, STUN_ALTERNATE):
            result = self.run(self.inet, [sys.executable, str(STUN_PROBE), "ready",
                                          f"{ip}:{STUN_PORT}", "--timeout", str(timeout)],
                              timeout=timeout + 5)
            if result.returncode != 0:
                exited = self._turnserver is not None and self._turnserver.poll() is not None
                raise LabError(f"coturn did not answer at {ip}:{STUN_PORT} within {timeout}s"
                               f"{' (it exited)' if exited else ''}: {result.stderr.strip()}; "
                               f"log: {self.turnserver_log()[-2000:]}")

    def turnserver_log(self) -> str:
        path = self.workdir / "turnserver.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def add_site(self, kind: str) -> Site:
        """A host behind a fresh router of ``kind`` (one of :data:`NAT_KINDS`)."""
        if kind not in NAT_KINDS:
            raise ValueError(f"unknown NAT kind {kind!r}; expected one of {NAT_KINDS}")
        i = len(self.sites) + 1
        host = f"{self.prefix}h{i}"
        self._add_namespace(host)
        if kind == "none":
            public = f"203.0.113.{100 + i}"
            self._veth(host, "eth0", self.inet, f"h{i}")
            self._ip(host, "addr", "add", f"{public}/24", "dev", "eth0")
            self._ip(host, "link", "set", "eth0", "up")
            site = Site(kind, host, None, public, public)
        else:
            router = f"{self.prefix}r{i}"
            public, lan, gw, host_ip = (f"203.0.113.{10 + i}", f"10.{i}.0.0/24",
                                        f"10.{i}.0.1", f"10.{i}.0.2")
            self._add_router_namespace(router)
            self._veth(router, "wan", self.inet, f"r{i}")
            self._veth(router, "lan", host, "eth0")
            self._ip(router, "addr", "add", f"{public}/24", "dev", "wan")
            self._ip(router, "addr", "add", f"{gw}/24", "dev", "lan")
            self._ip(host, "addr", "add", f"{host_ip}/24", "dev", "eth0")
            for ns, dev in ((router, "wan"), (router, "lan"), (host, "eth0")):
                self._ip(ns, "link", "set", dev, "up")
            self._ip(host, "route", "add", "default", "via", gw)
            _sh("ip", "netns", "exec", router, "nft", "-f", "-",
                stdin=_ruleset(kind, lan, host_ip, public, self._set_timeout))
            site = Site(kind, host, router, host_ip, public)
        self.sites.append(site)
        return site

    def add_lan(self, kind: str, hosts: int = 2) -> list[Site]:
        """``hosts`` hosts on one LAN segment behind one router of ``kind``: a bridge
        named ``lan`` in the router's namespace (so its nftables rules apply as for one
        host), each host a veth port on it. Only kinds without inbound dnat rules (a
        port-restricted cone or symmetric NAT, neither hairpins): those rules name one
        host. Multicast (mDNS) reaches every host of the segment and no other."""
        if kind not in ("port-restricted-cone", "symmetric"):
            raise ValueError(f"add_lan takes a NAT kind without dnat rules, not {kind!r}")
        i = len(self.sites) + 1
        router = f"{self.prefix}r{i}"
        public, lan, gw = f"203.0.113.{10 + i}", f"10.{i}.0.0/24", f"10.{i}.0.1"
        self._add_router_namespace(router)
        self._veth(router, "wan", self.inet, f"r{i}")
        self._ip(router, "link", "add", "lan", "type", "bridge")
        self._ip(router, "addr", "add", f"{public}/24", "dev", "wan")
        self._ip(router, "addr", "add", f"{gw}/24", "dev", "lan")
        for dev in ("wan", "lan"):
            self._ip(router, "link", "set", dev, "up")
        sites = []
        for j in range(1, hosts + 1):
            host, host_ip = f"{self.prefix}h{i}-{j}", f"10.{i}.0.{1 + j}"
            self._add_namespace(host)
            self._veth(router, f"p{j}", host, "eth0")
            self._ip(router, "link", "set", f"p{j}", "master", "lan")
            self._ip(router, "link", "set", f"p{j}", "up")
            self._ip(host, "addr", "add", f"{host_ip}/24", "dev", "eth0")
            self._ip(host, "link", "set", "eth0", "up")
            self._ip(host, "route", "add", "default", "via", gw)
            sites.append(Site(kind, host, router, host_ip, public))
        _sh("ip", "netns", "exec", router, "nft", "-f", "-",
            stdin=_ruleset(kind, lan, sites[0].host_ip, public, self._set_timeout))
        self.sites.extend(sites)
        return sites

    @property
    def _set_timeout(self) -> int:
        return MAPPING_TIMEOUT if self.mapping_timeout is None else self.mapping_timeout

    def _add_router_namespace(self, router: str) -> None:
        self._add_namespace(router)
        self._sysctl(router, "net.ipv4.ip_forward", "1")
        if self.mapping_timeout is not None:
            for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
                self._sysctl(router, f"net.netfilter.{key}", str(self.mapping_timeout))

    def _add_namespace(self, ns: str) -> None:
        _sh("ip", "netns", "add", ns)
        self._ip(ns, "link", "set", "lo", "up")
        for name in _BRIDGE_NF:
            self._sysctl(ns, f"net.bridge.{name}", "0", must_exist=False)

    def _veth(self, ns: str, dev: str, peer_ns: str, peer_dev: str) -> None:
        """A veth pair; a peer in the internet namespace is plugged into the bridge."""
        _sh("ip", "link", "add", dev, "netns", ns, "type", "veth",
            "peer", "name", peer_dev, "netns", peer_ns)
        if peer_ns == self.inet:
            self._ip(peer_ns, "link", "set", peer_dev, "master", "br0")
            self._ip(peer_ns, "link", "set", peer_dev, "up")

    def _sysctl(self, ns: str, key: str, value: str, must_exist: bool = True) -> None:
        # Written through /proc inside the namespace: `ip netns exec` gives the right view.
        path = "/proc/sys/" + key.replace(".", "/")
        script = f"test -e {path} || exit 3; echo {value} > {path}"
        result = _sh("ip", "netns", "exec", ns, "sh", "-c", script, check=False)
        if result.returncode == 3 and not must_exist:
            return
        if result.returncode != 0:
            raise LabError(f"sysctl {key}={value} in {ns}: {result.stderr.strip()}")

    @staticmethod
    def _ip(ns: str, *args: str) -> None:
        _sh("ip", "-n", ns, *args)

    # -- use ----------------------------------------------------------------------------

    def run(self, ns: str, argv: list[str], timeout: float = 30.0,
            env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside namespace ``ns``; the caller checks the exit code."""
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=cwd)

    def router_state(self, site: Site) -> str:
        """The router's ruleset with set contents, for a failure message."""
        if site.router_ns is None:
            return ""
        return _sh("ip", "netns", "exec", site.router_ns, "nft", "list", "ruleset",
                   check=False).stdout

    # -- tear-down ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop coturn, kill whatever runs in the lab, delete every namespace. Idempotent."""
        if self._turnserver is not None:
            if self._turnserver.poll() is None:
                self._turnserver.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._turnserver.wait(timeout=5)
            self._turnserver = None
        sweep(self.prefix)

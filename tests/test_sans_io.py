"""DESIGN.md section 2: protocol cores read no clock, sleep never and touch no socket;
time enters as ``now``. Checked on the source (AST), so a new ``time.time()`` in a core
fails here rather than in a simulation that silently mixes wall and virtual time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: module -> the class holding the core, or None for the whole module
CORES = {
    "stack/base/records.py": None,
    "stack/base/replay.py": None,
    "stack/base/port.py": None,
    "stack/transport/certs.py": None,
    "stack/transport/mux.py": None,
    "stack/base/addresses.py": None,
    "stack/base/ratelimit.py": None,
    "nat/stun/codec.py": None,
    "nat/stun/server.py": None,
    "nat/stun/transaction.py": None,
    "nat/relay/wire.py": None,
    "nat/relay/limits.py": None,
    "nat/punch/core.py": None,
    "nat/detect.py": "NatDetector",   # the module also holds its asyncio driver
    "discovery/core.py": None,
    "discovery/routing.py": None,
    "discovery/lookup.py": None,
    "discovery/records.py": None,
    "discovery/wire.py": None,
    "discovery/guard.py": None,
    "discovery/lan.py": None,
    "rooms/names.py": None,
    "rooms/invites.py": None,
    "rooms/signed.py": None,
    "rooms/membership.py": None,
    "rooms/admission.py": None,
    "rooms/intro.py": None,
    "rooms/roster.py": None,
    "rooms/graph.py": None,
    "rooms/kick.py": None,
    "rooms/pin.py": None,
    "rooms/record.py": None,
}
BANNED_MODULES = {"time", "asyncio", "selectors", "threading", "stack.base.clock"}
BANNED_NAMES = {"sleep", "monotonic", "perf_counter", "utcnow", "today",
                "get_running_loop", "get_event_loop", "call_later", "call_at",
                "sendto", "recvfrom", "add_reader", "create_datagram_endpoint",
                "UdpNetwork", "UdpEndpoint", "SystemClock"}  # stack.base.net's types are fine
BANNED_CALLS = {("datetime", "now"), ("socket", "socket"), ("loop", "time"), ("time", "time")}


def violations(tree: ast.AST, whole_module: bool) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if whole_module and isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if a.name.split(".")[0] in BANNED_MODULES or a.name in BANNED_MODULES]
        elif whole_module and isinstance(node, ast.ImportFrom) and node.module:
            if node.module in BANNED_MODULES or node.module.split(".")[0] in BANNED_MODULES:
                found.append(f"from {node.module} import ...")
            found += [f"from {node.module} import {a.name}" for a in node.names
                      if a.name in BANNED_NAMES]
        elif isinstance(node, ast.Attribute):
            if node.attr in BANNED_NAMES:
                found.append(f".{node.attr} (line {node.lineno})")
            if isinstance(node.value, ast.Name) and (node.value.id, node.attr) in BANNED_CALLS:
                found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
        elif isinstance(node, ast.Name) and node.id in BANNED_NAMES:
            found.append(f"{node.id} (line {node.lineno})")
    return found


@pytest.mark.parametrize("path, cls", CORES.items())
def test_core_reads_no_clock_and_touches_no_socket(path: str, cls: str | None) -> None:
    tree: ast.AST = ast.parse((ROOT / path).read_text())
    if cls is not None:
        tree = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
    assert violations(tree, cls is None) == [], path


@pytest.mark.parametrize("snippet", [
    "import time\n", "from asyncio import sleep\n", "import stack.base.clock\n",
    "def f(x):\n    return datetime.now()\n", "def f(s):\n    s.sendto(b'', ('h', 1))\n",
    "def f(loop):\n    return loop.time()\n", "from stack.base.net import UdpNetwork\n",
])
def test_the_checker_catches_each_kind(snippet: str) -> None:
    assert violations(ast.parse(snippet), True)

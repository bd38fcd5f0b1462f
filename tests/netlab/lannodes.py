"""``p2pstack node`` processes in lab namespaces, for the LAN tests (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from netlab.lab import Lab, Site

REPO = Path(__file__).resolve().parents[2]


class Nodes:
    """``p2pstack node`` processes in lab namespaces, each killed at the end."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.procs: list[subprocess.Popen[str]] = []

    def env(self, name: str) -> dict[str, str]:
        return dict(os.environ, P2PSTACK_HOME=str(self.tmp / name))

    def start(self, site: Site, name: str, *extra: str) -> dict[str, Any]:
        (first,) = self.start_all((site, name, *extra))
        return first

    def start_all(self, *nodes: tuple[Any, ...]) -> list[dict[str, Any]]:
        """Start each ``(site, name, *extra)`` node at once (their start-ups overlap),
        then return each one's first line (peer id, addresses), in order."""
        started = []
        for site, name, *extra in nodes:
            with open(self.tmp / f"{name}.log", "w") as log:  # the child keeps its own copy
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", site.host_ns, sys.executable, "-m", "stack.cli",
                     "node", "--json", "--listen", "0.0.0.0:39001", *extra],
                    stdout=subprocess.PIPE, stderr=log, text=True, env=self.env(name),
                    cwd=REPO)
            self.procs.append(proc)
            started.append((name, proc))
        out = []
        for name, proc in started:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, (self.tmp / f"{name}.log").read_text()[-3000:]
            out.append(json.loads(line))
        return out

    def cli(self, site: Site, name: str, *args: str, timeout: float = 30) -> dict[str, Any]:
        result = self.lab.run(site.host_ns, [sys.executable, "-m", "stack.cli", *args,
                                             "--json"],
                              env=self.env(name), cwd=REPO, timeout=timeout)
        assert result.returncode == 0, (result.stderr, self.log(name))
        return json.loads(result.stdout)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()[-3000:]

    def discover_until(self, site: Site, name: str, peer_id: str,
                       deadline: float = 20.0) -> dict[str, Any]:
        """Run ``discover`` (1 s windows) until it lists ``peer_id`` or the deadline."""
        end = time.monotonic() + deadline
        while True:
            out = self.cli(site, name, "discover", "--timeout", "1")
            if any(p["peer_id"] == peer_id for p in out["peers"]) or time.monotonic() > end:
                return out

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def ids(out: dict[str, Any]) -> set[str]:
    return {p["peer_id"] for p in out["peers"]}

"""The running node's control API: a Unix socket in its data directory.

``p2pstack connect``, ``ping``, ``lookup`` and ``status`` talk to the node a user runs
through it (the way ``tailscale`` talks to ``tailscaled``), so they use that node's
port, NAT mapping, connections and DHT instead of starting a throwaway node.

Access: the socket is ``DATA_DIR/control.sock``, created with mode 0600 inside the data
directory; the server also checks the connecting process's uid (``SO_PEERCRED``) and
refuses any uid but its own. A socket file left by a killed node (nobody accepts on it)
is replaced at start; a socket some live node still serves is ``ControlSocketInUse``.

Wire: one request per connection, one JSON object per line (UTF-8, at most
``MAX_LINE`` bytes); the server answers with one line and closes::

    -> {"id": 1, "method": "ping", "params": {"target": "...", "count": 3}}
    <- {"id": 1, "result": {...}}
    <- {"id": 1, "error": {"kind": "DialFailed", "message": "...", "usage": false}}

``kind`` is the name of the node's error class; ``usage`` is true for a usage error
(the CLI's exit 2). A client that disconnects before the answer cancels the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from stack.base.errors import LocalError, StackError, UsageError
from stack.node.events import ControlOutcome, ControlRequest, EventBus

__all__ = ["ControlServer", "ControlClient", "ControlError", "ControlSocketInUse",
           "Method", "socket_path", "SOCKET_NAME", "MAX_LINE"]

log = structlog.get_logger("p2pstack.control")

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024
SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes, one for the terminating NUL

Method = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlSocketInUse(LocalError):
    """Another live node already serves this data directory's control socket."""


class ControlError(StackError):
    """A named error the running node answered with; ``kind`` is its class name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / SOCKET_NAME


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise LocalError(f"control socket path {path} is longer than the {SUN_PATH_MAX} "
                         "bytes a Unix socket address holds; use a shorter --data-dir")


def _serves(path: Path) -> bool:
    """Does a live process accept connections on the socket at ``path``?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    finally:
        probe.close()
    return True


def _error_body(exc: BaseException) -> dict[str, Any]:
    return {"kind": type(exc).__name__, "message": str(exc) or type(exc).__name__,
            "usage": isinstance(exc, UsageError)}


class ControlServer:
    """Serves ``methods`` (name -> ``async (params) -> result``) on ``path``."""

    def __init__(self, path: Path, methods: dict[str, Method], events: EventBus) -> None:
        self.path = Path(path)
        self.methods = methods
        self._events = events
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        _check_length(self.path)
        if self.path.is_socket() or self.path.exists():
            if not self.path.is_socket():
                raise LocalError(f"{self.path} exists and is not a socket; not replacing it")
            if _serves(self.path):
                raise ControlSocketInUse(f"another node is running in {self.path.parent} "
                                         f"(it serves {self.path})")
            log.info("control.stale_socket_replaced", path=str(self.path))
            self.path.unlink()
        # umask, not chmod after bind: no moment where others could connect.
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, os.fspath(self.path),
                                                           limit=MAX_LINE)
        finally:
            os.umask(old)
        self._inode = self.path.stat().st_ino
        log.info("control.listening", path=str(self.path))

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        # Remove the socket only if it is still ours (not a successor node's).
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()

    def _done(self, method: str, outcome: ControlOutcome, error: str | None = None) -> None:
        # status is polled: a served request is a debug line, a refusal a warning
        level = {ControlOutcome.OK: "debug", ControlOutcome.CANCELLED: "info"}.get(
            outcome, "warning")
        self._events.emit(ControlRequest(method, outcome, error), level)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer.get_extra_info("socket"))
            if uid != os.getuid():
                self._done("", ControlOutcome.REFUSED, f"uid {uid}")
                return
            try:
                line = await reader.readline()
            except ValueError:  # no newline within MAX_LINE bytes
                await self._reply(writer, None, error={
                    "kind": "BadRequest", "message": f"request over {MAX_LINE} bytes",
                    "usage": True})
                return
            if line:
                await self._request(line, reader, writer)
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _request(self, line: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            await self._reply(writer, None, error={"kind": "BadRequest",
                                                   "message": f"not a JSON object: {exc}",
                                                   "usage": True})
            return
        req_id, name = request.get("id"), request.get("method")
        params = request.get("params", {})
        method = self.methods.get(name) if isinstance(name, str) else None
        if method is None or not isinstance(params, dict):
            what = (f"unknown method {name!r}" if method is None
                    else "params must be an object")
            self._done(str(name), ControlOutcome.ERROR, what)
            await self._reply(writer, req_id, error={"kind": "BadRequest", "message": what,
                                                     "usage": True})
            return
        assert isinstance(name, str)
        # One request per connection, so any read now ends with the client leaving (or
        # breaking the protocol): either way its work is cancelled, not left running.
        work = asyncio.ensure_future(method(params))
        gone = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the server itself is being stopped
            for task in (work, gone):
                task.cancel()
            await asyncio.gather(work, gone, return_exceptions=True)
        if work.cancelled():
            self._done(name, ControlOutcome.CANCELLED)
            return
        failure = work.exception()
        if failure is None:
            self._done(name, ControlOutcome.OK)
            await self._reply(writer, req_id, result=work.result())
            return
        self._done(name, ControlOutcome.ERROR, f"{type(failure).__name__}: {failure}")
        if not isinstance(failure, (StackError, OSError)):  # a bug: say so where it is seen
            log.error("control.method_failed", method=name,
                      error=f"{type(failure).__name__}: {failure}")
        await self._reply(writer, req_id, error=_error_body(failure))

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, req_id: Any, *,
                     result: Any = None, error: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"id": req_id}
        if error is not None:
            body["error"] = error
        else:
            body["result"] = result
        writer.write(json.dumps(body, sort_keys=True).encode() + b"\n")
        await writer.drain()


class ControlClient:
    """A blocking client for the CLI. ``ControlClient.open(data_dir)`` is None when no
    node serves that data directory (no socket, or a stale one)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        self._next_id = 0

    @classmethod
    def open(cls, data_dir: Path) -> ControlClient | None:
        path = socket_path(data_dir)
        if len(os.fsencode(path)) > SUN_PATH_MAX or not path.is_socket():
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            return None  # a killed node's socket: nobody serves this data directory
        except PermissionError:
            sock.close()
            raise LocalError(f"{path}: permission denied (the node runs as another "
                             "user)") from None
        return cls(sock)

    def call(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The method's result (one call per client); ``ControlError`` or ``UsageError``
        for the node's named error, ``LocalError`` when the node stops answering."""
        self._next_id += 1
        request = {"id": self._next_id, "method": method, "params": params}
        self._sock.settimeout(timeout)
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
            line = self._file.readline(MAX_LINE + 1)
        except TimeoutError:
            raise LocalError(f"the running node did not answer {method} within "
                             f"{timeout:g}s") from None
        except OSError as exc:
            raise LocalError(f"lost the running node's control socket: {exc}") from None
        if not line:
            raise LocalError("the running node closed its control socket")
        try:
            reply = json.loads(line)
            error = reply.get("error")
            if error is not None:
                kind, message, usage = error["kind"], error["message"], error.get("usage")
            else:
                result: dict[str, Any] = reply["result"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise LocalError(f"the running node's answer is unreadable: {line[:80]!r}") from None
        if error is None:
            return result
        if usage:
            raise UsageError(message)
        raise ControlError(kind, message)

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The TOFU trust store: ``trusted_peers.json`` in the data directory (seeds 000/001).

What it answers
---------------
Transports ask it before a connection is used (DESIGN.md section 5):

- ``check_peer(peer_id)``: dialing a peer id, or accepting a connection. The peer id is
  self-certifying (it contains the key), so the question is only "do we accept this
  peer?": new / verified / pending / blocked (and changed if a stored fingerprint no
  longer matches the id, which only a hand-edited file can cause).
- ``check_address(address, peer_id)``: dialing ``HOST:PORT`` (seed 000's
  ``connect 192.168.1.100:39001``). The first peer seen at an address is pinned there;
  a different key later is "changed": the seeds' warning ("Certificate changed for peer
  ..."), refused until the user re-trusts (``approve ADDRESS`` or ``approve PEER_ID``
  moves the pin to the new peer; ``untrust ADDRESS`` forgets the pin so that the next
  dial pins afresh - the seeds' "remove the old entry and reconnect").

Outcomes and policies
---------------------
========  ===========================================================  =======
outcome   when                                                          allowed
========  ===========================================================  =======
new       peer not in the store; policy ``auto`` (TOFU) pins it         yes
          trusted; policy ``manual`` records it ``pending``              no
verified  peer known and trusted (and the address pin, if any, matches) yes
changed   the address is pinned to another peer (or the stored          no
          fingerprint does not match the id)
pending   peer known, waiting for ``p2pstack trust approve``            no
blocked   peer blocked by the user                                      no
========  ===========================================================  =======

A pending peer stays pending under either policy: only the user moves it. A new peer
that arrives with ``source="invite"`` or ``"manual"`` was approved out of band (an
invite, the user), so it is trusted under both policies; only ``"tofu"`` obeys the policy.
Every outcome is a structlog event: ``peer.new``, ``peer.verified``, ``cert.changed``
(expected and received fingerprints, the seeds' wording), ``peer.pending``,
``peer.blocked``. The user's changes log ``trust.approved``, ``trust.untrusted``,
``trust.blocked``; dial-backs ``peer.reachable`` / ``peer.dialback_failed`` (seed 000).

File format (version 1)
-----------------------
The seeds' ``{"peers": {KEY: {"fingerprint", "first_seen", "last_seen"}}}`` with KEY =
the peer id (base58 text), extended; timestamps are ISO-8601 UTC as in seed 001
(``2025-01-09T15:30:00Z``, whole seconds)::

    {
      "version": 1,
      "peers": {
        "12D3KooW...": {
          "peer_id": "12D3KooW...",          # repeated, so an entry stands alone
          "fingerprint": "<sha-256 hex of the Ed25519 public key>",
          "first_seen": "2025-01-09T15:30:00Z",
          "last_seen": "2025-01-09T16:45:00Z",
          "status": "trusted" | "pending" | "blocked",
          "source": "tofu" | "manual" | "invite",
          "addresses": ["192.168.1.100:39001", ...],  # seen, most recent last, <= 16
          "reachable": null | true | false,           # last dial-back result (seed 000)
          "last_dialback": null | "<time>",
          "dialback_address": null | "<address dialled back>"
        }
      },
      "addresses": {                                  # the address-dial TOFU pins
        "192.168.1.100:39001": {
          "peer_id": "12D3KooW...",                   # first peer seen here
          "first_seen": "<time>", "last_seen": "<time>",
          "changed_to": null | "12D3KooW...",         # last different peer refused here
          "changed_at": null | "<time>"
        }
      }
    }

The file is written with one record per line (the layout above is spread out for
reading). Files in the seeds' original address-keyed form are not imported: their
fingerprints hash a TLS certificate, ours the identity key, so they could never verify;
such a file is treated as corrupt (below).

PEER arguments (``approve`` / ``untrust`` / ``block``): a ``PeerId``, its full text, or
an address string (anything with ``:`` or ``/``): a pinned address, else the one peer
seen there. ``approve`` and ``block`` accept a peer id not yet in the store (the id
carries its key, so it can be pinned before first contact); ``untrust`` of something
not in the store, and an address naming nothing, raise ``UnknownPeerError``; text that
is neither raises ``InvalidPeerId`` (a ``UsageError``).

Storage, crash and concurrency safety
-------------------------------------
Decisions are pure functions (``stack.store.trust_decisions``); the records live in a
``TrustStorage`` (``stack.store.trust_storage``): ``FileTrustStorage`` (this file) or
``MemoryTrustStorage`` (simulations, unit tests). With the file, every mutation takes
``trusted_peers.json.lock`` (``filelock``), re-reads the file, applies the change,
writes it with ``atomic_write`` (temp + fsync + rename) and releases the lock, so a crash
leaves the old or the new file and two processes never lose each other's entries.
Reads take no lock (a rename is atomic) unless the file is corrupt.

A corrupt store (not JSON, or not this schema) is never silently reset: it is renamed
to ``trusted_peers.json.corrupt-<UTC time>`` (under the lock), an error event
``trust.store_corrupt`` names both files, the path is appended to
``TrustStore.corrupt_backups`` (the CLI prints a warning from it), and loading then
CONTINUES WITH AN EMPTY STORE. Consequence, stated on purpose: under the auto policy
peers are pinned afresh on their next contact, exactly the seeds' recovery ("remove the
old entry and reconnect"); the old pins stay in the moved-aside file for inspection.

Blocking and the event loop
---------------------------
The plain methods (``check_peer``, ``approve``, ...) are synchronous: with the file
storage each does blocking file I/O (a mutation costs an fsync'd write, ~1-15 ms here).
The CLI uses them. Code on an event loop uses ``check_peer_async``,
``check_address_async``, ``record_dialback_async`` and ``get_async``: they return an
``asyncio.Future`` and never touch a file on the loop. With a blocking storage the work runs on the
store's single writer thread, which commits everything queued since its last commit
in ONE lock + re-read + write + fsync (group commit), deciding each request against
the freshly read file, in submission order. When the future completes, the decision
and the records it changed are durable (on disk, fsync'd); so a caller that acts on
a decision only after awaiting it - the Node emits ``TrustChecked`` / serves the
connection only then - never acted on a pin a ``kill -9`` can lose. A request whose
future has not completed when the process dies may be lost; nothing was reported for
it. With a non-blocking storage (memory) the future is already done on return.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from stack.base.clock import Clock, SystemClock
from stack.base.errors import UsageError
from stack.base.identity import PeerId
from stack.store.trust_decisions import (
    Observation,
    Verdict,
    apply_dialback,
    decide_address,
    decide_peer,
)
from stack.store.trust_model import (
    MAX_ADDRESSES,
    TRUST_FILE_NAME,
    AddressPin,
    AmbiguousPeerError,
    Outcome,
    Policy,
    Source,
    Status,
    TrustDecision,
    TrustEntry,
    TrustStoreLockedError,
    UnknownPeerError,
    _address_key,
    _looks_like_address,
    _replace_entry,
    _replace_pin,
    _seen,
    _source,
)
from stack.store.trust_storage import (
    LOCK_TIMEOUT,
    FileTrustStorage,
    MemoryTrustStorage,
    TrustState,
    TrustStorage,
)

__all__ = [
    "TRUST_FILE_NAME",
    "MAX_ADDRESSES",
    "TrustStore",
    "TrustEntry",
    "AddressPin",
    "TrustDecision",
    "Outcome",
    "Status",
    "Source",
    "Policy",
    "UnknownPeerError",
    "AmbiguousPeerError",
    "TrustStoreLockedError",
    "TrustStorage",
    "FileTrustStorage",
    "MemoryTrustStorage",
]

log = structlog.get_logger("stack.store.trust")
_T = TypeVar("_T")
_Op = Callable[[TrustState, float], Any]


class _Failed:
    """One queued request's exception, carried out of a group commit."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class TrustStore:
    """The trust store; see the module docstring for the rules.

    Give it either ``data_dir`` (``trusted_peers.json`` there, ``FileTrustStorage``) or
    ``storage`` (any ``TrustStorage``, e.g. ``MemoryTrustStorage()``). ``policy`` is
    ``"auto"`` (TOFU: a new peer is trusted on first use) or ``"manual"`` (a new peer is
    recorded ``pending`` until approved). ``clock`` supplies the first/last-seen times.
    ``lock_timeout`` (seconds, file only) bounds the wait for another process's update
    (then TrustStoreLockedError). Each call reads the storage afresh, so several stores
    (or processes) on one data directory see each other's changes.
    """

    def __init__(self, data_dir: Path | None = None, *, policy: str = "auto",
                 clock: Clock | None = None, lock_timeout: float = LOCK_TIMEOUT,
                 storage: TrustStorage | None = None) -> None:
        try:
            self.policy = Policy(policy)
        except ValueError:
            raise UsageError(f"trust policy must be auto or manual, not {policy!r}") from None
        self.clock: Clock = clock if clock is not None else SystemClock()
        if (data_dir is None) == (storage is None):
            raise UsageError("TrustStore needs a data_dir or a storage (one of them)")
        if storage is None:
            assert data_dir is not None
            storage = FileTrustStorage(Path(data_dir), clock=self.clock,
                                       lock_timeout=lock_timeout)
        self.storage: TrustStorage = storage
        # the async path (see "Blocking and the event loop"); touched on the loop only
        self._queue: list[tuple[_Op, float, asyncio.Future[Any]]] = []
        self._committing = False
        self._writer: ThreadPoolExecutor | None = None
        self._writer_lock = threading.Lock()

    @classmethod
    def memory(cls, *, policy: str = "auto", clock: Clock | None = None) -> TrustStore:
        """A store in memory (``MemoryTrustStorage``): simulations and unit tests."""
        return cls(policy=policy, clock=clock, storage=MemoryTrustStorage())

    @property
    def data_dir(self) -> Path | None:
        return getattr(self.storage, "data_dir", None)

    @property
    def path(self) -> Path:
        """The trust file (file storage only)."""
        path = getattr(self.storage, "path", None)
        if path is None:
            raise AttributeError("this trust store has no file")
        return Path(path)

    @property
    def corrupt_backups(self) -> list[Path]:
        """Corrupt files moved aside (oldest first); the CLI warns about them."""
        return self.storage.corrupt_backups

    # ----------------------------------------------------------------- reading

    def get(self, peer_id: PeerId) -> TrustEntry | None:
        return self._read().peers.get(str(peer_id))

    def is_trusted(self, peer_id: PeerId) -> bool:
        entry = self.get(peer_id)
        return entry is not None and entry.status is Status.TRUSTED

    def entries(self) -> list[TrustEntry]:
        """Every peer, oldest first."""
        return sorted(self._read().peers.values(),
                      key=lambda e: (e.first_seen, e.peer_id.multihash))

    def address_pins(self) -> list[AddressPin]:
        """Every address-dial pin, sorted by address."""
        return sorted(self._read().pins.values(), key=lambda p: p.address)

    def get_pin(self, address: str) -> AddressPin | None:
        return self._read().pins.get(address.strip())

    # ------------------------------------------------------------ connections

    def check_peer(self, peer_id: PeerId, *, address: str | None = None,
                   source: str = "tofu") -> TrustDecision:
        """Decide on a connection to or from ``peer_id`` (dial by id, or accept).

        ``address`` (where the peer was seen) is recorded in the entry's addresses but
        not pinned: an accepted connection comes from an ephemeral port. Blocking with
        a file storage; see ``check_peer_async``.
        """
        return self._update(self._peer_op(peer_id, address, _source(source)))

    def check_address(self, address: str, peer_id: PeerId) -> TrustDecision:
        """Decide on a dial of ``address`` that reached ``peer_id`` (address TOFU).

        The first peer seen at ``address`` is pinned there. A different peer later is
        ``changed`` and refused (and remembered as the pin's ``changed_to``) until the
        user approves it or untrusts the address. Blocking with a file storage; see
        ``check_address_async``.
        """
        return self._update(self._address_op(_address_key(address), peer_id))

    def record_dialback(self, peer_id: PeerId, ok: bool, address: str, *,
                        error: str | None = None) -> TrustEntry | None:
        """Record the result of dialling ``peer_id`` back at ``address`` (seed 000).

        Success marks the peer reachable; failure is logged and non-fatal. Returns the
        updated entry, or None if the peer is not in the store (e.g. untrusted
        meanwhile): the event is still logged, nothing is stored.
        """
        address = _address_key(address)
        _log_dialback(peer_id, ok, address, error)
        return self._update(self._dialback_op(peer_id, ok, address))

    def check_peer_async(self, peer_id: PeerId, *, address: str | None = None,
                         source: str = "tofu") -> asyncio.Future[TrustDecision]:
        """``check_peer`` for code on an event loop: no file I/O on the loop.

        Returns a future of the decision. With a blocking storage it completes once the
        decision's records are durable (see "Blocking and the event loop" in the module
        docstring); act on the decision only after awaiting it. With a memory storage it
        is done on return. Errors (``TrustStoreLockedError``, ``DataFileError``) come
        through the future. The time recorded is the clock's at the call.
        """
        return self._submit(self._peer_op(peer_id, address, _source(source)))

    def check_address_async(self, address: str,
                            peer_id: PeerId) -> asyncio.Future[TrustDecision]:
        """``check_address`` for code on an event loop; as ``check_peer_async``."""
        return self._submit(self._address_op(_address_key(address), peer_id))

    def record_dialback_async(self, peer_id: PeerId, ok: bool, address: str, *,
                              error: str | None = None
                              ) -> asyncio.Future[TrustEntry | None]:
        """``record_dialback`` for code on an event loop; as ``check_peer_async``."""
        address = _address_key(address)
        _log_dialback(peer_id, ok, address, error)
        return self._submit(self._dialback_op(peer_id, ok, address))

    def get_async(self, peer_id: PeerId) -> asyncio.Future[TrustEntry | None]:
        """``get`` for code on an event loop: with a blocking storage the file is read
        on the writer thread, after the commit in flight (requests queued behind that
        commit may not be visible yet); with a memory storage the future is done on
        return."""
        loop = asyncio.get_running_loop()
        if not self.storage.blocking:
            fut: asyncio.Future[TrustEntry | None] = loop.create_future()
            try:
                fut.set_result(self.get(peer_id))
            except Exception as exc:
                fut.set_exception(exc)
            return fut
        return loop.run_in_executor(self._writer_thread(), self.get, peer_id)

    def _peer_op(self, peer_id: PeerId, address: str | None, source: Source) -> _Op:
        policy = self.policy

        def apply(state: TrustState, now: float) -> TrustDecision:
            obs = Observation(peer_id, now, address, source)
            verdict = decide_peer(state.peers.get(str(peer_id)), obs, policy)
            return _store(state, verdict, obs, policy)

        return apply

    def _address_op(self, address: str, peer_id: PeerId) -> _Op:
        policy = self.policy

        def apply(state: TrustState, now: float) -> TrustDecision:
            obs = Observation(peer_id, now, address, Source.TOFU)
            pin = state.pins.get(address)
            pinned = state.peers.get(str(pin.peer_id)) if pin is not None else None
            verdict = decide_address(pin, pinned, state.peers.get(str(peer_id)), obs, policy)
            return _store(state, verdict, obs, policy)

        return apply

    @staticmethod
    def _dialback_op(peer_id: PeerId, ok: bool, address: str) -> _Op:
        def apply(state: TrustState, now: float) -> TrustEntry | None:
            entry = state.peers.get(str(peer_id))
            if entry is None:
                return None
            entry = apply_dialback(entry, ok, address, now)
            state.peers[str(peer_id)] = entry
            return entry

        return apply

    # ------------------------------------------------------------ user actions

    def approve(self, peer: PeerId | str) -> TrustEntry:
        """Trust ``peer`` (source ``manual``), moving any address pin that refused it.

        ``peer`` is a peer id (added if not yet known: the id carries its key) or a
        pinned address: on an address whose pin saw a changed key, the pin moves to the
        new peer; otherwise the pinned peer is approved.
        """
        def apply(state: TrustState, now: float) -> TrustEntry:
            target = self._resolve(state, peer)
            pid = ((target.changed_to or target.peer_id) if isinstance(target, AddressPin)
                   else target)
            entry = state.peers.get(str(pid))
            if entry is None:
                entry = _new_entry(pid, now, Status.TRUSTED, Source.MANUAL, None)
            elif entry.status is not Status.TRUSTED or entry.fingerprint != pid.fingerprint:
                # re-trusting also accepts the key again if the stored one was edited
                entry = _replace_entry(entry, status=Status.TRUSTED, source=Source.MANUAL,
                                       fingerprint=pid.fingerprint)
            moved = []
            for addr, pin in list(state.pins.items()):
                if pin.changed_to == pid:
                    state.pins[addr] = AddressPin(addr, pid, now, now)
                    moved.append(addr)
                    entry = _replace_entry(entry, addresses=_seen(entry.addresses, addr))
            state.peers[str(pid)] = entry
            log.info("trust.approved", peer_id=str(pid), fingerprint=entry.fingerprint,
                     repinned=moved)
            return entry

        return self._update(apply)

    def untrust(self, peer: PeerId | str) -> None:
        """Forget ``peer``: a peer id loses its entry and its address pins; an address
        loses only its pin. The next contact is ``new`` again (seed 001 ``untrust_peer``).
        Raises UnknownPeerError if there is nothing to forget."""
        def apply(state: TrustState, now: float) -> None:
            target = self._resolve(state, peer)
            if isinstance(target, AddressPin):
                del state.pins[target.address]
                log.info("trust.untrusted", address=target.address,
                         peer_id=str(target.peer_id))
                return
            key = str(target)
            dropped = [a for a, p in state.pins.items() if p.peer_id == target]
            if key not in state.peers and not dropped:
                raise UnknownPeerError(f"unknown peer: {key}")
            state.peers.pop(key, None)
            for addr in dropped:
                del state.pins[addr]
            for addr, pin in list(state.pins.items()):
                if pin.changed_to == target:
                    state.pins[addr] = _replace_pin(pin, changed_to=None, changed_at=None)
            log.info("trust.untrusted", peer_id=key, addresses=dropped)

        self._update(apply)

    def block(self, peer: PeerId | str) -> TrustEntry:
        """Block ``peer`` (a peer id, added if unknown; or the peer pinned at an address)."""
        def apply(state: TrustState, now: float) -> TrustEntry:
            target = self._resolve(state, peer)
            pid = target.peer_id if isinstance(target, AddressPin) else target
            entry = state.peers.get(str(pid))
            if entry is None:
                entry = _new_entry(pid, now, Status.BLOCKED, Source.MANUAL, None)
            else:
                entry = _replace_entry(entry, status=Status.BLOCKED)
            state.peers[str(pid)] = entry
            log.info("trust.blocked", peer_id=str(pid), fingerprint=entry.fingerprint)
            return entry

        return self._update(apply)

    def resolve(self, peer: PeerId | str) -> PeerId:
        """The peer id that ``peer`` (id or pinned/seen address) names in the store."""
        target = self._resolve(self._read(), peer)
        return target.peer_id if isinstance(target, AddressPin) else target

    # --------------------------------------------------------------- internals

    # --------------------------------------------------------------- internals

    def _resolve(self, state: TrustState, peer: PeerId | str) -> PeerId | AddressPin:
        """A peer id as given, or the pin at an address, or the one peer seen there."""
        if isinstance(peer, PeerId):
            return peer
        text = peer.strip()
        if not _looks_like_address(text):
            return PeerId.parse(text)      # InvalidPeerId (a UsageError) if malformed
        pin = state.pins.get(text)
        if pin is not None:
            return pin
        seen = [e.peer_id for e in state.peers.values() if text in e.addresses]
        if len(seen) > 1:
            raise AmbiguousPeerError(
                f"address {text} was seen for {len(seen)} peers; name the peer id")
        if not seen:
            raise UnknownPeerError(f"unknown peer address: {text}")
        return seen[0]


    def _read(self) -> TrustState:
        return self.storage.read()

    def _now(self) -> float:
        return float(int(self.clock.now()))

    def _update(self, apply: Callable[[TrustState, float], _T]) -> _T:
        """One synchronous read-modify-write of the storage (blocking with a file)."""
        now = self._now()
        return self.storage.update(lambda state: apply(state, now))

    # ------------------------------------------------------- the async path

    def _submit(self, op: _Op) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        now = self._now()
        if not self.storage.blocking:
            try:
                fut.set_result(self.storage.update(lambda state: op(state, now)))
            except Exception as exc:
                fut.set_exception(exc)
            return fut
        self._queue.append((op, now, fut))
        if not self._committing:
            self._commit_next(loop)
        return fut

    def _commit_next(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand everything queued to the writer thread as one commit; when it is done,
        complete the futures and start the next commit if more has been queued."""
        batch, self._queue = self._queue, []
        self._committing = True
        job = loop.run_in_executor(self._writer_thread(), self._commit,
                                   [(op, now) for op, now, _ in batch])

        def done(job: asyncio.Future[list[Any]]) -> None:
            self._committing = False
            try:
                results = job.result()
            except Exception as exc:      # the whole commit failed: lock, unwritable
                results = [_Failed(exc)] * len(batch)
            for (_, _, fut), result in zip(batch, results, strict=True):
                if fut.done():            # cancelled by its caller
                    continue
                if isinstance(result, _Failed):
                    fut.set_exception(result.exc)
                else:
                    fut.set_result(result)
            if self._queue:
                self._commit_next(loop)

        job.add_done_callback(done)

    def _commit(self, batch: list[tuple[_Op, float]]) -> list[Any]:
        """On the writer thread: apply every request, in order, in one update."""
        def apply(state: TrustState) -> list[Any]:
            out: list[Any] = []
            for op, now in batch:
                try:
                    out.append(op(state, now))
                except Exception as exc:  # ops raise before they change anything
                    out.append(_Failed(exc))
            return out

        return self.storage.update(apply)

    def _writer_thread(self) -> ThreadPoolExecutor:
        with self._writer_lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1,
                                                  thread_name_prefix="trust-writer")
            return self._writer

    def close(self) -> None:
        """Wait for the writer thread (if any) to finish what it has, and stop it."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)


# ------------------------------------------------------------------- helpers


def _store(state: TrustState, verdict: Verdict, obs: Observation,
           policy: Policy) -> TrustDecision:
    """Put a verdict's records into ``state`` and log its event."""
    if verdict.entry is not None:
        state.peers[str(obs.peer_id)] = verdict.entry
    if verdict.pin is not None:
        state.pins[verdict.pin.address] = verdict.pin
    _log_decision(verdict, obs, policy)
    return verdict.decision


def _log_decision(verdict: Verdict, obs: Observation, policy: Policy) -> None:
    """The structlog event of one decision (seeds 000/001 wording)."""
    d = verdict.decision
    key, received, address = str(d.peer_id), d.received_fingerprint, d.address
    who = address or key
    if d.outcome is Outcome.CHANGED:
        assert d.expected_fingerprint is not None and d.expected_peer_id is not None
        expected = d.expected_fingerprint
        log.error("cert.changed", peer=who, address=address, peer_id=key,
                  expected_peer_id=str(d.expected_peer_id), expected=expected,
                  received=received,
                  message=f"WARNING: Certificate changed for peer {who}! Expected: {expected}"
                          f" Received: {received} This could indicate a security issue!")
    elif d.expected_fingerprint is None:      # a new peer: trusted or pending
        assert verdict.entry is not None
        fields = dict(peer_id=key, fingerprint=received, address=address,
                      source=obs.source.value, policy=policy.value)
        if d.allowed:
            log.warning("peer.new", **fields, status=verdict.entry.status.value, message=(
                f"New peer: {who} (fingerprint: {received})"
                + ("  Auto-trusting (TOFU)" if obs.source is Source.TOFU else "")))
        else:
            log.warning("peer.pending", **fields, message=(
                f"New peer: {who} (fingerprint: {received})"
                "  Waiting for approval: p2pstack trust approve " + key))
    elif d.outcome is Outcome.BLOCKED:
        log.warning("peer.blocked", peer_id=key, fingerprint=received, address=address,
                    message=f"Refused blocked peer: {who}")
    elif d.outcome is Outcome.PENDING:
        assert verdict.entry is not None
        log.warning("peer.pending", peer_id=key, fingerprint=received, address=address,
                    source=verdict.entry.source.value, policy=policy.value,
                    message=f"Peer {who} is waiting for approval:"
                            f" p2pstack trust approve {key}")
    else:
        log.info("peer.verified", peer_id=key, fingerprint=received, address=address,
                 message=f"Verified known peer: {who}")


def _log_dialback(peer_id: PeerId, ok: bool, address: str, error: str | None) -> None:
    if ok:
        log.info("peer.reachable", peer_id=str(peer_id), address=address,
                 message=f"Mutual trust established with {address}")
    else:
        log.warning("peer.dialback_failed", peer_id=str(peer_id), address=address,
                    error=error,
                    message=f"Reverse connection failed: {error or 'unreachable'}."
                            " Continuing anyway...")


def _new_entry(peer_id: PeerId, now: float, status: Status, source: Source,
               address: str | None) -> TrustEntry:
    return TrustEntry(peer_id, peer_id.fingerprint, status, source, now, now,
                      () if address is None else (address,))

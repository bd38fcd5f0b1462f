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

Crash and concurrency safety
----------------------------
Every mutation takes ``trusted_peers.json.lock`` (``filelock``), re-reads the file,
applies the change, writes it with ``atomic_write`` (temp + fsync + rename) and releases
the lock, so a crash leaves the old or the new file and two processes never lose each
other's entries. Reads take no lock (a rename is atomic) unless the file is corrupt.

A corrupt store (not JSON, or not this schema) is never silently reset: it is renamed
to ``trusted_peers.json.corrupt-<UTC time>`` (under the lock), an error event
``trust.store_corrupt`` names both files, the path is appended to
``TrustStore.corrupt_backups`` (the CLI prints a warning from it), and loading then
CONTINUES WITH AN EMPTY STORE. Consequence, stated on purpose: under the auto policy
peers are pinned afresh on their next contact, exactly the seeds' recovery ("remove the
old entry and reconnect"); the old pins stay in the moved-aside file for inspection.

Every method does blocking file I/O (a mutation costs an fsync'd write, ~1-15 ms here);
asyncio callers on a hot path can wrap it in ``asyncio.to_thread``. A store caches its
last parse keyed by the file's exact bytes, so unchanged files are not re-parsed.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import filelock
import structlog

from stack.base.clock import Clock, SystemClock
from stack.base.errors import DataFileError, LocalError, UsageError
from stack.base.files import atomic_write, ensure_data_dir
from stack.base.identity import InvalidPeerId, PeerId

__all__ = [
    "TRUST_FILE_NAME",
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
]

TRUST_FILE_NAME = "trusted_peers.json"
FORMAT_VERSION = 1
MAX_ADDRESSES = 16          # addresses seen kept per peer (most recent)
LOCK_TIMEOUT = 10.0         # seconds to wait for another process's update
_LOCK_POLL = 0.005          # seconds between lock attempts (filelock's default is 50 ms)

log = structlog.get_logger("stack.store.trust")
_T = TypeVar("_T")


class Outcome(enum.StrEnum):
    NEW = "new"
    VERIFIED = "verified"
    CHANGED = "changed"
    PENDING = "pending"
    BLOCKED = "blocked"


class Status(enum.StrEnum):
    TRUSTED = "trusted"
    PENDING = "pending"
    BLOCKED = "blocked"


class Source(enum.StrEnum):
    TOFU = "tofu"
    MANUAL = "manual"
    INVITE = "invite"


class Policy(enum.StrEnum):
    AUTO = "auto"       # trust on first use
    MANUAL = "manual"   # new peers wait for approval


class UnknownPeerError(LocalError):
    """The peer (id or address) named by the user is not in the trust store."""


class AmbiguousPeerError(LocalError):
    """An address names more than one peer in the trust store."""


class TrustStoreLockedError(LocalError):
    """Another process held the trust store lock for longer than the lock timeout."""


@dataclass(frozen=True, slots=True)
class TrustEntry:
    """One peer in the store. Times are Unix seconds (whole seconds, as stored)."""

    peer_id: PeerId
    fingerprint: str
    status: Status
    source: Source
    first_seen: float
    last_seen: float
    addresses: tuple[str, ...] = ()
    reachable: bool | None = None          # None: never dialled back
    last_dialback: float | None = None
    dialback_address: str | None = None

    @property
    def trusted(self) -> bool:
        return self.status is Status.TRUSTED

    def to_json(self) -> dict[str, Any]:
        """The entry as stored in the file (ISO-8601 times)."""
        return {
            "peer_id": str(self.peer_id),
            "fingerprint": self.fingerprint,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "status": self.status.value,
            "source": self.source.value,
            "addresses": list(self.addresses),
            "reachable": self.reachable,
            "last_dialback": None if self.last_dialback is None else _iso(self.last_dialback),
            "dialback_address": self.dialback_address,
        }

    @classmethod
    def from_json(cls, key: str, obj: Any) -> TrustEntry:
        """Parse one stored entry; ValueError (with the reason) if it is not one."""
        if not isinstance(obj, dict):
            raise ValueError(f"peer {key!r}: not an object")
        try:
            peer_id = PeerId.parse(key)
        except InvalidPeerId:
            raise ValueError(f"peer key {key!r} is not a peer id") from None
        if obj.get("peer_id", key) != key:
            raise ValueError(f"peer {key!r}: peer_id field differs from its key")
        addresses = obj.get("addresses", [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ValueError(f"peer {key!r}: addresses must be a list of strings")
        reachable = obj.get("reachable")
        if reachable is not None and not isinstance(reachable, bool):
            raise ValueError(f"peer {key!r}: reachable must be true, false or null")
        dialback_address = obj.get("dialback_address")
        if dialback_address is not None and not isinstance(dialback_address, str):
            raise ValueError(f"peer {key!r}: dialback_address must be a string or null")
        return cls(
            peer_id=peer_id,
            fingerprint=_str_field(obj, "fingerprint", key),
            status=Status(_str_field(obj, "status", key)),
            source=Source(_str_field(obj, "source", key)),
            first_seen=_parse_iso(_str_field(obj, "first_seen", key)),
            last_seen=_parse_iso(_str_field(obj, "last_seen", key)),
            addresses=tuple(addresses),
            reachable=reachable,
            last_dialback=_optional_time(obj.get("last_dialback"), key),
            dialback_address=dialback_address,
        )


@dataclass(frozen=True, slots=True)
class AddressPin:
    """An address-dial TOFU pin: the first peer seen at ``address``."""

    address: str
    peer_id: PeerId
    first_seen: float
    last_seen: float
    changed_to: PeerId | None = None       # a different peer seen (and refused) here
    changed_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "peer_id": str(self.peer_id),
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "changed_to": None if self.changed_to is None else str(self.changed_to),
            "changed_at": None if self.changed_at is None else _iso(self.changed_at),
        }

    @classmethod
    def from_json(cls, address: str, obj: Any) -> AddressPin:
        if not isinstance(obj, dict):
            raise ValueError(f"address {address!r}: not an object")
        changed_to = obj.get("changed_to")
        if changed_to is not None and not isinstance(changed_to, str):
            raise ValueError(f"address {address!r}: changed_to must be a peer id or null")
        try:
            return cls(
                address=address,
                peer_id=PeerId.parse(_str_field(obj, "peer_id", address)),
                first_seen=_parse_iso(_str_field(obj, "first_seen", address)),
                last_seen=_parse_iso(_str_field(obj, "last_seen", address)),
                changed_to=None if changed_to is None else PeerId.parse(changed_to),
                changed_at=_optional_time(obj.get("changed_at"), address),
            )
        except InvalidPeerId as exc:
            raise ValueError(f"address {address!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class TrustDecision:
    """The store's answer for one connection.

    ``expected_fingerprint`` is what the store had pinned (None for a new peer);
    ``received_fingerprint`` the fingerprint of the key the connection proved. On
    ``changed`` they differ and ``expected_peer_id`` names the pinned peer.
    """

    outcome: Outcome
    allowed: bool
    peer_id: PeerId
    address: str | None
    expected_fingerprint: str | None
    received_fingerprint: str
    expected_peer_id: PeerId | None = None


@dataclass
class _State:
    """The whole file, parsed. Mutated only inside ``TrustStore._update``.

    ``lines`` memoises each record's serialised line, keyed by the record object (they
    are frozen), so a write re-encodes only the records that changed.
    """

    peers: dict[str, TrustEntry]
    pins: dict[str, AddressPin]
    lines: dict[str, tuple[object, str]]

    @classmethod
    def empty(cls) -> _State:
        return cls({}, {}, {})

    def copy(self) -> _State:
        return _State(dict(self.peers), dict(self.pins), self.lines)

    @classmethod
    def from_bytes(cls, data: bytes) -> _State:
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("peers"), dict):
            raise ValueError('no "peers" object at the top level')
        version = obj.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported version {version!r}")
        pins = obj.get("addresses", {})
        if not isinstance(pins, dict):
            raise ValueError('"addresses" must be an object')
        return cls({k: TrustEntry.from_json(k, v) for k, v in obj["peers"].items()},
                   {a: AddressPin.from_json(a, v) for a, v in pins.items()}, {})

    def to_bytes(self) -> bytes:
        """Indented JSON with one record per line: readable, diffable, and cheap to
        rewrite (C encoder per record; unchanged records reuse their memoised line)."""
        memo: dict[str, tuple[object, str]] = {}

        def section(tag: str, records: dict[str, Any]) -> str:
            out = []
            for key, record in records.items():
                cached = self.lines.get(tag + key)
                if cached is None or cached[0] is not record:
                    cached = (record, f"    {json.dumps(key)}: "
                                      f"{json.dumps(record.to_json(), sort_keys=True)}")
                memo[tag + key] = cached
                out.append(cached[1])
            return "{\n" + ",\n".join(out) + "\n  }" if out else "{}"

        text = (f'{{\n  "version": {FORMAT_VERSION},\n'
                f'  "peers": {section("p", self.peers)},\n'
                f'  "addresses": {section("a", self.pins)}\n}}\n')
        self.lines = memo
        return text.encode()


class TrustStore:
    """``trusted_peers.json`` in ``data_dir``; see the module docstring for the rules.

    ``policy`` is ``"auto"`` (TOFU: a new peer is trusted on first use) or ``"manual"``
    (a new peer is recorded ``pending`` until approved). ``clock`` supplies the
    first/last-seen times. ``lock_timeout`` (seconds) bounds the wait for another
    process's update (then TrustStoreLockedError). Each call reads the file afresh, so
    several stores (or processes) on one data directory see each other's changes.
    """

    def __init__(self, data_dir: Path, *, policy: str = "auto",
                 clock: Clock | None = None, lock_timeout: float = LOCK_TIMEOUT) -> None:
        try:
            self.policy = Policy(policy)
        except ValueError:
            raise UsageError(f"trust policy must be auto or manual, not {policy!r}") from None
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / TRUST_FILE_NAME
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.corrupt_backups: list[Path] = []
        self._cached: tuple[bytes | None, _State] = (None, _State.empty())
        self._lock = filelock.FileLock(self.data_dir / (TRUST_FILE_NAME + ".lock"),
                                       timeout=lock_timeout, mode=0o600,
                                       poll_interval=_LOCK_POLL)

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
        not pinned: an accepted connection comes from an ephemeral port.
        """
        src = _source(source)

        def apply(state: _State, now: float) -> TrustDecision:
            return self._decide_peer(state, now, peer_id, address, src)

        return self._update(apply)

    def check_address(self, address: str, peer_id: PeerId) -> TrustDecision:
        """Decide on a dial of ``address`` that reached ``peer_id`` (address TOFU).

        The first peer seen at ``address`` is pinned there. A different peer later is
        ``changed`` and refused (and remembered as the pin's ``changed_to``) until the
        user approves it or untrusts the address.
        """
        address = _address_key(address)

        def apply(state: _State, now: float) -> TrustDecision:
            pin = state.pins.get(address)
            if pin is not None and pin.peer_id != peer_id:
                state.pins[address] = _replace_pin(pin, changed_to=peer_id, changed_at=now)
                old = state.peers.get(str(pin.peer_id))
                expected = old.fingerprint if old is not None else pin.peer_id.fingerprint
                return _changed(peer_id, address, expected, pin.peer_id)
            if pin is None:
                state.pins[address] = AddressPin(address, peer_id, now, now)
            else:
                state.pins[address] = _replace_pin(pin, last_seen=now)
            return self._decide_peer(state, now, peer_id, address, Source.TOFU)

        return self._update(apply)

    def record_dialback(self, peer_id: PeerId, ok: bool, address: str, *,
                        error: str | None = None) -> TrustEntry | None:
        """Record the result of dialling ``peer_id`` back at ``address`` (seed 000).

        Success marks the peer reachable; failure is logged and non-fatal. Returns the
        updated entry, or None if the peer is not in the store (e.g. untrusted
        meanwhile): the event is still logged, nothing is stored.
        """
        address = _address_key(address)
        if ok:
            log.info("peer.reachable", peer_id=str(peer_id), address=address,
                     message=f"Mutual trust established with {address}")
        else:
            log.warning("peer.dialback_failed", peer_id=str(peer_id), address=address,
                        error=error,
                        message=f"Reverse connection failed: {error or 'unreachable'}."
                                " Continuing anyway...")

        def apply(state: _State, now: float) -> TrustEntry | None:
            entry = state.peers.get(str(peer_id))
            if entry is None:
                return None
            entry = _replace_entry(entry, reachable=ok, last_dialback=now,
                                   dialback_address=address)
            state.peers[str(peer_id)] = entry
            return entry

        return self._update(apply)

    # ------------------------------------------------------------ user actions

    def approve(self, peer: PeerId | str) -> TrustEntry:
        """Trust ``peer`` (source ``manual``), moving any address pin that refused it.

        ``peer`` is a peer id (added if not yet known: the id carries its key) or a
        pinned address: on an address whose pin saw a changed key, the pin moves to the
        new peer; otherwise the pinned peer is approved.
        """
        def apply(state: _State, now: float) -> TrustEntry:
            target = self._resolve(state, peer)
            if isinstance(target, AddressPin):
                pid = target.changed_to or target.peer_id
            else:
                pid = target
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
        def apply(state: _State, now: float) -> None:
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
        def apply(state: _State, now: float) -> TrustEntry:
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

    def _decide_peer(self, state: _State, now: float, peer_id: PeerId,
                     address: str | None, source: Source) -> TrustDecision:
        key = str(peer_id)
        received = peer_id.fingerprint
        entry = state.peers.get(key)
        if entry is None:
            approved = source is not Source.TOFU or self.policy is Policy.AUTO
            status = Status.TRUSTED if approved else Status.PENDING
            state.peers[key] = _new_entry(peer_id, now, status, source, address)
            fields = dict(peer_id=key, fingerprint=received, address=address,
                          source=source.value, policy=self.policy.value)
            if approved:
                log.warning("peer.new", **fields, status=status.value, message=(
                    f"New peer: {address or key} (fingerprint: {received})"
                    + ("  Auto-trusting (TOFU)" if source is Source.TOFU else "")))
                return TrustDecision(Outcome.NEW, True, peer_id, address, None, received)
            log.warning("peer.pending", **fields, message=(
                f"New peer: {address or key} (fingerprint: {received})"
                "  Waiting for approval: p2pstack trust approve " + key))
            return TrustDecision(Outcome.PENDING, False, peer_id, address, None, received)

        state.peers[key] = _touch(entry, now, address)
        expected = entry.fingerprint
        if expected != received:
            return _changed(peer_id, address, expected, peer_id)
        if entry.status is Status.BLOCKED:
            log.warning("peer.blocked", peer_id=key, fingerprint=received, address=address,
                        message=f"Refused blocked peer: {address or key}")
            return TrustDecision(Outcome.BLOCKED, False, peer_id, address, expected, received)
        if entry.status is Status.PENDING:
            log.warning("peer.pending", peer_id=key, fingerprint=received, address=address,
                        source=entry.source.value, policy=self.policy.value,
                        message=f"Peer {address or key} is waiting for approval:"
                                f" p2pstack trust approve {key}")
            return TrustDecision(Outcome.PENDING, False, peer_id, address, expected, received)
        log.info("peer.verified", peer_id=key, fingerprint=received, address=address,
                 message=f"Verified known peer: {address or key}")
        return TrustDecision(Outcome.VERIFIED, True, peer_id, address, expected, received)

    def _resolve(self, state: _State, peer: PeerId | str) -> PeerId | AddressPin:
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

    def _read(self) -> _State:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return _State.empty()
        except OSError as exc:
            raise DataFileError(self.path, f"cannot read trust store: {exc.strerror}") from None
        try:
            return self._parse(data)
        except ValueError:
            with self._locked():       # only one process may move the file aside
                return self._load_locked()[0]

    def _load_locked(self) -> tuple[_State, bytes | None]:
        """The state, and the file's bytes (None if there is no file, or it was corrupt
        and has just been moved aside)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return _State.empty(), None
        except OSError as exc:
            raise DataFileError(self.path, f"cannot read trust store: {exc.strerror}") from None
        try:
            return self._parse(data), data
        except ValueError as exc:
            self._move_aside(str(exc))
            return _State.empty(), None

    def _parse(self, data: bytes) -> _State:
        """Parse the file, reusing the last parse when the bytes are identical (exact,
        so never stale: another process's write changes the bytes)."""
        cached = self._cached          # one read: other threads may replace it
        if data != cached[0]:
            cached = (data, _State.from_bytes(data))
            self._cached = cached
        return cached[1].copy()

    def _move_aside(self, problem: str) -> None:
        stamp = datetime.fromtimestamp(self.clock.now(), UTC).strftime("%Y%m%dT%H%M%SZ")
        backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while backup.exists():
            backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.rename(self.path, backup)
        self.corrupt_backups.append(backup)
        log.error("trust.store_corrupt", path=str(self.path), moved_to=str(backup),
                  problem=problem,
                  message=f"corrupt trust store {self.path} ({problem}); moved to"
                          f" {backup}; continuing with an empty trust store")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        ensure_data_dir(self.data_dir)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise TrustStoreLockedError(
                f"{self._lock.lock_file}: trust store locked by another process for"
                f" more than {self._lock.timeout:g} s") from None
        except OSError as exc:  # e.g. a directory where the lock file goes
            raise DataFileError(self._lock.lock_file,
                                f"cannot take the lock: {exc.strerror}") from None
        try:
            yield
        finally:
            self._lock.release()

    def _update(self, apply: Callable[[_State, float], _T]) -> _T:
        """Lock, re-read, apply, write if anything changed, unlock."""
        with self._locked():
            state, on_disk = self._load_locked()
            result = apply(state, float(int(self.clock.now())))
            if on_disk is None and not state.peers and not state.pins:
                return result      # nothing to store: create no file
            after = state.to_bytes()
            if after != on_disk:
                atomic_write(self.path, after, mode=0o600)
                self._cached = (after, state.copy())
            return result


# ------------------------------------------------------------------- helpers


def _changed(peer_id: PeerId, address: str | None, expected: str,
             expected_peer_id: PeerId) -> TrustDecision:
    received = peer_id.fingerprint
    who = address or str(peer_id)
    log.error("cert.changed", peer=who, address=address, peer_id=str(peer_id),
              expected_peer_id=str(expected_peer_id), expected=expected, received=received,
              message=f"WARNING: Certificate changed for peer {who}! Expected: {expected}"
                      f" Received: {received} This could indicate a security issue!")
    return TrustDecision(Outcome.CHANGED, False, peer_id, address, expected, received,
                         expected_peer_id)


def _new_entry(peer_id: PeerId, now: float, status: Status, source: Source,
               address: str | None) -> TrustEntry:
    return TrustEntry(peer_id, peer_id.fingerprint, status, source, now, now,
                      () if address is None else (address,))


def _touch(entry: TrustEntry, now: float, address: str | None) -> TrustEntry:
    addresses = entry.addresses if address is None else _seen(entry.addresses, address)
    return _replace_entry(entry, last_seen=now, addresses=addresses)


def _seen(addresses: tuple[str, ...], address: str) -> tuple[str, ...]:
    """``addresses`` with ``address`` moved (or added) to the end, at most MAX_ADDRESSES."""
    return (tuple(a for a in addresses if a != address) + (address,))[-MAX_ADDRESSES:]


def _replace_entry(entry: TrustEntry, **changes: Any) -> TrustEntry:
    return replace(entry, **changes)


def _replace_pin(pin: AddressPin, **changes: Any) -> AddressPin:
    return replace(pin, **changes)


def _source(source: str) -> Source:
    try:
        return Source(source)
    except ValueError:
        raise UsageError(f"trust source must be tofu, manual or invite, not {source!r}") from None


def _looks_like_address(text: str) -> bool:
    """Peer ids are base58 (no ':' or '/'); ``HOST:PORT`` and multiaddrs have one."""
    return ":" in text or "/" in text


def _address_key(address: str) -> str:
    address = address.strip()
    if not address:
        raise UsageError("empty address")
    return address


def _iso(t: float) -> str:
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad time {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _str_field(obj: dict[str, Any], name: str, key: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{key!r}: field {name!r} missing or not a string")
    return value


def _optional_time(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key!r}: a time must be an ISO-8601 string")
    return _parse_iso(value)

"""The trust store's records: outcomes, statuses, entries, address pins, decisions.

Plain frozen values with their JSON form (``trusted_peers.json``, format version 1; see
``stack.store.trust``). No I/O. Times are Unix seconds (whole seconds, as stored).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from stack.base.errors import LocalError, UsageError
from stack.base.identity import InvalidPeerId, PeerId

__all__ = [
    "TRUST_FILE_NAME",
    "FORMAT_VERSION",
    "MAX_ADDRESSES",
    "Outcome",
    "Status",
    "Source",
    "Policy",
    "TrustEntry",
    "AddressPin",
    "TrustDecision",
    "UnknownPeerError",
    "AmbiguousPeerError",
    "TrustStoreLockedError",
]

TRUST_FILE_NAME = "trusted_peers.json"
FORMAT_VERSION = 1
MAX_ADDRESSES = 16          # addresses seen kept per peer (most recent)


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



def _seen(addresses: tuple[str, ...], address: str) -> tuple[str, ...]:
    """``addresses`` with ``address`` moved (or added) to the end, at most MAX_ADDRESSES."""
    return (*(a for a in addresses if a != address), address)[-MAX_ADDRESSES:]


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
    try:
        t = dt.timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"time out of range {text!r}") from None
    if not 0 <= t < 2**37:  # before 1970 or after year 6325: not a time we wrote
        raise ValueError(f"time out of range {text!r}")
    return t


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

"""Trust decisions as pure functions of (what is stored, what a connection showed).

No I/O, no clock, no logging: the time comes in the ``Observation``; the result says
what to store. ``stack.store.trust.TrustStore`` reads the records, calls these, logs the
outcome and stores what they return, under whichever storage it has (file or memory).

Rules (the table of ``stack.store.trust``'s docstring):

=============================================  =========  =======  =====================
stored                                         outcome    allowed  stored afterwards
=============================================  =========  =======  =====================
no entry, source tofu, policy auto             new        yes      entry trusted (tofu)
no entry, source tofu, policy manual           pending    no       entry pending (tofu)
no entry, source invite / manual               new        yes      entry trusted (source)
entry whose fingerprint is not the peer id's   changed    no       entry touched
entry blocked                                  blocked    no       entry touched
entry pending (under either policy)            pending    no       entry touched
entry trusted                                  verified   yes      entry touched
=============================================  =========  =======  =====================

"Touched" = ``last_seen`` set to the observation's time and its address (if any) moved
to the end of ``addresses`` (at most ``MAX_ADDRESSES``). For an address dial
(``decide_address``) the pin is checked first: a pin naming another peer is ``changed``
(the pin remembers the refused peer in ``changed_to``/``changed_at``; the peer's own
entry is left alone); otherwise the pin is created or its ``last_seen`` refreshed and
the peer is decided as above with the address recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.base.identity import PeerId
from stack.store.trust_model import (
    AddressPin,
    Outcome,
    Policy,
    Source,
    Status,
    TrustDecision,
    TrustEntry,
    _replace_entry,
    _replace_pin,
    _seen,
)

__all__ = ["Observation", "Verdict", "decide_peer", "decide_address", "apply_dialback"]


@dataclass(frozen=True, slots=True)
class Observation:
    """What one authenticated connection showed us.

    Attributes:
        peer_id: the peer the connection proved (its key; self-certifying).
        now: when, Unix seconds; stored as whole seconds (``first_seen``/``last_seen``).
        address: where the peer was seen (``HOST:PORT``), recorded in the entry's
            addresses; None when it is not worth keeping (an ephemeral TCP port).
        source: how the peer came to us; only ``tofu`` obeys the policy.
    """

    peer_id: PeerId
    now: float
    address: str | None = None
    source: Source = Source.TOFU


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision and the records to store because of it.

    Attributes:
        decision: the answer for the connection.
        entry: the peer's entry as it must be stored (new or touched); None: leave the
            stored entry (if any) as it is.
        pin: the address pin as it must be stored; None: no pin is involved.
    """

    decision: TrustDecision
    entry: TrustEntry | None
    pin: AddressPin | None = None


def decide_peer(entry: TrustEntry | None, obs: Observation, policy: Policy) -> Verdict:
    """Decide on a connection to or from ``obs.peer_id`` given its stored ``entry``
    (None if unknown). The address, if any, is recorded, not pinned."""
    peer_id, now, address = obs.peer_id, float(int(obs.now)), obs.address
    received = peer_id.fingerprint
    if entry is None:
        approved = obs.source is not Source.TOFU or policy is Policy.AUTO
        status = Status.TRUSTED if approved else Status.PENDING
        new = TrustEntry(peer_id, received, status, obs.source, now, now,
                         () if address is None else (address,))
        outcome = Outcome.NEW if approved else Outcome.PENDING
        return Verdict(TrustDecision(outcome, approved, peer_id, address, None, received), new)
    if entry.peer_id != peer_id:
        raise ValueError("entry and observation name different peers")
    touched = _replace_entry(
        entry, last_seen=now,
        addresses=entry.addresses if address is None else _seen(entry.addresses, address))
    expected = entry.fingerprint
    if expected != received:
        outcome, allowed = Outcome.CHANGED, False
        return Verdict(TrustDecision(outcome, allowed, peer_id, address, expected, received,
                                     peer_id), touched)
    if entry.status is Status.BLOCKED:
        outcome, allowed = Outcome.BLOCKED, False
    elif entry.status is Status.PENDING:
        outcome, allowed = Outcome.PENDING, False
    else:
        outcome, allowed = Outcome.VERIFIED, True
    return Verdict(TrustDecision(outcome, allowed, peer_id, address, expected, received),
                   touched)


def decide_address(pin: AddressPin | None, pinned: TrustEntry | None,
                   entry: TrustEntry | None, obs: Observation, policy: Policy) -> Verdict:
    """Decide on a dial of ``obs.address`` that reached ``obs.peer_id`` (address TOFU).

    ``pin`` is the stored pin of that address (None: first dial), ``pinned`` the stored
    entry of the peer the pin names (for the expected fingerprint), ``entry`` the stored
    entry of ``obs.peer_id``. The observation's source is ignored: an address dial is
    always TOFU.
    """
    address = obs.address
    if address is None:
        raise ValueError("an address decision needs the observation's address")
    now = float(int(obs.now))
    peer_id = obs.peer_id
    if pin is not None and pin.peer_id != peer_id:
        expected = pinned.fingerprint if pinned is not None else pin.peer_id.fingerprint
        decision = TrustDecision(Outcome.CHANGED, False, peer_id, address, expected,
                                 peer_id.fingerprint, pin.peer_id)
        return Verdict(decision, None, _replace_pin(pin, changed_to=peer_id, changed_at=now))
    new_pin = (AddressPin(address, peer_id, now, now) if pin is None
               else _replace_pin(pin, last_seen=now))
    verdict = decide_peer(entry, Observation(peer_id, now, address, Source.TOFU), policy)
    return Verdict(verdict.decision, verdict.entry, new_pin)


def apply_dialback(entry: TrustEntry, ok: bool, address: str, now: float) -> TrustEntry:
    """``entry`` after dialling its peer back at ``address`` (seed 000): ``reachable``
    is the result, ``last_dialback`` the time (whole seconds)."""
    return _replace_entry(entry, reachable=ok, last_dialback=float(int(now)),
                          dialback_address=address)

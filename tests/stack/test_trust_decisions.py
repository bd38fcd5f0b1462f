"""Trust decisions (stack/store/trust_decisions.py): pure functions, checked against every
combination of stored entry, source, policy and address, and every pin case."""

import ast
import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from stack.base.identity import Identity
from stack.store.trust_decisions import (
    Observation,
    apply_dialback,
    decide_address,
    decide_peer,
)
from stack.store.trust_model import (
    MAX_ADDRESSES,
    AddressPin,
    Outcome,
    Policy,
    Source,
    Status,
    TrustEntry,
)

T0 = 1_736_437_200.0
A = Identity.from_seed(b"\x01" * 32).peer_id
B = Identity.from_seed(b"\x02" * 32).peer_id
ADDR = "192.168.1.100:39001"


def entry(kind: str, *, peer=A, source=Source.TOFU) -> TrustEntry | None:
    if kind == "none":
        return None
    status = {"trusted": Status.TRUSTED, "pending": Status.PENDING,
              "blocked": Status.BLOCKED, "edited": Status.TRUSTED}[kind]
    fingerprint = "00" * 32 if kind == "edited" else peer.fingerprint
    return TrustEntry(peer, fingerprint, status, source, T0 - 100, T0 - 50, ("10.9.9.9:1",))


def expected(kind: str, source: Source, policy: Policy) -> tuple[Outcome, bool]:
    """The table of the module docstring, written out independently."""
    if kind == "none":
        if source is Source.TOFU and policy is Policy.MANUAL:
            return Outcome.PENDING, False
        return Outcome.NEW, True
    return {"edited": (Outcome.CHANGED, False), "blocked": (Outcome.BLOCKED, False),
            "pending": (Outcome.PENDING, False), "trusted": (Outcome.VERIFIED, True)}[kind]


CASES = list(itertools.product(["none", "trusted", "pending", "blocked", "edited"],
                               list(Source), list(Policy), [None, ADDR]))


@pytest.mark.parametrize(("kind", "source", "policy", "address"), CASES)
def test_decide_peer_every_case(kind, source, policy, address):
    stored = entry(kind)
    obs = Observation(A, T0 + 0.7, address, source)
    verdict = decide_peer(stored, obs, policy)
    d = verdict.decision
    assert (d.outcome, d.allowed) == expected(kind, source, policy)
    assert d.peer_id == A and d.address == address and d.received_fingerprint == A.fingerprint
    new = verdict.entry
    assert new is not None and new.peer_id == A and new.last_seen == T0  # whole seconds
    if stored is None:
        assert d.expected_fingerprint is None
        assert new.first_seen == T0 and new.source is source
        assert new.status is (Status.TRUSTED if d.allowed else Status.PENDING)
        assert new.addresses == (() if address is None else (address,))
        assert new.fingerprint == A.fingerprint
    else:
        assert d.expected_fingerprint == stored.fingerprint
        # touched only: status, source, fingerprint and first_seen are the user's
        assert (new.status, new.source, new.fingerprint, new.first_seen) == (
            stored.status, stored.source, stored.fingerprint, stored.first_seen)
        assert new.addresses == (stored.addresses if address is None
                                 else (*stored.addresses, address))
        assert verdict.pin is None
    if d.outcome is Outcome.CHANGED:
        assert d.expected_peer_id == A
    # pure: same input, same output; the stored record is not changed
    assert decide_peer(stored, obs, policy) == verdict
    assert stored == entry(kind)


def test_decide_peer_moves_a_seen_address_to_the_end_and_bounds_them():
    addrs = tuple(f"10.0.0.{i}:1" for i in range(MAX_ADDRESSES))
    stored = replace(entry("trusted"), addresses=addrs)
    again = decide_peer(stored, Observation(A, T0, "10.0.0.3:1"), Policy.AUTO).entry
    assert again.addresses[-1] == "10.0.0.3:1" and len(again.addresses) == MAX_ADDRESSES
    more = decide_peer(stored, Observation(A, T0, "10.0.1.1:1"), Policy.AUTO).entry
    assert more.addresses == (*addrs[1:], "10.0.1.1:1")


def test_decide_peer_refuses_an_entry_of_another_peer():
    with pytest.raises(ValueError):
        decide_peer(entry("trusted", peer=B), Observation(A, T0), Policy.AUTO)


@pytest.mark.parametrize("pinned_known", [True, False])
@pytest.mark.parametrize("kind", ["none", "trusted", "blocked"])
def test_decide_address_other_peer_pinned_is_changed(pinned_known, kind):
    pin = AddressPin(ADDR, B, T0 - 100, T0 - 50)
    pinned = entry("trusted", peer=B) if pinned_known else None
    verdict = decide_address(pin, pinned, entry(kind), Observation(A, T0 + 0.5, ADDR),
                             Policy.AUTO)
    d = verdict.decision
    assert (d.outcome, d.allowed) == (Outcome.CHANGED, False)
    assert d.expected_peer_id == B and d.expected_fingerprint == B.fingerprint
    assert d.received_fingerprint == A.fingerprint and d.address == ADDR
    assert verdict.entry is None                       # A's own entry is left alone
    assert verdict.pin == replace(pin, changed_to=A, changed_at=T0)


@pytest.mark.parametrize("policy", list(Policy))
@pytest.mark.parametrize("kind", ["none", "trusted", "pending", "blocked", "edited"])
@pytest.mark.parametrize("pinned_before", [True, False])
def test_decide_address_same_or_no_pin_decides_the_peer(policy, kind, pinned_before):
    pin = AddressPin(ADDR, A, T0 - 100, T0 - 50) if pinned_before else None
    stored = entry(kind)
    # an address dial is TOFU whatever the observation says
    verdict = decide_address(pin, stored, stored, Observation(A, T0, ADDR, Source.INVITE),
                             policy)
    assert (verdict.decision.outcome, verdict.decision.allowed) == expected(
        kind, Source.TOFU, policy)
    assert verdict.entry == decide_peer(stored, Observation(A, T0, ADDR), policy).entry
    first_seen = T0 - 100 if pinned_before else T0
    assert verdict.pin == AddressPin(ADDR, A, first_seen, T0)


def test_decide_address_needs_an_address():
    with pytest.raises(ValueError):
        decide_address(None, None, None, Observation(A, T0), Policy.AUTO)


@pytest.mark.parametrize("ok", [True, False])
def test_apply_dialback(ok):
    stored = entry("trusted")
    after = apply_dialback(stored, ok, "10.0.0.1:39001", T0 + 0.9)
    assert (after.reachable, after.last_dialback, after.dialback_address) == (
        ok, T0, "10.0.0.1:39001")
    assert replace(after, reachable=None, last_dialback=None, dialback_address=None) == stored


def test_decisions_module_imports_nothing_that_does_io():
    """Pure by construction: only the identity type and the records are imported."""
    path = Path(__file__).resolve().parents[2] / "stack/store/trust_decisions.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {"__future__", "dataclasses", "stack.base.identity",
                        "stack.store.trust_model"}

"""Admission: the PAKE between a newcomer holding an invite code and its inviter.

Why SPAKE2 (the ``spake2`` package, pinned) and not CPace: both are balanced PAKEs that
fit "two people share a short code"; SPAKE2 has a maintained, pure-Python implementation
on PyPI, the one magic-wormhole has shipped for years (so its wire behaviour is well
exercised), and RFC 9382 describes it. CPace (the CFRG's pick, with a cleaner proof and no
fixed M/N constants whose discrete logs must be unknown) has no maintained Python
package; writing its hash-to-curve ourselves would be the riskier choice. SPAKE2's own
weakness, no forward secrecy against a later leak of the *password*, does not matter for a
one-use code that is dead after ten minutes.

The exchange, one session per invite attempt (all messages msgpack arrays, kind first;
opaque to the rendezvous that carries them):

=====  ==================  ===================================================================
kind   direction           fields
=====  ==================  ===================================================================
1      newcomer->inviter   PAKE1 ``[1, room_id(32), number, spake_a(33)]``
2      inviter->newcomer   PAKE2 ``[2, spake_b(33)]``
3      newcomer->inviter   PAKE3 ``[3, confirm_a(32), box_a]``; box_a sealed under ``k_a``:
                           the newcomer's ``/p2pstack/room-pake-id/1`` envelope over the
                           transcript hash (proves its peer id, bound to this session)
4      inviter->newcomer   ADMIT ``[4, confirm_b(32), box_b]``; box_b sealed under ``k_b``:
                           the signed admission (below)
5      inviter->newcomer   CHALLENGE ``[5, confirm_b(32), box_c]`` (a ``--pin`` invite, in
                           place of ADMIT): box_c sealed under ``k_b``: ``[digits]``, how
                           many digits the PIN the inviter's node shows has (``rooms.pin``)
6      newcomer->inviter   PIN ``[6, pin_mac(32)]``: ``HMAC(k_pin, th || pin)`` with the PIN
                           the newcomer's user typed; then the inviter sends ADMIT
0      either              ABORT ``[0, reason]`` (unauthenticated: a forged one only denies
                           service)
=====  ==================  ===================================================================

SPAKE2 runs on the whole code text (``InviteCode.password``) with identities
``newcomer/1 || room_id`` and ``inviter/1 || room_id``, so a session of one room never
completes in another. From its key ``K`` and the transcript hash
``th = SHA-256("p2pstack-room-pake/1" || room_id || u32(number) || spake_a || spake_b)``:
``confirm_a = HMAC(K, "confirm-a" || th)``, ``confirm_b = HMAC(K, "confirm-b" || th)``,
``k_a = HMAC(K, "box-a" || th)``, ``k_b = HMAC(K, "box-b" || th)`` (boxes: XSalsa20-Poly1305,
PyNaCl ``SecretBox``; a key per direction, so nothing reflects), ``k_pin = HMAC(K, "pin" ||
th)``.

Rules (each refusal a named error in ``AdmissionFailed``; the side that fails sends ABORT):

- Inviter, on PAKE1: malformed -> ``MalformedMessage`` (the invite is not spent); its
  ``spake_a`` seen before -> ``ReplayedTranscript`` (not spent either: a replay is not a
  guess); else the invite is **spent** (``InviteBook.claim``: ``InviteUnknown``,
  ``InviteUsed``, ``InviteExpired``), whatever happens next.
- Inviter, on PAKE3: wrong ``confirm_a`` -> ``WrongCode`` (the failed attempt the inviter
  reports: one guess per invite); ``box_a`` does not open -> ``TamperedMessage``; the
  proof is not the transcript signed by a valid key -> ``ForgedAdmission``. Else it signs
  the admission, sends ADMIT and reports ``Admitted``; for a ``--pin`` invite it draws a
  PIN instead, reports ``PinIssued`` (for its user to read out), sends CHALLENGE and waits
  ``pin_timeout`` seconds for PIN: none -> ``NoPin``; seen before -> ``ReplayedPin``; a MAC
  that is not its PIN's -> ``WrongPin``; else ADMIT and ``Admitted`` (``rooms.pin``).
- Newcomer, on PAKE2: ``spake_b`` seen before (``ReplayGuard``) -> ``ReplayedTranscript``;
  not a group element -> ``MalformedMessage``. On ADMIT: wrong ``confirm_b`` ->
  ``WrongCode``; ``box_b`` does not open -> ``TamperedMessage``; an admission that is not
  the inviter's signature over (this room, our peer id, this transcript) ->
  ``ForgedAdmission``. On CHALLENGE (instead of ADMIT): the same confirmation and box checks,
  then it reports ``PinRequested`` and waits ``pin_timeout`` seconds for its user
  (``answer_pin``, whose ``InvalidPin`` for a malformed PIN sends nothing; ``decline_pin``
  and the timer: ``NoPin``); it accepts no message meanwhile.
- A message of the wrong kind for the state: ``UnexpectedMessage``; ABORT: the named
  error for its reason (``AdmissionAborted`` for one we do not know); no progress for
  ``timeout`` seconds: ``AdmissionTimeout``. After the end, messages are counted in
  ``dropped`` and ignored.

What a man in the middle without the code (the rendezvous, say) can do: run SPAKE2 with
one guess per invite, which burns the invite and is reported; alter messages, which
makes the keys or boxes disagree, so the admission fails (never admits someone else:
the newcomer's peer id travels inside ``box_a``, under a key only the code holders have).
If it alters ADMIT only, the inviter has admitted the right newcomer and the newcomer
fails without its admission record (it can be re-sent later over a direct connection).

The admission record (``/p2pstack/room-admission/1``, signed by the inviter):
``[room_id, newcomer(38), inviter(38), issued_ms, session(32) = th]``. Other members
verify it before connecting to the newcomer (a later step): it is bound to the room, the
newcomer's peer id (proven again by the QUIC handshake) and the inviter.

Sans-I/O: ``receive(data, now)``, ``outgoing()``, ``next_event()``, ``next_timer()``,
``handle_timer(now)``; ``now`` is Unix seconds.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.secret
import spake2
from spake2.ed25519_basic import NotOnCurve

from stack.base.identity import PEER_ID_LENGTH, Identity, PeerId
from rooms.errors import (ABORT_REASONS, AdmissionAborted, AdmissionError,
                          AdmissionTimeout, ForgedAdmission, MalformedMessage, MembershipError,
                          NoPin, ReplayedPin, ReplayedTranscript, RoomError, TamperedMessage,
                          UnexpectedMessage, WrongCode, WrongPin)
from rooms.invites import MAX_INVITE_NUMBER, Invite, InviteBook, InviteCode
from rooms.names import ROOM_ID_LENGTH
from rooms.pin import (DEFAULT_PIN_DIGITS, DEFAULT_PIN_TIMEOUT, MAX_PIN_DIGITS, PinIssued,
                       PinRequested, draw_pin, normalize_pin, pin_mac)
from rooms.signed import ADMISSION_TYPE, PAKE_ID_TYPE, open_signed, pack, seal, unpack

__all__ = ["Role", "Admission", "Admitted", "AdmissionFailed", "AdmissionEvent", "SessionEvent",
           "ReplayGuard", "AdmissionSession", "NewcomerSession", "InviterSession", "sign_admission",
           "verify_admission", "MAX_MESSAGE", "DEFAULT_ADMISSION_TIMEOUT", "Kind"]

MAX_MESSAGE = 2048               # bytes, every admission message
MAX_ADMISSION = 600              # bytes, a signed admission record
DEFAULT_ADMISSION_TIMEOUT = 30.0  # seconds without progress
SPAKE_MESSAGE = 33               # bytes: side byte + Ed25519 group element
_ID_A = b"p2pstack-room-newcomer/1"
_ID_B = b"p2pstack-room-inviter/1"
_TH = b"p2pstack-room-pake/1"
# what spake2's finish() raises for bytes that are not a peer's element (NotOnCurve is
# a bare Exception there)
_SPAKE_ERRORS = (ValueError, TypeError, spake2.SPAKEError, NotOnCurve)


class Kind(enum.IntEnum):
    ABORT = 0
    PAKE1 = 1
    PAKE2 = 2
    PAKE3 = 3
    ADMIT = 4
    CHALLENGE = 5
    PIN = 6


class Role(enum.StrEnum):
    NEWCOMER = "newcomer"
    INVITER = "inviter"


# ------------------------------------------------------------------- admission record

@dataclass(frozen=True, slots=True)
class Admission:
    """A verified admission: ``inviter`` admitted ``newcomer`` to ``room_id``."""

    room_id: bytes
    newcomer: PeerId
    inviter: PeerId
    issued_ms: int
    session: bytes
    raw: bytes = field(repr=False, compare=False)


def sign_admission(identity: Identity, room_id: bytes, newcomer: PeerId, now: float,
                   session: bytes) -> bytes:
    payload = pack((room_id, newcomer.multihash, identity.peer_id.multihash,
                    int(now * 1000), session))
    return seal(identity, ADMISSION_TYPE, payload)


def verify_admission(data: bytes, *, room_id: bytes | None = None,
                     newcomer: PeerId | None = None, inviter: PeerId | None = None,
                     session: bytes | None = None) -> Admission:
    """The admission in ``data`` if it is sound and names what the caller expects;
    ``ForgedAdmission`` otherwise (bad framing, bad signature, a signer other than the
    named inviter, another room, newcomer or session)."""
    try:
        signer, payload = open_signed(data, ADMISSION_TYPE, MAX_ADMISSION)
        obj = unpack(payload, "admission", MAX_ADMISSION)
    except (MalformedMessage, MembershipError) as exc:
        raise ForgedAdmission(f"admission: {exc}") from None
    if len(obj) != 5:
        raise ForgedAdmission("admission: not 5 fields")
    rid, new, inv, issued, sess = obj
    if (type(rid) is not bytes or len(rid) != ROOM_ID_LENGTH or type(new) is not bytes
            or len(new) != PEER_ID_LENGTH or type(inv) is not bytes or type(issued) is not int
            or issued < 0 or type(sess) is not bytes or len(sess) != 32):
        raise ForgedAdmission("admission: field types")
    if inv != signer.multihash:
        raise ForgedAdmission("admission: not signed by the inviter it names")
    try:
        new_id = PeerId.from_bytes(new)
    except ValueError:
        raise ForgedAdmission("admission: newcomer is not a peer id") from None
    for what, want, got in (("room", room_id, rid), ("session", session, sess)):
        if want is not None and want != got:
            raise ForgedAdmission(f"admission: for another {what}")
    if newcomer is not None and newcomer != new_id:
        raise ForgedAdmission("admission: for another newcomer")
    if inviter is not None and inviter != signer:
        raise ForgedAdmission("admission: from another inviter")
    return Admission(rid, new_id, signer, issued, sess, data)


# --------------------------------------------------------------------------- events

@dataclass(frozen=True, slots=True)
class Admitted:
    """The exchange succeeded. ``peer_id``: the other side (newcomer for the inviter,
    inviter for the newcomer), proven by its signature under the agreed key."""

    role: Role
    room_id: bytes
    number: int
    peer_id: PeerId
    admission: Admission


@dataclass(frozen=True, slots=True)
class AdmissionFailed:
    """The exchange failed; ``error`` is the named refusal. For the inviter this is the
    report of a failed attempt (``WrongCode``: someone guessed and the invite is spent)."""

    role: Role
    room_id: bytes
    number: int
    error: AdmissionError


AdmissionEvent = Admitted | AdmissionFailed
#: what ``next_event`` returns: the outcome, or a PIN step for the driver to pass on
SessionEvent = AdmissionEvent | PinIssued | PinRequested


# ----------------------------------------------------------------------- replay guard

@dataclass
class ReplayGuard:
    """SPAKE2 messages seen in the last ``ttl`` seconds (at most ``max_entries``, oldest
    dropped first). SPAKE2 messages are fresh random group elements, so a repeat is a
    replay, never a coincidence."""

    ttl: float = 3600.0
    max_entries: int = 4096
    _seen: OrderedDict[bytes, float] = field(default_factory=OrderedDict)

    def check_and_add(self, message: bytes, now: float) -> bool:
        """True if ``message`` is new (and remember it); False for a replay."""
        while self._seen:
            first, at = next(iter(self._seen.items()))
            if at + self.ttl > now and len(self._seen) < self.max_entries:
                break
            del self._seen[first]
        digest = hashlib.sha256(message).digest()
        if digest in self._seen:
            return False
        self._seen[digest] = now
        return True


# -------------------------------------------------------------------------- sessions

def _transcript(room_id: bytes, number: int, spake_a: bytes, spake_b: bytes) -> bytes:
    return hashlib.sha256(_TH + room_id + number.to_bytes(4, "big") + spake_a + spake_b).digest()


def _derive(key: bytes, label: bytes, th: bytes) -> bytes:
    return hmac.new(key, label + th, hashlib.sha256).digest()


def _decode(data: bytes) -> tuple[Kind, tuple[object, ...]]:
    obj = unpack(data, "admission message", MAX_MESSAGE)
    if not obj or type(obj[0]) is not int or obj[0] not in Kind._value2member_map_:
        raise MalformedMessage("admission message: unknown kind")
    kind = Kind(obj[0])
    shapes = {Kind.ABORT: 2, Kind.PAKE1: 4, Kind.PAKE2: 2, Kind.PAKE3: 3, Kind.ADMIT: 3,
              Kind.CHALLENGE: 3, Kind.PIN: 2}
    if len(obj) != shapes[kind]:
        raise MalformedMessage(f"admission message: {kind.name} has {shapes[kind]} fields")
    return kind, obj[1:]


def _bytes(value: object, what: str, size: int | None = None) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise MalformedMessage(f"admission message: {what}")
    return value


def encode_pake1(room_id: bytes, number: int, spake_a: bytes) -> bytes:
    return pack((Kind.PAKE1.value, room_id, number, spake_a))


def peek_pake1(data: bytes) -> tuple[bytes, int] | None:
    """(room id, number) of a PAKE1, or None: what a driver needs to pick the invite's
    session before creating it."""
    try:
        kind, fields = _decode(data)
    except MalformedMessage:
        return None
    if kind is not Kind.PAKE1 or type(fields[0]) is not bytes or type(fields[1]) is not int:
        return None
    return fields[0], fields[1]


class AdmissionSession:
    """What both sides share: the sans-I/O surface a driver moves bytes through."""

    role: Role

    def __init__(self, room_id: bytes, number: int, now: float, timeout: float) -> None:
        self.room_id = room_id
        self.number = number
        self.timeout = timeout
        self._deadline = now + timeout
        self._wait = timeout  # seconds the next step may take (a PIN waits for a person)
        self._out: list[bytes] = []
        self._events: deque[SessionEvent] = deque()
        self.done = False
        self.result: AdmissionEvent | None = None
        self.dropped = 0  # messages after the end

    def outgoing(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def next_timer(self) -> float | None:
        return None if self.done else self._deadline

    def handle_timer(self, now: float) -> None:
        if not self.done and now >= self._deadline:
            self._fail(self._timed_out())

    def _timed_out(self) -> AdmissionError:
        return AdmissionTimeout(f"no progress for {self._wait:.0f} s")

    def connection_lost(self) -> None:
        """The carrier (stream, rendezvous) went away before the end: the session fails
        with ``AdmissionAborted("connection lost")``; after the end it changes nothing."""
        if not self.done:
            self._fail(AdmissionAborted("connection lost"), tell=False)

    def _finish(self, event: AdmissionEvent) -> None:
        self.done = True
        self.result = event
        self._events.append(event)

    def _fail(self, error: AdmissionError, *, tell: bool = True) -> None:
        if tell:
            self._out.append(pack((Kind.ABORT.value, error.reason)))
        self._finish(AdmissionFailed(self.role, self.room_id, self.number, error))

    def _aborted(self, fields: tuple[object, ...]) -> None:
        reason = fields[0] if type(fields[0]) is str else "?"
        cls = ABORT_REASONS.get(reason)
        error = cls(f"the other side refused: {reason}") if cls is not None \
            else AdmissionAborted(reason[:64])
        self._fail(error, tell=False)

    def receive(self, data: bytes, now: float) -> None:
        """Feed one message from the other side (never raises for its content)."""
        if self.done:
            self.dropped += 1
            return
        try:
            kind, fields = _decode(data)
            if kind is Kind.ABORT:
                self._aborted(fields)
                return
            self._wait = self.timeout
            self._step(kind, fields, now)
        except AdmissionError as exc:
            self._fail(exc)
            return
        self._deadline = now + self._wait

    def _step(self, kind: Kind, fields: tuple[object, ...], now: float) -> None:
        raise NotImplementedError


class NewcomerSession(AdmissionSession):
    """The newcomer's side: holds the code, starts the exchange (PAKE1 is queued at once).
    After a CHALLENGE it reports ``PinRequested`` and waits for ``answer_pin`` or
    ``decline_pin`` (``pin_timeout`` seconds)."""

    role = Role.NEWCOMER

    def __init__(self, identity: Identity, room_id: bytes, code: InviteCode, now: float, *,
                 timeout: float = DEFAULT_ADMISSION_TIMEOUT, guard: ReplayGuard | None = None,
                 entropy: Callable[[int], bytes] = os.urandom,
                 pin_timeout: float = DEFAULT_PIN_TIMEOUT) -> None:
        super().__init__(room_id, code.number, now, timeout)
        self._identity = identity
        self._guard = guard if guard is not None else ReplayGuard()
        self._pin_timeout = pin_timeout
        self._spake = spake2.SPAKE2_A(code.password, idA=_ID_A + room_id, idB=_ID_B + room_id,
                                      entropy_f=entropy)
        self._spake_a: bytes = self._spake.start()
        self._expect: frozenset[Kind] = frozenset({Kind.PAKE2})  # none: waiting for our user
        self._th = b""
        self._key = b""
        self._confirm_b = b""
        self._k_b = b""
        self._k_pin = b""
        self.pin_digits = 0  # > 0 while the inviter's PIN challenge waits for our user
        self._out.append(encode_pake1(room_id, code.number, self._spake_a))

    def _timed_out(self) -> AdmissionError:
        if self.pin_digits:
            return NoPin(f"no PIN was typed within {self._pin_timeout:.0f} s")
        return super()._timed_out()

    def answer_pin(self, text: str, now: float) -> None:
        """Send the PIN our user typed (``InvalidPin``: not the digits asked for, nothing
        sent, still waiting; ``RoomError``: no challenge is waiting)."""
        if self.done or not self.pin_digits:
            raise RoomError("no PIN challenge is waiting in this admission")
        pin = normalize_pin(text, self.pin_digits)
        self._out.append(pack((Kind.PIN.value, pin_mac(self._k_pin, self._th, pin))))
        self.pin_digits = 0
        self._expect = frozenset({Kind.ADMIT})
        self._wait = self.timeout
        self._deadline = now + self.timeout

    def decline_pin(self) -> None:
        """Our user gave no PIN: the admission ends with ``NoPin`` (and the inviter is told)."""
        if not self.done and self.pin_digits:
            self._fail(NoPin("no PIN was given"))

    def _step(self, kind: Kind, fields: tuple[object, ...], now: float) -> None:
        if kind not in self._expect:
            waiting = " or ".join(k.name for k in sorted(self._expect)) or "our user's PIN"
            raise UnexpectedMessage(f"a {kind.name} while waiting for {waiting}")
        if kind is Kind.PAKE2:
            spake_b = _bytes(fields[0], "spake_b", SPAKE_MESSAGE)
            if not self._guard.check_and_add(spake_b, now):
                raise ReplayedTranscript("the inviter's PAKE message was seen before")
            try:
                key: bytes = self._spake.finish(spake_b)
            except _SPAKE_ERRORS:
                raise MalformedMessage("the inviter's PAKE message is not a group element") \
                    from None
            self._th = _transcript(self.room_id, self.number, self._spake_a, spake_b)
            self._confirm_b = _derive(key, b"confirm-b", self._th)
            self._k_b = _derive(key, b"box-b", self._th)
            self._key = key
            proof = seal(self._identity, PAKE_ID_TYPE, self._th)
            box = nacl.secret.SecretBox(_derive(key, b"box-a", self._th)).encrypt(proof)
            self._out.append(pack((Kind.PAKE3.value, _derive(key, b"confirm-a", self._th),
                                   bytes(box))))
            self._expect = frozenset({Kind.ADMIT, Kind.CHALLENGE})
            return
        confirm_b = _bytes(fields[0], "confirm_b", 32)
        box_b = _bytes(fields[1], "box_b")
        if not hmac.compare_digest(confirm_b, self._confirm_b):
            raise WrongCode("the inviter's key confirmation does not match")
        try:
            raw = nacl.secret.SecretBox(self._k_b).decrypt(box_b)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise TamperedMessage("the inviter's message does not open under the agreed key") \
                from None
        if kind is Kind.CHALLENGE:
            body = unpack(raw, "PIN challenge", MAX_MESSAGE)
            if len(body) != 1 or type(body[0]) is not int \
                    or not 1 <= body[0] <= MAX_PIN_DIGITS:
                raise MalformedMessage("PIN challenge: digits")
            self._k_pin = _derive(self._key, b"pin", self._th)
            self.pin_digits = body[0]
            self._expect = frozenset()
            self._wait = self._pin_timeout
            self._events.append(PinRequested(self.room_id, self.number, body[0],
                                             now + self._pin_timeout))
            return
        admission = verify_admission(raw, room_id=self.room_id,
                                     newcomer=self._identity.peer_id, session=self._th)
        self._finish(Admitted(self.role, self.room_id, self.number, admission.inviter,
                              admission))


class InviterSession(AdmissionSession):
    """The inviter's side of one attempt, built from the newcomer's PAKE1 (which names
    the invite). The invite is spent from the moment a sound, fresh PAKE1 names it. For
    an invite with ``pin`` set, it reports ``PinIssued`` after PAKE3 and admits only on
    that PIN."""

    role = Role.INVITER

    def __init__(self, identity: Identity, book: InviteBook, guard: ReplayGuard,
                 first: bytes, now: float, *, room_id: bytes | None = None,
                 timeout: float = DEFAULT_ADMISSION_TIMEOUT,
                 entropy: Callable[[int], bytes] = os.urandom,
                 pin_timeout: float = DEFAULT_PIN_TIMEOUT,
                 pin_digits: int = DEFAULT_PIN_DIGITS) -> None:
        peek = peek_pake1(first)
        rid, number = peek if peek is not None else (room_id or bytes(ROOM_ID_LENGTH), 0)
        super().__init__(rid, number, now, timeout)
        self._identity = identity
        self._book = book
        self._guard = guard
        self._entropy = entropy
        self._pin_timeout = pin_timeout
        self._pin_digits = pin_digits
        self._expected_room = room_id
        self._state = Kind.PAKE1
        self._th = b""
        self._key = b""
        self._invite: Invite | None = None
        self._newcomer: PeerId | None = None
        self._pin_mac = b""
        self.receive(first, now)

    def _timed_out(self) -> AdmissionError:
        if self._state is Kind.PIN:
            return NoPin(f"the newcomer sent no PIN within {self._pin_timeout:.0f} s")
        return super()._timed_out()

    def _fail(self, error: AdmissionError, *, tell: bool = True) -> None:
        if self._invite is not None and self._invite.outcome is None:
            self._book.settle(self._invite, error.reason)
        super()._fail(error, tell=tell)

    def _step(self, kind: Kind, fields: tuple[object, ...], now: float) -> None:
        if kind is not self._state:
            raise UnexpectedMessage(f"a {kind.name} while waiting for {self._state.name}")
        if kind is Kind.PAKE1:
            rid = _bytes(fields[0], "room id", ROOM_ID_LENGTH)
            number = fields[1]
            if type(number) is not int or not 1 <= number <= MAX_INVITE_NUMBER:
                raise MalformedMessage("admission message: invite number")
            spake_a = _bytes(fields[2], "spake_a", SPAKE_MESSAGE)
            if self._expected_room is not None and rid != self._expected_room:
                raise MalformedMessage("admission message: for another room")
            if not self._guard.check_and_add(spake_a, now):
                raise ReplayedTranscript("this PAKE message was seen before (a replay)")
            self._invite = self._book.claim(rid, number, now)
            spake = spake2.SPAKE2_B(self._invite.code.password, idA=_ID_A + rid,
                                    idB=_ID_B + rid, entropy_f=self._entropy)
            spake_b: bytes = spake.start()
            try:
                self._key = spake.finish(spake_a)
            except _SPAKE_ERRORS:
                raise MalformedMessage("the newcomer's PAKE message is not a group element") \
                    from None
            self._th = _transcript(rid, number, spake_a, spake_b)
            self._out.append(pack((Kind.PAKE2.value, spake_b)))
            self._state = Kind.PAKE3
            return
        if kind is Kind.PIN:
            mac = _bytes(fields[0], "pin_mac", 32)
            # the replay check first: a recorded PIN message is named for what it is
            if not self._guard.check_and_add(b"pin" + mac, now):
                raise ReplayedPin("this PIN message was seen before (a replay)")
            if not hmac.compare_digest(mac, self._pin_mac):
                raise WrongPin(f"a wrong PIN for invite {self.number}: the invite is spent")
            assert self._newcomer is not None
            self._admit(self._newcomer, now)
            return
        confirm_a = _bytes(fields[0], "confirm_a", 32)
        box_a = _bytes(fields[1], "box_a")
        if not hmac.compare_digest(confirm_a, _derive(self._key, b"confirm-a", self._th)):
            raise WrongCode(f"a wrong code for invite {self.number}: the invite is spent")
        try:
            proof = nacl.secret.SecretBox(_derive(self._key, b"box-a", self._th)).decrypt(box_a)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise TamperedMessage("the newcomer's proof does not open under the agreed key") \
                from None
        try:
            newcomer, signed_th = open_signed(proof, PAKE_ID_TYPE, MAX_MESSAGE)
        except (MalformedMessage, MembershipError) as exc:
            raise ForgedAdmission(f"the newcomer's proof of its peer id: {exc}") from None
        if signed_th != self._th:
            raise ForgedAdmission("the newcomer's proof is for another session")
        assert self._invite is not None
        if not self._invite.pin:
            self._admit(newcomer, now)
            return
        # the PIN is drawn only now, for the peer this session proved: read out to the
        # person the inviter's user is talking to, it ties them to this session
        pin = draw_pin(self._entropy, self._pin_digits)
        self._newcomer = newcomer
        self._pin_mac = pin_mac(_derive(self._key, b"pin", self._th), self._th, pin)
        box = nacl.secret.SecretBox(_derive(self._key, b"box-b", self._th)).encrypt(
            pack((self._pin_digits,)))
        self._out.append(pack((Kind.CHALLENGE.value,
                               _derive(self._key, b"confirm-b", self._th), bytes(box))))
        self._state = Kind.PIN
        self._wait = self._pin_timeout
        self._events.append(PinIssued(self.room_id, self.number, newcomer, pin,
                                      now + self._pin_timeout))

    def _admit(self, newcomer: PeerId, now: float) -> None:
        raw = self._admission_for(newcomer, now)
        admission = verify_admission(raw)
        box = nacl.secret.SecretBox(_derive(self._key, b"box-b", self._th)).encrypt(raw)
        self._out.append(pack((Kind.ADMIT.value, _derive(self._key, b"confirm-b", self._th),
                               bytes(box))))
        assert self._invite is not None
        self._book.settle(self._invite, "admitted")
        self._finish(Admitted(self.role, self.room_id, self.number, newcomer, admission))

    def _admission_for(self, newcomer: PeerId, now: float) -> bytes:
        """The signed admission of ``newcomer`` (a seam: a test's dishonest inviter
        signs something else here, and the newcomer must refuse it)."""
        return sign_admission(self._identity, self.room_id, newcomer, now, self._th)

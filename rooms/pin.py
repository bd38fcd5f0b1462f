"""The PIN challenge: seed 002's "the admin generates a challenge (e.g.: a PIN) and asks
the new client to resolve it", as an option of an invite (``room invite NAME --pin``).

How it runs (the messages are in ``rooms.admission``): the PAKE runs as without a PIN.
Once the inviter has checked the newcomer's key confirmation and its signed proof of peer
id, it does not sign the admission yet. Its node draws a fresh PIN (``DEFAULT_PIN_DIGITS``
digits, uniform, from the node's randomness) and *shows it to its own user* (an event and
the inviter's CLI); it sends the newcomer only a CHALLENGE, sealed under the PAKE key,
saying how many digits to ask for. The newcomer's node asks its user, who must get the
PIN from the inviter's user out of band (read aloud, over a call, off the screen) and type
it in; the node sends ``HMAC(k_pin, th || pin)`` (``k_pin`` from the PAKE key and this
session's transcript ``th``). The inviter compares it with its own and only then signs.

What the PIN adds: a human check, at the moment of joining, that the peer at the other
end of *this* session is the person the inviter is in contact with. An invite code is
handed out earlier and can leak (a forwarded chat message, a screenshot, a shoulder); on
its own, whoever types it first is admitted. With a PIN the code is not enough: the PIN
is drawn only after that peer's PAKE succeeded and its peer id is known, so the inviter's
user, who reads it out to the person they mean, ties the admission to someone they are
talking to right now. It also keeps the newcomer's *node* from answering alone: the PIN
never travels to it, so only a person who heard it can.

What it does not add: it is not a second secret against the rendezvous or anyone without
the code (they already fail the PAKE and learn nothing, PIN or not), nor protection if
the out-of-band channel itself is the attacker's (whoever the inviter reads the PIN to
gets in), nor any check by the *other* members (each of them still verifies the
newcomer's admission for itself, ``stack.node.roomtrust``). It proves contact, not
identity: the inviter's user still has to know whom they are talking to.

The PIN is shown in the inviter's node log (``room.pin_issued``) and its CLI. Seen there
by someone else, it is of use only to the peer that ran this session: the MAC is keyed
from this session's PAKE key, so nobody else can answer with it.

Rules (each a named error; the inviter reports every one as its failed attempt, and the
invite is spent already, whatever happens: one guess per invite, as for codes):

- a PIN whose MAC differs from the inviter's: ``WrongPin``;
- no PIN within ``DEFAULT_PIN_TIMEOUT`` seconds of the challenge, or the newcomer's user
  declined: ``NoPin``;
- a PIN message seen before (the inviter keeps them in its ``ReplayGuard``, as it keeps
  PAKE messages): ``ReplayedPin``. A message from another session could not match anyway
  (its ``th`` differs); the guard names it instead of calling it a wrong guess;
- what the newcomer's user types is normalised (spaces and dashes dropped) and must be
  exactly the challenge's number of digits, else ``InvalidPin`` locally, before anything
  is sent, so a typo is not the one guess.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from stack.base.identity import PeerId
from rooms.errors import InvalidPin

__all__ = ["DEFAULT_PIN_DIGITS", "DEFAULT_PIN_TIMEOUT", "MAX_PIN_DIGITS", "PinIssued",
           "PinRequested", "draw_pin", "normalize_pin", "pin_mac"]

DEFAULT_PIN_DIGITS = 6       # 1 in a million for a guess, with one guess per invite
MAX_PIN_DIGITS = 12
MIN_PIN_DIGITS = 4
DEFAULT_PIN_TIMEOUT = 120.0  # seconds: a person reads it out, another types it


@dataclass(frozen=True, slots=True)
class PinIssued:
    """The inviter's side: show ``pin`` to the user; ``newcomer`` is the peer id the
    newcomer proved in the PAKE (whom the PIN would admit); ``expires`` Unix seconds."""

    room_id: bytes
    number: int
    newcomer: PeerId
    pin: str
    expires: float


@dataclass(frozen=True, slots=True)
class PinRequested:
    """The newcomer's side: ask the user for the ``digits``-digit PIN the inviter's node
    shows, before ``expires`` (Unix seconds)."""

    room_id: bytes
    number: int
    digits: int
    expires: float


def draw_pin(entropy: Callable[[int], bytes], digits: int = DEFAULT_PIN_DIGITS) -> str:
    """A uniform ``digits``-digit PIN (rejection sampling: no modulo bias)."""
    if not MIN_PIN_DIGITS <= digits <= MAX_PIN_DIGITS:
        raise InvalidPin(f"a PIN has {MIN_PIN_DIGITS}..{MAX_PIN_DIGITS} digits")
    bound = 10 ** digits
    limit = (1 << 64) - (1 << 64) % bound
    while True:
        value = int.from_bytes(entropy(8), "big")
        if value < limit:
            return str(value % bound).zfill(digits)


def normalize_pin(text: object, digits: int) -> str:
    """What the user typed, as the PIN's digits; ``InvalidPin`` if it cannot be one."""
    if not isinstance(text, str):
        raise InvalidPin("a PIN is text")
    cleaned = text.strip().replace(" ", "").replace("-", "")
    if len(cleaned) != digits or not cleaned.isascii() or not cleaned.isdigit():
        raise InvalidPin(f"the inviter's PIN has {digits} digits; {text!r} is not one "
                         "(nothing was sent: try again)")
    return cleaned


def pin_mac(key: bytes, th: bytes, pin: str) -> bytes:
    """The PIN message's MAC: ``HMAC-SHA256(key, th || pin)``."""
    return hmac.new(key, th + pin.encode("ascii"), hashlib.sha256).digest()

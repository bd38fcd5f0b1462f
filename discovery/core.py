"""The sans-I/O Kademlia core (DESIGN.md section 2; issue 5 sections 1 and 2).

    core.receive(data, addr, now)   feed one datagram (DHT_BYTE first)
    core.outgoing()                 -> [(data, addr)] to send now
    core.next_timer()               -> when to call handle_timer (seconds, or None)
    core.handle_timer(now)
    core.next_event()               -> BootstrapDone | LookupDone | GetDone | PutDone |
                                       RecordRefreshDue | None
    core.bootstrap(addrs, now) / start_lookup(target, now) / get(key, now) /
    core.put(record, now) / publish(record, now)  -> op id (its result is one event)

Rules:
- Identity binding: a peer enters the routing table only after signing a fresh nonce we
  sent to its address: ``PROOF_DOMAIN || txid`` in its reply to our request, or
  ``PROVE_DOMAIN || challenge`` in a one-way PROVE answering the ``challenge`` we put in
  our reply to its request. We ask for a proof only when it would change the table
  (``RoutingTable.wants``, counting the proof requests in flight: one per peer at a time,
  no more for a bucket than it has room for), so crypto is spent once per contact. A request from an
  unknown server-mode peer gets a counter-challenge in its reply (single use, expires
  after ``prove_window``), so a mutual proof costs 3 datagrams (request, reply with proof
  and challenge, PROVE). Peers named in a walk's answers are challenged (a PING) only
  when the walk ends and only if it never queried them: a query asks for the proof
  itself, so a learned peer costs no extra round trip when the walk asks it anyway. A
  bad or missing proof is counted as ``proof_failed`` (Sybil ids without keys end
  there); a PROVE for no pending challenge of that peer at that address as
  ``unexpected_prove``; a PROVE is never answered (nothing to reflect). Addresses change
  only through a new proof.
- Probation (issue 14 section 1): a peer that entered through a one-way PROVE is PINGed
  once; FIND_NODE answers name only contacts that have answered a request of ours and
  not failed since (``RoutingTable`` rules), so identities that prove themselves and
  vanish are never passed on. Any failed RPC (a lookup's too) hides a contact at once;
  one that never answered is dropped at once, others after ``stale_failures``.
- A GET keeps at most ``quorum - copies found`` RPCs in flight (and at most ``alpha``):
  more could only be answered after it has stopped.
- Client mode (``config.server = False``): requests carry no server flag, so nobody adds us.
- Limits: datagrams over ``MAX_DATAGRAM`` and malformed ones are counted drops; requests
  are rate-limited per source address; replies to a requester without our cookie (even
  one claiming a known contact's address: that may be spoofed) are at most
  ``amplification`` x its request (contacts are trimmed, a record that does not fit is
  withheld with the truncated flag); STORE needs the cookie.
- State and work an unauthenticated sender can cause (issue 14 section 1): the
  challenge-backoff and pending-nonce tables are bounded (``max_challenges``) and expire
  in O(1) amortised (``guard.ExpiringSet``, ``guard.ExpiringKeys``); signing a proof, a
  counter-challenge and checking a STORE's record for a *stranger* (anyone but a contact
  at its proven address
  that echoes our cookie) each spend a token of its source IP's budget
  (``stranger_rate``/``stranger_burst``, per IP, not per port; requests with our cookie
  have their own, so a spoofer cannot spend an IP's real budget). Over budget: the
  request is dropped (a STORE answered ``rate_limited``; a counter-challenge left out),
  counted as ``work_limited``.
- Timeouts are adaptive: RFC 6298 RTO from the contact's RTT estimate, or from the
  estimate over all peers for a stranger.
- Record store (issue 14 section 1): each source IP may hold ``max_records_per_ip``
  records here; a full store evicts a record of a lower priority class (publisher not
  proven, we not among the closest) for a newcomer of a higher one (``discovery.records``).
- Remote garbage never raises: every rejection increments ``stats[reason]``.

``stats`` keys: oversize, malformed, unexpected_reply, rate_limited, self_request,
amplification_drop (a reply that cannot fit even without contacts), peer_mismatch (the
wrong peer answered at an address), proof_failed (a missing or bad identity proof: Sybil
ids without keys), proof_ok, challenge_sent (PING challenges and counter-challenges),
unexpected_prove, work_limited (a stranger's IP over its work budget), timeout,
store_<result> (STOREs we served,
see ``discovery.records``), get_rejected_<code> (invalid records a GET was offered),
put_rejected_<result> (replicas refusing our STORE), repairs (stale holders updated).
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import random
from collections import Counter, deque
from dataclasses import dataclass

from discovery.events import (BootstrapDone, Event, GetDone, LookupDone, PeerInfo, PutDone,
                              RecordRefreshDue)
from discovery.guard import Cookies, ExpiringKeys, ExpiringSet, PeerCookies
from discovery.lookup import SUCCEEDED, Lookup
from discovery.records import RecordInfo, RecordStore, RecordValidator, key_of
from discovery.routing import Contact, RoutingTable, RttEstimator
from discovery.wire import (FIND_NODE, FIND_VALUE, FLAG_SERVER, FLAG_TRUNCATED,
                            FLAG_WANT_PROOF, MAX_DATAGRAM, MAX_RECORD, PING, PROOF_DOMAIN,
                            PROVE, PROVE_DOMAIN, STORE, Reply, Request, WireContact, decode,
                            encode_reply, encode_request)
from stack.base.identity import Identity, verify_signature
from stack.base.net import Address
from stack.base.ratelimit import TokenBuckets

__all__ = ["DhtConfig", "DhtCore"]

_INF = float("inf")


@dataclass(frozen=True)
class DhtConfig:
    """Tunables. Times in seconds."""

    k: int = 20                      # bucket size and replication factor
    alpha: int = 3                   # parallel RPCs per lookup
    quorum: int = 3                  # valid copies a GET collects before it stops
    server: bool = True              # publicly reachable: may enter others' tables
    stale_failures: int = 3          # consecutive failures before a contact is dropped
    initial_rto: float = 1.0         # timeout before any RTT sample
    min_rto: float = 0.2
    max_rto: float = 5.0
    store_retries: int = 1           # retransmissions of STORE and bootstrap requests
    refresh_interval: float = 900.0  # one liveness probe per interval (jittered 0.5-1x)
    republish_interval: float = 4 * 3600.0  # publisher re-puts its record this often
    record_window: float = 24 * 3600.0   # freshness window of stored records
    max_records: int = 65536
    max_records_per_ip: int = 256    # records one source IP may have stored here (quota)
    rate: float = 100.0              # requests per second per source address
    burst: float = 200.0
    amplification: int = 3           # reply <= 3 x request for sources without our cookie
    min_unvalidated_request: int = 400  # pad un-cookied requests so a full reply fits
    challenge_backoff: float = 60.0  # do not re-challenge the same (peer, address) sooner
    prove_window: float = 10.0       # a counter-challenge must be answered within this
    max_challenges: int = 4096       # bound of the challenge-backoff and pending-nonce tables
    # Work done for an unauthenticated source (not a contact at its proven address):
    # signing a proof, a counter-challenge, checking a STORE's record. One token each,
    # per source IP (not per port: one host has 64k ports).
    stranger_rate: float = 50.0
    stranger_burst: float = 200.0
    maintenance_interval: float = 300.0  # record expiry and republish checks
    # Keeping records through churn (issue 11 section 5; 0 / False turns each off):
    keep_own_record: bool = True   # a publisher holds its own record (it is the key's
                                   # closest node: lookups for it end there)
    handoff_rank: int = 2    # a holder hands a record to a newly seen node among the k
                             # closest to its key when fewer than this many of its
                             # contacts are closer to the key than itself
    replicas_wanted: int = 10  # a publisher that saw a replica fail probes its key's k
                               # closest at the next maintenance tick and re-puts to
                               # those lacking the record when fewer than this hold it
    max_handoff: int = 32    # records one handoff may send (bounds the work a join causes)


@functools.lru_cache(maxsize=1 << 16)
def _node_id(peer_id: bytes) -> int:
    """Node id of a peer-id (SHA-256, as an int for XOR). Pure, so cached process-wide."""
    return int.from_bytes(hashlib.sha256(peer_id).digest(), "big")


@dataclass(slots=True)
class _Rpc:
    txid: bytes
    kind: int
    addr: Address
    expected: bytes | None   # peer id we expect to answer (None: bootstrap by address)
    node_id: int | None
    want_proof: bool
    sent_at: float
    deadline: float
    op: _Op | None
    data: bytes
    retries_left: int
    retransmitted: bool = False
    asking: bool = False     # counted in DhtCore._asking until it ends


class DhtCore:
    # one per simulated node: slots, not a ~800-byte instance dict each
    __slots__ = ("identity", "config", "server", "peer_id", "key", "table", "store",
                 "validator", "stats", "_rng", "_cookies", "_limiter", "_their_cookies",
                 "_challenged", "_pending_proves", "_work", "_asking", "_asking_in",
                 "_rtt", "_rpcs", "_timers", "_out", "_events", "_next_op", "_published",
                 "_replicas", "_dirty", "_handed", "_next_refresh", "_next_maintenance",
                 "_next_republish")

    def __init__(self, identity: Identity, validator: RecordValidator, rng: random.Random,
                 config: DhtConfig = DhtConfig()) -> None:
        self.identity = identity
        self.config = config
        self.server = config.server
        self.peer_id: bytes = identity.peer_id.multihash
        self.key: bytes = identity.peer_id.dht_key
        self.table = RoutingTable(int.from_bytes(self.key, "big"), config.k,
                                  config.stale_failures)
        self.store = RecordStore(validator, config.record_window, config.max_records,
                                 config.max_records_per_ip)
        self.validator = validator
        self.stats: Counter[str] = Counter()
        # nonces, txids and the cookie secret come from here: the OS's CSPRNG
        # (random.SystemRandom) on a real node, a seeded Random only in simulations
        self._rng = rng
        self._cookies = Cookies(rng.randbytes(32))
        self._limiter = TokenBuckets(config.rate, config.burst)
        # cookies peers gave us (only in answers to our requests), until too old to send
        self._their_cookies = PeerCookies()
        # (node id, address) challenged within ``challenge_backoff``
        self._challenged: ExpiringSet[tuple[int, Address]] = ExpiringSet(
            config.challenge_backoff, config.max_challenges)
        # counter-challenge nonce -> (peer id, address, sent at); single use
        self._pending_proves: ExpiringKeys[bytes, tuple[bytes, Address, float]] = \
            ExpiringKeys(config.prove_window, config.max_challenges)
        self._work = TokenBuckets(config.stranger_rate, config.stranger_burst)
        # (node id, address) we have a proof request out to, and how many per bucket: a
        # peer is asked once at a time, and a bucket no more often than it has room
        self._asking: set[tuple[int, Address]] = set()
        self._asking_in: Counter[int] = Counter()
        self._rtt = RttEstimator()
        self._rpcs: dict[bytes, _Rpc] = {}
        self._timers: list[tuple[float, bytes]] = []
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[Event] = deque()
        self._next_op = 0
        self._published: dict[bytes, tuple[bytes, RecordInfo]] = {}
        # our published keys -> node ids that accepted our last put or probe (a tuple:
        # searched only when a contact fails or rejoins; a set of 20 is 11x its size),
        # and the keys one of whose replicas has failed since (a dict: ordered)
        self._replicas: dict[bytes, tuple[int, ...]] = {}
        self._dirty: dict[bytes, None] = {}
        # node ids we handed records to within ``challenge_backoff`` (once per join)
        self._handed: ExpiringSet[int] = ExpiringSet(config.challenge_backoff,
                                                         config.max_challenges)
        self._next_refresh: float | None = None
        self._next_maintenance: float | None = None
        self._next_republish = _INF

    # ---- sans-I/O surface -------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        self._arm(now)
        if len(data) > MAX_DATAGRAM:
            self.stats["oversize"] += 1
            return
        msg = decode(data)
        if msg is None:
            self.stats["malformed"] += 1
        elif isinstance(msg, Request):
            self._on_request(msg, addr, len(data), now)
        else:
            rpc = self._rpcs.get(msg.txid)
            if rpc is None or rpc.addr != addr:
                self.stats["unexpected_reply"] += 1
                return
            self._forget(msg.txid)
            self._release(rpc)
            self._on_reply(rpc, msg, now)

    def _forget(self, txid: bytes) -> None:
        del self._rpcs[txid]
        if not self._rpcs:  # a fresh table: a dict keeps the capacity of its peak (a join)
            self._rpcs = {}

    def outgoing(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def next_timer(self) -> float | None:
        timers = self._timers
        while timers:
            deadline, txid = timers[0]
            rpc = self._rpcs.get(txid)
            if rpc is not None and rpc.deadline == deadline:
                break
            heapq.heappop(timers)  # answered or re-armed: drop the stale entry
        best = timers[0][0] if timers else _INF
        for t in (self._next_refresh, self._next_maintenance, self._next_republish):
            if t is not None and t < best:
                best = t
        return None if best == _INF else best

    def handle_timer(self, now: float) -> None:
        self._arm(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, txid = heapq.heappop(timers)
            rpc = self._rpcs.get(txid)
            if rpc is None or rpc.deadline != deadline:
                continue
            if rpc.retries_left > 0:
                rpc.retries_left -= 1
                rpc.retransmitted = True
                rpc.deadline = now + 2 * (deadline - rpc.sent_at)
                heapq.heappush(timers, (rpc.deadline, txid))
                self._out.append((rpc.data, rpc.addr))
                continue
            self._forget(txid)
            self._release(rpc)
            self.stats["timeout"] += 1
            self._fail(rpc, now)
        if self._next_refresh is not None and now >= self._next_refresh:
            self._next_refresh = now + self._jitter(self.config.refresh_interval)
            self._refresh(now)
        if self._next_maintenance is not None and now >= self._next_maintenance:
            self._next_maintenance = now + self.config.maintenance_interval
            self.store.expire(now)
            self._probe_replicas(now)
        if now >= self._next_republish:
            self._republish(now)

    # ---- operations ----------------------------------------------------------------------

    def bootstrap(self, addrs: list[Address], now: float) -> int:
        """Join through ``addrs`` (peer ids unknown), then look up our own id."""
        self._arm(now)
        op = _BootstrapOp(self, self._op_id(), self.key)
        op.begin(addrs, now)
        return op.op_id

    def start_lookup(self, target: bytes, now: float) -> int:
        """Find the k peers closest to a 32-byte ``target``; ends with ``LookupDone``."""
        self._arm(now)
        op = _NodesOp(self, self._op_id(), target)
        op.pump(now)
        return op.op_id

    def get(self, key: bytes, now: float) -> int:
        """Fetch the record stored under ``key``; ends with ``GetDone``."""
        self._arm(now)
        op = _GetOp(self, self._op_id(), key, now)
        op.pump(now)
        return op.op_id

    def put(self, record: bytes, now: float) -> int:
        """Store a signed record on the k nodes closest to its key once; ends with ``PutDone``."""
        return self._put(record, now)[0]

    def publish(self, record: bytes, now: float) -> int:
        """``put`` and keep re-putting it every ``republish_interval``; a
        ``RecordRefreshDue`` asks for a fresh signature half-way through the window."""
        op_id, info = self._put(record, now)
        if info is not None:
            self._published[key_of(info)] = (record, info)
            self._next_republish = min(self._next_republish,
                                       now + self.config.republish_interval)
        return op_id

    def _put(self, record: bytes, now: float) -> tuple[int, RecordInfo | None]:
        self._arm(now)
        op_id = self._op_id()
        code, info = (self.validator.check(record, now) if len(record) <= MAX_RECORD
                      else ("too_large", None))
        if info is None:
            self._events.append(PutDone(op_id, b"", 0, code))
            return op_id, None
        _PutOp(self, op_id, key_of(info), record).pump(now)
        return op_id, info

    def set_server(self, server: bool) -> None:
        """Server mode once the node knows it is publicly reachable (NAT report, dial-back)."""
        self.server = server

    # ---- requests we answer ----------------------------------------------------------

    def _on_request(self, req: Request, addr: Address, size: int, now: float) -> None:
        if not self._limiter.allow(addr, now):
            self.stats["rate_limited"] += 1
            return
        if req.sender == self.peer_id:
            self.stats["self_request"] += 1
            return
        if req.kind == PROVE:
            self._on_prove(req, addr, now)
            return
        sender_id = _node_id(req.sender)
        validated = self._cookies.check(req.cookie, addr, now)
        known = self.table.get(sender_id)
        # A stranger: anyone but a contact at its proven address that also shows it
        # receives there (our cookie). Its budget is its IP's; requests with our cookie
        # spend a separate one, so spoofing an IP cannot use up that IP's real budget.
        stranger = not (validated and known is not None and known.addr == addr)
        budget = (addr[0], validated)
        if req.want_proof and stranger and not self._work_allowed(budget, now):
            return
        contacts: list[WireContact] = []
        record = b""
        result = ""
        if req.kind in (FIND_NODE, FIND_VALUE):
            target = int.from_bytes(req.target, "big")
            # only contacts seen to answer us (probation: issue 14 section 1)
            contacts = [c.wire for c in self.table.closest(target, self.config.k + 1, True)
                        if c.node_id != sender_id][:self.config.k]
            if req.kind == FIND_VALUE:
                record = self.store.get(req.target, now)
        elif req.kind == STORE:
            if not validated:
                result = "no_cookie"
            elif stranger and not self._work_allowed(budget, now):
                result = "rate_limited"
            else:
                result = self.store.offer(req.target, req.record, now, addr[0],
                                          self._store_priority(req.target))
            self.stats["store_" + result] += 1
        flags = FLAG_SERVER if self.server else 0
        proof = self.identity.sign(PROOF_DOMAIN + req.txid) if req.want_proof else b""
        challenge = (self._consider(req.sender, sender_id, addr, budget, now) if req.server
                     else b"")
        reply = Reply(req.kind, req.txid, self.peer_id, flags, proof,
                      self._cookies.make(addr, now), tuple(contacts), record, result,
                      challenge)
        data = encode_reply(reply)
        if not validated:
            fitted = self._fit(reply, data, self.config.amplification * size)
            if fitted is None:
                self.stats["amplification_drop"] += 1
                return
            data = fitted
        self._out.append((data, addr))
        if req.server and req.want_proof:
            self._on_join_signal(sender_id, addr, now)

    def _store_priority(self, key: bytes) -> int:
        """A STORE's priority class (``discovery.records``): +2 when the record's
        publisher is proven (its node id, which is the key, is in our routing table), +1
        when we are among the k closest nodes to the key that we know of."""
        table, k = self.table, self.config.k
        key_id = int.from_bytes(key, "big")
        closest = table.closest(key_id, k)
        close = len(closest) < k or (table.own_id ^ key_id) < (closest[-1].node_id ^ key_id)
        return 2 * (table.get(key_id) is not None) + close

    def _fit(self, reply: Reply, data: bytes, budget: int) -> bytes | None:
        """Shrink a reply to ``budget`` bytes: trim far contacts, then withhold the record."""
        if len(data) <= budget:
            return data
        contacts = list(reply.contacts)
        record, flags = reply.record, reply.flags
        while len(data) > budget:
            if contacts:
                # each contact costs ~50 bytes; drop enough of them in one step
                drop = max(1, (len(data) - budget + 49) // 50)
                del contacts[-drop:]
            elif record:
                record, flags = b"", flags | FLAG_TRUNCATED
            else:
                return None
            data = encode_reply(Reply(reply.kind, reply.txid, reply.responder, flags,
                                      reply.proof, reply.cookie, tuple(contacts), record,
                                      reply.result, reply.challenge))
        return data

    def _consider(self, peer_id: bytes, node_id: int, addr: Address,
                  budget: tuple[str, bool], now: float) -> bytes:
        """A server-mode peer sent us a request: returns the counter-challenge nonce for
        our reply if its proof would change our table, else b""."""
        known = self.table.get(node_id)
        if known is not None and known.addr == addr:
            self.table.touch(node_id)
            return b""
        if not self._wants(node_id, addr):
            self.table.add_candidate(peer_id, node_id, addr)
            return b""
        if not self._may_challenge(node_id, addr, now, budget):
            return b""
        nonce = self._rng.randbytes(8)
        # bounded under a flood of spoofed sources: expired and then oldest nonces go
        self._pending_proves.add(nonce, now, (peer_id, addr, now))
        return nonce

    def _on_prove(self, req: Request, addr: Address, now: float) -> None:
        """A peer answers our counter-challenge: it holds its key and receives at ``addr``."""
        pending = self._pending_proves.pop(req.txid, now)  # None once expired
        if pending is None or pending[0] != req.sender or pending[1] != addr:
            self.stats["unexpected_prove"] += 1
            return
        if not verify_signature(req.sender[-32:], PROVE_DOMAIN + req.txid, req.proof):
            self.stats["proof_failed"] += 1
            return
        self.stats["proof_ok"] += 1
        node_id = _node_id(req.sender)
        if self.table.add_proven(req.sender, node_id, addr):
            # reply out, PROVE back: one round trip, as good an RTT sample as any
            rtt = now - pending[2]
            self._rtt.sample(rtt)
            contact = self.table.get(node_id)
            assert contact is not None  # add_proven just put it there
            contact.rtt.sample(rtt)
            if not contact.answered:
                # probation: handed to others only once it answers a request of ours;
                # a PROVE-and-vanish identity times out here and is dropped
                self._request(PING, addr, now, expected=req.sender, node_id=node_id,
                              want_proof=False)

    def _may_challenge(self, node_id: int, addr: Address, now: float,
                       budget: tuple[str, bool] | None = None) -> bool:
        """At most one challenge per (peer, address) per ``challenge_backoff`` (a bounded
        table, O(1) per call); one answering a request also spends a token of ``budget``
        (the requester's IP budget)."""
        key = (node_id, addr)
        if self._challenged.live(key, now):
            return False
        if budget is not None and not self._work_allowed(budget, now):
            return False
        self._challenged.add(key, now)
        self.stats["challenge_sent"] += 1
        return True

    def _work_allowed(self, budget: tuple[str, bool], now: float) -> bool:
        """Spend one token of a budget ((source IP, with our cookie)) for work done for
        a stranger."""
        if self._work.allow(budget, now):
            return True
        self.stats["work_limited"] += 1
        return False

    def _wants(self, node_id: int, addr: Address) -> bool:
        """Would a proof from ``node_id`` at ``addr`` change the table, counting the
        proofs already asked for? (``RoutingTable.wants`` plus our requests in flight:
        a second proof of the same peer, or one more than its bucket has room for, would
        be a wasted signature and round trip.)"""
        table = self.table
        if (node_id, addr) in self._asking or not table.wants(node_id, addr):
            return False
        if table.get(node_id) is not None:
            return True  # a new address: only a proof may move it
        index = table.bucket_index(node_id)
        return table.bucket_size(index) + self._asking_in[index] < table.k

    def _release(self, rpc: _Rpc) -> None:
        if rpc.asking:
            assert rpc.node_id is not None  # only a proof request to a known id is "asking"
            rpc.asking = False
            self._asking.discard((rpc.node_id, rpc.addr))
            if not self._asking:  # a set keeps its peak size: let a join's go
                self._asking = set()
            index = self.table.bucket_index(rpc.node_id)
            self._asking_in[index] -= 1
            if not self._asking_in[index]:
                del self._asking_in[index]

    def _challenge(self, peer_id: bytes, node_id: int, addr: Address, now: float) -> None:
        if self._may_challenge(node_id, addr, now):
            self._request(PING, addr, now, expected=peer_id, node_id=node_id, want_proof=True)

    # ---- replies to our requests -----------------------------------------------------

    def _on_reply(self, rpc: _Rpc, rep: Reply, now: float) -> None:
        if rep.kind != rpc.kind:
            self.stats["malformed"] += 1
            self._fail(rpc, now)
            return
        if rpc.expected is not None and rep.responder != rpc.expected:
            self.stats["peer_mismatch"] += 1
            self._fail(rpc, now)
            return
        node_id = rpc.node_id if rpc.node_id is not None else _node_id(rep.responder)
        before = self.table.get(node_id)
        was_verified = before is not None and before.verified
        if rpc.want_proof:
            if not (rep.proof and verify_signature(rep.responder[-32:],
                                                   PROOF_DOMAIN + rpc.txid, rep.proof)):
                self.stats["proof_failed"] += 1
                self._fail(rpc, now)
                return
            self.stats["proof_ok"] += 1
            if rep.server:
                self.table.add_proven(rep.responder, node_id, rpc.addr, answered=True)
        else:
            self.table.record_success(node_id)
        if rep.challenge and self.server:
            # The responder would add us: one signature, one datagram, no reply.
            proof = self.identity.sign(PROVE_DOMAIN + rep.challenge)
            self._out.append((encode_request(Request(PROVE, rep.challenge, self.peer_id,
                                                     FLAG_SERVER, proof=proof)), rpc.addr))
        if rep.cookie:
            self._their_cookies.put(rpc.addr, rep.cookie, now)
        if not rpc.retransmitted:
            rtt = now - rpc.sent_at
            self._rtt.sample(rtt)
            contact = self.table.get(node_id)
            if contact is not None:
                contact.rtt.sample(rtt)
        if not was_verified:
            contact = self.table.get(node_id)
            if contact is not None and contact.verified:
                # a node newly seen to answer (a joiner): its cookie is fresh, so the
                # records it should hold go out without a PING first
                self._handoff(contact, now, ping_first=False)
        op = rpc.op if rpc.op is not None and not rpc.op.finished else None
        if rep.contacts and not (isinstance(op, _LookupOp) and op.walking):
            # a walk's contacts wait for its end (``_learn_unqueried``): the ones it
            # queries prove themselves in their answers, without a PING of their own
            self._learn(rep.contacts, now)
        if op is not None:
            op.on_reply(rpc, rep, node_id, now)

    def _learn(self, contacts: tuple[WireContact, ...], now: float) -> None:
        """Peers named in a reply are only hints; challenge the ones a bucket has room for
        (this is how the buckets far from our own neighbourhood fill up)."""
        table = self.table
        for wc in contacts:
            node_id = _node_id(wc.peer_id)
            if table.get(node_id) is None and self._wants(node_id, wc.addr):
                self._challenge(wc.peer_id, node_id, wc.addr, now)

    def _learn_unqueried(self, lookup: Lookup, now: float) -> None:
        """A walk ended: challenge the peers it learned and never asked, as ``_learn``
        would have when their names arrived."""
        table = self.table
        for cand in lookup.unqueried():
            if table.get(cand.node_id) is None and self._wants(cand.node_id, cand.addr):
                self._challenge(cand.peer_id, cand.node_id, cand.addr, now)

    def _fail(self, rpc: _Rpc, now: float) -> None:
        if rpc.node_id is not None:
            replacement = self.table.record_failure(rpc.node_id)
            if replacement is not None:
                self._challenge(*replacement, now)
            if self.table.get(rpc.node_id) is None:
                # gone stale (one lost datagram is not enough): if it was a replica of
                # ours, probe at the next maintenance tick
                for key, ids in self._replicas.items():
                    if rpc.node_id in ids:
                        self._dirty[key] = None
        if rpc.op is not None and not rpc.op.finished:
            rpc.op.on_failure(rpc, now)

    # ---- sending -----------------------------------------------------------------------

    def _request(self, kind: int, addr: Address, now: float, *, expected: bytes | None,
                 node_id: int | None, op: _Op | None = None, target: bytes = b"",
                 record: bytes = b"", want_proof: bool | None = None,
                 retries: int = 0) -> None:
        if want_proof is None:
            want_proof = node_id is None or self._wants(node_id, addr)
        txid = self._rng.randbytes(8)
        while txid in self._rpcs:
            txid = self._rng.randbytes(8)
        cookie = self._their_cookies.get(addr, now)
        flags = (FLAG_SERVER if self.server else 0) | (FLAG_WANT_PROOF if want_proof else 0)
        # Pad only what buys a big reply: a PING's answer fits 3x an unpadded PING, so a
        # challenge (sent on behalf of a possibly spoofed request) amplifies nothing.
        pad = 0 if cookie or kind in (PING, STORE) else self.config.min_unvalidated_request
        data = encode_request(Request(kind, txid, self.peer_id, flags, cookie, target, record),
                              pad)
        contact = self.table.get(node_id) if node_id is not None else None
        estimator = contact.rtt if contact is not None and contact.rtt.srtt is not None \
            else self._rtt
        cfg = self.config
        deadline = now + estimator.rto(cfg.initial_rto, cfg.min_rto, cfg.max_rto)
        rpc = self._rpcs[txid] = _Rpc(txid, kind, addr, expected, node_id, want_proof, now,
                                      deadline, op, data, retries)
        if want_proof and node_id is not None and (node_id, addr) not in self._asking:
            rpc.asking = True
            self._asking.add((node_id, addr))
            self._asking_in[self.table.bucket_index(node_id)] += 1
        heapq.heappush(self._timers, (deadline, txid))
        self._out.append((data, addr))

    # ---- periodic work -------------------------------------------------------------------

    def _arm(self, now: float) -> None:
        # expired backoff and nonce entries go as soon as they are due (nothing to do
        # before that), not at the next insertion: a join fills these tables and the
        # node may insert nothing for a long time after it
        self._challenged.expire(now)
        self._pending_proves.expire(now)
        self._handed.expire(now)
        if self._next_refresh is None:
            self._next_refresh = now + self._jitter(self.config.refresh_interval)
            self._next_maintenance = now + self.config.maintenance_interval

    def _jitter(self, interval: float) -> float:
        return interval * self._rng.uniform(0.5, 1.0)

    def _refresh(self, now: float) -> None:
        """Liveness and freshness at two datagrams: ask the least recently seen contact of
        a random non-empty bucket for nodes near a random id in that bucket. A dead
        contact collects a failure (stale after several); the reply's contacts fill
        buckets with room (``_learn``)."""
        buckets = self.table.nonempty_buckets()
        if not buckets:
            return
        index = self._rng.choice(buckets)
        contact = self.table.bucket(index)[0]
        target = self._random_id_in_bucket(index)
        self._request(FIND_NODE, contact.addr, now, expected=contact.peer_id,
                      node_id=contact.node_id, target=target.to_bytes(32, "big"))

    def _random_id_in_bucket(self, index: int) -> int:
        return self.table.own_id ^ ((1 << index) | self._rng.getrandbits(index))

    def _fill_buckets(self, now: float) -> None:
        """After joining: one FIND_NODE per bucket beyond our neighbourhood that has room,
        sent to the contact closest to a random id in it. The reply's contacts are
        challenged by ``_learn``; far buckets fill without a full lookup each."""
        table = self.table
        nonempty = table.nonempty_buckets()
        if not nonempty:
            return
        sizes = table.buckets_sizes()
        for index in range(nonempty[0] + 1, len(sizes)):
            if sizes[index] >= table.k:
                continue
            target = self._random_id_in_bucket(index)
            best = table.closest(target, 1)
            if best:
                c = best[0]
                self._request(FIND_NODE, c.addr, now, expected=c.peer_id, node_id=c.node_id,
                              target=target.to_bytes(32, "big"))

    # ---- keeping records through churn (issue 11 section 5) --------------------------

    def _on_join_signal(self, node_id: int, addr: Address, now: float) -> None:
        """A server-mode peer asks for our proof: its table has no entry for us (a
        publisher's put or a refresh goes to contacts it knows without asking), so it is
        joining (or back after a restart,
        at the same address and with an empty store, which its table entry here cannot
        tell). A known contact at that address gets the records it should hold (after a
        PING: its old cookie may be from its previous process); a stranger gets them once
        it has proven itself and answered (``_on_reply``). A replica of ours that rejoins
        may have lost our record: probe at the next maintenance tick."""
        contact = self.table.get(node_id)
        if contact is None or contact.addr != addr:
            return
        for key, ids in self._replicas.items():
            if node_id in ids:
                self._dirty[key] = None
        self._handoff(contact, now, ping_first=True)

    def _handoff(self, contact: Contact, now: float, *, ping_first: bool) -> None:
        """Send ``contact`` the records it should hold (``_handoff_records``), at most
        once per ``challenge_backoff``."""
        if not self.config.handoff_rank or not len(self.store) \
                or self._handed.live(contact.node_id, now):
            return
        records = self._handoff_records(contact.node_id, now)
        if records:
            self._handed.add(contact.node_id, now)
            _HandoffOp(self, self._op_id(), contact, records).begin(now, ping_first)

    def _handoff_records(self, node_id: int, now: float) -> list[tuple[bytes, bytes]]:
        """The records we hold for which ``node_id`` is among the k closest nodes we know
        and fewer than ``handoff_rank`` of our verified contacts are closer to the key
        than we are (Kademlia's join handoff, by the few closest holders, not all k).
        Only keys within about the radius of its k-neighbourhood (in our table) are
        examined, and at most ``max_handoff`` are returned."""
        cfg, table = self.config, self.table
        near = [c for c in table.closest(node_id, cfg.k + 1, True) if c.node_id != node_id]
        radius = near[cfg.k - 1].node_id ^ node_id if len(near) >= cfg.k else (1 << 256) - 1
        out: list[tuple[bytes, bytes]] = []
        for key in self.store.keys_near(node_id, min(256, radius.bit_length() + 1)):
            record = self.store.get(key, now)
            if not record:
                continue
            key_id = int.from_bytes(key, "big")
            theirs, ours = node_id ^ key_id, table.own_id ^ key_id
            closer = [c.node_id ^ key_id for c in table.closest(key_id, cfg.k + 1, True)
                      if c.node_id != node_id]
            ahead_of_them = sum(d < theirs for d in closer) + (ours < theirs)
            if ahead_of_them >= cfg.k or sum(d < ours for d in closer) >= cfg.handoff_rank:
                continue
            out.append((key, record))
            if len(out) >= cfg.max_handoff:
                break
        return out

    def _probe_replicas(self, now: float) -> None:
        """For each published key one of whose replicas failed since the last put or
        probe: walk to its k closest (FIND_VALUE, so each says whether it holds the
        record) and re-put to those lacking it when fewer than ``replicas_wanted`` hold
        it. Nothing is sent while the replicas answer (an idle network costs nothing)."""
        if not self.config.replicas_wanted:
            self._dirty.clear()
            return
        for key in list(self._dirty):
            published = self._published.get(key)
            if published is not None:
                self.stats["replica_probes"] += 1
                _ProbeOp(self, self._op_id(), key, now, *published).pump(now)
        self._dirty.clear()

    def _republish(self, now: float) -> None:
        window = self.config.record_window
        for key, (record, info) in list(self._published.items()):
            if now - info.timestamp > window / 2:
                del self._published[key]
                self._replicas.pop(key, None)
                self._dirty.pop(key, None)
                self._events.append(RecordRefreshDue(key))
            else:
                self._put(record, now)
        self._next_republish = (now + self.config.republish_interval
                                if self._published else _INF)

    def _op_id(self) -> int:
        self._next_op += 1
        return self._next_op

    def _emit(self, event: Event) -> None:
        self._events.append(event)


class _Op:
    finished = False

    def __init__(self, core: DhtCore, op_id: int) -> None:
        self.core = core
        self.op_id = op_id

    def on_reply(self, rpc: _Rpc, rep: Reply, node_id: int, now: float) -> None:
        raise NotImplementedError

    def on_failure(self, rpc: _Rpc, now: float) -> None:
        raise NotImplementedError


class _LookupOp(_Op):
    """A walk towards ``target``; subclasses choose the RPC, the stop rule and the result."""

    kind = FIND_NODE

    def __init__(self, core: DhtCore, op_id: int, target: bytes) -> None:
        super().__init__(core, op_id)
        self.target = target
        self.lookup = Lookup(int.from_bytes(target, "big"), core.config.k, core.config.alpha)
        for c in core.table.closest(self.lookup.target, core.config.k):
            self.lookup.add(c.peer_id, c.node_id, c.addr)

    def stop(self) -> bool:
        return self.lookup.done

    @property
    def walking(self) -> bool:
        """Still asking peers: the contacts in its answers are its candidates."""
        return not self.finished

    def pump(self, now: float) -> None:
        if self.finished:
            return
        if not self.stop():
            for cand in self.lookup.next():
                self.core._request(self.kind, cand.addr, now, expected=cand.peer_id,
                                   node_id=cand.node_id, op=self, target=self.target)
        if self.stop():
            self.finished = True
            self.core._learn_unqueried(self.lookup, now)
            self.complete(now)

    def add_contacts(self, rep: Reply) -> None:
        own = self.core.table.own_id
        for wc in rep.contacts:
            node_id = _node_id(wc.peer_id)
            if node_id != own:
                self.lookup.add(wc.peer_id, node_id, wc.addr)

    def on_reply(self, rpc: _Rpc, rep: Reply, node_id: int, now: float) -> None:
        self.add_contacts(rep)
        self.lookup.succeeded(node_id)
        self.pump(now)

    def on_failure(self, rpc: _Rpc, now: float) -> None:
        if rpc.node_id is not None:
            self.lookup.failed(rpc.node_id)
        self.pump(now)

    def complete(self, now: float) -> None:
        raise NotImplementedError


class _NodesOp(_LookupOp):
    def complete(self, now: float) -> None:
        peers = tuple(PeerInfo(c.peer_id, c.addr) for c in self.lookup.closest())
        self.core._emit(LookupDone(self.op_id, self.target, peers))


class _BootstrapOp(_LookupOp):
    """Ask each bootstrap address for nodes near our id, then walk towards our id."""

    def begin(self, addrs: list[Address], now: float) -> None:
        self.waiting = len(addrs)
        self.answered = 0
        for addr in addrs:
            self.core._request(FIND_NODE, addr, now, expected=None, node_id=None, op=self,
                               target=self.target, want_proof=True,
                               retries=self.core.config.store_retries + 1)
        if not addrs:
            self._walk(now)

    def on_reply(self, rpc: _Rpc, rep: Reply, node_id: int, now: float) -> None:
        if rpc.node_id is not None:  # phase two: an ordinary lookup step
            super().on_reply(rpc, rep, node_id, now)
            return
        self.answered += 1
        self.lookup.add(rep.responder, node_id, rpc.addr, SUCCEEDED)
        self.add_contacts(rep)
        self._one_done(now)

    def on_failure(self, rpc: _Rpc, now: float) -> None:
        if rpc.node_id is not None:
            super().on_failure(rpc, now)
            return
        self._one_done(now)

    def _one_done(self, now: float) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self._walk(now)

    def _walk(self, now: float) -> None:
        for c in self.core.table.closest(self.lookup.target, self.core.config.k):
            self.lookup.add(c.peer_id, c.node_id, c.addr)
        if not self.answered and not len(self.core.table):
            self.finished = True
            self.core._emit(BootstrapDone(self.op_id, 0, "unreachable"))
            return
        self.pump(now)

    def complete(self, now: float) -> None:
        self.core._fill_buckets(now)
        self.core._emit(BootstrapDone(self.op_id, len(self.core.table), None))


class _GetOp(_LookupOp):
    """FIND_VALUE walk that stops at ``quorum`` valid copies, then repairs stale holders."""

    kind = FIND_VALUE

    def __init__(self, core: DhtCore, op_id: int, key: bytes, now: float) -> None:
        super().__init__(core, op_id, key)
        self.holders: dict[int, tuple[int, Address]] = {}   # node id -> (seq, addr)
        self.checked: dict[bytes, RecordInfo | None] = {}
        self.retried: set[int] = set()
        self.best: tuple[bytes, RecordInfo] | None = None
        self.rejected: list[str] = []  # the codes of invalid records we were offered
        local = core.store.get(key, now)
        if local:  # our own replica counts for the answer, not for the quorum
            self._consider(local, now)

    def stop(self) -> bool:
        return len(self.holders) >= self.core.config.quorum or self.lookup.done

    def pump(self, now: float) -> None:
        # Keep no more RPCs in flight than copies still missing: once the outstanding
        # ones could complete the quorum, more would only be answered after we stop.
        cfg = self.core.config
        self.lookup.alpha = max(1, min(cfg.alpha, cfg.quorum - len(self.holders)))
        super().pump(now)

    def _consider(self, record: bytes, now: float) -> RecordInfo | None:
        info = self.checked.get(record, ...)
        if info is ...:
            code, info = self.core.validator.check(record, now)
            if info is not None and key_of(info) != self.target:
                code, info = "wrong_key", None
            if info is None:
                self.core.stats["get_rejected_" + code] += 1
                self.rejected.append(code)
            self.checked[record] = info
        if info is not None and (self.best is None or info.seq > self.best[1].seq):
            self.best = (record, info)
        return info

    def on_reply(self, rpc: _Rpc, rep: Reply, node_id: int, now: float) -> None:
        if rep.truncated and not rep.record and node_id not in self.retried:
            self.retried.add(node_id)  # we hold its cookie now: ask again for the record
            self.core._request(FIND_VALUE, rpc.addr, now, expected=rpc.expected,
                               node_id=node_id, op=self, target=self.target, want_proof=False)
            return
        if rep.record:
            info = self._consider(rep.record, now)
            if info is not None:
                self.holders[node_id] = (info.seq, rpc.addr)
        super().on_reply(rpc, rep, node_id, now)

    def complete(self, now: float) -> None:
        repaired = 0
        if self.best is None:
            self.core._emit(GetDone(self.op_id, self.target, None, None, 0, 0, "not_found",
                                    tuple(self.rejected)))
            return
        record, info = self.best
        for node_id, (seq, addr) in self.holders.items():
            if seq < info.seq:
                cand = self.lookup.get(node_id)
                self.core._request(STORE, addr, now, expected=cand.peer_id if cand else None,
                                   node_id=node_id, target=self.target, record=record,
                                   want_proof=False)
                repaired += 1
        if self.core.store.get(self.target, now) not in (b"", record):
            self.core.store.offer(self.target, record, now,  # our own stale replica too
                                  priority=self.core._store_priority(self.target))
        self.core.stats["repairs"] += repaired
        self.core._emit(GetDone(self.op_id, self.target, record, info.seq,
                                len(self.holders), repaired, None, tuple(self.rejected)))


class _PutOp(_LookupOp):
    """Walk to the key, then STORE on the k closest that answered."""

    def __init__(self, core: DhtCore, op_id: int, key: bytes, record: bytes) -> None:
        super().__init__(core, op_id, key)
        self.record = record
        self.storing = 0
        self.stored = 0
        self.accepted: set[int] = set()
        self.walked = False

    @property
    def walking(self) -> bool:
        return not (self.walked or self.finished)

    def pump(self, now: float) -> None:
        if self.walked or self.finished:
            return
        if not self.lookup.done:
            for cand in self.lookup.next():
                self.core._request(FIND_NODE, cand.addr, now, expected=cand.peer_id,
                                   node_id=cand.node_id, op=self, target=self.target)
        if self.lookup.done:
            self.walked = True
            self.core._learn_unqueried(self.lookup, now)
            self._store_phase(now)

    def _store_phase(self, now: float) -> None:
        targets = self.lookup.closest()
        if not targets:
            self._finish("no_peers", now)
            return
        self.storing = len(targets)
        for cand in targets:
            self.core._request(STORE, cand.addr, now, expected=cand.peer_id,
                               node_id=cand.node_id, op=self, target=self.target,
                               record=self.record, want_proof=False,
                               retries=self.core.config.store_retries)

    def on_reply(self, rpc: _Rpc, rep: Reply, node_id: int, now: float) -> None:
        if rpc.kind != STORE:
            super().on_reply(rpc, rep, node_id, now)
            return
        if rep.result in ("stored", "unchanged"):
            self.stored += 1
            self.accepted.add(node_id)
        else:
            self.core.stats["put_rejected_" + rep.result] += 1
        self._store_done(now)

    def on_failure(self, rpc: _Rpc, now: float) -> None:
        if rpc.kind != STORE:
            super().on_failure(rpc, now)
            return
        self._store_done(now)

    def _store_done(self, now: float) -> None:
        self.storing -= 1
        if self.storing == 0:
            self._finish(None if self.stored else "rejected", now)

    def _finish(self, error: str | None, now: float) -> None:
        self.finished = True
        core = self.core
        published = core._published.get(self.target)
        if published is not None and published[0] == self.record:
            core._replicas[self.target] = tuple(self.accepted)  # the replicas to watch
            core._dirty.pop(self.target, None)
            if self.stored and core.config.keep_own_record:
                # put: now ours too (a failed put keeps nothing that could clash later)
                core.store.offer(self.target, self.record, now, None, 3)
        core._emit(PutDone(self.op_id, self.target, self.stored, error))


class _ProbeOp(_GetOp):
    """A publisher's replica check (``DhtCore._probe_replicas``): a FIND_VALUE walk to
    the k closest (no early stop at a quorum), then STOREs to those of them without the
    record (or with an older one) when fewer than ``replicas_wanted`` hold it. Ends
    with no event: the layer above did not ask for it."""

    def __init__(self, core: DhtCore, op_id: int, key: bytes, now: float, record: bytes,
                 info: RecordInfo) -> None:
        super().__init__(core, op_id, key, now)
        self.record = record
        self.info = info

    def stop(self) -> bool:
        return self.lookup.done

    def pump(self, now: float) -> None:
        _LookupOp.pump(self, now)

    def complete(self, now: float) -> None:
        core, seq = self.core, self.info.seq
        closest = self.lookup.closest()
        missing = [c for c in closest
                   if self.holders.get(c.node_id, (-1, None))[0] < seq]
        core._replicas[self.target] = tuple(c.node_id for c in closest)
        if len(closest) - len(missing) >= core.config.replicas_wanted:
            return
        core.stats["replica_reputs"] += len(missing)
        for c in missing:
            core._request(STORE, c.addr, now, expected=c.peer_id, node_id=c.node_id,
                          target=self.target, record=self.record, want_proof=False,
                          retries=core.config.store_retries)


class _HandoffOp(_Op):
    """STOREs of records a joiner should hold (``DhtCore._handoff``), after a PING when
    its cookie may be stale. The receiver checks each record as it checks any STORE
    (signature, key, seq, quota): handing over changes no acceptance rule."""

    def __init__(self, core: DhtCore, op_id: int, contact: Contact,
                 records: list[tuple[bytes, bytes]]) -> None:
        super().__init__(core, op_id)
        self.contact = contact
        self.records = records

    def begin(self, now: float, ping_first: bool) -> None:
        c = self.contact
        if ping_first:
            self.core._request(PING, c.addr, now, expected=c.peer_id, node_id=c.node_id,
                               op=self, want_proof=False)
        else:
            self._store(now)

    def _store(self, now: float) -> None:
        c, core = self.contact, self.core
        core.stats["handoffs"] += len(self.records)
        for key, record in self.records:
            core._request(STORE, c.addr, now, expected=c.peer_id, node_id=c.node_id, op=self,
                          target=key, record=record, want_proof=False)

    def on_reply(self, rpc: _Rpc, rep: Reply, node_id: int, now: float) -> None:
        if rpc.kind == PING:
            self._store(now)
        else:
            self.core.stats["handoff_" + rep.result] += 1

    def on_failure(self, rpc: _Rpc, now: float) -> None:
        pass  # a joiner that vanished: nothing to hand over

"""Address cookies (discovery.guard.Cookies): valid for the current and the previous
epoch only, the same whatever was asked for in between."""

from discovery.guard import COOKIE_EPOCH, Cookies, ExpiringKeys, ExpiringSet, PeerCookies

A = ("198.51.100.7", 4000)


def test_a_cookie_holds_for_two_epochs_and_does_not_depend_on_other_requests() -> None:
    cookies = Cookies(b"s" * 32)
    first = cookies.make(A, 10.0)
    assert cookies.check(first, A, 10.0)
    assert cookies.check(first, A, COOKIE_EPOCH + 10.0)        # the previous epoch's
    assert not cookies.check(first, A, 2 * COOKIE_EPOCH + 10.0)  # two epochs on: no
    assert not cookies.check(first, ("198.51.100.8", 4000), 10.0)
    for i in range(500):
        cookies.make(("203.0.113.1", 1000 + i), 10.0)
    assert cookies.make(A, 10.0) == first and cookies.check(first, A, 10.0)
    other = Cookies(b"t" * 32)  # another secret: other cookies
    assert not other.check(first, A, 10.0)


def test_expiring_keys_expire_when_due_and_touch_nothing_before() -> None:
    """``expire`` before the head is due examines nothing; once every key has expired
    the table is empty (and fresh), and it still bounds and evicts the oldest."""
    keys: ExpiringKeys[int, str] = ExpiringKeys(ttl=10.0, max_keys=3)
    for i in range(3):
        keys.add(i, float(i), str(i))
    touched = keys.touched
    for _ in range(100):
        keys.expire(5.0)  # nothing due before 10.0
    assert keys.touched == touched and len(keys) == 3
    keys.add(3, 6.0, "3")  # full: the oldest (0) goes
    assert keys.get(0, 6.0) is None and keys.get(3, 6.0) == "3" and len(keys) == 3
    keys.expire(11.5)  # 1 (expires 11.0) goes, 2 (12.0) stays
    assert keys.get(1, 11.5) is None and keys.get(2, 11.5) == "2" and len(keys) == 2
    keys.expire(100.0)
    assert len(keys) == 0
    keys.add(7, 100.0, "7")
    assert keys.get(7, 109.0) == "7" and keys.get(7, 110.0) is None
    keys.add(8, 200.0, "8")  # this add's expiry empties the table first: 8 is kept
    assert keys.get(8, 201.0) == "8" and len(keys) == 1


def test_expiring_set_expires_evicts_and_counts_as_expiring_keys() -> None:
    """The value-less table answers and counts (``touched``) exactly as ``ExpiringKeys``
    does for the same inserts, restarts, evictions and expiries."""
    keys: ExpiringKeys[int, bool] = ExpiringKeys(ttl=10.0, max_keys=3)
    plain: ExpiringSet[int] = ExpiringSet(ttl=10.0, max_keys=3)
    steps = [(0, 0.0), (1, 1.0), (0, 2.0), (2, 3.0), (3, 4.0), (4, 13.5), (5, 30.0)]
    for key, now in steps:
        keys.add(key, now, True)
        plain.add(key, now)
        for probe in range(6):
            for at in (now, now + 9.9, now + 10.0):
                assert plain.live(probe, at) == (keys.get(probe, at) is not None)
        assert (len(plain), plain.touched) == (len(keys), keys.touched)
    touched = plain.touched
    plain.expire(35.0)  # nothing due before 40.0
    assert plain.touched == touched and plain.live(5, 35.0)
    plain.expire(40.0)
    assert len(plain) == 0 and not plain.live(5, 39.0)


def test_peer_cookies_are_sent_for_one_epoch_and_then_dropped_oldest_first() -> None:
    cookies = PeerCookies()
    b, c = ("198.51.100.8", 1), ("192.0.2.1", 9)
    cookies.put(A, b"12345678", 1000.0)
    cookies.put(b, b"abcdefgh", 1100.0)
    assert cookies.get(A, 1000.0 + COOKIE_EPOCH - 0.001) == b"12345678"
    assert cookies.get(A, 1000.0 + COOKIE_EPOCH) == b""  # kept until the next put, not sent
    assert cookies.get(c, 1000.0) == b""
    cookies.put(A, b"x" * 16, 1200.0)  # refreshed: now the newest, its clock restarted
    assert list(cookies) == [b, A]
    cookies.put(c, b"yyyyyyyy", 1100.0 + COOKIE_EPOCH)  # b's epoch is over: it goes
    assert list(cookies) == [A, c] and cookies.get(A, 1200.0 + 1) == b"x" * 16
    cookies.put(b, b"zzzzzzzz", 1200.0 + 2 * COOKIE_EPOCH)  # all others are too old now
    assert list(cookies) == [b] and len(cookies) == 1


def test_peer_cookies_keep_at_most_max_peers_newest_first() -> None:
    cookies = PeerCookies(max_peers=3)
    for port in range(1, 6):
        cookies.put(("192.0.2.1", port), bytes([port]) * 8, float(port))
    assert [port for _, port in cookies] == [3, 4, 5]
    assert cookies.get(("192.0.2.1", 2), 5.0) == b""
    assert cookies.get(("192.0.2.1", 3), 5.0) == b"\x03" * 8

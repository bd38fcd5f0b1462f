"""Address cookies (discovery.guard.Cookies): valid for the current and the previous
epoch, and cached for those two only."""

from discovery.guard import COOKIE_EPOCH, Cookies

A = ("198.51.100.7", 4000)


def test_a_cookie_holds_for_two_epochs_and_the_cache_forgets_older_ones() -> None:
    cookies = Cookies(b"s" * 32)
    first = cookies.make(A, 10.0)
    assert cookies.check(first, A, 10.0)
    assert cookies.check(first, A, COOKIE_EPOCH + 10.0)        # the previous epoch's
    assert not cookies.check(first, A, 2 * COOKIE_EPOCH + 10.0)  # two epochs on: no
    assert not cookies.check(first, ("198.51.100.8", 4000), 10.0)
    for i in range(500):
        cookies.make(("203.0.113.1", 1000 + i), 10.0)
    cookies.make(A, 3 * COOKIE_EPOCH)
    assert len(cookies._current) + len(cookies._previous) <= 2  # epochs 0, 1 not checked

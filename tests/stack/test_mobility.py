"""The change detector (issue 10 section 1) on a fake clock and fake interfaces."""

from __future__ import annotations

from stack.base.clock import ManualClock
from stack.node.mobility import Change, ChangeDetector


class FakeInterfaces:
    def __init__(self, *ips: str) -> None:
        self.ips = list(ips)
        self.send_errors = 0


def detector(clock: ManualClock, nics: FakeInterfaces, **kw) -> ChangeDetector:
    return ChangeDetector(nics.ips, wall=clock.now(), mono=clock.monotonic(),
                          send_errors=nics.send_errors, **kw)


def poll(d: ChangeDetector, clock: ManualClock, nics: FakeInterfaces) -> list[Change]:
    return d.poll(nics.ips, nics.send_errors, wall=clock.now(), mono=clock.monotonic())


def test_nothing_changes_nothing_reported():
    clock, nics = ManualClock(), FakeInterfaces("127.0.0.1", "192.0.2.5")
    d = detector(clock, nics)
    for _ in range(10):
        clock.advance(0.25)
        assert poll(d, clock, nics) == []


def test_interface_change_reports_old_and_new_once():
    clock, nics = ManualClock(), FakeInterfaces("127.0.0.1", "192.0.2.5")
    d = detector(clock, nics)
    nics.ips = ["127.0.0.1", "198.51.100.7"]
    clock.advance(0.25)
    assert poll(d, clock, nics) == [Change("192.0.2.5", "198.51.100.7", "interface")]
    clock.advance(0.25)
    assert poll(d, clock, nics) == []


def test_interface_added_and_loopback_ignored():
    clock, nics = ManualClock(), FakeInterfaces("127.0.0.1", "192.0.2.5")
    d = detector(clock, nics)
    nics.ips = ["127.0.0.1", "127.0.1.1", "192.0.2.5"]  # loopback only: no move
    assert poll(d, clock, nics) == []
    nics.ips.append("10.1.2.3")
    assert poll(d, clock, nics) == [Change("192.0.2.5", "10.1.2.3,192.0.2.5", "interface")]
    nics.ips = ["127.0.0.1"]  # every interface down
    assert poll(d, clock, nics) == [Change("10.1.2.3,192.0.2.5", "", "interface")]


def test_wall_clock_jump_against_monotonic_is_sleep_wake():
    clock, nics = ManualClock(), FakeInterfaces("192.0.2.5")
    d = detector(clock, nics, jump_tolerance=5.0)
    clock.set(clock.now() + 3.0)  # within the tolerance: an NTP step, not a sleep
    assert poll(d, clock, nics) == []
    # A suspended machine: the wall clock moved 10 minutes, the monotonic one did not.
    clock._now += 600.0  # ManualClock.set would move monotonic time too
    assert poll(d, clock, nics) == [Change("192.0.2.5", "192.0.2.5", "sleep_wake")]
    clock.advance(60.0)  # both move together: awake, no jump
    assert poll(d, clock, nics) == []


def test_wall_clock_stepped_back_is_not_a_sleep():
    clock, nics = ManualClock(), FakeInterfaces("192.0.2.5")
    d = detector(clock, nics)
    clock.set(clock.now() - 3600.0)
    assert poll(d, clock, nics) == []


def test_send_errors_burst_is_a_change_a_trickle_is_not():
    clock, nics = ManualClock(), FakeInterfaces("192.0.2.5")
    d = detector(clock, nics, send_error_burst=3)
    nics.send_errors = 2
    assert poll(d, clock, nics) == []
    nics.send_errors = 4  # two more: still under the burst between two polls
    assert poll(d, clock, nics) == []
    nics.send_errors = 10
    assert poll(d, clock, nics) == [Change("192.0.2.5", "192.0.2.5", "send_error")]
    nics.send_errors = 20  # another burst within the hold-off: not reported again
    clock.advance(1.0)
    assert poll(d, clock, nics) == []
    clock.advance(30.0)
    nics.send_errors = 30
    assert [c.cause for c in poll(d, clock, nics)] == ["send_error"]


def test_send_errors_with_an_interface_change_report_the_interface_only():
    clock, nics = ManualClock(), FakeInterfaces("192.0.2.5")
    d = detector(clock, nics)
    nics.ips, nics.send_errors = ["198.51.100.7"], 50
    assert [c.cause for c in poll(d, clock, nics)] == ["interface"]


def test_mapped_address_first_report_is_not_a_move_a_new_one_is():
    clock, nics = ManualClock(), FakeInterfaces("10.0.0.2")
    d = detector(clock, nics)
    assert d.report_mapped(("203.0.113.1", 40000)) is None
    assert d.report_mapped(("203.0.113.1", 40000)) is None  # the same: no move
    assert d.report_mapped(("203.0.113.1", 40001)) == Change(
        "203.0.113.1:40000", "203.0.113.1:40001", "mapped")


def test_sleep_wake_forgets_the_mapping():
    clock, nics = ManualClock(), FakeInterfaces("10.0.0.2")
    d = detector(clock, nics)
    d.report_mapped(("203.0.113.1", 40000))
    clock._now += 600.0
    assert [c.cause for c in poll(d, clock, nics)] == ["sleep_wake"]
    # after a sleep every mapping may be new: the next report is news, not a move
    assert d.report_mapped(("203.0.113.1", 40007)) is None

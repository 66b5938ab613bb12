"""The login throttle's bookkeeping (its effect over SSH is tested end to end)."""

from gitreceiver import throttle
from gitreceiver.throttle import AuthThrottle, address_key


def test_failures_count_per_ipv4_address_and_per_ipv6_64_block():
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"


def test_delays_start_after_the_free_failures_double_and_stop_at_the_cap():
    gate = AuthThrottle(free=2, cap=4.0)
    delays = []
    for _ in range(6):
        delays.append(gate.delay("192.0.2.1"))
        gate.failed("192.0.2.1")
    assert delays == [0.0, 0.0, 1.0, 2.0, 4.0, 4.0]
    assert gate.delay("192.0.2.2") == 0.0, "another address pays nothing"
    gate.succeeded("192.0.2.1")
    assert gate.delay("192.0.2.1") == 0.0


def test_the_record_of_failures_stays_bounded(monkeypatch):
    monkeypatch.setattr(throttle, "MAX_ADDRESSES", 3)
    gate = AuthThrottle(free=1)
    for n in range(10):
        gate.failed(f"192.0.2.{n}")
    assert gate.delay("192.0.2.9") == 1.0, "the newest are kept"
    assert gate.delay("192.0.2.0") == 0.0, "the oldest are forgotten"


def test_unauthenticated_connections_are_limited_per_address():
    gate = AuthThrottle(unauthenticated=2)
    assert gate.opened("192.0.2.1") is None and gate.opened("192.0.2.1") is None
    assert gate.opened("192.0.2.1") == "too many unauthenticated connections from your address"
    assert gate.opened("192.0.2.2") is None, "another address has its own limit"
    gate.settled("192.0.2.1")
    gate.settled("192.0.2.1")
    assert gate.opened("192.0.2.1") is None, "a settled connection frees its place"


def test_unauthenticated_connections_are_limited_in_all():
    gate = AuthThrottle(unauthenticated=2, unauthenticated_total=3)
    assert [gate.opened(f"192.0.2.{n}") for n in range(3)] == [None, None, None]
    refusal = gate.opened("192.0.2.9")
    assert refusal == "too many unauthenticated connections to this server; try again shortly"
    gate.settled("192.0.2.9")  # the refused one ends
    gate.settled("192.0.2.0")
    assert gate.opened("192.0.2.9") is None, "a settled connection frees a place in all"

"""The hole-punch outcome tables stay bounded: one entry per peer ever met must not grow
a long-running node's memory without end."""

from stack.node.protocols.dcutr import MAX_REMEMBERED, _remember_bounded


def test_the_oldest_peer_goes_first_and_a_refreshed_one_is_newest() -> None:
    table: dict[int, str] = {}
    for peer in range(MAX_REMEMBERED):
        _remember_bounded(table, peer, "old")
    _remember_bounded(table, 0, "again")          # refreshed: now the newest
    _remember_bounded(table, MAX_REMEMBERED, "new")  # one too many: peer 1 goes
    assert len(table) == MAX_REMEMBERED
    assert 1 not in table and table[0] == "again" and table[MAX_REMEMBERED] == "new"
    assert list(table)[-2:] == [0, MAX_REMEMBERED]

"""Issue 11 section 5: under churn, every live node's record is found at every moment.

A small ``churn`` run (the production DHT core and driver on the simulator): joins,
graceful leaves, crashes and rejoins while lookups of live published nodes run; the
report's ``records_found_ratio`` is 1.0 overall and in every bucket.
"""

from simulations.report import build_report
from simulations.runner import run_scenario
from simulations.scenario import resolve_scenario

CHURN = ["nodes=40", "duration=240", "idle=30", "lookups_per_minute=120", "bucket=30",
         "joins_per_minute=6", "leaves_per_minute=6", "crashes_per_minute=6",
         "rejoin_after=40"]


def test_every_live_nodes_record_is_found_under_churn():
    result = run_scenario(resolve_scenario("churn", CHURN), 3)
    report = build_report(result, wall_seconds=0.0, started_at="")
    s = report["summary"]
    assert s["churn"]["crash"] and s["churn"]["leave"] and s["churn"]["rejoin"]
    assert s["lookups"]["counted"] > 300
    assert s["records_found_ratio"] == {"overall": 1.0, "min_per_bucket": 1.0}, s["lookups"]
    assert result.dht_stats["handoffs"] > 0  # the handoff did its part

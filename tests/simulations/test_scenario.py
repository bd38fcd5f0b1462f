"""Scenario files for ``p2pstack simulate`` (issue 11 sections 1 and 6): the good ones parse
to what they say, every bad one is a one-line ``ScenarioError`` naming its key."""

from __future__ import annotations

import tomllib

import pytest

from simulations.scenario import (BUILTINS, PLOTS, Scenario, ScenarioError, apply_overrides,
                                  builtin, load_scenario, parse_scenario, resolve_scenario,
                                  to_toml)
from stack.base.errors import UsageError

FULL = """
name = "full"
description = "every key"
engine = "dht"
seed = 42
duration = 90.5
idle = 30
[network]
nodes = 12
latency = 0.05
jitter = 0
loss = 0.02
[network.nat]
none = 0.5
full-cone = 0.25
symmetric = 0.25
[join]
spacing = 0.5
settle = 2
[workload]
publish = false
publish_spread = 10
lookups_per_minute = 60
lookup_timeout = 20
[churn]
joins_per_minute = 1
leaves_per_minute = 2
crashes_per_minute = 3
rejoin_after = 45
[partition]
fraction = 0.25
at = 10
heal_after = 0
[measure]
bucket = 30
plots = ["success_rate", "lookup_latency_cdf"]
"""


def test_a_full_file_parses_to_what_it_says(tmp_path):
    path = tmp_path / "full.toml"
    path.write_text(FULL)
    sc = load_scenario(path)
    assert (sc.name, sc.description, sc.engine, sc.seed, sc.duration, sc.idle) == (
        "full", "every key", "dht", 42, 90.5, 30.0)
    assert (sc.network.nodes, sc.network.latency, sc.network.jitter, sc.network.loss) == (
        12, 0.05, 0.0, 0.02)
    assert sc.network.nat == {"none": 0.5, "full-cone": 0.25, "symmetric": 0.25}
    assert (sc.join.spacing, sc.join.settle) == (0.5, 2.0)
    assert (sc.workload.publish, sc.workload.publish_spread, sc.workload.lookups_per_minute,
            sc.workload.lookup_timeout) == (False, 10.0, 60.0, 20.0)
    assert (sc.churn.joins_per_minute, sc.churn.leaves_per_minute,
            sc.churn.crashes_per_minute, sc.churn.rejoin_after) == (1.0, 2.0, 3.0, 45.0)
    assert sc.churn.active
    assert (sc.partition.fraction, sc.partition.at, sc.partition.heal_after) == (0.25, 10, 0)
    assert (sc.measure.bucket, sc.measure.plots) == (30.0, ("success_rate",
                                                             "lookup_latency_cdf"))
    assert parse_scenario(sc.to_dict()) == sc  # the report's copy reads back the same


def test_an_empty_file_is_the_defaults_named_after_the_file(tmp_path):
    path = tmp_path / "my run.toml"
    path.write_text("")
    sc = load_scenario(path)
    assert sc.name == "my-run"
    assert sc.network == Scenario().network and sc.measure.plots == PLOTS


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtins_parse(name):
    sc = builtin(name)
    assert sc.name == name and sc.engine == (
        "node" if name in ("nat-matrix", "mobility", "rendezvous-down") else "dht")
    assert parse_scenario(sc.to_dict()) == sc
    assert builtin("churn").churn.active and not builtin("dht").churn.active
    assert builtin("partition").partition.fraction > 0 and not builtin("dht").partition.fraction


BAD = [
    ("nodez = 3", "nodez: unknown key"),
    ("[network]\nnodez = 3", "network.nodez: unknown key"),
    ("[network]\nnodes = 1", "network.nodes: must be an integer >= 2"),
    ("[network]\nnodes = 2.5", "network.nodes: must be an integer"),
    ("[network]\nnodes = true", "network.nodes: must be an integer"),
    ("[network]\nnodes = \"200\"", "network.nodes: must be an integer"),
    ("[network]\nlatency = -0.1", "network.latency: must be a number >= 0"),
    ("[network]\njitter = nan", "network.jitter: must be a number"),
    ("[network]\nloss = 1.0", "network.loss: must be a number >= 0 and <= 0.99"),
    ("[network.nat]\nnone = 0.5\ncgnat = 0.5", "network.nat.cgnat: unknown NAT kind"),
    ("[network.nat]\nnone = 0.5\nsymmetric = 0.4", "network.nat: fractions must sum to 1"),
    ("[network.nat]\nnone = 1.5\nsymmetric = -0.5", "network.nat.none: must be a number"),
    ("[network]\nnat = 3", "network.nat: must be a table"),
    ("network = 3", "network: must be a table"),
    ("[join]\nspacing = -1", "join.spacing: must be a number >= 0"),
    ("[workload]\npublish = 1", "workload.publish: must be true or false"),
    ("[workload]\nlookup_timeout = 0", "workload.lookup_timeout: must be a number > 0"),
    ("[workload]\nlookups_per_minute = \"lots\"", "workload.lookups_per_minute: must be"),
    ("[churn]\ncrashes_per_minute = -2", "churn.crashes_per_minute: must be a number >= 0"),
    ("[churn]\nrejoin_after = inf", "churn.rejoin_after: must be a number"),
    ("[partition]\nfraction = 1", "partition.fraction: must be a number >= 0 and <= 0.99"),
    ("[partition]\nat = -1", "partition.at: must be a number >= 0"),
    ("[partition]\nheal_after = \"soon\"", "partition.heal_after: must be a number"),
    ("[measure]\nbucket = 0", "measure.bucket: must be a number >= 1"),
    ("[measure]\nplots = [\"pie\"]", "measure.plots: unknown plot 'pie'"),
    ("[measure]\nplots = \"success_rate\"", "measure.plots: must be a list"),
    ("engine = \"kad\"", "engine: must be one of dht, node"),
    ("[matrix]\nkinds = [\"none\", \"cgnat\"]", "matrix.kinds: unknown NAT kind 'cgnat'"),
    ("[matrix]\nkinds = \"none\"", "matrix.kinds: must be a list of NAT kinds"),
    ("engine = \"node\"\n[matrix]\nkinds = [\"none\", \"none\"]",
     "matrix.kinds: must name each NAT kind once"),
    ("engine = \"node\"\n[matrix]\ntimeout = 0", "matrix.timeout: must be a number > 0"),
    ("[matrix]\nkinds = [\"none\"]", "matrix.kinds: is not read by engine 'dht'"),
    ("[mobility]\nrebinds_per_minute = 1", "mobility.rebinds_per_minute: is not read by "
                                          "engine 'dht'"),
    ("engine = \"node\"\n[churn]\nleaves_per_minute = 1",
     "churn.leaves_per_minute: is not read by engine 'node'"),
    ("engine = \"node\"\n[mobility]\nip_change_at = [10, \"later\"]",
     "mobility.ip_change_at: must be a number >= 0"),
    ("engine = \"node\"\n[mobility]\nrebind_at = 30", "mobility.rebind_at: must be a list"),
    ("engine = \"node\"\n[mobility]\nobservers = -1", "mobility.observers: must be an "
                                                      "integer >= 0"),
    ("engine = \"node\"\n[mobility]\nfind_timeout = \"long\"",
     "mobility.find_timeout: must be a number > 0"),
    ("[rooms]\nmembers = 3", "rooms.members: is not read by engine 'dht'"),
    ("engine = \"node\"\n[rooms]\nmembers = 1", "rooms.members: must be 0 (no room) or "
                                                "at least 2, not 1"),
    ("engine = \"node\"\n[network]\nnodes = 4\n[rooms]\nmembers = 3",
     "rooms.members: must leave node 0 (bootstrap) and node 1 (rendezvous): at most "
     "network.nodes - 2 = 2, not 3"),
    ("engine = \"node\"\n[rooms]\nmembers = 2\n[matrix]\nkinds = [\"none\"]",
     "rooms.members: a room runs in its own scenario, not beside [matrix]"),
    ("engine = \"node\"\n[rooms]\ngive_up_after = 0",
     "rooms.give_up_after: must be a number > 0"),
    ("[measure]\nplots = [\"heat\"]", "measure.plots: unknown plot 'heat'"),
    ("name = \"a b\"", "name: must be a non-empty name"),
    ("seed = -1", "seed: must be an integer >= 0"),
    ("duration = -5", "duration: must be a number >= 0"),
    ("idle = \"long\"", "idle: must be a number >= 0"),
    ("[network\nnodes = 3", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_bad_file_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text
    assert "\n" not in text
    assert isinstance(info.value, UsageError)


def test_unreadable_files(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"name = \"caf\xe9\"")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(latin)


def test_set_overrides_by_leaf_or_path():
    sc = resolve_scenario("dht", ["nodes=10000", "network.loss=0.05", "seed=7",
                                  "nat={none=0.5, symmetric=0.5}", "name=big",
                                  "plots=[\"success_rate\"]", "publish=false"])
    assert (sc.network.nodes, sc.network.loss, sc.seed, sc.name) == (10000, 0.05, 7, "big")
    assert sc.network.nat == {"none": 0.5, "symmetric": 0.5}
    assert sc.measure.plots == ("success_rate",) and sc.workload.publish is False
    # nat.KIND expands to network.nat.KIND and merges with the table there
    sc = resolve_scenario("dht", ["nat.none=0.75", "nat.full-cone=0.25"])
    assert sc.network.nat == {"none": 0.75, "full-cone": 0.25}
    # the built-in itself is untouched
    assert builtin("dht").network.nodes == 200


@pytest.mark.parametrize(("setting", "message"), [
    ("nodes", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("colour=red", "--set colour: unknown key"),
    ("nodes=1", "network.nodes: must be an integer >= 2"),
    ("nodes=many", "network.nodes: must be an integer"),
    ("network.nodes.x=1", "network.nodes is not a table"),
    ("network.nodez=1", "network.nodez: unknown key"),
])
def test_bad_overrides_name_the_key(setting, message):
    with pytest.raises(ScenarioError, match=message.replace(".", r"\.")):
        resolve_scenario("dht", [setting])


def test_apply_overrides_copies():
    table = tomllib.loads(BUILTINS["dht"])
    out = apply_overrides(table, ["network.nodes=5"])
    assert out["network"]["nodes"] == 5 and table["network"]["nodes"] == 200


def test_unknown_scenario_name():
    with pytest.raises(ScenarioError, match="no such scenario 'nope'"):
        resolve_scenario("nope")


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_to_toml_reads_back_the_same(tmp_path, name):
    sc = resolve_scenario(name, ['description="say \\"hi\\"\\n\\\\ there"', "loss=1e-05",
                                 "nat={none=0.5, symmetric=0.5}"])
    assert sc.description == 'say "hi"\n\\ there'
    path = tmp_path / f"{name}.toml"
    path.write_text(to_toml(sc))
    assert load_scenario(path) == sc

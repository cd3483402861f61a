#!/usr/bin/env python3
"""Checks the shape and the internal consistency of a popchain_tcp_bench report.

Usage: check_tcp_bench_json.py [--partial] REPORT.json

--partial: a report of some scenarios only (popchain_tcp_bench --scenario NAME): checks the
ones it holds instead of requiring every default scenario.

No timing thresholds: CI machines are small and shared, so only what must hold however slow
the run was is checked (every scenario present, counts that add up, positive rates, p50 <= p99,
catch_up's blocks_per_s = blocks_behind / seconds; for the paced scenarios, levels that increase
with offered rates that match them, p50 <= p99 <= p999, and steady_memory's growth figures
recomputed from its samples when it is in the report).
Exits non-zero naming the first problem.
"""
import json
import sys

SCENARIOS = ("seed_10k", "one_tx_blocks", "full_blocks", "primary_crash", "catch_up",
             "consensus_one", "consensus_batched")
CONSENSUS = ("consensus_one", "consensus_batched")
CATCH_UP_FIELDS = ("blocks_behind", "seconds", "blocks_per_s")
# Saturation measured closed-loop, then paced load at levels of it: their own JSON shape.
# consensus_latency is in every default and --quick report; steady_memory only when named.
PACED = ("consensus_latency",)
PACED_OPTIONAL = ("steady_memory",)


def close(a, b, rel=0.002):
    """Equal up to the report's rounding to 4 significant digits, and a little more."""
    return abs(a - b) <= rel * max(abs(a), abs(b))


def check_latency(name, lat, keys=("p50", "p99", "p999")):
    values = [lat[k] for k in keys]
    assert values[0] > 0, f"{name}: latency {keys[0]} not positive"
    assert values == sorted(values), f"{name}: latency not {' <= '.join(keys)}: {values}"


def check_levels(name, levels, fractions, saturation=None, seconds=None):
    """A paced scenario's levels (one run's, or the medians): in the setup's order, increasing,
    positive rates, ordered percentiles; for one run, offered = fraction x its saturation and
    count = offered x seconds."""
    assert [lv["fraction"] for lv in levels] == fractions, f"{name}: levels != setup.levels"
    assert fractions == sorted(set(fractions)) and fractions[0] > 0, (
        f"{name}: levels do not increase")
    offered = [lv["offered_per_s"] for lv in levels]
    assert offered == sorted(set(offered)), f"{name}: offered rates do not increase"
    for lv in levels:
        where = f"{name} at {lv['fraction']}"
        assert lv["offered_per_s"] > 0 and lv["achieved_per_s"] > 0, f"{where}: rates"
        assert lv["count"] >= 1, f"{where}: count"
        check_latency(where, lv["latency_ms"])
        assert lv["max_send_lag_ms"] >= 0, f"{where}: max_send_lag_ms"
        if saturation is not None:
            assert close(lv["offered_per_s"], lv["fraction"] * saturation), (
                f"{where}: offered {lv['offered_per_s']} != fraction x saturation {saturation}")
            expected = lv["offered_per_s"] * seconds
            assert abs(lv["count"] - expected) <= max(2, 0.002 * expected), (
                f"{where}: count {lv['count']} != offered x seconds {expected:.0f}")
            assert lv["blocks"] >= 1, f"{where}: blocks"
            assert lv["retransmissions"] >= 0, f"{where}: retransmissions"
            assert close(lv["achieved_per_s"], lv["count"] / lv["seconds"]), (
                f"{where}: achieved != count / seconds")


def fifth_growth(mb):
    """The harness's growth: mean of the last fifth of the samples minus that of the second."""
    k = max(1, len(mb) // 5)
    early = sum(mb[k:2 * k]) / k
    late = sum(mb[-k:]) / k
    return early, late - early


def check_rss(name, rss, nodes, every_s):
    assert rss["sample_every_s"] == every_s, f"{name}: rss.sample_every_s"
    assert len(rss["nodes"]) == nodes, f"{name}: rss per node"
    most = None
    for k, node in enumerate(rss["nodes"]):
        where = f"{name} node {k}"
        assert node["node"] == k, f"{where}: order"
        samples = node["samples"]
        assert len(samples) == rss["samples"] >= 1, f"{where}: sample count"
        times = [t for t, _ in samples]
        assert times == sorted(set(times)) and times[0] >= 0, f"{where}: sample times"
        mb = [m for _, m in samples]
        assert all(m > 0 for m in mb), f"{where}: a sample is not positive"
        # VmHWM and VmRSS are both the kernel's approximate counters: no order between them
        # is asserted beyond a peak as large as most samples.
        assert node["peak_rss_mb"] > 0, f"{where}: peak_rss_mb"
        if len(mb) < 2:
            assert node["growth_mb"] is None, f"{where}: growth from one sample"
            continue
        early, growth = fifth_growth(mb)
        assert abs(node["rss_mb_second_fifth"] - early) <= 0.002 * early, f"{where}: second fifth"
        assert abs(node["growth_mb"] - growth) <= 0.002 * early + 0.01, (
            f"{where}: growth_mb {node['growth_mb']} != {growth:.4g} from the samples")
        assert abs(node["growth_fraction"] - growth / early) <= 0.002, f"{where}: growth_fraction"
        most = node["growth_fraction"] if most is None else max(most, node["growth_fraction"])
    if most is not None:
        # The largest growth, or 0 when every node shrank.
        assert close(rss["growth_fraction_max"], max(most, 0)), f"{name}: growth_fraction_max"


def check_paced(name, s):
    """consensus_latency or steady_memory: saturation, levels, runs, memory when sampled."""
    setup = s["setup"]
    for key in ("nodes", "txs", "outstanding", "max_block_txs", "disk", "runs", "levels",
                "seconds_per_level"):
        assert key in setup, f"{name}.setup.{key} missing"
    assert setup["signatures"] is False, f"{name}: signatures"
    assert setup["seconds_per_level"] > 0, f"{name}: seconds_per_level"
    sat = s["saturation"]
    assert sat["commands"] == setup["txs"], f"{name}: saturation.commands"
    assert sat["tx_per_s"] > 0 and sat["sustained_per_s"] > 0, f"{name}: saturation rates"
    assert sat["levels_of"] in ("tx_per_s", "sustained_per_s"), f"{name}: saturation.levels_of"
    check_latency(f"{name} saturation", sat["latency_ms"], ("p50", "p99"))
    check_levels(name, s["levels"], setup["levels"])
    assert len(s["runs"]) == setup["runs"], f"{name}: runs"
    f = (setup["nodes"] - 1) // 3
    for i, run in enumerate(s["runs"]):
        where = f"{name} runs[{i}]"
        closed = run["saturation"]
        assert closed["tx_per_s"] > 0, f"{where}: saturation rate"
        assert closed["client"]["bad_replies"] == 0, f"{where}: bad replies"
        assert closed["client"]["replies"] >= (f + 1) * setup["txs"], f"{where}: too few replies"
        assert len(closed["memory"]["peak_rss_mb_per_node"]) == setup["nodes"], (
            f"{where}: peak memory per node")
        # The levels are fractions of the rate saturation.levels_of names, in each run.
        assert close(run["levels_of_per_s"], closed[sat["levels_of"]]), f"{where}: levels_of_per_s"
        check_levels(where, run["levels"], setup["levels"], run["levels_of_per_s"],
                     setup["seconds_per_level"])
        assert run["view_changes_at_end"] >= closed["view_changes"], f"{where}: view changes"
        if "rss_every_s" in setup:
            check_rss(where, run["rss"], setup["nodes"], setup["rss_every_s"])
    if "rss_every_s" in setup:
        check_rss(name, s["rss"], setup["nodes"], setup["rss_every_s"])
        assert any(run["rss"]["nodes"] == s["rss"]["nodes"] for run in s["runs"]), (
            f"{name}: the scenario's memory figures are no run's")


def check_catch_up(name, c, behind):
    """One catch_up figure set: present, positive, and blocks_per_s = blocks_behind / seconds."""
    for key in CATCH_UP_FIELDS + ("poll_interval_ms",):
        assert key in c, f"{name}: catch_up.{key} missing"
        assert c[key] > 0, f"{name}: catch_up.{key} not positive"
    # The stopped node missed at least one block per measured transfer (max_block_txs 1).
    assert c["blocks_behind"] >= behind, f"{name}: catch_up.blocks_behind < transfers"
    rate = c["blocks_behind"] / c["seconds"]
    # The report rounds to 4 significant digits: allow a little more than that.
    assert abs(c["blocks_per_s"] - rate) <= 0.002 * rate, (
        f"{name}: catch_up.blocks_per_s {c['blocks_per_s']} != blocks_behind / seconds {rate:.4g}")


def check(report, partial=False):
    machine = report["machine"]
    assert machine["nproc"] >= 1, "machine.nproc"
    for key in ("cpu", "compiler", "build_type", "loadavg_1m_at_start", "temp_dir"):
        assert key in machine, f"machine.{key} missing"

    bound = report["crypto_bound"]
    assert bound["verify_per_s_one_thread"] > 0, "crypto_bound.verify_per_s_one_thread"
    expected = bound["verify_per_s_one_thread"] * bound["usable_cores"] / bound["replicas"]
    assert abs(bound["tx_per_s"] - expected) <= 0.01 * expected, "crypto_bound.tx_per_s"

    scenarios = report["scenarios"]
    assert any(n in scenarios for n in SCENARIOS + PACED + PACED_OPTIONAL), "no known scenario"
    for name in SCENARIOS:
        if partial and name not in scenarios:
            continue
        assert name in scenarios, f"scenario {name} missing"
        s = scenarios[name]
        setup = s["setup"]
        for key in ("nodes", "txs", "outstanding", "max_block_txs", "disk"):
            assert key in setup, f"{name}.setup.{key} missing"
        assert s["tx_per_s"] > 0 and s["blocks_per_s"] > 0, f"{name}: rates"
        assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"], f"{name}: latency"
        if name in CONSENSUS:
            # Unsigned commands: no crypto bound, a peer's figure beside ours instead.
            assert s["fraction_of_bound"] is None, f"{name}: fraction_of_bound"
            assert setup["signatures"] is False, f"{name}: signatures"
            assert s["peer_per_s"] > 0, f"{name}: peer_per_s"
            ratio = s["tx_per_s"] / s["peer_per_s"]
            assert abs(s["ratio_to_peer"] - ratio) <= 0.002 * ratio, f"{name}: ratio_to_peer"
            target = report["targets"][name + "_per_s"]
            assert target["measured"] == s["tx_per_s"], f"{name}: target measured"
        else:
            assert s["fraction_of_bound"] > 0, f"{name}: fraction_of_bound"
            assert setup["signatures"] is True, f"{name}: signatures"
        assert len(s["runs"]) == report["settings"]["runs_per_scenario"], f"{name}: runs"
        for run in s["runs"]:
            txs = setup["txs"]
            # Every measured transfer sits in one of the blocks of the measured phase.
            assert 1 <= run["blocks_with_measured_txs"] <= run["blocks"], f"{name}: blocks"
            assert run["blocks_with_measured_txs"] <= txs, f"{name}: more blocks than txs"
            assert run["client"]["bad_replies"] == 0, f"{name}: bad replies"
            assert run["view_changes"] >= 0, f"{name}: view_changes"
            if name not in CONSENSUS:
                # The run's bound: the mean of the verify rates around it, on every core.
                before, after = run["verify_per_s_before_run"], run["verify_per_s_after_run"]
                assert before > 0 and after > 0, f"{name}: verify rates around the run"
                run_bound = (before + after) / 2 * bound["usable_cores"] / bound["replicas"]
                assert abs(run["crypto_bound_tx_per_s"] - run_bound) <= 0.01 * run_bound, (
                    f"{name}: run bound")
                fraction = run["tx_per_s"] / run["crypto_bound_tx_per_s"]
                assert abs(run["fraction_of_bound"] - fraction) <= 0.01 * fraction, (
                    f"{name}: run fraction")
            peaks = run["memory"]["peak_rss_mb_per_node"]
            assert len(peaks) == setup["nodes"], f"{name}: peak memory per node"
            if name == "catch_up":
                c = run["catch_up"]
                check_catch_up(name, c, txs)
                assert c["others_height_at_restart"] - c["height_at_stop"] == c["blocks_behind"], (
                    f"{name}: catch_up heights")
                how = c["how"]
                assert how["blocks_by_state_transfer"] >= 0, f"{name}: catch_up.how"
                if how["blocks_executed_since_restart"] is not None:
                    # Whatever it executed covers the gap; transferred blocks are among them.
                    assert how["blocks_executed_since_restart"] >= c["blocks_behind"], (
                        f"{name}: the restarted node executed fewer blocks than it missed")
                    assert how["blocks_by_state_transfer"] <= how["blocks_executed_since_restart"], (
                        f"{name}: catch_up.how counts")
            if name == "primary_crash":
                # Node 0 was killed (no figure); the others ran a view change and went on.
                assert peaks[0] is None and all(p > 0 for p in peaks[1:]), f"{name}: memory"
                assert run["view_changes"] >= 1, f"{name}: no view change after the kill"
                rec = run["recovery"]
                assert rec["txs_committed_after_kill"] == txs - rec["killed_after_txs"], (
                    f"{name}: transfers after the kill")
                assert rec["longest_commit_gap_ms"] > 0, f"{name}: commit gap"
            else:
                assert all(p > 0 for p in peaks), f"{name}: memory"
            # Each transfer is done after at least f+1 replies.
            f = (setup["nodes"] - 1) // 3
            assert run["client"]["replies"] >= (f + 1) * txs, f"{name}: too few replies"
            if setup["max_block_txs"] == 1:
                assert run["blocks_with_measured_txs"] == txs, f"{name}: one tx per block"
            elif isinstance(setup["max_block_txs"], int):
                min_blocks = -(-txs // setup["max_block_txs"])
                assert run["blocks_with_measured_txs"] >= min_blocks, f"{name}: full blocks"
    for name in PACED:
        assert partial or name in scenarios, f"scenario {name} missing"
    for name in PACED + PACED_OPTIONAL:
        if name in scenarios:
            check_paced(name, scenarios[name])
    if "steady_memory" in scenarios:
        # Memory that is flat by design only on a stored chain.
        assert not scenarios["steady_memory"]["setup"]["disk"].startswith("off"), (
            "steady_memory: storage memory grows with the chain by design")
    if "catch_up" in scenarios:
        s = scenarios["catch_up"]
        c = s["catch_up"]
        check_catch_up("catch_up", c, s["setup"]["txs"])
        # The scenario's figures are one run's (the median by rate), not mixed medians.
        assert any(all(run["catch_up"][k] == c[k] for k in CATCH_UP_FIELDS) for run in s["runs"]), (
            "catch_up: the scenario's figures are no run's")
    for target in report["targets"].values():
        assert isinstance(target["met"], bool), "targets"


def paced_summary(name, s):
    levels = ", ".join(f"{lv['fraction']:.0%} p50/p99/p999 {lv['latency_ms']['p50']}/"
                       f"{lv['latency_ms']['p99']}/{lv['latency_ms']['p999']} ms"
                       for lv in s["levels"])
    line = f"{name}: saturation {s['saturation']['tx_per_s']}/s; {levels}"
    if "rss" in s:
        line += f"; rss growth at most {s['rss']['growth_fraction_max']:.1%}"
    return line


def main():
    args = sys.argv[1:]
    partial = "--partial" in args
    paths = [a for a in args if a != "--partial"]
    if len(paths) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with open(paths[0]) as f:
        report = json.load(f)
    try:
        check(report, partial)
    except (AssertionError, KeyError, TypeError, IndexError) as e:
        print(f"popchain_tcp_bench report: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    scenarios = report["scenarios"]
    closed = ", ".join(f"{n} {scenarios[n]['tx_per_s']} tx/s" for n in SCENARIOS if n in scenarios)
    if "catch_up" in scenarios:
        closed += f"; catch-up {scenarios['catch_up']['catch_up']['blocks_per_s']} blocks/s"
    print("TCP bench JSON ok:", closed or "(no closed-loop scenario)")
    for name in PACED + PACED_OPTIONAL:
        if name in scenarios:
            print("  " + paced_summary(name, scenarios[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

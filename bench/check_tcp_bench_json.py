#!/usr/bin/env python3
"""Checks the shape and the internal consistency of a popchain_tcp_bench report.

Usage: check_tcp_bench_json.py REPORT.json

No timing thresholds: CI machines are small and shared, so only what must hold however slow
the run was is checked (every scenario present, counts that add up, positive rates, p50 <= p99,
catch_up's blocks_per_s = blocks_behind / seconds).
Exits non-zero naming the first problem.
"""
import json
import sys

SCENARIOS = ("seed_10k", "one_tx_blocks", "full_blocks", "primary_crash", "catch_up",
             "consensus_one", "consensus_batched")
CONSENSUS = ("consensus_one", "consensus_batched")
CATCH_UP_FIELDS = ("blocks_behind", "seconds", "blocks_per_s")


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


def check(report):
    machine = report["machine"]
    assert machine["nproc"] >= 1, "machine.nproc"
    for key in ("cpu", "compiler", "build_type", "loadavg_1m_at_start", "temp_dir"):
        assert key in machine, f"machine.{key} missing"

    bound = report["crypto_bound"]
    assert bound["verify_per_s_one_thread"] > 0, "crypto_bound.verify_per_s_one_thread"
    expected = bound["verify_per_s_one_thread"] * bound["usable_cores"] / bound["replicas"]
    assert abs(bound["tx_per_s"] - expected) <= 0.01 * expected, "crypto_bound.tx_per_s"

    scenarios = report["scenarios"]
    for name in SCENARIOS:
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
    if "catch_up" in scenarios:
        s = scenarios["catch_up"]
        c = s["catch_up"]
        check_catch_up("catch_up", c, s["setup"]["txs"])
        # The scenario's figures are one run's (the median by rate), not mixed medians.
        assert any(all(run["catch_up"][k] == c[k] for k in CATCH_UP_FIELDS) for run in s["runs"]), (
            "catch_up: the scenario's figures are no run's")
    for target in report["targets"].values():
        assert isinstance(target["met"], bool), "targets"


def main():
    with open(sys.argv[1]) as f:
        report = json.load(f)
    try:
        check(report)
    except (AssertionError, KeyError, TypeError) as e:
        print(f"popchain_tcp_bench report: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("TCP bench JSON ok:", ", ".join(
        f"{n} {report['scenarios'][n]['tx_per_s']} tx/s" for n in SCENARIOS) +
        f"; catch-up {report['scenarios']['catch_up']['catch_up']['blocks_per_s']} blocks/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

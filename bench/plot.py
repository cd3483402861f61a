#!/usr/bin/env python3
"""Renders PNG charts from the JSON reports of popchain_bench and popchain_tcp_bench.

Usage: plot.py [--out DIR] REPORT.json [REPORT.json ...]

Each file may be either harness's report (told apart by its keys: popchain_bench has
"results", popchain_tcp_bench "scenarios"). Charts, each written only when its data is in
the given reports (otherwise a line on stderr says why it was skipped):

  sim_throughput_vs_n.png      simulator: committed tx/s (full blocks) and blocks/s (one-tx
                               blocks) against the number of replicas, with the crypto bound
  tcp_latency_percentiles.png  TCP: commit latency p50 / p99 / max per scenario
  tcp_throughput.png           TCP: tx/s per scenario against the run's crypto bound
  tcp_outstanding_latency.png  TCP: p50 latency and tx/s against requests in flight, one
                               point per scenario and report (a sweep of --outstanding shows
                               as a curve)
  tcp_catch_up.png             TCP catch_up: seconds to catch up against blocks behind, per
                               run, with the rate
  tcp_consensus_latency.png    TCP consensus_latency: p50 / p99 / p999 commit latency against
                               the paced (open-loop) offered load, with the saturation rate
  tcp_steady_memory.png        TCP steady_memory: each node's resident memory over the paced
                               run

With several reports of one kind, each series is labelled with its file's name. Needs only
matplotlib (Debian's python3-matplotlib) and the standard library; no display (Agg).
Exits 0 if at least one chart was written, 1 if none could be, 2 for an unreadable report.
"""
import argparse
import json
import os
import sys

try:
    import matplotlib
except ImportError:
    sys.exit("plot.py: needs matplotlib: Debian's python3-matplotlib (scripts/install-deps), "
             "run with /usr/bin/python3 if another python3 comes first on PATH")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import matplotlib.ticker  # noqa: E402

TCP_SCENARIO_ORDER = ("seed_10k", "one_tx_blocks", "full_blocks", "primary_crash", "catch_up")


def note(message):
    print(f"plot.py: {message}", file=sys.stderr)


def load(paths):
    """Returns ([(label, sim report)], [(label, tcp report)])."""
    sim, tcp = [], []
    for path in paths:
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            note(f"cannot read {path}: {e}")
            sys.exit(2)
        label = os.path.splitext(os.path.basename(path))[0]
        if isinstance(report, dict) and "results" in report:
            sim.append((label, report))
        elif isinstance(report, dict) and "scenarios" in report:
            tcp.append((label, report))
        else:
            note(f"{path}: neither a popchain_bench nor a popchain_tcp_bench report; ignored")
    return sim, tcp


def save(fig, out_dir, name, written):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)


def ordered_scenarios(scenarios):
    known = [s for s in TCP_SCENARIO_ORDER if s in scenarios]
    return known + sorted(s for s in scenarios if s not in TCP_SCENARIO_ORDER)


def sim_series(report, shape, value):
    """[(replicas, figure)] sorted by replicas, from results.consensus_sim.<shape>.nN."""
    shapes = report.get("results", {}).get("consensus_sim", {})
    points = []
    for entry in shapes.get(shape, {}).values():
        try:
            points.append((entry["replicas"], value(entry), entry["single_thread_crypto_bound_tx_per_s"]))
        except (KeyError, TypeError):
            continue
    return sorted(points)


def plot_sim_throughput(sim, out_dir, written):
    panels = (
        ("full_blocks", "full blocks: committed tx/s", lambda e: e["tx_per_s"]["median"]),
        ("one_tx_blocks", "one-tx blocks: blocks/s", lambda e: e["blocks_per_s"]),
    )
    series = [[(label, sim_series(r, shape, value)) for label, r in sim] for shape, _, value in panels]
    if not any(points for panel in series for _, points in panel):
        note("skipping sim_throughput_vs_n.png: no results.consensus_sim in the reports")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (shape, title, _), panel in zip(axes, panels, series):
        for label, points in panel:
            if not points:
                continue
            n = [p[0] for p in points]
            suffix = f" ({label})" if len(sim) > 1 else ""
            ax.plot(n, [p[1] for p in points], "o-", label="measured" + suffix)
            ax.plot(n, [p[2] for p in points], "^--", color=ax.lines[-1].get_color(), alpha=0.6,
                    label="bound: verify/s ÷ n" + suffix)
        ax.set_title(title)
        ax.set_xlabel("replicas (n)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.set_xticks(sorted({x for line in ax.lines for x in line.get_xdata()}))
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {shape} data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("popchain_bench: pBFT in the simulator (one thread)")
    save(fig, out_dir, "sim_throughput_vs_n.png", written)


def plot_tcp_latency(tcp, out_dir, written):
    rows = []  # (label, scenario, p50, p99, max)
    for label, r in tcp:
        for name in ordered_scenarios(r["scenarios"]):
            s = r["scenarios"][name]
            lat = s.get("latency_ms", {})
            if "p50" not in lat or "p99" not in lat:
                continue
            maxes = sorted(run["latency_ms"]["max"] for run in s.get("runs", [])
                           if "max" in run.get("latency_ms", {}))
            worst = maxes[(len(maxes) - 1) // 2] if maxes else None
            rows.append((label, name, lat["p50"], lat["p99"], worst))
    if not rows:
        note("skipping tcp_latency_percentiles.png: no scenario latency in the reports")
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows) + 2), 4.8))
    x = range(len(rows))
    width = 0.27
    ax.bar([i - width for i in x], [r[2] for r in rows], width, label="p50")
    ax.bar(list(x), [r[3] for r in rows], width, label="p99")
    ax.bar([i + width for i in x], [r[4] or 0 for r in rows], width, label="max (median run)")
    ax.set_xticks(list(x))
    ax.set_xticklabels([r[1] if len(tcp) == 1 else f"{r[1]}\n{r[0]}" for r in rows],
                       rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("submit → f+1 committed replies (ms)")
    ax.set_yscale("log")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    ax.set_title("popchain_tcp_bench: commit latency per scenario")
    save(fig, out_dir, "tcp_latency_percentiles.png", written)


def plot_tcp_throughput(tcp, out_dir, written):
    rows = []
    for label, r in tcp:
        bound = r.get("crypto_bound", {}).get("tx_per_s")
        for name in ordered_scenarios(r["scenarios"]):
            s = r["scenarios"][name]
            if "tx_per_s" in s:
                rows.append((label, name, s["tx_per_s"], bound))
    if not rows:
        note("skipping tcp_throughput.png: no scenario tx/s in the reports")
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) + 2), 4.5))
    x = list(range(len(rows)))
    ax.bar(x, [r[2] for r in rows], 0.6, label="committed tx/s (median of runs)")
    bounds = [r[3] for r in rows]
    if any(b is not None for b in bounds):
        ax.plot(x, [b if b is not None else float("nan") for b in bounds], "r_", markersize=30,
                markeredgewidth=2, label="crypto bound of the same run")
    ax.set_xticks(x)
    ax.set_xticklabels([r[1] if len(tcp) == 1 else f"{r[1]}\n{r[0]}" for r in rows],
                       rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("tx/s")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("popchain_tcp_bench: throughput per scenario")
    save(fig, out_dir, "tcp_throughput.png", written)


def plot_tcp_outstanding(tcp, out_dir, written):
    by_scenario = {}
    for label, r in tcp:
        for name in ordered_scenarios(r["scenarios"]):
            s = r["scenarios"][name]
            try:
                point = (s["setup"]["outstanding"], s["latency_ms"]["p50"], s["latency_ms"]["p99"],
                         s["tx_per_s"], label)
            except (KeyError, TypeError):
                continue
            by_scenario.setdefault(name, []).append(point)
    if not by_scenario:
        note("skipping tcp_outstanding_latency.png: no setup.outstanding with latency in the reports")
        return
    fig, (lat_ax, tx_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, points in by_scenario.items():
        points.sort()
        out = [p[0] for p in points]
        line, = lat_ax.plot(out, [p[1] for p in points], "o-", label=f"{name} p50")
        lat_ax.plot(out, [p[2] for p in points], "x:", color=line.get_color(), label=f"{name} p99")
        tx_ax.plot(out, [p[3] for p in points], "o-", color=line.get_color(), label=name)
    for ax in (lat_ax, tx_ax):
        ax.set_xscale("log")
        ax.set_xlabel("requests in flight (setup.outstanding)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    lat_ax.set_yscale("log")
    lat_ax.set_ylabel("latency (ms)")
    tx_ax.set_ylabel("committed tx/s")
    lat_ax.set_title("latency against load")
    tx_ax.set_title("throughput against load")
    save(fig, out_dir, "tcp_outstanding_latency.png", written)


def plot_tcp_catch_up(tcp, out_dir, written):
    points = []  # (blocks_behind, seconds, blocks_per_s, label)
    for label, r in tcp:
        for run in r["scenarios"].get("catch_up", {}).get("runs", []):
            c = run.get("catch_up", {})
            if all(k in c for k in ("blocks_behind", "seconds", "blocks_per_s")):
                points.append((c["blocks_behind"], c["seconds"], c["blocks_per_s"], label))
    if not points:
        note("skipping tcp_catch_up.png: no catch_up scenario in the reports")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in sorted({p[3] for p in points}):
        mine = [p for p in points if p[3] == label]
        ax.plot([p[0] for p in mine], [p[1] for p in mine], "o",
                label=label if len(tcp) > 1 else "one run")
        for behind, secs, rate, _ in mine:
            ax.annotate(f"{rate:,.0f} blocks/s", (behind, secs), textcoords="offset points",
                        xytext=(5, 5), fontsize=8)
    ax.set_xlabel("blocks behind at restart")
    ax.set_ylabel("seconds from restart to the others' height")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("popchain_tcp_bench: catch-up of a restarted replica")
    save(fig, out_dir, "tcp_catch_up.png", written)


def plot_tcp_consensus_latency(tcp, out_dir, written):
    series = []  # (label, saturation, [(offered, p50, p99, p999, fraction)])
    for label, r in tcp:
        s = r["scenarios"].get("consensus_latency", {})
        try:
            points = [(lv["offered_per_s"], lv["latency_ms"]["p50"], lv["latency_ms"]["p99"],
                       lv["latency_ms"]["p999"], lv["fraction"]) for lv in s["levels"]]
            series.append((label, s["saturation"]["tx_per_s"], sorted(points)))
        except (KeyError, TypeError):
            continue
    if not series:
        note("skipping tcp_consensus_latency.png: no consensus_latency scenario in the reports")
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, saturation, points in series:
        suffix = f" ({label})" if len(tcp) > 1 else ""
        offered = [p[0] for p in points]
        line, = ax.plot(offered, [p[1] for p in points], "o-", label="p50" + suffix)
        color = line.get_color()
        ax.plot(offered, [p[2] for p in points], "s--", color=color, label="p99" + suffix)
        ax.plot(offered, [p[3] for p in points], "^:", color=color, label="p999" + suffix)
        ax.axvline(saturation, color=color, alpha=0.4, linewidth=1)
        ax.annotate(f"saturation (closed loop)\n{saturation:,.0f}/s", (saturation, 0.98),
                    xycoords=("data", "axes fraction"), ha="right", va="top", fontsize=7,
                    color=color)
        for x, p50, _, _, fraction in points:
            ax.annotate(f"{fraction:.0%}", (x, p50), textcoords="offset points", xytext=(0, -12),
                        ha="center", fontsize=7)
    ax.set_xlabel("offered load, paced (commands/s)")
    ax.set_ylabel("scheduled time → f+1 committed replies (ms)")
    ax.set_yscale("log")
    # Plain numbers on the log axis: the levels span a decade or less.
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlim(left=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("popchain_tcp_bench consensus_latency: latency against load")
    save(fig, out_dir, "tcp_consensus_latency.png", written)


def plot_tcp_steady_memory(tcp, out_dir, written):
    panels = []  # (label, rss)
    for label, r in tcp:
        rss = r["scenarios"].get("steady_memory", {}).get("rss")
        if isinstance(rss, dict) and rss.get("nodes"):
            panels.append((label, rss))
    if not panels:
        note("skipping tcp_steady_memory.png: no steady_memory scenario in the reports "
             "(it runs only with --scenario steady_memory)")
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, rss in panels:
        for node in rss["nodes"]:
            samples = node.get("samples", [])
            growth = node.get("growth_fraction")
            name = f"node {node['node']}" + (f" ({label})" if len(tcp) > 1 else "")
            if growth is not None:
                name += f": {growth:+.1%}"
            ax.plot([t for t, _ in samples], [mb for _, mb in samples], ".-", label=name)
    ax.set_xlabel("seconds of paced load")
    ax.set_ylabel("resident memory, VmRSS (MB)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="growth, 2nd fifth → last fifth", title_fontsize=8)
    ax.set_title("popchain_tcp_bench steady_memory: memory per replica at 50% load")
    save(fig, out_dir, "tcp_steady_memory.png", written)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", metavar="REPORT.json")
    parser.add_argument("-o", "--out", default="plots", metavar="DIR",
                        help="directory for the PNG files (created; default: plots)")
    args = parser.parse_args()
    sim, tcp = load(args.reports)
    os.makedirs(args.out, exist_ok=True)
    written = []
    if sim:
        plot_sim_throughput(sim, args.out, written)
    else:
        note("skipping sim_throughput_vs_n.png: no popchain_bench report given")
    if tcp:
        plot_tcp_latency(tcp, args.out, written)
        plot_tcp_throughput(tcp, args.out, written)
        plot_tcp_outstanding(tcp, args.out, written)
        plot_tcp_catch_up(tcp, args.out, written)
        plot_tcp_consensus_latency(tcp, args.out, written)
        plot_tcp_steady_memory(tcp, args.out, written)
    else:
        note("skipping the tcp_*.png charts: no popchain_tcp_bench report given")
    for path in written:
        print(path)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())

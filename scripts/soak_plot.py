#!/usr/bin/env python3
"""Plots a soak CSV written by `smsgw bench --soak-csv`: the gateway's RSS
(MiB) and throughput (msg/s accepted and delivered) over time, as a PNG.

    python3 scripts/soak_plot.py soak.csv soak.png [--title "..."]

Needs matplotlib (`python3 -m venv .venv && .venv/bin/pip install
matplotlib`); the test suite does not. Also prints the figures BENCHMARKS.md
quotes: RSS after warm-up and at the end, growth over the last two thirds
(end points, 5-minute means, and the fitted slope), peak, and the mean rates.
"""
import argparse
import csv
import sys


def load(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if not r["rss_kib"]:
                continue
            rows.append({k: float(v) if v else None for k, v in r.items()})
    if not rows:
        sys.exit(f"{path}: no samples")
    return rows


def summary(rows, warmup_s):
    t = [r["elapsed_s"] for r in rows]
    rss = [r["rss_kib"] / 1024 for r in rows]
    warm = next((i for i, x in enumerate(t) if x >= warmup_s), 0)
    third = next(i for i, x in enumerate(t) if x >= t[-1] / 3)
    growth = (rss[-1] - rss[third]) / rss[third] * 100
    # RSS saws up and down by tens of MiB (purges, group commits), so two
    # single samples can say "growth" or "shrink" by chance: also compare
    # the means of the first and the last 5 minutes of the last two thirds,
    # and the least-squares slope over them.
    win = 300.0
    head = [r for x, r in zip(t, rss) if t[third] <= x < t[third] + win]
    tail = [r for x, r in zip(t, rss) if x > t[-1] - win]
    mean = lambda xs: sum(xs) / len(xs)
    trend_growth = (mean(tail) - mean(head)) / mean(head) * 100
    ts, rs = t[third:], rss[third:]
    mt, mr = mean(ts), mean(rs)
    slope = sum((x - mt) * (y - mr) for x, y in zip(ts, rs)) / max(
        sum((x - mt) ** 2 for x in ts), 1e-9
    )
    dur = t[-1]
    last = rows[-1]
    out = {
        "duration_s": dur,
        "rss_warm_mib": rss[warm],
        "rss_end_mib": rss[-1],
        "rss_peak_mib": max(rss),
        "rss_at_one_third_mib": rss[third],
        "growth_last_two_thirds_pct": growth,
        "rss_mean_first_5min_of_last_two_thirds_mib": mean(head),
        "rss_mean_last_5min_mib": mean(tail),
        "growth_of_5min_means_pct": trend_growth,
        "rss_slope_last_two_thirds_mib_per_10min": slope * 600,
        "accepted_per_s": last["accepted_total"] / dur,
        "delivered_per_s": (last["delivered_total"] or 0) / dur,
        "failed_total": last["failed_total"],
        "cpu_mean_pct": sum(r["cpu_percent"] for r in rows) / len(rows),
    }
    if last.get("data_dir_bytes"):
        out["data_dir_end_mib"] = last["data_dir_bytes"] / 2**20
        out["data_dir_peak_mib"] = max(r["data_dir_bytes"] or 0 for r in rows) / 2**20
    # Newer CSVs split the resident set: heap (anonymous) and file pages,
    # at one third and at the end, and the most threads seen.
    if last.get("rss_anon_kib") is not None:
        for k in ("rss_anon_kib", "rss_file_kib"):
            name = k.removesuffix("_kib")
            out[f"{name}_at_one_third_mib"] = (rows[third][k] or 0) / 1024
            out[f"{name}_end_mib"] = (last[k] or 0) / 1024
        out["threads_max"] = max(r["threads"] or 0 for r in rows)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("png")
    ap.add_argument("--title", default="smsgw soak")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds counted as warm-up")
    a = ap.parse_args()
    rows = load(a.csv)
    for k, v in summary(rows, a.warmup).items():
        print(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["elapsed_s"] / 60 for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(t, [r["rss_kib"] / 1024 for r in rows], color="tab:red", label="RSS (MiB)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)", color="tab:red")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(t, [r["accepted_per_s"] for r in rows], color="tab:blue", alpha=0.6, label="accepted msg/s")
    if any(r["delivered_per_s"] for r in rows):
        ax2.plot(t, [r["delivered_per_s"] for r in rows], color="tab:green", alpha=0.6, label="delivered msg/s")
    ax2.set_ylabel("msg/s")
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="lower right")
    ax.set_title(a.title)
    fig.tight_layout()
    fig.savefig(a.png, dpi=100)


if __name__ == "__main__":
    main()

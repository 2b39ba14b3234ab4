"""Draws bench/run's results (the JSON of --out) as one PNG: throughput, CPU per GB
and peak RSS per contender and workload, and W4's latency percentiles.

usage: python3 bench/chart.py RESULTS.json CHART.png   (needs matplotlib)
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "kmirror": "#1f77b4",
    "kmirror-2x2": "#6baed6",
    "mirrormaker2": "#d62728",
    "mirrormaker2-default": "#ff9896",
    "ceiling": "#2ca02c",
    "source alone (floor)": "#7f7f7f",
}


def grouped_bars(axis, workloads, key, title, unit):
    names = []
    for workload in workloads:
        for entry in workload["contenders"]:
            if entry["name"] not in names:
                names.append(entry["name"])
    width = 0.8 / max(1, len(names))
    for index, name in enumerate(names):
        xs, ys, lows, highs = [], [], [], []
        for position, workload in enumerate(workloads):
            entry = next((c for c in workload["contenders"] if c["name"] == name), None)
            if not entry or entry.get(key) is None:
                continue
            value = entry[key]
            low, high = entry.get("range", {}).get(key, [value, value])
            xs.append(position + index * width - 0.4 + width / 2)
            ys.append(value)
            lows.append(value - low)
            highs.append(high - value)
        axis.bar(xs, ys, width, label=name, color=COLORS.get(name), yerr=[lows, highs], capsize=2)
    axis.set_xticks(range(len(workloads)))
    axis.set_xticklabels([w["name"] for w in workloads])
    axis.set_title(title)
    axis.set_ylabel(unit)
    axis.grid(axis="y", alpha=0.3)


def latency_bars(axis, workload):
    rows = list(workload["contenders"]) + ([workload["floor"]] if workload.get("floor") else [])
    keys = [("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]
    width = 0.8 / max(1, len(rows))
    for index, entry in enumerate(rows):
        values = [entry.get(key) or 0 for key, _ in keys]
        xs = [position + index * width - 0.4 + width / 2 for position in range(len(keys))]
        axis.bar(xs, values, width, label=entry["name"], color=COLORS.get(entry["name"]))
    axis.set_xticks(range(len(keys)))
    axis.set_xticklabels([label for _, label in keys])
    axis.set_yscale("log")
    axis.set_title(f"{workload['name']} latency at {workload['rate']:,.0f} records/s")
    axis.set_ylabel("ms (log)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7)


def main(json_path, png_path):
    report = json.load(open(json_path))
    throughput = [w for w in report["workloads"] if not w.get("latency")]
    latency = [w for w in report["workloads"] if w.get("latency")]
    panels = (3 if throughput else 0) + len(latency)
    figure, axes = plt.subplots(1, max(1, panels), figsize=(5 * max(1, panels), 4.5))
    axes = list(axes) if panels > 1 else [axes]
    if throughput:
        grouped_bars(axes[0], throughput, "mb_per_s", "Throughput (10%-90% window)", "MB/s of record data")
        grouped_bars(axes[1], throughput, "cpu_s_per_gb", "CPU of the mirror per GB", "CPU s / GB")
        grouped_bars(axes[2], throughput, "peak_rss_mb", "Peak RSS, largest process", "MB")
        axes[0].legend(fontsize=7)
    for axis, workload in zip(axes[3 if throughput else 0 :], latency):
        latency_bars(axis, workload)
    machine = report.get("machine", {})
    figure.suptitle(
        f"kmirror benchmark - {machine.get('nproc')} CPUs ({machine.get('cpu_model', '')}), "
        f"{machine.get('ram_gb')} GB RAM; medians, bars min-max",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(png_path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""Plots bench/results/*.json as PNGs (cost against rule count, per mode)."""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")

cost = json.loads((out / "packet-cost.json").read_text())
rules = [r["rules"] for r in cost]
fig, ax = plt.subplots(figsize=(7, 4))
for key, label in [("passThroughNs", "pass-through program"), ("establishedNs", "established flow (conntrack)"),
                   ("newFlowDeniedNs", "new flow, policy lookup (denied)"),
                   ("newFlowAllowedMedianNs", "new flow, allowed (single runs, median)")]:
    ax.plot(rules, [r[key] for r in cost], marker="o", label=label)
ax.set_xscale("log")
ax.set_xlabel("rules on the endpoint")
ax.set_ylabel("ns per packet")
ax.set_title("BPF per-packet cost against rule count")
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out / "packet-cost.png", dpi=120)

traffic = json.loads((out / "traffic.json").read_text())
for metric, ylabel, name in [("connectionsPerSecond", "new connections per second", "connection-rate"),
                             ("rrP99Microseconds", "UDP request/response p99 (µs)", "latency-p99"),
                             ("throughputGbps", "TCP throughput (Gbit/s)", "throughput")]:
    fig, ax = plt.subplots(figsize=(7, 4))
    for mode in ["none", "bpf", "iptables", "iptables-legacy"]:
        rows = [r for r in traffic if r["mode"] == mode]
        if rows:
            label = {"iptables": "iptables (nft)", "none": "no policy"}.get(mode, mode)
            ax.plot([r["rules"] for r in rows], [r[metric] for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    if metric == "connectionsPerSecond":
        ax.set_yscale("log")
    ax.set_xlabel("rules on the server endpoint")
    ax.set_ylabel(ylabel)
    ax.set_title(ylabel + " against rule count")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
print("plots written to", out)

encap_file = out / "encap-throughput.json"
if encap_file.exists():
    encap = json.loads(encap_file.read_text())
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([r["mode"] for r in encap], [r["medianGbps"] for r in encap])
    ax.set_ylabel("Gbit/s (median of rounds)")
    ax.set_title("Pod-to-pod TCP across two nodes")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "encap-throughput.png", dpi=120)

cni_file = out / "cni-latency.json"
if cni_file.exists():
    # One bar per run: the median of each stage of a CNI ADD stacked (they
    # add up to about the median total), the p99 of the total beside.
    runs = json.loads(cni_file.read_text())
    labels = [f'{r["datastore"]}\n{r["policies"]} policies' for r in runs]
    stages = [s["stage"] for s in runs[0]["stages"] if s["stage"] != "total"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottoms = [0.0] * len(runs)
    for name in stages:
        values = [next(s["p50"] for s in r["stages"] if s["stage"] == name) for r in runs]
        ax.bar(labels, values, bottom=bottoms, label=name, width=0.5)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    totals = [next(s["p99"] for s in r["stages"] if s["stage"] == "total") for r in runs]
    ax.scatter(labels, totals, marker="_", s=900, color="black", label="total p99", zorder=3)
    ax.axhline(50, color="red", linestyle="--", linewidth=1, label="target p99 50 ms")
    ax.set_ylabel("ms")
    ax.set_title("CNI ADD start to first policed packet, median by stage")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "cni-latency.png", dpi=120)

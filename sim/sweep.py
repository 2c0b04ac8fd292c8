"""The readiness sweep behind the chart's default (issue 14, part 3): every policy of
sim/fleet.py at offered loads from 0.5x to 5x of fleet capacity and fleets of 2 to 200
pods, and a fleet with slow pods (the case readiness on saturation was meant for).

    sim/sweep.sh                      # about 10 minutes on two cores; prints the tables,
                                      # writes docs/fleet-readiness.png
    python3 sim/sweep.py --quick      # a reduced grid, tables only (no matplotlib needed)

Each cell is the median of its seeds (3 for fleets of up to 20 pods, where one run is
noisy; 1 above, where a run already averages over many pods).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import fleet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PODS = (2, 5, 10, 20, 50, 100, 200)
LOADS = (0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)
SLOW = dict(pods=10, slow_pods=2, slow_factor=4.0)
SLOW_LOADS = (0.5, 0.8, 1.0, 1.5, 2.0)
DURATION, WARMUP = 90.0, 20.0


def cell(args: tuple) -> dict:
    kind, policy, pods, load, seeds, duration, warmup = args
    extra = SLOW if kind == "slow" else {"pods": pods}
    runs = [
        fleet.simulate(
            fleet.Settings(policy=policy, load=load, seed=seed, duration=duration, warmup=warmup, **extra)
        )
        for seed in range(1, seeds + 1)
    ]

    def med(f) -> float:
        return statistics.median(f(r) for r in runs)

    return {
        "kind": kind,
        "policy": policy,
        "pods": extra["pods"],
        "load": load,
        "goodput": med(lambda r: r.goodput_ratio),
        "served": med(lambda r: r.succeeded / max(r.offered, 1)),
        "refused": med(lambda r: r.refused / max(r.offered, 1)),
        "refusals": med(lambda r: r.refusals / max(r.offered, 1)),
        "rejected": med(lambda r: r.rejected / max(r.offered, 1)),
        "timed_out": med(lambda r: r.timed_out / max(r.offered, 1)),
        "out": med(lambda r: r.unready_share),
        "p99": med(lambda r: r.p99()),
    }


def grid(pods=PODS, loads=LOADS, slow_loads=SLOW_LOADS, duration=DURATION, warmup=WARMUP) -> list[tuple]:
    jobs = []
    for policy in fleet.POLICIES:
        for n in pods:
            for load in loads:
                jobs.append(("uniform", policy, n, load, 3 if n <= 20 else 1, duration, warmup))
        for load in slow_loads:
            jobs.append(("slow", policy, SLOW["pods"], load, 3, duration, warmup))
    # The biggest cells first, so that two processes finish together.
    return sorted(jobs, key=lambda j: -j[2] * j[3] * j[4])


def run(jobs: list[tuple], processes: int = 2) -> list[dict]:
    with Pool(processes) as pool:
        return pool.map(cell, jobs, chunksize=1)


def tables(rows: list[dict]) -> str:
    out = []
    uniform = [r for r in rows if r["kind"] == "uniform"]
    pods = sorted({r["pods"] for r in uniform})
    loads = sorted({r["load"] for r in uniform})
    index = {(r["kind"], r["policy"], r["pods"], r["load"]): r for r in rows}
    for key, title, fmt in (
        ("goodput", "Goodput as a share of fleet capacity", "{:.2f}"),
        ("out", "Share of pods out of the Service", "{:.0%}"),
        ("refused", "Share of requests that gave up on connection refused (no endpoint)", "{:.1%}"),
    ):
        out.append(f"### {title}\n")
        out.append("| policy | pods | " + " | ".join(f"{x:g}×" for x in loads) + " |")
        out.append("|---|---|" + "---|" * len(loads))
        for policy in fleet.POLICIES:
            for n in pods:
                cells = [fmt.format(index[("uniform", policy, n, x)][key]) for x in loads]
                out.append(f"| {policy} | {n} | " + " | ".join(cells) + " |")
        out.append("")
    slow = [r for r in rows if r["kind"] == "slow"]
    if slow:
        slow_loads = sorted({r["load"] for r in slow})
        out.append(
            f"### A fleet with slow pods ({SLOW['pods']} pods, {SLOW['slow_pods']} of them "
            f"{SLOW['slow_factor']:g}× slower; load as a share of what the fleet can really do)\n"
        )
        out.append("| policy | | " + " | ".join(f"{x:g}×" for x in slow_loads) + " |")
        out.append("|---|---|" + "---|" * len(slow_loads))
        for policy in fleet.POLICIES:
            for key, label, fmt in (("goodput", "goodput", "{:.2f}"), ("p99", "p99 s", "{:.2f}"),
                                    ("out", "pods out", "{:.0%}")):
                cells = [fmt.format(index[("slow", policy, SLOW["pods"], x)][key]) for x in slow_loads]
                out.append(f"| {policy} | {label} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = (2, 10, 50, 200)
    fig, axes = plt.subplots(2, len(shown), figsize=(13, 6.2), dpi=100, sharex=True)
    for col, n in enumerate(shown):
        for policy in fleet.POLICIES:
            line = sorted((r for r in rows if r["kind"] == "uniform" and r["pods"] == n and r["policy"] == policy),
                          key=lambda r: r["load"])
            xs = [r["load"] for r in line]
            axes[0][col].plot(xs, [r["goodput"] for r in line], marker="o", markersize=3, label=policy)
            axes[1][col].plot(xs, [r["out"] for r in line], marker="o", markersize=3, label=policy)
        axes[0][col].set_title(f"{n} pods", fontsize=10)
        axes[0][col].set_ylim(0, 1.05)
        axes[1][col].set_ylim(-0.02, 1.0)
        axes[1][col].set_xlabel("offered load (× fleet capacity)")
        for row in axes:
            row[col].set_xscale("log", base=2)
            row[col].set_xticks(LOADS, [f"{x:g}" for x in LOADS], fontsize=7)
            row[col].grid(True, alpha=0.3)
    axes[0][0].set_ylabel("goodput / capacity")
    axes[1][0].set_ylabel("share of pods out of the Service")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(
        "Readiness policies under global overload (sim/fleet.py: 2 workers × 100 ms, queue 5 per pod; "
        "probes every 5 s, 2 failures out; clients retry 503 and refusals after 1 s, give up at 10 s)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a reduced grid, tables only")
    args = parser.parse_args()
    if args.quick:
        jobs = grid(pods=(2, 10), loads=(0.5, 1.0, 3.0), slow_loads=(0.8,), duration=45.0, warmup=10.0)
    else:
        jobs = grid()
    rows = run(jobs)
    print(tables(rows))
    if not args.quick:
        (ROOT / "target").mkdir(exist_ok=True)
        (ROOT / "target" / "fleet-sweep.json").write_text(json.dumps(rows, indent=1))
        plot(rows, ROOT / "docs" / "fleet-readiness.png")
        print("Plot: docs/fleet-readiness.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

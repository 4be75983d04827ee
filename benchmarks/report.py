"""Summaries of a phase, the JSON report and the PNG latency plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from benchmarks.load import Tally
from benchmarks.procs import Usage

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_PLOT_PERCENTILES = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99)


def percentiles_ms(h: HdrHistogram) -> dict[str, float]:
    if h.get_total_count() == 0:
        return {}
    out = {f"p{p:g}": h.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    out["max"] = h.get_max_value() / 1000
    out["mean"] = round(h.get_mean_value() / 1000, 3)
    return out


def phase_summary(
    mode: str, tally: Tally, seconds: float, before: Usage, after: Usage, **extra: Any
) -> dict[str, Any]:
    answered = tally.ok
    cpu = after.cpu_s - before.cpu_s
    return {
        "mode": mode,
        **extra,
        "seconds": round(seconds, 3),
        "sent": tally.sent,
        "answered": answered,
        "errors": dict(tally.errors),
        "outcomes": dict(tally.outcomes),
        "leads_per_s": round(answered / seconds, 1) if seconds else 0.0,
        "buyer_requests_per_s": round((tally.pings + tally.posts) / seconds, 1) if seconds else 0.0,
        "pings": tally.pings,
        "posts": tally.posts,
        "e2e_ms": percentiles_ms(tally.e2e),
        "overhead_ms": percentiles_ms(tally.overhead),
        "server_overhead_ms": percentiles_ms(tally.server_overhead),
        "deadline_overruns": tally.overruns,
        "shed": tally.shed,
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_lead": round(cpu * 1000 / answered, 3) if answered else None,
        "rss_mb": round(after.rss_bytes / 2**20, 1),
        "peak_rss_mb": round(after.peak_rss_bytes / 2**20, 1),
        # Lossless: re-load with HdrHistogram.decode to merge runs or plot other percentiles.
        "e2e_hdr": tally.e2e.encode().decode(),
    }


def plot(report: dict[str, Any], tallies: dict[str, Tally], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    ticks = [1 / (1 - p / 100) for p in _PLOT_PERCENTILES]
    curves = [(f"{name} end-to-end", t.e2e) for name, t in tallies.items()]
    if "open" in tallies:
        curves.append(("open router overhead", tallies["open"].overhead))
    for label, h in curves:
        if h.get_total_count():
            ax.plot(
                ticks,
                [h.get_value_at_percentile(p) / 1000 for p in _PLOT_PERCENTILES],
                marker=".",
                label=label,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ticks, [f"p{p:g}" for p in _PLOT_PERCENTILES], rotation=45)
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"RouteLead {report['scenario']}: {report['description']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

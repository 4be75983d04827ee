"""`python -m benchmarks.table [DIR]`: the results table (Markdown) from a directory of run JSON files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from benchmarks.run import DEFAULT_OUT
from benchmarks.scenarios import SCENARIOS


def _p(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return "–" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def rows(reports: list[dict[str, Any]]) -> list[str]:
    head = (
        "| scenario | max leads/s (closed) | buyer req/s | vs empty gRPC | vs bare fan-out | open-loop rate "
        "| e2e p50 / p90 / p99 / p99.9 ms | overhead p50 / p99 / p99.9 ms "
        "| router-only overhead p50 / p99 ms "
        "| bare fan-out at that rate: e2e p50 / p99 ms | overruns > 775 ms closed / open "
        "| CPU ms/lead | RSS warm → after / peak MB |"
    )
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in reports:
        ph = r["phases"]
        c, o = ph.get("closed", {}), ph.get("open", {})
        ratio = r.get("throughput_ratio", {})
        e, oh, so = o.get("e2e_ms", {}), o.get("overhead_ms", {}), o.get("server_overhead_ms", {})
        m = r.get("memory", {})
        fo = ph.get("fanout_open", {}).get("e2e_ms", {})
        out.append(
            f"| {r['scenario']} | {c.get('leads_per_s', '–')} | {c.get('buyer_requests_per_s', '–')} "
            f"| {ratio.get('vs_empty_grpc_handler', '–')} | {ratio.get('vs_bare_aiohttp_fanout', '–')} "
            f"| {o.get('target_rate', '–')} "
            f"| {_p(e, 'p50')} / {_p(e, 'p90')} / {_p(e, 'p99')} / {_p(e, 'p99.9')} "
            f"| {_p(oh, 'p50')} / {_p(oh, 'p99')} / {_p(oh, 'p99.9')} | {_p(so, 'p50')} / {_p(so, 'p99')} "
            f"| {_p(fo, 'p50')} / {_p(fo, 'p99')} "
            f"| {c.get('deadline_overruns', '–')} / {o.get('deadline_overruns', '–')} "
            f"| {c.get('cpu_ms_per_lead', '–')} "
            f"| {m.get('service_rss_mb_warm', '–')} → {m.get('service_rss_mb_after_run', '–')} "
            f"/ {m.get('service_peak_rss_mb', '–')} |"
        )
    return out


def main(argv: list[str]) -> int:
    where = Path(argv[0]) if argv else DEFAULT_OUT
    order = {name: i for i, name in enumerate(SCENARIOS)}
    files = sorted(where.glob("*.json"), key=lambda p: order.get(p.stem, 99))
    reports = [orjson.loads(p.read_bytes()) for p in files]
    print("\n".join(rows([r for r in reports if "closed" in r["phases"] or "open" in r["phases"]])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Project-level checks: generated code is current, the demo runs."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from routelead.demo.run import run_demo
from routelead.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_generated_protobuf_code_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


async def test_the_demo_routes_sample_leads_and_explains_each() -> None:
    out = io.StringIO()

    counts = await run_demo(12, out, settings=load_settings())

    text = out.getvalue()
    assert sum(counts.values()) == 12
    assert counts.get("SOLD", 0) >= 6
    assert counts.get("DUPLICATE", 0) >= 1
    assert "SOLD to" in text and "POST_ACCEPTED" in text and "OUTBID" in text
    assert "revenue" in text.splitlines()[-1]
    # A supplier's inbound ping-post: a quote from its ping fields, then the commit sells it.
    assert "exch-solarhub asks for a quote" in text and "we pay $" in text
    assert "commits the full lead (cost booked at the quoted $" in text


def _tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / name
    return subprocess.run(
        [str(exe), *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=300
    )


def test_ruff_is_clean() -> None:
    lint = _tool("ruff", "check", "--output-format", "concise", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    layout = _tool("ruff", "format", "--check", ".")
    assert layout.returncode == 0, layout.stdout + layout.stderr


def test_mypy_strict_is_clean() -> None:
    proc = _tool("mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_loading_a_config_does_not_import_prometheus_client() -> None:
    # `serve --workers` sets prometheus-client's multiprocess directory after loading the
    # config and before the first metric exists; an early import would break the workers.
    code = "import sys, routelead.cli, routelead.config.loader; sys.exit('prometheus_client' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr or "prometheus_client was imported by the config loader"

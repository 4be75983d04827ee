"""The demo as a user runs it from a checkout: it writes nothing there, and its closing hint works."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def checkout_status() -> list[str]:
    """Every change git sees in the checkout, ignored files included (a *.db is in .gitignore),
    but for Python's bytecode caches and the tools' caches."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", ".", ":!.venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    caches = ("__pycache__/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", ".egg-info/")
    return [line for line in out.splitlines() if not any(c in line for c in caches)]


def user_env() -> dict[str, str]:
    """The environment of a user who has not pointed the books anywhere (conftest.py has)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ROUTELEAD_DB", "DATABASE_URL")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_demo_writes_nothing_into_the_checkout_and_its_hint_shows_a_sold_lead() -> None:
    before = checkout_status()

    demo = subprocess.run(
        [str(BIN / "routelead"), "demo", "--leads", "8"],
        cwd=ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert demo.returncode == 0, demo.stderr
    assert checkout_status() == before
    assert not (ROOT / "routelead.db").exists() and not (ROOT / "routelead.db.migrate-lock").exists()
    hint = re.search(r"try `([^`]+)`", demo.stdout)
    assert hint is not None, demo.stdout
    shown = subprocess.run(
        ["sh", "-c", hint.group(1)], cwd=ROOT, env=user_env(), capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    lead_id = shlex.split(hint.group(1))[-1]
    assert len(lead_id) == 12 and f"lead {lead_id}" in shown.stdout
    assert "  SOLD  " in shown.stdout and "POST_ACCEPTED" in shown.stdout
    # The simulated phone verifier ran before the pings: the demo and the lead's record say so.
    assert "check lookup phone-verify: passed" in demo.stdout
    assert "check lookup phone-verify: passed" in shown.stdout
    assert checkout_status() == before

"""The import contracts in pyproject.toml (import-linter): a pure domain and one direction of layers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(package_parent: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the contracts on the package, or on a copy of it under `package_parent`."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: the test extra installs it (import-linter)")
    env = {**os.environ, "PYTHONPATH": str(package_parent)} if package_parent else None
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=package_parent or ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_layers_allow_no_exceptions() -> None:
    """Wiring between adapters belongs to the composition root, not to an ignored import."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert all(not c.get("ignore_imports") for c in settings["contracts"]), settings["contracts"]


def test_the_import_contracts_are_kept() -> None:
    proc = _lint_imports()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("module", "stray", "contract"),
    [
        ("domain/money.py", "import structlog", "The domain does no I/O"),
        ("domain/rules.py", "from routelead.state import ports", "The domain does no I/O"),
        ("config/model.py", "import routelead.router", "Layers:"),
        ("records/db.py", "from routelead.state import select", "Layers:"),
        ("api/security.py", "from routelead.cli import common", "Layers:"),
        ("replay/engine.py", "import routelead_client.stats", "The service does not depend"),
        # Once ignored, now kept: state and records report through injected ports, and the
        # adapters are wired together by the composition root only.
        ("state/ports.py", "from routelead.telemetry import metrics", "Layers:"),
        ("records/guard.py", "from routelead.telemetry import metrics", "Layers:"),
        ("records/controls.py", "from routelead.state import memory", "Layers:"),
        ("telemetry/spans.py", "from routelead.state import ports", "Layers:"),
    ],
    ids=[
        "domain-logs",
        "domain-state",
        "config-router",
        "records-state",
        "api-cli",
        "service-client",
        "state-metrics",
        "guard-metrics",
        "controls-memory",
        "spans-ports",
    ],
)
def test_a_stray_import_breaks_a_contract(tmp_path: Path, module: str, stray: str, contract: str) -> None:
    copy = tmp_path / "routelead"
    shutil.copytree(ROOT / "service" / "routelead", copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / module
    path.write_text(f"{stray}  # noqa\n{path.read_text()}")

    proc = _lint_imports(tmp_path)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    broken = [line for line in proc.stdout.splitlines() if " BROKEN" in line]
    assert any(line.startswith(contract) for line in broken), proc.stdout
    assert "(l.1)" in proc.stdout  # the line added to the copy is the one named

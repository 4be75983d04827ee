"""One settings module reads every environment variable, checks it once, and the README says the same."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from routelead.settings import LIBRARY_VARIABLES, SettingsError, load_settings, variables

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "service" / "routelead"
# Environment reads that are not settings: the config file's ${VAR} secret expansion (the demo
# hands its own keys to it), and prometheus-client's multiprocess directory, which the supervisor
# sets for its workers and the library reads itself.
# The ${VAR} machinery (loader, secrets) reads the environment a reference names; the rest hand
# the environment to child processes or prometheus-client.
NOT_SETTINGS = {
    "config/loader.py",
    "config/secrets.py",
    "demo/run.py",
    "api/process.py",
    "telemetry/metrics.py",
}
_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b|\bHOSTNAME\b")


def _documented() -> list[str]:
    """The variable column of README.md's Operations → Configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n### Configuration\n", 1)[1]
    table = section.split("\n| flag | variable |", 1)[1].split("\n\n", 1)[0]
    rows = table.splitlines()[2:]  # past the header's rest and the |---| line
    assert rows and all(row.startswith("|") for row in rows), "the Configuration table moved"
    return [name for row in rows for name in _NAME.findall(row.split("|")[2])]


def test_the_readme_table_documents_every_variable_and_nothing_else() -> None:
    documented = _documented()
    read = set(variables()) | set(LIBRARY_VARIABLES)

    assert not read - set(documented), f"read but not in README.md's table: {sorted(read - set(documented))}"
    assert not set(documented) - read, (
        f"in README.md's table but never read: {sorted(set(documented) - read)}"
    )
    assert len(documented) == len(set(documented)), "a variable has two rows"


def test_no_module_but_settings_reads_the_environment() -> None:
    readers = sorted(
        str(path.relative_to(SERVICE))
        for path in SERVICE.rglob("*.py")
        if "v1" not in path.parts
        and path.name != "settings.py"
        and re.search(r"os\.environ|getenv\(", path.read_text())
    )

    assert set(readers) <= NOT_SETTINGS, f"read routelead.settings instead: {set(readers) - NOT_SETTINGS}"


def test_every_bad_value_is_reported_at_once_by_its_variable() -> None:
    env = {
        "ROUTELEAD_WORKERS": "many",
        "ROUTELEAD_REDIS_TIMEOUT_MS": "nan",
        "ROUTELEAD_ANSWER_TTL_HOURS": "0",
        "ROUTELEAD_LISTEN": "50051",
        "ROUTELEAD_LOG_LEVEL": "loud",
        "ROUTELEAD_INSECURE": "maybe",
        "ROUTELEAD_MAX_IN_FLIGHT": "-1",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
    }

    with pytest.raises(SettingsError) as bad:
        load_settings(env)

    problems = str(bad.value).split("; ")
    assert sorted(p.split(":", 1)[0] for p in problems) == sorted(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL" if k.startswith("OTEL") else k
        for k in env
    )
    assert all(f"got {v!r}" in str(bad.value) for v in env.values())


def test_the_timeout_is_a_finite_positive_number() -> None:
    for bad in ("nan", "inf", "0", "-5", "fast"):
        with pytest.raises(SettingsError, match=r"^ROUTELEAD_REDIS_TIMEOUT_MS: "):
            load_settings({"ROUTELEAD_REDIS_TIMEOUT_MS": bad})
    assert load_settings({"ROUTELEAD_REDIS_TIMEOUT_MS": "250"}).redis_timeout_ms == 250.0


def test_a_secret_is_never_echoed_nor_shown() -> None:
    settings = load_settings(
        {"ROUTELEAD_DEDUPE_KEY": "k" * 32, "DATABASE_URL": "postgresql://u:pw-1234@db/books"}
    )

    assert "k" * 32 not in repr(settings) and "pw-1234" not in repr(settings)
    assert settings.dedupe_key == "k" * 32


def test_the_process_environment_under_the_same_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTELEAD_WORKERS", "3")
    monkeypatch.setenv("REDIS_URL", "")  # empty counts as unset: the deploy/ name is used
    monkeypatch.setenv("ROUTELEAD_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("ROUTELEAD_INSECURE", "true")

    settings = load_settings()

    assert (settings.workers, settings.redis_url, settings.insecure) == (3, "redis://redis:6379/0", True)
    monkeypatch.setenv("ROUTELEAD_WORKERS", "three")
    with pytest.raises(SettingsError, match=r"^ROUTELEAD_WORKERS: .*got 'three'"):
        load_settings()


def test_a_command_with_a_bad_variable_stops_before_it_starts(tmp_path: Path) -> None:
    env = {**os.environ, "ROUTELEAD_REDIS_TIMEOUT_MS": "nan", "ROUTELEAD_DB": str(tmp_path / "b.db")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "routelead.cli",
            "serve",
            "--config",
            "missing.yaml",
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "routelead: ROUTELEAD_REDIS_TIMEOUT_MS: Input should be a finite number, got 'nan'"
    )

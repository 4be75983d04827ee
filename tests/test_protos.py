"""The API contract: the protos pass `buf lint`, and `buf breaking` holds them to the released baseline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "protos" / "baseline" / "routelead-v1.binpb"
BUF = Path(sys.executable).parent / "buf"


def _buf(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        pytest.fail(f"{BUF} is missing: the test extra installs it (buf-bin)")
    return subprocess.run(
        [str(BUF), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def test_the_protos_pass_lint() -> None:
    proc = _buf(ROOT, "lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_protos_keep_the_released_contract() -> None:
    proc = _buf(ROOT, "breaking", "--against", str(BASELINE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("before", "after", "complaint"),
    [
        (
            "  string source_id = 3;",
            "  string source_id = 13;",
            'Previously present field "3" with name "source_id"',
        ),
        ("  bool test = 5;", "  string test = 5;", 'changed type from "bool" to "string"'),
    ],
    ids=["renumbered", "retyped"],
)
def test_a_changed_field_breaks_the_contract(tmp_path: Path, before: str, after: str, complaint: str) -> None:
    shutil.copy(ROOT / "buf.yaml", tmp_path)
    shutil.copytree(ROOT / "protos" / "routelead", tmp_path / "protos" / "routelead")
    proto = tmp_path / "protos" / "routelead" / "v1" / "routelead.proto"
    text = proto.read_text()
    assert text.count(before) == 1
    proto.write_text(text.replace(before, after))

    proc = _buf(tmp_path, "breaking", "--against", str(BASELINE))

    assert proc.returncode != 0
    assert complaint in proc.stdout, proc.stdout + proc.stderr

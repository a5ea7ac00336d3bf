"""tests/fixtures/native/ is what scripts/regenerate_native_reports.py writes today (without running it).

manifest.json records what the script ran (configs, kept files, framework versions) and each file's
sha256: a hand edit, a changed config or a moved framework pin without regenerating fails here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests._native import FIXTURES, REGEN

MANIFEST = json.loads((FIXTURES / "manifest.json").read_text("utf-8"))
REGENERATE = "run .venv/bin/python scripts/regenerate_native_reports.py and commit tests/fixtures/native/"


def test_files_are_the_scripts_output_byte_for_byte() -> None:
    on_disk = {
        p.relative_to(FIXTURES).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(FIXTURES.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    assert on_disk == MANIFEST["files"], REGENERATE


def test_the_script_declares_what_the_fixtures_were_made_from() -> None:
    declared = REGEN.declared()
    assert MANIFEST["configs"] == declared["configs"], REGENERATE
    assert MANIFEST["keep"] == declared["keep"], REGENERATE
    assert MANIFEST["versions"] == declared["versions"], f"a framework version moved: {REGENERATE}"


def test_every_kept_pattern_matched_files_for_every_framework() -> None:
    for framework, patterns in REGEN.KEEP.items():
        for pattern in patterns:
            assert list((FIXTURES / framework).glob(pattern)), (framework, pattern)


def test_no_machine_path_run_id_or_port_churns_in_the_files() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    for rel in MANIFEST["files"]:
        text = (FIXTURES / rel).read_text("utf-8")
        assert root not in text or root == REGEN.PROJECT, rel
        for pattern, fixed in REGEN.STAMPS:
            assert {m.group(0) for m in pattern.finditer(text)} <= {fixed}, (rel, pattern.pattern)


def test_the_fixtures_stay_small() -> None:
    size = sum((FIXTURES / rel).stat().st_size for rel in MANIFEST["files"])
    assert size < 1_000_000, size


def test_git_ignores_no_fixture_file() -> None:
    """`.gitignore` ignores `outputs/` (run output): OpenCompass's tree under the fixtures must still be committed."""
    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [f"tests/fixtures/native/{rel}" for rel in MANIFEST["files"]]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=root, capture_output=True, text=True)
    assert ignored.stdout.split() == []

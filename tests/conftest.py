"""Shared fixtures: the tiny random model (built once per session) and the bundled datasets."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "custom_datasets"

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The model layer's response cache: a fresh file for this test session (framework subprocesses
# inherit it), never the user's ~/.cache/benchbridge. Removed at exit.
_CACHE_DIR = tempfile.mkdtemp(prefix="benchbridge-test-cache-")
os.environ.setdefault("BENCHBRIDGE_CACHE", os.path.join(_CACHE_DIR, "responses.sqlite"))
atexit.register(shutil.rmtree, _CACHE_DIR, True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that drives Chromium gets the `browser` marker from the fixture that starts it, so the fast
    # tier (`-m "not framework and not browser"`) skips every such test, present and future.
    for item in items:
        if "browser_page" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bridges.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen2")

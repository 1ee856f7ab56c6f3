"""Shared fixtures. Real data is found through one setting, DYNHAT_DATA (default ../shared/data beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    return Path(os.environ.get("DYNHAT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def data_dir() -> Path:
    path = shared_data()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set DYNHAT_DATA)")
    return path


@pytest.fixture
def hat_configs(data_dir: Path) -> Path:
    return data_dir / "hat" / "configs" / "wmt14.en-de"

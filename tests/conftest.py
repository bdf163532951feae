import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path | None:
    env = os.environ.get("FEDFACE_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    return root if root.is_dir() else None


def needs_data(*subdirs: str):
    root = data_root()
    missing = [s for s in subdirs if root is None or not (root / s).is_dir()]
    return pytest.mark.skipif(
        bool(missing), reason=f"real face data not found ({', '.join(missing)} under FEDFACE_DATA or ../shared/data)"
    )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # the decoded-image cache is shared across tests in one session but never the user's ~/.cache
    monkeypatch.setenv("FEDFACE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))

"""The experiment recipes (scripts/recipes/) and the Makefile name only config keys that exist: a renamed key (as
``federation.ray_init`` once was) fails here, not hours into a table."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
KEY = re.compile(r"(?<![\w.$/-])\+?([a-z_]+(?:\.[a-z_0-9]+)+)=")


def _has(node, path: list[str]) -> bool:
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@lru_cache(maxsize=None)
def _load(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))


def known(key: str) -> bool:
    """``group.a.b`` is known when some option of config group ``group`` (or the root config's ``group`` block, or an
    experiment) holds ``a.b``."""
    group, *rest = key.split(".")
    options = sorted((CONFIGS / group).glob("*.yaml")) if (CONFIGS / group).is_dir() else []
    return _has(_load(CONFIGS / "config.yaml"), [group, *rest]) or any(_has(_load(p), rest) for p in options) or \
        any(_has(_load(p), [group, *rest]) for p in sorted((CONFIGS / "experiment").glob("*.yaml")))


def test_every_key_a_recipe_sets_exists():
    files = [*sorted((ROOT / "scripts" / "recipes").iterdir()), ROOT / "Makefile"]
    unknown = sorted({f"{f.name}: {k}" for f in files for k in KEY.findall(f.read_text()) if not known(k)})
    assert unknown == []


def test_the_check_catches_a_renamed_key():
    assert known("federation.ray.num_cpus") and known("mixup.k_max") and known("attack.gradient.prior")
    assert not known("federation.ray_init.num_cpus") and not known("attack.gradient.priors")

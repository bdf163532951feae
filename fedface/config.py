"""Hydra composition for the CLI: ``compose_config(overrides)`` with one-line errors naming the bad key."""
from __future__ import annotations

import functools
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

def _config_dir() -> Path:
    """``FEDFACE_CONFIGS``, else the repository's ``configs/`` (a checkout, an editable install), else the copy the
    wheel carries inside the package (``fedface/_configs``, pyproject's force-include)."""
    if os.environ.get("FEDFACE_CONFIGS"):
        return Path(os.environ["FEDFACE_CONFIGS"])
    here = Path(__file__).resolve().parent
    repo = here.parent / "configs"
    return repo if (repo / "config.yaml").is_file() else here / "_configs"


CONFIG_DIR = _config_dir()


class ConfigError(ValueError):
    """A user error in the configuration (unknown key, unknown group option, bad value)."""


def compose_config(overrides: list[str], config_name: str = "config") -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not CONFIG_DIR.is_dir():
        raise ConfigError(f"config folder {CONFIG_DIR} not found (set FEDFACE_CONFIGS)")
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_one_line(err)) from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def _one_line(err: Exception) -> str:
    msg = str(err).strip()
    # Hydra nests the useful part ("Key 'foo' is not in struct", "Could not find 'data/xyz'") in its message
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("Available options in"):  # a wrong choice: name every choice, on the same line
            rest = lines[i + 1:]
            end = next((j for j, c in enumerate(rest) if c.startswith("Config search path")), len(rest))
            choices = rest[:end]
            return f"{' '.join(lines[:i])}; {line[:-1] if line.endswith(':') else line}: {', '.join(choices)}"
    return " | ".join(lines[:4])


def known_keys_only(cls, cfg: Mapping[str, Any], group: str) -> dict[str, Any]:
    """``cfg`` as a plain dict after checking every key is a field of dataclass ``cls`` and every value has the
    field's type (int, float, bool, str, optionally None; ints pass as floats); else one error naming the key."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise ValueError(f"unknown {group} config key(s) {', '.join(f'{group}.{k}' for k in unknown)}; known: "
                         f"{', '.join(sorted(names))}")
    hints = _type_hints(cls)
    for key, value in cfg.items():
        expected = _scalar_types(hints.get(key))
        if expected is None or (value is None and type(None) in expected):
            continue
        ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
        if not ok:
            names_ = " or ".join(t.__name__ for t in expected if t is not type(None))
            raise ValueError(f"{group}.{key}={value!r} must be {'an' if names_[0] in 'aeiou' else 'a'} {names_}")
    return dict(cfg)


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` once per class (it evaluates every annotation; clients check configs per message)."""
    return typing.get_type_hints(cls)


def _scalar_types(hint: Any) -> tuple[type, ...] | None:
    """The scalar types a field annotation allows (None when it is not a plain scalar / optional scalar)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    scalars = {int: (int,), float: (int, float), bool: (bool,), str: (str,), type(None): (type(None),)}
    if not args or any(a not in scalars for a in args):
        return None
    return tuple(t for a in args for t in scalars[a])


def check_choice(value: Any, known: tuple, key: str) -> None:
    """One error naming ``key`` when ``value`` is not one of ``known``."""
    if value not in known:
        raise ValueError(f"{key}={value!r}; known: {', '.join(map(str, known))}")


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def flat_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested plain config as {dotted key: value}."""
    if isinstance(tree, Mapping):
        return {k: v for key, sub in tree.items() for k, v in flat_config(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys whose values differ between two plain configs, except those under an ``ignore`` prefix."""
    fa, fb = flat_config(a), flat_config(b)
    return sorted(k for k in set(fa) | set(fb)
                  if fa.get(k) != fb.get(k) and not any(k == f or k.startswith(f + ".") for f in ignore))

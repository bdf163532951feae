"""One registry of protections: config name -> transform (see ``base.Protection`` for the signature).

``build_protection(cfg, key=None)`` is the only constructor the training routine, the Flower client and the attacks
use. ``cfg`` is the ``protect`` config group (a mapping with at least ``name``); ``key`` is the federation secret
for keyed protections, read on the client side only (see ``fedface.protect.keys``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fedface.models.spec import InputSpec
from fedface.protect.base import NoProtection, Protection

_REGISTRY: dict[str, Callable[..., Protection]] = {}
_KEYED: dict[str, Callable[[Mapping[str, Any]], bool]] = {}


def register(name: str, needs_key: Callable[[Mapping[str, Any]], bool] | None = None):
    """Decorator: register a factory ``f(cfg: Mapping, key: bytes | None) -> Protection`` under ``name``.

    ``needs_key(cfg)``: True when this configuration is keyed by the federation secret, which the caller must then
    load on the client side (``fedface.protect.keys.load_key``) and pass as ``key``.
    """

    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"protection {name!r} registered twice")
        _REGISTRY[name] = factory
        if needs_key is not None:
            _KEYED[name] = needs_key
        return factory

    return deco


def needs_key(cfg: Mapping[str, Any] | str) -> bool:
    """Whether the protection configured by ``cfg`` needs the federation key."""
    _load_builtin()
    cfg = {"name": cfg} if isinstance(cfg, str) else cfg
    rule = _KEYED.get(cfg.get("name", "none"))
    return bool(rule and rule(cfg))


@register("none")
def _none(cfg: Mapping[str, Any], key: bytes | None) -> Protection:
    return NoProtection()


def known_protections() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build_protection(cfg: Mapping[str, Any] | str, key: bytes | None = None) -> Protection:
    _load_builtin()
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    name = cfg.get("name", "none")
    if name not in _REGISTRY:
        raise ValueError(f"unknown protection protect.name={name!r}; known: {', '.join(known_protections())}")
    _check_keys(name, cfg)
    return _REGISTRY[name](cfg, key)


def _check_keys(name: str, cfg: Mapping[str, Any]) -> None:
    """The keys a protection's config may hold are those of its preset (configs/protect/<name>.yaml): anything else
    -- a typo added with ``+protect.x=`` or an attempt to pass the federation key as config, where it would travel
    to every node in the run config -- is one error naming it."""
    secret = [k for k in cfg if "key" in str(k).lower()]
    if secret:
        raise ValueError(f"protect.{secret[0]}: the federation key is never config (the run config travels to every "
                         "node and the server); each node reads its own key file (fedface.protect.keys)")
    known = _preset_keys(name)
    unknown = sorted(set(cfg) - known - {"name"}) if known else []
    if unknown:
        raise ValueError(f"unknown protect config key(s) {', '.join('protect.' + k for k in unknown)} for "
                         f"protect={name}; known: {', '.join(sorted(known - {'name'}))}")


def _preset_keys(name: str) -> set[str]:
    from omegaconf import OmegaConf

    from fedface.config import CONFIG_DIR

    preset = CONFIG_DIR / "protect" / f"{name}.yaml"
    return set(OmegaConf.load(preset)) if preset.is_file() else set()


def input_spec(cfg: Mapping[str, Any] | str, height: int = 112, width: int = 112) -> InputSpec:
    """Shape of the configured protection's ``model_input``, known without the key (a server builds the model with
    it): a keyed protection is instantiated with a throwaway random key, which does not change any shape."""
    import os

    return build_protection(cfg, os.urandom(32) if needs_key(cfg) else None).output_spec(height, width)


def protection_label(protect_cfg: Mapping[str, Any], mixup_cfg: Mapping[str, Any] | None = None) -> str:
    """A run's protection as results, grids and ``fedface compare`` name it: ``ppfr_fd+advface``,
    ``ppfr_fd+adamixup`` (adaptive MixUp), ``ppfr_fd+mixup`` (fixed k) -- one name per method."""
    name = protect_cfg["name"]
    if name == "advface":  # paper 003 stacked on an inner protection: name both, as compare's grid does
        from fedface.protect.advface import inner_cfg

        inner = inner_cfg(protect_cfg)["name"]
        name = name if inner == "none" else f"{inner}+advface"
    mix = (mixup_cfg or {}).get("name", "none")
    return name if mix == "none" else f"{name}+{'adamixup' if mix == 'adaptive' else 'mixup'}"


def _load_builtin() -> None:
    """Import the modules that register the built-in protections (lazy: they import this module)."""
    import importlib

    for module in ("fedface.protect.frequency", "fedface.protect.baselines", "fedface.protect.dp",
                   "fedface.protect.advface"):
        importlib.import_module(module)


__all__ = ["InputSpec", "Protection", "build_protection", "input_spec", "known_protections", "needs_key",
           "protection_label", "register"]

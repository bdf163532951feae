"""Which tensors travel between clients and server, as named numpy arrays.

- ``head=shared``: backbone + ArcFace class centres (naive: every centre is a template of one client's identity);
  ``head=local``: only the backbone (FedFace/FedFR style); each client keeps its own head.
- ``bn=federated``: BatchNorm weights *and running statistics* travel -- the server then sees, per client, the mean
  and variance of every BN layer's input over the client's data (the stem's first BN summarises the masked input
  itself); ``bn=local`` (FedBN, Li et al. 2021): BN affine parameters and statistics never leave the client.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedface.federation.central_dp import dp_mode

HEAD_MODES = ("shared", "local")
BN_MODES = ("federated", "local")


def _bn_names(module: nn.Module, prefix: str) -> set[str]:
    names = set()
    for mod_name, mod in module.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            for key in mod.state_dict():
                names.add(f"{prefix}{mod_name}.{key}")
    return names


def federated_state(backbone: nn.Module, head: nn.Module, head_mode: str = "shared",
                    bn_mode: str = "federated", floats_only: bool = False) -> dict[str, np.ndarray]:
    """The named arrays a client sends (and the server aggregates) under the given modes. ``floats_only`` (central
    DP, ``fedface.federation.central_dp``): integer buffers such as ``num_batches_tracked`` stay on the client."""
    check_modes(head_mode, bn_mode)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    if bn_mode == "local":
        for name in _bn_names(backbone, "backbone."):
            state.pop(name, None)
    if head_mode == "shared":
        state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    if floats_only:
        state = {k: v for k, v in state.items() if v.is_floating_point()}
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def floats_only(fed: Mapping[str, Any]) -> bool:
    """Only floating-point arrays travel under central DP (``federation.central_dp``: Flower's clipping cannot scale
    integer buffers) and under SecAgg+ (``federation.secagg``: the delta of ``num_batches_tracked`` is the local step
    count, beyond the quantiser's clipping range); integer buffers then stay on the client."""
    return dp_mode(fed) != "none" or bool(fed.get("secagg", False))


def load_federated_state(backbone: nn.Module, head: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Load whatever subset of backbone/head tensors ``arrays`` holds; the rest (local parts) stays as it is."""
    for prefix, module in (("backbone.", backbone), ("head.", head)):
        own = module.state_dict()
        update = {k[len(prefix):]: torch.as_tensor(np.asarray(v)) for k, v in arrays.items() if k.startswith(prefix)}
        unknown = set(update) - set(own)
        if unknown:
            raise KeyError(f"received tensors the model does not have: {sorted(unknown)[:3]} (model/protection "
                           "config differs between server and client?)")
        for k, v in update.items():
            if own[k].shape != v.shape and v.numel() == own[k].numel() == 1:  # 0-d buffers may travel as (1,)
                update[k] = v = v.reshape(own[k].shape)
            if own[k].shape != v.shape:
                raise ValueError(f"{prefix}{k}: received shape {tuple(v.shape)}, model has {tuple(own[k].shape)} "
                                 "(inconsistent protection/model config between server and clients)")
        own.update({k: v.to(own[k].dtype) for k, v in update.items()})
        module.load_state_dict(own)


def check_modes(head_mode: str, bn_mode: str) -> None:
    if head_mode not in HEAD_MODES:
        raise ValueError(f"federation.head={head_mode!r}; known: {', '.join(HEAD_MODES)}")
    if bn_mode not in BN_MODES:
        raise ValueError(f"federation.bn={bn_mode!r}; known: {', '.join(BN_MODES)}")


def nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def update_problem(arrays: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray]) -> str | None:
    """Why a client's returned ``arrays`` cannot enter the aggregate of the ``sent`` ones, or None when they can:
    the same names, and per name the same shape, a real numeric dtype and finite values only. A wrong-shaped array
    would be broadcast into the global model and a NaN would poison every client of the next round."""
    missing, extra = sorted(set(sent) - set(arrays)), sorted(set(arrays) - set(sent))
    if missing or extra:
        return f"arrays {'missing ' + ', '.join(missing[:3]) if missing else ''}" \
               f"{'; ' if missing and extra else ''}{'unexpected ' + ', '.join(extra[:3]) if extra else ''}"
    for name, ref in sent.items():
        got = np.asarray(arrays[name])
        # any real numeric dtype: FedAvg's weighted mean turns integer buffers (num_batches_tracked) into floats,
        # so from round 2 the global copy is float where every honest client still sends its integer
        if got.shape != ref.shape or got.dtype.kind not in "biuf":
            return f"array {name} is {got.dtype}{list(got.shape)}, expected {ref.dtype}{list(ref.shape)}"
        if got.dtype.kind == "f" and not np.isfinite(got).all():
            return f"array {name} holds non-finite values"
    return None


def examples_problem(claimed: Any, allowed: int | None) -> str | None:
    """Why a reply's ``num-examples`` (its FedAvg weight) is not believable, or None: a positive integer no larger
    than what the node reported before round 1 (``allowed``; None before any pre-flight). Without the bound one node
    claiming 1e12 examples becomes the whole average."""
    if isinstance(claimed, bool) or not isinstance(claimed, (int, float)) or claimed != claimed or claimed < 1 \
            or claimed != int(claimed):
        return f"num-examples={claimed!r} is not a positive integer"
    if allowed is not None and claimed > allowed:
        return f"num-examples={int(claimed)} exceeds the {allowed} the node reported at pre-flight"
    return None

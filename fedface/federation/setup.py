"""Checks a federation's config before any round starts, and fills what the server must know (label-space size)."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from fedface.attacks.threat import AttackConfig
from fedface.config import to_container
from fedface.data.partition import make_partition
from fedface.data.shards import make_shards
from fedface.data.sources import load_configured
from fedface.federation.central_dp import central_dp
from fedface.federation.params import check_modes
from fedface.federation.secagg import secagg_settings
from fedface.mixup import build_mixer
from fedface.protect import input_spec
from fedface.runs import check_run_config
from fedface.protect.dp import check_config as check_dp


def prepare_federation(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict, validated; raises one ValueError naming the bad key.

    With ``federation.num_classes`` unset (simulation), the partition is computed here to check the shards
    (num_clients vs identities) and to size a shared head. Set (a deployment), no face data is read: each node checks
    its own folder.
    """
    plain = to_container(cfg)
    check_run_config(plain)
    fed = plain["federation"]
    check_modes(fed["head"], fed["bn"])
    for key, low in (("num_clients", 1), ("rounds", 1), ("local_epochs", 1), ("min_train_nodes", 1),
                     ("eval_every", 1), ("client_cache", 1), ("round_timeout", 1)):
        value = fed[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or \
                (key != "round_timeout" and value != int(value)):
            kind = "a number" if key == "round_timeout" else "an integer"
            raise ValueError(f"federation.{key}={value!r} must be {kind} >= {low}")
    if fed.get("local_steps") is not None and (not isinstance(fed["local_steps"], int) or fed["local_steps"] < 1):
        raise ValueError(f"federation.local_steps={fed['local_steps']!r} must be null or an integer >= 1")
    if not isinstance(fed["fraction_train"], (int, float)) or not 0 < fed["fraction_train"] <= 1:
        raise ValueError(f"federation.fraction_train={fed['fraction_train']!r} must be a number in (0, 1]")
    n = int(fed["num_clients"])
    if int(n * float(fed["fraction_train"])) < 1:
        raise ValueError(f"federation.fraction_train={fed['fraction_train']} x federation.num_clients={n} samples "
                         "zero clients per round")
    if not 1 <= int(fed["min_train_nodes"]) <= n:
        raise ValueError(f"federation.min_train_nodes={fed['min_train_nodes']} must be in [1, num_clients={n}]")
    central_dp(fed)  # unknown federation.dp / bad federation.dp_params fail here
    if secagg_settings(fed) is not None and plain.get("attack", {}).get("name") == "imprint":
        raise ValueError("federation.secagg=true with attack=imprint: the trap reads one client's individual update, "
                         "which SecAgg+ never reveals (an imprint on the aggregate is not wired); use attack=gradient "
                         "or attack=inversion")
    spec = input_spec(plain["protect"])  # unknown protection / bad protection config fails here
    check_dp(plain)  # protect=dp_sgd with mixup or BatchNorm fails here
    AttackConfig.from_cfg(plain.get("attack", {"name": "none"}))  # unknown attack key fails here
    build_mixer(plain["mixup"], spec, int(plain["train"]["batch_size"]))  # bad k range fails here
    if fed.get("num_classes") is None:
        data = load_configured(plain["data"])
        table = make_partition(data, plain["data"], int(plain["seed"]), root=plain["data"].get("root"))
        labels = data.labels[table.train_idx].numpy()
        make_shards(labels, n, plain["data"].get("shards", "identity"),
                    float(plain["data"].get("dirichlet_alpha", 0.5)), int(plain["seed"]))
        fed["num_classes"] = int(len(set(labels.tolist())))
    return plain

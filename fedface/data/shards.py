"""Client shards of the training identities: identity-disjoint (default), IID, or Dirichlet(alpha) label skew."""
from __future__ import annotations

import numpy as np


def make_shards(labels: np.ndarray, num_clients: int, mode: str = "identity", alpha: float = 0.5,
                seed: int = 0) -> list[np.ndarray]:
    """Split sample positions 0..len(labels)-1 into ``num_clients`` shards. Every shard is non-empty.

    - ``identity``: each identity goes to exactly one client (a real FR federation: a person is enrolled once);
    - ``iid``: samples dealt uniformly at random;
    - ``dirichlet``: per identity, client proportions ~ Dir(alpha) (Hsu et al. 2019 label skew).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    ids = np.unique(labels)
    if num_clients < 1:
        raise ValueError(f"federation.num_clients={num_clients} must be >= 1")
    if mode == "identity":
        if num_clients > len(ids):
            raise ValueError(
                f"federation.num_clients={num_clients} exceeds the {len(ids)} training identities "
                "(identity-disjoint shards need >= 1 identity per client; lower federation.num_clients or use "
                "data.shards=iid)"
            )
        groups = np.array_split(rng.permutation(ids), num_clients)
        shards = [np.flatnonzero(np.isin(labels, g)) for g in groups]
    elif mode == "iid":
        if num_clients > len(labels):
            raise ValueError(f"federation.num_clients={num_clients} exceeds the {len(labels)} training images")
        shards = [np.sort(s) for s in np.array_split(rng.permutation(len(labels)), num_clients)]
    elif mode == "dirichlet":
        buckets: list[list[int]] = [[] for _ in range(num_clients)]
        for c in ids:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha)))[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                buckets[k].extend(part.tolist())
        shards = [np.sort(np.array(b, dtype=np.int64)) for b in buckets]
    else:
        raise ValueError(f"unknown data.shards={mode!r}; known: identity, iid, dirichlet")
    empty = [k for k, s in enumerate(shards) if len(s) == 0]
    if empty:
        raise ValueError(
            f"shards {empty} are empty with data.shards={mode} and federation.num_clients={num_clients} "
            "(raise data.dirichlet_alpha or lower federation.num_clients)"
        )
    return shards

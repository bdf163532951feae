"""A SuperNode that runs only the app it was provisioned with.

A Flower SuperNode installs and runs whatever app (FAB) a run names -- as the node's user, next to its key and its
faces. Flower's own defence (``--trusted-entities``) accepts only FABs signed through Flower's platform, which a
self-hosted federation does not have. So fedface's nodes pin the app by content: the SHA-256 of the FAB that
``flwr build`` makes of the node's own copy of the fedface app (Flower builds FABs deterministically: fixed file
dates), or a hash the node's owner wrote in the deploy file. A run whose FAB has another hash gets Flower's own
"FAB could not be verified" error reply and nothing of it runs.

How: flower-supernode, started through this module, with Flower's FAB-verification hook pointed at the pin. The hook
(``_verify_fab`` and the ``trusted_entities`` branch of ``_pull_and_store_message``) is Flower internals, checked
here against the version it was written for (``TESTED_FLWR``); another version refuses to start rather than run
unpinned. ``tests/test_deploy.py`` starts a foreign app on pinned loopback nodes.
"""
from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path

TESTED_FLWR = "1.42."
_PIN = "fedface-pinned-app"  # the trusted-entities key our hook answers to


@functools.lru_cache(maxsize=4)
def app_hash(app: Path) -> str:
    """The SHA-256 of the FAB ``flwr build`` / ``flwr run`` makes of the app folder ``app``."""
    from flwr.cli.build import build_fab_from_disk

    return hashlib.sha256(build_fab_from_disk(Path(app))).hexdigest()


def install_pin(pinned: set[str]) -> None:
    """Make this process's SuperNode refuse every FAB whose SHA-256 is not in ``pinned``."""
    import flwr
    import flwr.supernode.start_client_internal as sci

    if not flwr.__version__.startswith(TESTED_FLWR):
        raise SystemExit(f"fedface pinned SuperNode: written for flwr {TESTED_FLWR}x, found {flwr.__version__}; "
                         "refusing to start unpinned")
    original = sci._pull_and_store_message

    def verify(fab, trusted_entities) -> bool:
        return hashlib.sha256(fab.content).hexdigest() in pinned

    def pull(*args, **kwargs):
        get_fab = kwargs["get_fab"]

        def fab_with_check(fab_hash: str, run_id: int):
            fab = get_fab(fab_hash, run_id)
            # Flower first asks whether the SuperLink vouches for the FAB at all; the content hash decides instead
            fab.verifications = {**fab.verifications, "valid_license": "pinned by fedface"}
            return fab

        return original(*args, **{**kwargs, "get_fab": fab_with_check, "trusted_entities": {_PIN: ""}})

    sci._verify_fab = verify
    sci._pull_and_store_message = pull


def main(argv: list[str] | None = None) -> int:
    """``python -m fedface.deploy.pinned_node SHA256[,SHA256...] -- <flower-supernode arguments>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[1] != "--":
        print(main.__doc__, file=sys.stderr)
        return 2
    pinned = {h.strip().lower() for h in args[0].split(",") if h.strip()}
    if not pinned or any(len(h) != 64 for h in pinned):
        print(f"fedface pinned SuperNode: {args[0]!r} is not a list of SHA-256 hex digests", file=sys.stderr)
        return 2
    install_pin(pinned)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = ["flower-supernode", *args[2:]]
    flower_supernode()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`scripts/deploy <command> --config FILE` (also `fedface deploy ...`): a real Flower federation with TLS and
SuperNode authentication. Walkthrough: docs/deploy.md.

  certs      CA, SuperLink certificate, one auth key pair per node        (server machine)
  superlink  start the SuperLink (TLS + node auth), register node keys     (server machine)
  register   register one node's public key: --node NAME or --key FILE     (server machine)
  supernode  start this machine's SuperNode: --node NAME                   (each client machine)
  run        `flwr run` the federation against the SuperLink              (any machine with ca.crt)
  up         all of the above on this machine, then stop everything        (loopback try-out)
  stop       stop every process this deploy folder started, by PID
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fedface.config import ConfigError
from fedface.deploy import launch
from fedface.deploy.certs import CertificateError
from fedface.deploy.config import load_deploy_config
from fedface.deploy.procs import DeployError, Processes

DEFAULT_CONFIG = "configs/deploy/loopback.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["certs", "keygen", "superlink", "register", "supernode", "run", "up", "stop"])
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"deploy file (default {DEFAULT_CONFIG})")
    p.add_argument("--node", help="node name (keygen, supernode, register)")
    p.add_argument("--key", type=Path, help="register: a public key file instead of --node")
    p.add_argument("--renew", action="store_true", help="certs: re-issue the SuperLink certificate")
    p.add_argument("--run-dir", type=Path, help="run, up: results folder (default <workdir>/run)")
    p.add_argument("--timeout", type=float, default=1800.0, help="run, up: seconds before `flwr run` is abandoned")
    return p


def _print_results(results: dict, run_dir: Path) -> None:
    for r in results.get("rounds", []):
        acc = r.get("accuracy")
        print(f"round {r['round']:3d}  acc {'   n/a' if acc is None else f'{100 * acc:6.2f}'}  "
              f"replies {r.get('received')}/{r.get('sampled')}  failed {len(r.get('failed', []))}  "
              f"{r.get('seconds', 0):.1f} s")
    print(f"results: {run_dir}/results.json ({results.get('status')})")


def _start(cfg, start) -> None:
    """Run a start step; whatever it started is stopped again if it fails (no process left after a failed start)."""
    procs = Processes(cfg.workdir)
    before = set(procs.started)
    try:
        start(procs)
    except BaseException:
        for name in set(procs.started) - before:
            procs.stop(name)
        raise


def _command(args: argparse.Namespace) -> int:
    cfg = load_deploy_config(args.config)
    if cfg.export_shards and args.command in ("supernode", "run", "up"):
        cfg = launch.loopback_nodes(cfg)  # node folders and label-space size of the try-out (idempotent)
    run_dir = (args.run_dir or cfg.workdir / "run").resolve()
    if args.command == "certs":
        for path in launch.make_certs(cfg, args.renew):
            print(f"wrote {path}")
    elif args.command == "keygen":
        node = cfg.node(args.node or "")
        public = launch.keygen(cfg, node)
        print(f"wrote {launch.key_path(cfg, node.name)} (stays on this machine, mode 600) and {public}: send only "
              f"{public.name} to the operator, who saves it as <workdir>/keys/{public.name} and runs "
              f"`scripts/deploy register --node {node.name}`")
    elif args.command == "superlink":
        _start(cfg, lambda procs: launch.start_superlink(cfg, procs))
        print(f"SuperLink on {launch.LOCAL}:{cfg.link_port} (TLS, node authentication; every API, for this "
              f"machine only); fleet gateway on {cfg.bind}:{cfg.port} (the Fleet API only); logs "
              f"{Processes(cfg.workdir).log(launch.LINK)}, {Processes(cfg.workdir).log(launch.GATEWAY)}")
    elif args.command == "register":
        launch.register_node(cfg, args.key or launch.pub_path(cfg, cfg.node(args.node).name))
        print("registered")
    elif args.command == "supernode":
        node = cfg.node(args.node or "")
        _start(cfg, lambda procs: launch.wait_accepted(procs, [launch.start_supernode(cfg, procs, node)]))
        print(f"SuperNode {node.name} accepted by the SuperLink at {cfg.address}")
    elif args.command == "run":
        _print_results(launch.flwr_run(cfg, run_dir, launch.run_overrides(cfg), args.timeout), run_dir)
    elif args.command == "up":
        _print_results(launch.up(cfg, run_dir, args.timeout), run_dir)
    elif args.command == "stop":
        procs = Processes(cfg.workdir)
        names = list(procs.started)
        procs.stop_all()
        print(f"stopped {', '.join(names) or 'nothing'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    if args.command in ("supernode", "keygen") and not args.node:
        print(f"scripts/deploy {args.command}: error: --node NAME is required", file=sys.stderr)
        return 2
    if args.command == "register" and not (args.node or args.key):
        print("scripts/deploy register: error: --node NAME or --key FILE is required", file=sys.stderr)
        return 2
    try:
        return _command(args)
    except (ConfigError, CertificateError, DeployError, ValueError) as err:
        print(f"scripts/deploy {args.command}: error: {err}", file=sys.stderr)
        return 2



if __name__ == "__main__":
    sys.exit(main())

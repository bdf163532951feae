"""`fedface <command> [hydra overrides]` -- the single entry point.

Commands: train (centralized training + evaluation), partition (print the partition table), fetch (download a
public dataset with checksum). simulate, reconstruct and compare plug into COMMANDS.
"""
from __future__ import annotations

import json
from pathlib import Path
import logging
import sys

from fedface.config import ConfigError, compose_config

USAGE = """usage: fedface <command> [key=value ...]

commands:
  train       centralized ArcFace training + verification on held-out identities
  simulate    Flower federation of N clients on Ray (federation.num_clients, federation.rounds, ...)
  reconstruct learned reconstruction of clients' masked data (attack=learned): decoder + cGAN trained on the
              attacker's auxiliary faces, white-box inversion with the key; pixel and identity-leak scores
  compare     protections x malicious-server attacks, one federation per cell: fedface compare experiment=<name>
              (configs/experiment/: demo, orl, scale); writes results/<name>/ (results.json, table.md, report.html)
  invert      model inversion of a finished run's weights (attack=inversion attack.target=RUN): class centres of a
              shared head, backbone-only for head=local; identity-leak scores
  imprint     malicious weights (trap layer, robbing the fed) against a few clients of attack.target's protection
  partition   print the partition table (train / public / test / aux identities, pairs) for data=<name>
  energy      share of BDCT energy in DC / removed by PPFR-FD's channel selection, for data=<name>
  prior       train the gradient attack's GAN face prior on the attacker's aux faces into attack.cache
              (attack.gradient.prior=gan; GGL reads it, never trains it mid-round)
  summarize   markdown tables of finished runs (any command's results.json): fedface summarize RUN... [--seeds]
  fetch       download a public face set with checksum: fedface fetch <orl|lfw> [dest]
  deploy      real federation (SuperLink + SuperNodes, TLS, node auth): fedface deploy <step> --config FILE

examples:
  fedface train data=orl
  fedface train data=lfwa train.epochs=12 seed=1 run.dir=results/lfw-raw-s1
"""


def _train(overrides: list[str]) -> int:
    from fedface.centralized import run_train
    from fedface.report.tables import verification_table

    cfg = compose_config(overrides)
    results = run_train(cfg)
    print(verification_table([results]))
    print(f"results: {cfg.run.dir}/results.json")
    return 0


def _simulate(overrides: list[str]) -> int:
    """Flower simulation on Ray (the Flower layer lives in strategies/ and clients/, imported only here)."""
    from strategies.simulate import simulate

    cfg = compose_config(overrides)
    results = simulate(cfg)  # each round was logged as it finished (strategies.server_loop.round_line)
    if (results.get("collapse") or {}).get("collapsed"):
        print("COLLAPSED: the clients' training sits at ArcFace's degenerate solution (fedface.train.collapse); "
              "the accuracy above does not measure the protection")
    print(f"results: {cfg.run.dir}/results.json ({results.get('status')})")
    return 0 if results.get("status") == "done" else 1


def _with_attack(overrides: list[str], default: str):
    """The composed config with ``attack=<default>`` unless the overrides choose an attack group themselves."""
    chosen = any(o.lstrip("+~").startswith("attack=") for o in overrides)
    return compose_config(overrides if chosen else [f"attack={default}", *overrides])


def _attack_command(overrides: list[str], attack: str, run, table) -> int:
    """An offline attack command: compose with ``attack=<attack>``, run, print its table and where results are."""
    cfg = _with_attack(overrides, attack)
    results = run(cfg)
    print(table(results["rows"]))
    print(f"results: {cfg.run.dir}/results.json")
    return 0


def _reconstruct(overrides: list[str]) -> int:
    from fedface.reconstruct import run_reconstruct
    from fedface.summarize import reconstruct_table

    return _attack_command(overrides, "learned", run_reconstruct, reconstruct_table)


def _compare(overrides: list[str]) -> int:
    from fedface.compare import run_compare
    from fedface.compare_report import table_md

    results = run_compare(overrides)
    out = Path(results["out"])
    print(table_md(results))
    print(f"report: {(out / 'report.html').resolve()}")
    failed = results["cells"]["failed"]
    if failed:
        print(f"fedface compare: {failed} cell(s) failed (their errors are in the table and the report)",
              file=sys.stderr)
    return 0 if failed == 0 else 1


def _invert(overrides: list[str]) -> int:
    from fedface.invert import run_invert
    from fedface.summarize import invert_table

    return _attack_command(overrides, "inversion", run_invert, invert_table)


def _imprint(overrides: list[str]) -> int:
    from fedface.invert import run_imprint

    cfg = _with_attack(overrides, "inversion")
    results = run_imprint(cfg)
    if "skipped" in results:
        print(results["skipped"])
    for r in results["rows"]:
        print(f"MALICIOUS WEIGHTS client {r['client']}: {r['recovered']}/{r['batch']} inputs recovered "
              f"(> {r['threshold_db']:.0f} dB in model_input space); pixel PSNR {r.get('pixel_psnr_mean', 'n/a')}")
    print(f"recovery rate {results.get('recovery_rate')}; results: {cfg.run.dir}/results.json")
    return 0


def _partition(overrides: list[str]) -> int:
    from fedface.data.sources import load_configured
    from fedface.data.partition import make_partition

    cfg = compose_config(overrides)
    table = make_partition(load_configured(cfg.data), cfg.data, int(cfg.seed), root=cfg.data.get("root"))
    print(json.dumps(table.summary(), indent=2))
    return 0


def _fetch(args: list[str]) -> int:
    from pathlib import Path

    from fedface.data.fetch import fetch

    if not args:
        raise ConfigError("usage: fedface fetch <orl|lfw> [dest]")
    print(fetch(args[0], Path(args[1]) if len(args) > 1 else None))
    return 0


def _energy(overrides: list[str]) -> int:
    """Paper 000's energy facts on a dataset: share in DC, and removed by dropping DC + channels >= keep."""
    from fedface.data.sources import load_configured
    from fedface.freq import energy_report

    cfg = compose_config(overrides)
    data = load_configured(cfg.data)
    keep = int(cfg.protect.get("keep", 36)) if cfg.protect.name == "ppfr_fd" else 36
    r = energy_report(data.images.float()[:, None], keep=keep)
    print(f"{r['images']} {cfg.data.name} faces: DC holds {r['dc']:.2%} of the energy (paper 000: >90%); dropping "
          f"DC + channels {keep}..63 removes {r['removed']:.2%} (paper 000: >94%); channels {keep}..63 alone "
          f"{r['high']:.2%}")
    return 0


def _prior(overrides: list[str]) -> int:
    from fedface.attacks.gradient import InversionConfig
    from fedface.config import to_container
    from fedface.experiment.scoring import attacker_aux
    from fedface.experiment.generators import gan_prior
    from fedface.models.face_gan import GanConfig

    cfg = _with_attack(overrides, "gradient")
    icfg = InversionConfig.from_cfg(to_container(cfg.attack.gradient))
    if icfg.prior != "gan":
        raise ValueError(f"attack.gradient.prior={icfg.prior}: fedface prior trains the GAN prior "
                         "(attack.gradient.prior=gan); pca and free need no training")
    if cfg.attack.get("cache") in (None, ""):
        raise ValueError("attack.cache: give the folder the trained prior goes to (and the attack reads from)")
    aux = attacker_aux(to_container(cfg.data), int(cfg.seed))
    if aux is None:
        raise ValueError(f"data.aux={cfg.data.get('aux')!r} gives the attacker no auxiliary faces to learn from")
    _, facts = gan_prior(aux[:, 0], GanConfig.from_cfg(icfg.gan), Path(cfg.attack.cache), progress=True)
    print(f"GAN prior ({'cached' if facts['cached'] else 'trained'}: {facts.get('steps')} steps, "
          f"{facts.get('seconds')} s, {len(aux)} aux faces) in {cfg.attack.cache}")
    return 0


def _summarize(args: list[str]) -> int:
    from fedface.summarize import main as summarize_main

    return summarize_main(args)


def _deploy(args: list[str]) -> int:
    from fedface.deploy.cli import main as deploy_main

    return deploy_main(args)


def command_help(command: str) -> str:
    """``fedface <command> --help``: what it does, its config groups with their choices, every key with its
    default (the composed default config)."""
    from omegaconf import OmegaConf

    from fedface.config import CONFIG_DIR, flat_config

    line = next((ln.strip() for ln in USAGE.splitlines() if ln.strip().startswith(command + " ")), command)
    groups = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir())
    out = [f"usage: fedface {command} [group=choice ...] [key=value ...] [--cfg job]", "", line, "",
           "config groups (group=choice):"]
    out += [f"  {g:<11}{', '.join(sorted(p.stem for p in (CONFIG_DIR / g).glob('*.yaml')))}" for g in groups
            if g not in ("deploy", "preset")]  # deploy: its own files; preset: compare's rows (configs/preset/)
    defaults = OmegaConf.to_container(compose_config([]), resolve=True)
    out += ["", "keys and their defaults (key=value):"]
    out += [f"  {k}={v}" for k, v in flat_config(defaults).items()]
    return "\n".join(out)


def _print_config(command: str, rest: list[str]) -> int:
    """Hydra's ``--cfg job``: the composed config as YAML, nothing run."""
    from omegaconf import OmegaConf

    i = rest.index("--cfg")
    what = rest[i + 1] if i + 1 < len(rest) else ""
    if what != "job":
        print(f"fedface {command}: error: --cfg takes `job` (the composed config), got {what!r}", file=sys.stderr)
        return 2
    print(OmegaConf.to_yaml(compose_config(rest[:i] + rest[i + 2:])), end="")
    return 0


COMMANDS = {"train": _train, "simulate": _simulate, "reconstruct": _reconstruct, "compare": _compare,
            "invert": _invert, "imprint": _imprint, "partition": _partition, "energy": _energy, "fetch": _fetch,
            "prior": _prior, "summarize": _summarize, "deploy": _deploy}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for ours in ("fedface", "strategies", "clients"):
        logging.getLogger(ours).setLevel(logging.INFO)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"fedface: unknown command {command!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    hydra_command = command not in ("fetch", "deploy", "summarize")
    if hydra_command and any(a in ("-h", "--help") for a in rest):
        print(command_help(command))
        return 0
    if hydra_command and ("-m" in rest or "--multirun" in rest):
        print(f"fedface {command}: error: Hydra's multirun (-m) is not supported; sweep with `fedface compare` or a "
              "shell loop over overrides", file=sys.stderr)
        return 2
    if hydra_command and "--cfg" in rest:
        return _print_config(command, rest)
    from fedface import runs

    runs.COMMAND[:] = ["fedface", command, *rest]  # results.json's provenance names the command that made it
    try:
        return COMMANDS[command](rest)
    except runs.RunReused as done:  # run.reuse=true found this very run finished: nothing to do
        print(f"fedface {command}: {done}")
        return 0
    except (ConfigError, ValueError, OSError, FloatingPointError) as err:
        # user errors (a bad key, file, folder or path -- OSError names it): one clear line, no traceback wall
        print(f"fedface {command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

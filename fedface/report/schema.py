"""The documented shape of the results.json of ``fedface compare`` (``RESULTS``), ``fedface train`` (``TRAIN``) and
``fedface simulate`` (``SIMULATE``), ``fedface reconstruct`` (``RECONSTRUCT``), ``fedface invert`` (``INVERT``) and
``fedface imprint`` (``IMPRINT``), checked by ``validate``.

A schema is a dict ``key -> (types, required, description)``; a nested dict schema is given as the type. Types are
Python types; ``None`` in the tuple allows null. ``validate`` raises one ValueError naming the path of the first
offending key. No JSON-schema package: the check is small and a test runs it on every compare it makes.
"""
from __future__ import annotations

from typing import Any

NUM = (int, float)
OPT_NUM = (int, float, type(None))

# The one spelling of each utility number -- in results.json rounds, compare records, reports and on the wire
# (``fedface.eval.utility`` makes the row, ``clients.records`` carries a missing one).
ACCURACY, ACCURACY_STD, AUC, TOP1 = "accuracy", "accuracy_std", "auc", "top1"
TAR_1E3, TAR_1E2 = "tar_at_far_1e-3", "tar_at_far_1e-2"
UTILITY_METRICS = (ACCURACY, ACCURACY_STD, AUC, TAR_1E3, TAR_1E2, TOP1)

UTILITY = {
    ACCURACY: (OPT_NUM, True, "10-fold verification accuracy on held-out identities after the last round"),
    ACCURACY_STD: (OPT_NUM, True, "its standard deviation over the folds"),
    AUC: (OPT_NUM, True, "ROC AUC of the verification pairs"),
    TAR_1E3: (OPT_NUM, True, "TAR at FAR = 1e-3 (null: too few impostor pairs to reach that FAR)"),
    TAR_1E2: (OPT_NUM, True, "TAR at FAR = 1e-2"),
    TOP1: (OPT_NUM, True, "identification top-1 on held-out identities"),
    "curve": (list, True, "per round: {round, accuracy, train_loss}"),
    "collapse": ((dict, type(None)), False, "ArcFace's degenerate solution after the last round "
                                            "(fedface.train.collapse): collapsed, loss_over_degenerate, "
                                            "head_row_cosine"),
}

PRIVACY = {
    "psnr": (OPT_NUM, True, "PSNR (dB) of the attack's reconstructions against the true faces (see space)"),
    "ssim": (OPT_NUM, True, "SSIM of the same"),
    "cos": (OPT_NUM, True, "mean cosine of reconstruction vs original under dlib (independent evaluator)"),
    "same_person": (OPT_NUM, True, "share of reconstructions dlib calls the same person as their original"),
    "attack_top1": (OPT_NUM, True, "top-1 identification of the reconstructions among the victims (dlib)"),
    "srra": (OPT_NUM, True, "successful reconstruction replay attack rate on the cell's own federated model"),
    "target_top1": (OPT_NUM, False, "learned: top-1 identification of the reconstructions by the target system"),
    "srra_unavailable": (str, False, "why SRRA is null (e.g. too few impostor scores for FAR = 1e-3)"),
    "masking_visual": (OPT_NUM, True, "paper 001 masking effect, 1 - SSIM of the masked data shown as a picture"),
    "masking_feature": (OPT_NUM, True, "paper 001 masking effect, 1 - cos under dlib"),
    "space": (str, False, "what PSNR/SSIM compare: pixels, or the masked model input (not comparable)"),
    "floor_psnr": (NUM, False, "the mean-face floor's PSNR (an attack must beat it to show anything)"),
    "floor_ssim": (NUM, False, "the mean-face floor's SSIM"),
    "gradient_raw": (list, False, "gradient attack: the raw per-reply outcome (masked-space scores)"),
    "floor_cos": (OPT_NUM, False, "model_inversion: dlib COS of the mean face (aux set) as a guess for the identities"),
    "floor_srra": (OPT_NUM, False, "model_inversion: SRRA of the mean face on the cell's federated model"),
    "inversion_row": ((str, type(None)), False, "model_inversion: which `fedface invert` row the record reports "
                                                "(class-centre with head=shared, else BN-statistics inversion)"),
    "inversion_rows": (list, False, "model_inversion: every row of the cell's `fedface invert` (identity scores)"),
    "head": (str, False, "model_inversion: what the server held (shared: class centres; local: backbone only)"),
    "epsilon": (OPT_NUM, False, "protect=dp_sgd: the largest client epsilon (Opacus RDP accountant) after the last "
                                "round, at delta; null = infinite"),
    "delta": (NUM, False, "protect=dp_sgd: the delta of epsilon"),
}

SCORES = {
    "masking_score": (OPT_NUM, True, "paper 001 masking level, normalised across the attack's rows"),
    "attack_score": (OPT_NUM, True, "paper 001 attack level"),
    "privacy_score": (OPT_NUM, True, "eq. (9): 0.4 masking + 0.6 attack"),
    "accuracy_score": (OPT_NUM, True, "eq. (10): normalised accuracy ratio (reference: protection none)"),
    "comprehensive_mean": (OPT_NUM, True, "Table 2's comprehensive score (mean of privacy and accuracy scores)"),
    "comprehensive_product": (OPT_NUM, True, "eq. (11) as the text states it (product)"),
    "accuracy_ratio": (OPT_NUM, True, "accuracy / accuracy of protection none"),
}

RECORD = {
    "protection": (str, True, "none, fr_fd, ppfr_fd, ppfr_fd+adamixup, obfuscator, peep, instahide, ..."),
    "attack": (str, True, "gradient | learned | model_inversion"),
    "seed": (int, True, "the cell's seed (data split, model init, sampling, attacks)"),
    "status": (str, True, "done | failed | unavailable"),
    "error": (str, False, "failed / unavailable: why"),
    "config_hash": (str, False, "sha256 prefix of the cell's resolved configs (its cache key)"),
    "cell_dir": (str, False, "where the cell's federation and reconstruction runs are"),
    "wall_seconds": (OPT_NUM, False, "wall time of the cell (federation + attacks; all of its attacks)"),
    "machine": (dict, False, "platform, cpu count, torch threads, load average when the cell ended"),
    "utility": (UTILITY, False, "done records: verification utility of the cell's federated model"),
    "privacy": (PRIVACY, False, "done records: what the attack got"),
    "bytes_per_round": (OPT_NUM, False, "mean bytes sent + received by the server per round"),
    "threat_note": (str, False, "central DP rows: \"no protection against the server\" (the server adds the noise "
                                "after seeing every update; the grid's attacker is the server); SecAgg+ rows: \"server "
                                "sees only the aggregate: per-client attacks unavailable by construction; attacks ran "
                                "on the aggregate\""),
    "scores": ((SCORES, type(None)), False, "paper 001's scores of this protection under this attack (null: none "
                                            "row, or not scorable)"),
}

STAT = {"mean": (NUM, True, "mean over seeds"), "ci95": (OPT_NUM, True, "half-width of the 95% t interval"),
        "n": (int, True, "seeds")}

SUMMARY = {
    "protection": (str, True, ""), "attack": (str, True, ""), "status": (str, True, "done | failed | unavailable"),
    "seeds": (list, True, "the seeds that finished"), "error": (str, False, "why no seed finished"),
    "threat_note": (str, False, "central DP rows: \"no protection against the server\"; SecAgg+ rows: \"server sees "
                                "only the aggregate: per-client attacks unavailable by construction; attacks ran on "
                                "the aggregate\" (shown in every table)"),
    **{k: ((STAT, type(None)), False, "mean +- 95% CI over seeds") for k in
       ("accuracy", "tar_at_far_1e-3", "tar_at_far_1e-2", "psnr", "ssim", "cos", "srra", "attack_top1", "target_top1",
        "floor_psnr", "floor_cos",
        "masking_visual", "masking_feature", "epsilon")},
    "delta": (NUM, False, "protect=dp_sgd rows: the delta of epsilon"),
    "collapsed": (int, False, "how many of the seeds ended in ArcFace's degenerate solution (their accuracy does not "
                              "measure the protection)"),
    "scores": ((SCORES, type(None)), True, "paper 001's scores on the means"),
}

RESULTS = {
    "schema": (str, True, "fedface.compare/1"),
    "experiment": (str, True, "configs/experiment/<name>.yaml"),
    "status": (str, True, "done (the file is written only when the compare finished)"),
    "out": (str, True, "the results folder"),
    "command": (str, True, "the command line"),
    "created": (str, True, "UTC ISO time"),
    "data": (str, True, "the data set the cells ran on"),
    "grid": (dict, True, "protections, attacks, seeds per protection"),
    "notes": (list, True, "loud notes (synthetic fallback, skipped attacks)"),
    "cells": (dict, True, "total, ran, resumed (finished earlier, skipped), failed"),
    "wall_seconds": (NUM, True, "this invocation's wall time"),
    "machine": (dict, True, "the machine"),
    "records": ([RECORD], True, "one per (protection, attack, seed)"),
    "summary": ([SUMMARY], True, "one per (protection, attack)"),
}


CURVE_POINT = {
    "epoch": (int, True, "1-based"),
    "loss": (NUM, True, "mean training loss of the epoch"),
    "degenerate_loss": (OPT_NUM, True, "the loss of ArcFace's degenerate solution for this head and mix "
                                       "(fedface.train.collapse)"),
    "head_row_cosine": (OPT_NUM, True, "mean pairwise cosine of the class centres"),
    ACCURACY: (OPT_NUM, False, "with eval.every: verification accuracy after this epoch"),
}

VERIFICATION = {
    ACCURACY: (NUM, True, "10-fold verification accuracy on the held-out identities' pairs"),
    ACCURACY_STD: (NUM, True, "its standard deviation over the folds"),
    "fold_accuracy": (list, True, "per fold"),
    "threshold": (NUM, True, "the cosine threshold (chosen on the other folds)"),
    AUC: (NUM, True, "ROC AUC of the pairs"),
    "eer": (NUM, True, "equal error rate"),
    "tar_at_far": (dict, True, "TAR at FAR 0.001 and 0.01 (null: too few impostor pairs)"),
    "pairs": (int, True, "verification pairs"), "genuine": (int, True, ""), "impostor": (int, True, ""),
    "identification": ((dict, type(None)), False, "top1, gallery and probes on the held-out identities"),
}

TRAIN = {
    "command": (str, True, "train"),
    "status": (str, True, "done | failed | running (the file lands only done or failed)"),
    "error": (str, False, "failed: why (e.g. a non-finite loss, naming the epoch and step)"),
    "data": (dict, True, "the partition table's summary: dataset, protocol, identities and images per role, pairs"),
    "protection": (dict, True, "the protection's own description (after training: learnt parts as trained)"),
    "mixup": (dict, True, "MixUp's description ({name: none} without); adaptive: the k histogram and final PMF"),
    "model": (dict, True, "name, parameters, input shape, stem"),
    "seed": (int, True, "every seed of the run"),
    "machine": (dict, True, "platform, versions, CPU/GPU, provenance (commit, dirty, packages, command)"),
    "curve": ([CURVE_POINT], True, "one point per finished epoch"),
    "collapse": (dict, False, "done: the verdict of fedface.train.collapse on the final loss and the head"),
    "verification": (VERIFICATION, False, "done: fedface.eval.verification on the held-out identities"),
    "train": (dict, False, "done: seconds, steps, examples, images_per_second, seconds_per_epoch, final_loss"),
    "eval_seconds": (NUM, False, "done: evaluation wall time"),
    "dp": (dict, False, "protect=dp_sgd: epsilon, delta and the accountant's inputs"),
}


ROUND = {
    "round": (int, True, "1-based"),
    "sampled": (int, True, "nodes sent the train message"),
    "received": (int, True, "replies aggregated (after the screen)"),
    "failed": (list, True, "{node, reason} of every reply left out (error, refused request, screened out)"),
    "bytes_sent": (NUM, True, "bytes of the train messages' arrays (and the policy)"),
    "bytes_received": (NUM, True, "bytes of the aggregated replies' arrays"),
    "k_counts": ((list, type(None)), True, "MixUp: how often each k was drawn this round (empty without MixUp)"),
    "seconds": (NUM, True, "the round's wall time, evaluation included"),
    "exchange_seconds": (dict, False, "train / evaluate: from sending the messages to the last reply (the clients' "
                                      "work plus transport; SecAgg+ rounds: none)"),
    "client_seconds": (OPT_NUM, False, "the slowest aggregated client's own training seconds"),
    "client_process_seconds": (OPT_NUM, False, "the oldest replying client process's age (deployed: one process per "
                                               "message, so its start, imports, build and training)"),
    "client_startup_seconds": (OPT_NUM, False, "the longest time from a replying client process's start to its app "
                                               "loaded (deployed: Flower's process start, FAB install, imports)"),
    "train_loss": (OPT_NUM, True, "the clients' example-weighted mean training loss (null: no reply)"),
    "global_bytes": (int, True, "size of the global model"),
    "loss_over_degenerate": (NUM, False, "train loss over ArcFace's degenerate solution (fedface.train.collapse)"),
    "head_row_cosine": (NUM, False, "mean pairwise cosine of the class centres, example-weighted over clients"),
    "mixed_samples": (bool, False, "whether the clients trained on mixed samples"),
    **{k: (OPT_NUM, False, "evaluated rounds: " + doc) for k, (_, _, doc) in UTILITY.items() if k in UTILITY_METRICS},
    "policy_baseline": (OPT_NUM, False, "AdaMixUp: the server's REINFORCE baseline after this round"),
    "epsilons": (dict, False, "protect=dp_sgd: each node's epsilon so far (null: infinite)"),
    "epsilon_max": (OPT_NUM, False, "protect=dp_sgd: the largest of them"),
    "delta": (NUM, False, "protect=dp_sgd: the delta of epsilon"),
    "central_dp": (dict, False, "federation.dp: clipping and noise of this round"),
    "secagg": (dict, False, "federation.secagg: the SecAgg+ round's facts"),
    "attacks": (list, False, "attack=...: one entry per attacked reply (scores, floors, identity ceilings, what the "
                             "attacker assumed)"),
    "trap_node": (int, False, "attack=imprint: the node whose reply the trap read"),
}

SIMULATE = {
    "command": (str, True, "simulate"),
    "status": (str, True, "done | failed | running (a run whose ServerApp never started holds only status, error "
                          "and ray)"),
    "error": (str, False, "failed: why"),
    "rounds": ([ROUND], True, "one per finished round"),
    "config": (dict, True, "the resolved config"),
    "machine": (dict, True, "the server's platform, versions, provenance (commit, dirty, packages, command)"),
    "malicious_weights": (bool, True, "attack=imprint: the server sent modified weights"),
    "pretrain": ((dict, type(None)), True, "federation.pretrain: facts of the server's public pre-training"),
    "preflight": (dict, True, "what every node reported before round 1 (nodes, examples, key fingerprint, ...)"),
    "mixup_k": (list, True, "the k of MixUp's arms (empty without MixUp)"),
    "resumed_after_round": (int, False, "federation.resume: the checkpointed round the run went on from"),
    "stopped": (str, False, "federation.plateau: why it stopped before federation.rounds"),
    "collapse": (dict, False, "the verdict of fedface.train.collapse on the last rounds"),
    "central_dp": (dict, False, "federation.dp: the mechanism"),
    "privacy_against_server": (str, False, "federation.dp: none (the server adds the noise)"),
    "secagg": (dict, False, "federation.secagg: the protocol's parameters"),
    "per_client_attacks": (str, False, "federation.secagg: why no per-client attack exists"),
    "ray": (dict, False, "fedface simulate: where the clients ran (address, nodes, cpus, gpus)"),
}


IDENTITY = {  # fedface.experiment.judge.IdentityJudge.score
    "cos": (NUM, False, "mean cosine of each picture and its original under dlib (independent evaluator)"),
    "same_person": (NUM, False, "share of pictures dlib calls the same person as their original"),
    "top1": (NUM, False, "dlib top-1 identification among the victims' identities"),
    "chance": (NUM, False, "1 / the number of those identities"),
    "cos_unavailable": (str, False, "why there are no dlib scores (dlib missing)"),
    "srra": (OPT_NUM, False, "SRRA: share of pictures the target system accepts as their person at FAR 1e-3"),
    "target_top1": (OPT_NUM, False, "top-1 identification of the pictures by the target system"),
    "srra_threshold": (OPT_NUM, False, "the target system's cosine threshold at FAR 1e-3"),
    "srra_unavailable": (str, False, "why SRRA is null (no attack.target, too few impostor scores)"),
}

RECONSTRUCTION_ROW = {
    "protection": (str, True, "the attacked protection (one name per method)"),
    "attack": (str, True, "mean face (the floor) | decoder | cgan | white-box"),
    "threat": (str, True, "server (its own key) | knows_key | - (the floor)"),
    "psnr": (NUM, False, "PSNR (dB) against the victims' faces (absent: skipped)"),
    "ssim": (NUM, False, "SSIM of the same"),
    "mse": (NUM, False, "mean squared error in [-1, 1]"),
    "identity": (IDENTITY, False, "whose face the pictures are (dlib, and the target system)"),
    "train": (dict, False, "learned attacks: the generator's steps, seconds, stop reason, pairs, cached"),
    "seconds": (NUM, False, "learned attacks: wall time of the row"),
    "note": (str, False, "white-box: what the attacker inverted"),
    "skipped": (str, False, "why the row has no scores"),
}

RECONSTRUCT = {
    "command": (str, True, "reconstruct"),
    "status": (str, True, "done | running (partial results land after every row)"),
    "protection": (str, True, "the attacked protection"),
    "data": (dict, True, "the partition table's summary (dataset, protocol, identities, images, pairs)"),
    "victims": (int, True, "the training faces attacked"),
    "aux": (int, True, "the attacker's auxiliary faces (identities in no role of the table)"),
    "seed": (int, True, "every seed of the run"),
    "machine": (dict, True, "platform, versions, provenance (commit, dirty, packages, command)"),
    "rows": ([RECONSTRUCTION_ROW], True, "the floor first, then one row per (threat, attack)"),
    "ceiling": (IDENTITY, True, "the identity scores of the victims' own faces (a perfect reconstruction)"),
    "masking_effect": (dict, True, "paper 001 Sec. 4.2.1: visual (1 - SSIM) and feature (1 - dlib cos) of the "
                                   "masked data shown as pictures"),
    "gradient_recoveries": (list, False, "attack.recovered: the generators applied to gradient inversion's "
                                         "recovered inputs of a federation run"),
}


INVERSION_ROW = {
    "protection": (str, True, "the target run's protection"),
    "head": (str, True, "what the server held: shared (class centres) or local (backbone only)"),
    "attack": (str, True, "mean face (floor) | real image (ceiling) | class-centre ... | BN statistics only ... | "
                          "aux-embedding inversion ... | in-federation replies, round R (+ decoder / + white-box)"),
    "threat": (str, True, "server | knows_key | - (floor, ceiling)"),
    "identity": (IDENTITY, False, "whose faces the pictures are, as guesses for the attacked identities"),
    "skipped": (str, False, "why the row has no pictures (head=local: no centre; no key for the white-box)"),
    "note": (str, False, "what the row's pictures are"),
    "centre_cos": (list, False, "class-centre: cosine of each inverted embedding with its target centre"),
    "centre_cos_mean": (NUM, False, "their mean (aux-embedding / in-federation rows: the same for their targets)"),
    "head_top1": (NUM, False, "class-centre: the shared head's top-1 on the inverted inputs"),
    "curve": (list, False, "the optimisation's objective every few steps"),
    "steps": (int, False, "optimisation steps"),
    "seconds": (NUM, False, "its wall time"),
    "stopped": ((str, type(None)), False, "why it stopped before attack.inversion.steps (null: it did not)"),
    "bn_layers": (int, False, "BatchNorm layers whose statistics were matched"),
    "prior": (str, False, "free | pca | gan"),
    "decoder": (dict, False, "+ decoder rows: the learned decoder's steps, seconds, cached"),
    "round": (int, False, "in-federation rows: the round the replies came from"),
    "nodes": (list, False, "in-federation rows: the attacked nodes"),
    "rows": (list, False, "in-federation rows: the head rows (training identities) inverted"),
    "row_precision": (OPT_NUM, False, "in-federation rows: share of most-moved head rows that were the node's own"),
}

INVERT = {
    "command": (str, True, "invert"),
    "status": (str, True, "done | running (partial results land after every row)"),
    "target": (str, True, "the attacked run (attack.target)"),
    "weights": (str, True, "which weights were inverted (the run's final model)"),
    "run_kind": (str, True, "train | federation"),
    "head": (str, True, "shared (class centres) | local (backbone only)"),
    "protection": (str, True, "the target run's protection"),
    "identities": (list, True, "the attacked training identities"),
    "classes": (int, True, "rows of the head (training identities)"),
    "aux": (int, True, "the attacker's auxiliary faces"),
    "inversion": (dict, True, "attack.inversion as run"),
    "malicious_weights": (bool, True, "always false: inversion reads the shared weights as they are"),
    "seed": (int, True, "every seed of the run"),
    "machine": (dict, True, "platform, versions, provenance (commit, dirty, packages, command)"),
    "rows": ([INVERSION_ROW], True, "floor, ceiling, then one row per (attack, threat)"),
    "key": (str, False, "why no knows_key row (an unkeyed protection)"),
    "prior": (dict, False, "the picture prior's facts (kind, components or the GAN's training)"),
    "model_unchanged": (bool, False, "done: the attack left the model's weights bit-identical"),
}

IMPRINT_ROW = {
    "protection": (str, True, "the clients' protection"),
    "threat": (str, True, "server (it wrote the trap)"),
    "client": (int, True, "the trapped client (0-based)"),
    "recovered": (int, True, "inputs read back above attack.imprint.psnr_db"),
    "batch": (int, True, "the client's batch"),
    "rate": (NUM, True, "recovered / batch"),
    "threshold_db": (NUM, True, "the PSNR a read-back input must beat (model-input space)"),
    "best_psnr": (list, True, "per input: the PSNR of its best bin"),
    "best": (list, True, "per input: its best bin"),
    "candidates": (int, True, "bins that held exactly one input"),
    "pixels_note": (str, False, "how the read-back inputs were mapped to pixels"),
    "pixel_psnr": (list, False, "per input: PSNR in pixels"),
    "pixel_psnr_mean": (NUM, False, "their mean"),
    "pixel_psnr_white_box_of_truth": (NUM, False, "the white-box image of the true input: the pixel ceiling"),
    "decoder_pixel_psnr_mean": (NUM, False, "no key: the learned decoder's pictures of the read-back inputs"),
}

IMPRINT = {
    "command": (str, True, "imprint"),
    "status": (str, True, "done | running"),
    "malicious_weights": (bool, True, "whether the server sent trapped weights (false: nothing to read)"),
    "target": (str, True, "the run whose model the trap was written into"),
    "protection": (str, True, "the clients' protection"),
    "bins": (int, True, "the trap's bins"),
    "batch_size": (int, True, "the clients' batch"),
    "clients": (int, True, "clients trapped"),
    "seed": (int, True, "every seed of the run"),
    "machine": (dict, True, "platform, versions, provenance"),
    "rows": ([IMPRINT_ROW], True, "one per trapped client"),
    "skipped": (str, False, "malicious_weights=false: why nothing was read"),
    "recovery_rate": (OPT_NUM, False, "done: recovered / batch over every client"),
}


def validate(obj: Any, schema: dict = RESULTS, path: str = "results") -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected an object, got {type(obj).__name__}")
    for key, (types, required, _) in schema.items():
        if key not in obj:
            if required:
                raise ValueError(f"{path}.{key}: missing")
            continue
        _check(obj[key], types, f"{path}.{key}")


def _check(value: Any, types: Any, path: str) -> None:
    if isinstance(types, list):  # a list of items of one schema
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check(item, types[0], f"{path}[{i}]")
        return
    if isinstance(types, dict):
        validate(value, types, path)
        return
    options = types if isinstance(types, tuple) else (types,)
    if value is None and type(None) in options:
        return
    for t in options:
        if isinstance(t, dict):
            if isinstance(value, dict):
                validate(value, t, path)
                return
        elif isinstance(value, t) and not (t in (int, float) and isinstance(value, bool)):
            return
    raise ValueError(f"{path}: {type(value).__name__} is not {', '.join(getattr(t, '__name__', 'object') for t in options)}")


def describe(schema: dict = RESULTS, indent: int = 0) -> str:
    """The schema as indented text (docs/results-schema.md)."""
    lines = []
    for key, (types, required, doc) in schema.items():
        sub = types[0] if isinstance(types, list) else types
        sub = next((t for t in sub if isinstance(t, dict)), None) if isinstance(sub, tuple) else sub
        lines.append(f"{' ' * indent}- `{key}`{'' if required else ' (optional)'}: {doc}")
        if isinstance(sub, dict) and sub is not STAT:
            lines.append(describe(sub, indent + 2))
    return "\n".join(lines)

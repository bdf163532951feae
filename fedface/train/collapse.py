"""ArcFace's degenerate solution, and the detector that flags a run stuck in it.

With insightface's fallback cos(theta + m) -> cos theta - m sin m (``ArcFace.margin_cos``) there is a configuration
where every embedding points away from every class centre: all cos theta = -1. The gradient of cos theta vanishes
there, so SGD can sit on it, and its cross-entropy has a closed form. For a sample mixed from k identities with
weights c_i (MixUp-ArcFace, paper 001 Algorithm 1; k = 1, c = 1 is plain ArcFace, Deng et al. 2019 eq. 3) the logits
are s(-1 - c_i m sin m) for its classes and -s for the C - k others, so

    L_deg = s m sin m * sum_i c_i^2 + ln(sum_i exp(-s c_i m sin m) + C - k),

which is ln(1 + (C - 1) e^{s m sin m}) for plain ArcFace: 20.40 for C = 158, s = 64, m = 0.5 (12.73 at s = 32).
(``easy_margin`` drops the margin at cos theta < 0: all logits equal, L_deg = ln C.) A run that sits on that value has
learned nothing; its class centres all point one way (mean pairwise cosine of the head's rows near 1) and the
verification threshold lands near cosine 1.

``check`` compares the losses with L_deg epoch by epoch and reads the head: the verdict every run records
(``results.json`` "collapse"; each curve point and federated round carries its ratio).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import torch
from torch.nn import functional as F

#: A mean pairwise cosine of the class centres above this means the centres point one way (healthy heads: ~0).
ROW_COSINE = 0.5
#: A stall: consecutive epochs (or rounds) with the loss within this share of L_deg, falling by less than STALL_DROP.
STALL_BAND, STALL_DROP, STALL_EPOCHS = 0.1, 0.03, 3
#: Monte-Carlo draws of the MixUp weights behind E[L_deg] (standard error ~0.01 nats).
WEIGHT_DRAWS = 4096


def degenerate_loss(num_classes: int, s: float, m: float, easy_margin: bool = False,
                    weights: torch.Tensor | None = None) -> float:
    """Mean L_deg over the rows of ``weights`` (N, k) (None: plain ArcFace, k = 1), assuming distinct classes.

    With fewer classes than k (a client holding 2 identities mixing k = 4) labels must repeat; the C largest weights
    of each row, renormalised, stand in for the merged ones (a diagnostic, not an identity)."""
    if easy_margin:
        return math.log(num_classes)
    c = torch.ones(1, 1, dtype=torch.float64) if weights is None else weights.to(torch.float64)
    if c.shape[1] > num_classes:
        c = c.sort(dim=1, descending=True).values[:, :num_classes]
        c = c / c.sum(dim=1, keepdim=True)
    k = c.shape[1]
    mm = s * m * math.sin(m)
    per_row = mm * c.square().sum(dim=1) + torch.log(torch.exp(-mm * c).sum(dim=1) + (num_classes - k))
    return float(per_row.mean())


@functools.lru_cache(maxsize=256)
def _mixed_degenerate_loss(num_classes: int, s: float, m: float, easy_margin: bool, k: int, max_weight: float,
                           how: str) -> float:
    """E[L_deg] of one k over the mixer's own weight draw. Cached: clients call it every round (~8 ms a k)."""
    from fedface.mixup.mix import mix_weights

    w = mix_weights(WEIGHT_DRAWS, k, max_weight, torch.Generator().manual_seed(0), torch.device("cpu"), how)
    return degenerate_loss(num_classes, s, m, easy_margin, w)


def mixup_degenerate_loss(num_classes: int, s: float, m: float, easy_margin: bool, ks: Sequence[int],
                          shares: Sequence[float], max_weight: float, how: str) -> float:
    """E[L_deg] under MixUp: each k's expectation over the mixer's own weight draw, mixed by how often k was drawn."""
    return sum(share * _mixed_degenerate_loss(num_classes, s, m, easy_margin, k, max_weight, how)
               for k, share in zip(ks, shares) if share > 0)


def row_cosine(weight: torch.Tensor) -> float:
    """Mean pairwise cosine of the class centres (the rows of the ArcFace weight), diagonal excluded."""
    w = F.normalize(weight.detach().to(torch.float64), dim=1)
    n = w.shape[0]
    if n < 2:
        return 0.0
    total = w.sum(dim=0).square().sum() - n  # sum over i != j of w_i . w_j
    return float(total / (n * (n - 1)))


def _stalls(ratios: Sequence[float | None], cosines: Sequence[float | None] | None = None) -> list[int]:
    """For each point, the length of the stall ending there: consecutive points within ``STALL_BAND`` of L_deg, each
    below the one before by less than ``STALL_DROP`` (the first point of a stall needs no predecessor). With the
    class centres' cosine at each point (``cosines``), a point counts only where they point one way (or were not
    read): on the degenerate solution they do, while a short run with a decaying learning rate can pass through
    L_deg slowly with its centres spread (LFW compare, PPFR-FD, 10 rounds: 1.03, 1.00, 0.97 x L_deg, cosine 0.05)."""
    cosines = list(cosines) if cosines is not None else [None] * len(ratios)
    runs, run = [], 0
    for before, now, cos in zip([None, *ratios], ratios, cosines):
        on = now is not None and abs(now - 1) <= STALL_BAND and (cos is None or cos > ROW_COSINE)
        slow = before is not None and now is not None and (before - now) < STALL_DROP * before
        run = run + 1 if on and (slow or run == 0) else 0
        runs.append(run)
    return runs


def stalled(ratios: Sequence[float | None], cosines: Sequence[float | None] | None = None) -> int:
    """The longest stall at L_deg over the epochs (rounds): the plateau of a run held by the degenerate solution, even
    if it later escapes part of the way (the shipped PPFR-FD run: 20.19, 19.96, 19.69 ... against L_deg = 20.40,
    accuracy 70.5 %)."""
    return max(_stalls(ratios, cosines), default=0)


def is_collapsed(ratios: Sequence[float | None], head_row_cosine: float | None, mixed: bool = False,
                 cosines: Sequence[float | None] | None = None) -> bool:
    """The rule, on the losses over L_deg epoch by epoch (round by round) and the class centres' mean cosine at each
    (``cosines``, when read): a stall of ``STALL_EPOCHS`` anywhere, or centres with mean cosine above ``ROW_COSINE``
    at the end. A loss still far above L_deg is a short run, not a collapse: the tables show the ratio. Whether a run
    *ends* on the degenerate solution is the centres' to say: there every embedding points away from every centre, so
    every centre points the same way. Only when the head cannot be read does a loss that ends on the plateau (its
    last two points a stall; a single point: within the band) flag the run. ``mixed`` (MixUp, InstaHide): the
    centres alone decide -- a k-mix's L_deg can sit where a healthy blend-reader's loss does (ORL, C=30, k=4: L_deg
    5.8, a run at 82.8 % ends at 1.09 x), while the collapse MixUp does show is the centres aligning (LFW, k=2: mean
    cosine 0.92)."""
    runs = [] if mixed else _stalls(ratios, cosines)
    ends_stuck = head_row_cosine is None and bool(runs) and (runs[-1] >= 2 or (len(runs) == 1 and runs[-1] == 1))
    return bool(max(runs, default=0) >= STALL_EPOCHS or ends_stuck
                or (head_row_cosine is not None and head_row_cosine > ROW_COSINE))


def rounds_verdict(rounds: Sequence[Mapping]) -> dict[str, float | bool | None] | None:
    """A federated run's verdict from what each of its rounds records (``loss_over_degenerate``,
    ``head_row_cosine``, ``mixed_samples``: ``strategies.server_loop``); None when no round carries it (SecAgg+)."""
    last = next((r for r in reversed(rounds) if "loss_over_degenerate" in r), None)
    if last is None:
        return None
    ratios = [r.get("loss_over_degenerate") for r in rounds]
    cosines = [r.get("head_row_cosine") for r in rounds]
    return {"collapsed": is_collapsed(ratios, last["head_row_cosine"], last["mixed_samples"], cosines),
            "loss_over_degenerate": last["loss_over_degenerate"], "head_row_cosine": last["head_row_cosine"],
            "stalled_rounds": stalled(ratios, cosines)}


def check(loss: float, degenerate: float, head_weight: torch.Tensor | None,
          history: Sequence[float | None] = (), mixed: bool = False,
          cosine_history: Sequence[float | None] | None = None) -> dict[str, float | bool | None]:
    """The verdict for a run whose last loss is ``loss`` after ``history`` (the earlier losses over L_deg) and
    ``cosine_history`` (the centres' mean cosine at those points; None: not read).

    A NaN loss is not a verdict on collapse (``NonFiniteLossError`` reports it); it leaves ``collapsed`` False.
    """
    cosine = None if head_weight is None else row_cosine(head_weight)
    ratio = loss / degenerate if degenerate > 0 and math.isfinite(loss) else None
    ratios = [*history, ratio]
    cosines = None if cosine_history is None else [*cosine_history, cosine]
    return {"collapsed": is_collapsed(ratios, cosine, mixed, cosines), "loss": loss, "degenerate_loss": degenerate,
            "loss_ratio": ratio, "head_row_cosine": cosine, "stalled_epochs": stalled(ratios, cosines)}


def expected_degenerate_loss(num_classes: int, head_cfg: Mapping, mix: Mapping | None = None) -> float:
    """L_deg for a run: ``head_cfg`` is model.head (s, m, easy_margin); ``mix`` how training mixes samples (None:
    it does not), a mapping with the candidate ``k`` list, ``shares`` (how often each k was drawn; all zero or
    missing: uniform), ``max_weight`` and ``weight_draw`` -- ``Mixer.mix_spec()`` or a protection's ``mix_spec()``."""
    s, m = float(head_cfg.get("s", 64.0)), float(head_cfg.get("m", 0.5))
    easy = bool(head_cfg.get("easy_margin", False))
    if not mix:
        return degenerate_loss(num_classes, s, m, easy)
    ks = list(mix["k"])
    shares = list(mix.get("shares") or [])
    if len(shares) != len(ks) or sum(shares) <= 0:
        shares = [1.0] * len(ks)
    total = sum(shares)
    return mixup_degenerate_loss(num_classes, s, m, easy, ks, [x / total for x in shares],
                                 float(mix["max_weight"]), str(mix["weight_draw"]))

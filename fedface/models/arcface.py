"""ArcFace head (Deng et al. 2019, eq. 3): logits s·cos(θ_y + m) for the true class, s·cos θ_j for the others."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ArcFace(nn.Module):
    """Class centres W (num_classes x d). ``forward(emb, labels)`` returns logits for cross-entropy.

    Numerically stable: cos(θ+m) is computed as cosθ·cos m − sinθ·sin m with sinθ = sqrt(max(1 − cos²θ, ε)), never
    through arccos (ε keeps the gradient finite at θ = 0 or π). When θ + m would pass π the margin is replaced by
    insightface's fallback cosθ − m·sin m (keeps the target logit monotone in θ); ``easy_margin`` instead applies the
    margin only where cosθ > 0.
    """

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.5,
                 easy_margin: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        self.s, self.m, self.easy_margin = float(s), float(m), bool(easy_margin)
        #: share of ``m`` applied now, set by the training loop during a margin warm-up (``train.margin_warmup``)
        self.margin_scale = 1.0

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def cosine(self, emb: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """cos θ of every embedding with every class centre (``weight``: other centres, e.g. DP-SGD's per-example
        gradient in ``fedface.train.dp``; default the module's own)."""
        w = self.weight if weight is None else weight
        return F.linear(F.normalize(emb), F.normalize(w)).clamp(-1.0, 1.0)

    def margin_cos(self, cos: torch.Tensor) -> torch.Tensor:
        """cos(θ + m) elementwise, with the fallback above (m scaled by ``margin_scale``)."""
        m = self.m * self.margin_scale
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-9))
        phi = cos * math.cos(m) - sin * math.sin(m)
        if self.easy_margin:
            return torch.where(cos > 0, phi, cos)
        return torch.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(emb, labels, weights)

    def logits(self, emb: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None,
               centres: torch.Tensor | None = None) -> torch.Tensor:
        """Logits. ``labels`` (B,) for plain ArcFace, or (B, k) mixed labels with ``weights`` (B, k) summing to 1.

        Mixed labels follow paper 001, Appendix A, Algorithm 1 (MixUp based ArcFace): with fc the cosines,
        out = sum_i c_i * (fc + onehot(y_i) * (cos(theta_i + m) - cos theta_i)), theta_i = arccos(fc[y_i]) picked
        from the *unmodified* fc (line 6), then scaled by s. Since sum_i c_i = 1 this is one logit vector carrying
        every margin, c_i-weighted -- not a weighted sum of separate cross-entropies. k = 1 is plain ArcFace.
        ``centres``: compute with these class centres instead of ``self.weight`` (a pure function of its inputs,
        what ``torch.func`` needs for per-example gradients; calling it fires no module hooks).
        """
        return self.logits_of_cosines(self.cosine(emb, centres), labels, weights)

    def logits_of_cosines(self, cos: torch.Tensor, labels: torch.Tensor,
                          weights: torch.Tensor | None = None) -> torch.Tensor:
        """Algorithm 1 on given cosines (B, C): the margins of ``labels`` c_i-weighted, scaled by s."""
        if labels.ndim == 1:
            labels = labels[:, None]
            weights = torch.ones_like(labels, dtype=cos.dtype)
        if weights is None:
            raise ValueError("mixed labels (B, k) need their weights (B, k)")
        target_cos = cos.gather(1, labels)  # (B, k): Pick(fc, gt[i])
        delta = weights.to(cos.dtype) * (self.margin_cos(target_cos) - target_cos)
        return self.s * cos.scatter_add(1, labels, delta)


def soft_targets(labels: torch.Tensor, weights: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """The weighted one-hot target sum_i c_i * onehot(y_i) for cross-entropy (paper 001, Sec. 3 MixUp labels)."""
    if labels.ndim == 1:
        return F.one_hot(labels, num_classes).float()
    return torch.zeros(len(labels), num_classes, device=labels.device).scatter_add(1, labels, weights.float())


def fr_loss(backbone: nn.Module, head: nn.Module, model_input: torch.Tensor, labels: torch.Tensor,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """ArcFace cross-entropy. Mixed labels (B, k) with weights (B, k): MixUp-ArcFace (paper 001 Algorithm 1) against
    the weighted one-hot target."""
    emb = backbone(model_input)
    # no ``None`` positional argument: DP-SGD's hooks (Opacus) record every positional input of the head
    logits = head(emb, labels) if weights is None else head(emb, labels, weights)
    return F.cross_entropy(logits, labels if weights is None else soft_targets(labels, weights, logits.shape[1]))

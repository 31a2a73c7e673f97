"""Distillation losses, chosen by name, and the objective that combines them with cross-entropy.

Response-based: ``kd`` (Hinton et al. 2015), ``dkd`` (Zhao et al. 2022), ``dist`` (Huang et al.
2022) on logits. Feature-based: ``fitnet`` (Romero et al. 2015, the last pair, through a trainable
regressor), ``at`` (Zagoruyko & Komodakis 2017) and ``sp`` (Tung & Mori 2019) on every feature
pair. Relation-based on the embeddings (the classifier's input): ``rkd`` (Park et al. 2019) and
``cc`` (Peng et al. 2019). Conventions and weights follow RepDistiller (Tian et al. 2020) and the
papers; every term is computed in float32, outside autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.augment import Labels, MixedLabels
from edgekd.errors import BadInput

Shape = tuple[int, ...]


@dataclass
class Outputs:
    """What one model produced for a batch."""

    logits: torch.Tensor  # (B, K)
    features: list[torch.Tensor]  # one per feature pair, pair order; [] when no pairs
    embedding: torch.Tensor | None = None  # (B, D): the input of the final classifier


class DistillLoss(nn.Module):
    """One distillation term: ``forward(student, teacher, labels) -> scalar``.

    ``needs`` says what besides logits it reads. ``labels`` (-1 = unlabeled) is optional; only
    DKD uses it, and it needs one class per sample (``hard_labels``: no mixed labels).
    """

    needs: frozenset[str] = frozenset()
    hard_labels: bool = False

    @classmethod
    def build(
        cls,
        temperature: float,
        feature_shapes: Sequence[tuple[Shape, Shape]],
        dims: tuple[int, int] | None,
    ) -> DistillLoss:
        """The term for these models: temperature, (student, teacher) feature and embedding sizes."""
        return cls()

    def forward(self, s: Outputs, t: Outputs, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class _Tempered(DistillLoss):
    """A response-based loss with a softmax temperature."""

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        if temperature <= 0:
            raise BadInput(f"the temperature must be > 0, got {temperature}")
        self.temperature = temperature

    @classmethod
    def build(cls, temperature, feature_shapes, dims) -> DistillLoss:
        return cls(temperature)


class KDLoss(_Tempered):
    """Hinton et al. (2015): ``T^2 * KL(p_t^T || p_s^T)``, batch mean.

    The ``T^2`` factor keeps the soft-target gradients on the scale of the hard-label ones.
    """

    def forward(self, s, t, labels=None):
        tau = self.temperature
        kl = F.kl_div(
            F.log_softmax(s.logits / tau, dim=1),
            F.log_softmax(t.logits / tau, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return tau * tau * kl


def dkd_parts(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD) of Zhao et al. (2022), batch means, without the ``T^2`` factor.

    TCKD: KL between the binary (target, rest) distributions; NCKD: KL between the distributions
    over the non-target classes, renormalised. ``KL(p_t || p_s) = TCKD + (1 - p_t[target]) NCKD``.
    """
    mask = F.one_hot(target, student.shape[1]).bool()
    ls = F.log_softmax(student / temperature, dim=1)
    lt = F.log_softmax(teacher / temperature, dim=1)

    def binary(logp: torch.Tensor) -> torch.Tensor:
        rest = torch.logsumexp(logp.masked_fill(mask, float("-inf")), dim=1)
        return torch.stack([logp.gather(1, target[:, None])[:, 0], rest], dim=1)

    tckd = F.kl_div(binary(ls), binary(lt), reduction="batchmean", log_target=True)
    off = 1000.0 * mask  # as in the paper's code: drops the target class from the softmax
    nckd = F.kl_div(
        F.log_softmax(student / temperature - off, dim=1),
        F.log_softmax(teacher / temperature - off, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return tckd, nckd


class DKDLoss(_Tempered):
    """Decoupled KD (Zhao et al. 2022): ``T^2 (alpha TCKD + beta NCKD)``, alpha=1, beta=8.

    The target class is the label, or the teacher's top class for unlabeled samples. The paper's
    warm-up of the DKD weight is left to the caller. A mixed image (mixup, cutmix) has no one
    target class, so DKD refuses mixed labels.
    """

    hard_labels = True

    def __init__(self, temperature: float = 4.0, alpha: float = 1.0, beta: float = 8.0):
        super().__init__(temperature)
        self.alpha = alpha
        self.beta = beta

    def forward(self, s, t, labels=None):
        if isinstance(labels, MixedLabels):
            raise BadInput("loss dkd needs one target class per image; mixup and cutmix mix two")
        target = t.logits.argmax(1)
        if labels is not None:
            target = torch.where(labels >= 0, labels, target)
        tckd, nckd = dkd_parts(s.logits, t.logits, target, self.temperature)
        return self.temperature**2 * (self.alpha * tckd + self.beta * nckd)


def _pearson_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - the mean over rows of the Pearson correlation between rows of ``a`` and ``b``."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
    return 1.0 - r.mean()


class DISTLoss(_Tempered):
    """DIST (Huang et al. 2022): ``T^2 (beta inter + gamma intra)``, beta=gamma=1.

    Inter-class: 1 - Pearson correlation of each sample's class probabilities; intra-class: the
    same for each class's probabilities across the batch.
    """

    def __init__(self, temperature: float = 4.0, beta: float = 1.0, gamma: float = 1.0):
        super().__init__(temperature)
        self.beta = beta
        self.gamma = gamma

    def forward(self, s, t, labels=None):
        ps = F.softmax(s.logits / self.temperature, dim=1)
        pt = F.softmax(t.logits / self.temperature, dim=1)
        inter = _pearson_distance(ps, pt)
        intra = _pearson_distance(ps.T, pt.T)
        return self.temperature**2 * (self.beta * inter + self.gamma * intra)


def _pooling(student: Shape, teacher: Shape) -> tuple[Shape, Shape]:
    """Average-pool kernels (student, teacher) that bring two (C,H,W) maps to one spatial size."""
    ks: list[int] = []
    kt: list[int] = []
    for a, b in zip(student[1:], teacher[1:], strict=True):
        if max(a, b) % min(a, b):
            raise BadInput(
                f"feature shapes {tuple(student)} and {tuple(teacher)} cannot be joined: spatial "
                "sizes must be equal or differ by an integer factor; pick other --pair layers"
            )
        ks.append(max(1, a // b))
        kt.append(max(1, b // a))
    return tuple(ks), tuple(kt)


def _pool(x: torch.Tensor, kernel: Shape) -> torch.Tensor:
    return F.avg_pool2d(x, kernel) if any(k > 1 for k in kernel) else x


def _check_maps(name: str, shapes: Sequence[tuple[Shape, Shape]]) -> None:
    for s, t in shapes:
        if len(s) != 3 or len(t) != 3:
            raise BadInput(
                f"loss {name!r} needs (C,H,W) feature maps; the pair gives {tuple(s)} and {tuple(t)}"
            )


class FitNetLoss(DistillLoss):
    """FitNets (Romero et al. 2015): MSE between the regressed student hint and the teacher's.

    The last feature pair is the hint. The regressor is a 1x1 conv + BN from student to teacher
    channels (a linear layer + BN for (D,) features); a larger map is average-pooled first.
    """

    needs = frozenset({"features"})

    def __init__(self, student: Shape, teacher: Shape):
        super().__init__()
        if len(student) == len(teacher) == 1:
            self.t_kernel: Shape = ()
            self.regressor = nn.Sequential(
                nn.Linear(student[0], teacher[0], bias=False), nn.BatchNorm1d(teacher[0])
            )
            return
        _check_maps("fitnet", [(student, teacher)])
        s_kernel, self.t_kernel = _pooling(student, teacher)
        layers: list[nn.Module] = [nn.AvgPool2d(s_kernel)] if max(s_kernel) > 1 else []
        layers += [nn.Conv2d(student[0], teacher[0], 1, bias=False), nn.BatchNorm2d(teacher[0])]
        self.regressor = nn.Sequential(*layers)

    @classmethod
    def build(cls, temperature, feature_shapes, dims) -> DistillLoss:
        return cls(*feature_shapes[-1])

    def forward(self, s, t, labels=None):
        return F.mse_loss(self.regressor(s.features[-1]), _pool(t.features[-1], self.t_kernel))


class ATLoss(DistillLoss):
    """Attention transfer (Zagoruyko & Komodakis 2017), p=2, summed over feature pairs.

    Each map becomes the L2-normalised channel mean of its squared activations; the mean squared
    difference of the two attention maps is the term. The larger map is average-pooled first.
    """

    needs = frozenset({"features"})

    def __init__(self, shapes: Sequence[tuple[Shape, Shape]], p: float = 2.0):
        super().__init__()
        _check_maps("at", shapes)
        self.kernels = [_pooling(s, t) for s, t in shapes]
        self.p = p

    @classmethod
    def build(cls, temperature, feature_shapes, dims) -> DistillLoss:
        return cls(feature_shapes)

    def _attention(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(f.pow(self.p).mean(1).flatten(1), dim=1)

    def forward(self, s, t, labels=None):
        total = s.logits.new_zeros(())
        for fs, ft, (ks, kt) in zip(s.features, t.features, self.kernels, strict=True):
            diff = self._attention(_pool(fs, ks)) - self._attention(_pool(ft, kt))
            total = total + diff.pow(2).mean()
        return total


def _similarity(f: torch.Tensor) -> torch.Tensor:
    """The row-normalised (B, B) Gram matrix of a batch of features."""
    f = f.flatten(1)
    return F.normalize(f @ f.T, dim=1)


class SPLoss(DistillLoss):
    """Similarity-preserving KD (Tung & Mori 2019), summed over feature pairs.

    ``||G_s - G_t||_F^2 / B^2`` with ``G`` the row-normalised batch similarity matrix: shapes
    need not match.
    """

    needs = frozenset({"features"})

    def forward(self, s, t, labels=None):
        total = s.logits.new_zeros(())
        for fs, ft in zip(s.features, t.features, strict=True):
            total = total + (_similarity(fs) - _similarity(ft)).pow(2).sum() / len(fs) ** 2
        return total


def _distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pairwise Euclidean distances, zero diagonal, divided by their mean off the diagonal."""
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.T).clamp(min=eps).sqrt()
    d = d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))
    mean = d.sum() / (d > 0).sum().clamp(min=1)
    return d / mean.clamp(min=eps)


def _angles(e: torch.Tensor) -> torch.Tensor:
    """Cosines of the angles at every sample between every pair of others, flattened."""
    v = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)
    return torch.bmm(v, v.transpose(1, 2)).flatten()


class RKDLoss(DistillLoss):
    """Relational KD (Park et al. 2019): distance (w=25) and angle (w=50) terms on embeddings.

    Smooth-L1 between the student's and teacher's normalised pairwise distances and triplet
    angles; dimension-free, so the embedding sizes need not match.
    """

    needs = frozenset({"embedding"})

    def __init__(self, w_distance: float = 25.0, w_angle: float = 50.0):
        super().__init__()
        self.w_distance = w_distance
        self.w_angle = w_angle

    def forward(self, s, t, labels=None):
        es, et = s.embedding.flatten(1), t.embedding.flatten(1)
        distance = F.smooth_l1_loss(_distances(es), _distances(et))
        angle = F.smooth_l1_loss(_angles(es), _angles(et))
        return self.w_distance * distance + self.w_angle * angle


class CCLoss(DistillLoss):
    """Correlation congruence (Peng et al. 2019), in the form the authors gave RepDistiller.

    With ``delta = |e_s - e_t|`` per sample, the mean of ``<delta_i, delta_{i+1}>`` over
    consecutive samples. A trainable linear projection maps the student embedding to the
    teacher's size when they differ (the teacher side stays fixed, so it cannot collapse).
    """

    needs = frozenset({"embedding"})

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.projection = (
            nn.Identity() if student_dim == teacher_dim else nn.Linear(student_dim, teacher_dim)
        )

    @classmethod
    def build(cls, temperature, feature_shapes, dims) -> DistillLoss:
        return cls(*dims)

    def forward(self, s, t, labels=None):
        delta = (self.projection(s.embedding.flatten(1)) - t.embedding.flatten(1)).abs()
        return (delta[:-1] * delta[1:]).sum(1).mean() if len(delta) > 1 else delta.sum() * 0


LOSSES: dict[str, type[DistillLoss]] = {
    "kd": KDLoss,
    "dkd": DKDLoss,
    "dist": DISTLoss,
    "fitnet": FitNetLoss,
    "at": ATLoss,
    "sp": SPLoss,
    "rkd": RKDLoss,
    "cc": CCLoss,
}
# RepDistiller's CIFAR-100 scripts (beta) and the papers: KD 0.9 with CE 0.1, SP 3000, RKD 1,
# CC 0.02; DKD's alpha/beta and DIST's beta/gamma live inside their terms. FitNet and AT were
# measured instead (docs/benchmarks.md): their paper weights, 100 and 1000, cost a small student
# 8 and 2 points on Fashion-MNIST; 1 and 10 do not hurt it.
DEFAULT_WEIGHTS: dict[str, float] = {
    "kd": 0.9,
    "dkd": 1.0,
    "dist": 1.0,
    "fitnet": 1.0,
    "at": 10.0,
    "sp": 3000.0,
    "rkd": 1.0,
    "cc": 0.02,
}


def _as_float(o: Outputs, detach: bool) -> Outputs:
    def cast(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x.detach() if detach else x

    return Outputs(
        cast(o.logits),
        [cast(f) for f in o.features],
        None if o.embedding is None else cast(o.embedding),
    )


def cross_entropy(logits: torch.Tensor, labels: Labels) -> torch.Tensor:
    """CE over the labelled samples (label -1: none), divided by their count (at least 1).

    Mixed labels: the CE against the soft label ``w onehot(first) + (1 - w) onehot(second)``,
    an unlabeled partner's share dropped, divided by the labelled share of the batch (at least
    1); with one-hot labels this is the plain mean.
    """
    if not isinstance(labels, MixedLabels):
        ce = F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum")
        return ce / (labels >= 0).sum().clamp(min=1)
    w = labels.weight.float()
    first = F.cross_entropy(logits, labels.first, ignore_index=-1, reduction="none")
    second = F.cross_entropy(logits, labels.second, ignore_index=-1, reduction="none")
    share = w * (labels.first >= 0) + (1 - w) * (labels.second >= 0)
    return (w * first + (1 - w) * second).sum() / share.sum().clamp(min=1)


class Objective(nn.Module):
    """``ce_weight * CE(student, labels) + sum(weight_i * term_i(s, t))``; labels -1 = unlabeled.

    CE is :func:`cross_entropy` (0 for a batch without labels; mixed labels: soft targets). The
    trainable parts of the terms (FitNet regressor, CC projection) are submodules, so they train
    with the student.
    """

    def __init__(self, terms: dict[str, DistillLoss], weights: dict[str, float], ce_weight: float):
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.names = list(terms)
        self.weights = {name: float(weights[name]) for name in self.names}
        self.ce_weight = float(ce_weight)
        self.needs: frozenset[str] = frozenset().union(*(t.needs for t in terms.values()))

    def forward(
        self, s: Outputs, t: Outputs, labels: Labels
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(total loss, {"ce": .., name: unweighted term, ..} as floats for logging)."""
        with torch.autocast(s.logits.device.type, enabled=False):
            s, t = _as_float(s, detach=False), _as_float(t, detach=True)
            ce = cross_entropy(s.logits, labels)
            total = self.ce_weight * ce
            parts = {"ce": ce.detach()}
            for name, term in self.terms.items():
                value = term(s, t, labels)
                total = total + self.weights[name] * value
                parts[name] = value.detach()
        return total, {k: v.item() for k, v in parts.items()}


def parse_loss_spec(spec: str) -> list[str]:
    """``"kd+rkd"`` -> ``["kd", "rkd"]``; ``"ce"`` -> ``[]`` (labels only: the vanilla student).

    Unknown or repeated names are bad input.
    """
    if spec.strip().lower() == "ce":
        return []
    names = [n.strip().lower() for n in spec.split("+")]
    for name in names:
        if name not in LOSSES:
            raise BadInput(
                f"unknown loss {name!r} in {spec!r}; valid: {', '.join(sorted(LOSSES))} "
                "(combine with +, e.g. kd+rkd), or ce alone for labels only"
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BadInput(f"loss {repeated[0]!r} appears more than once in {spec!r}")
    return names


def make_objective(
    spec: str,
    *,
    temperature: float = 4.0,
    weights: dict[str, float] | None = None,
    ce_weight: float | None = None,
    feature_shapes: Sequence[tuple[Shape, Shape]] = (),
    embedding_dims: tuple[int, int] | None = None,
) -> Objective:
    """The objective for a loss spec such as ``"kd+at"``.

    ``weights`` override :data:`DEFAULT_WEIGHTS` per term. ``ce_weight`` defaults to 1 - the kd
    weight when kd is used (Hinton/RepDistiller: CE 0.1, KD 0.9), else 1. ``feature_shapes``:
    per pair, the (student, teacher) feature shape without batch; ``embedding_dims``: (student D,
    teacher D).
    """
    names = parse_loss_spec(spec)
    weights = dict(weights or {})
    for name, w in weights.items():
        if name not in names:
            raise BadInput(f"a weight is given for loss {name!r}, which is not in {spec!r}")
        if w < 0:
            raise BadInput(f"the weight of loss {name!r} must be >= 0, got {w}")
    weights = {name: weights.get(name, DEFAULT_WEIGHTS[name]) for name in names}
    if ce_weight is None:
        ce_weight = 1.0 - weights["kd"] if "kd" in names else 1.0
        if ce_weight < 0:
            raise BadInput(f"the kd weight must be in [0, 1] (CE gets 1 - it), got {weights['kd']}")
    elif ce_weight < 0:
        raise BadInput(f"the CE weight must be >= 0, got {ce_weight}")
    terms: dict[str, DistillLoss] = {}
    for name in names:
        cls = LOSSES[name]
        if "features" in cls.needs and not feature_shapes:
            raise BadInput(
                f"loss {name!r} needs feature pairs: give --pair or use a teacher given as "
                "module:factory"
            )
        if "embedding" in cls.needs and embedding_dims is None:
            raise BadInput(
                f"loss {name!r} needs the models' embeddings: use a teacher given as "
                "module:factory or file.py:factory"
            )
        terms[name] = cls.build(temperature, feature_shapes, embedding_dims)
    return Objective(terms, weights, ce_weight)

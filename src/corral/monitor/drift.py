"""Drift tests and the drift decision: PSI and KS on numbers, MMD and new topics on text embeddings.

Everything here is a pure function of arrays and plain data; `corral.monitor.windows` reads the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
PSI_BINS = 10
PSI_MIN = 0.1  # a PSI under 0.1 is conventionally "no significant change", whatever the p-value


@dataclass(frozen=True)
class DriftPolicy:
    alpha: float = 0.05  # family-wise: split over the features tested (Bonferroni)
    psi_min: float = PSI_MIN
    new_topic_share: float = (
        0.10  # drift when more than this share of current prompts is far from the reference
    )
    permutations: int = 200
    min_samples: int = 20


@dataclass
class FeatureDrift:
    feature: str
    kind: str  # numeric | text
    test: str  # ks | mmd
    statistic: float
    p_value: float
    effect: float  # PSI for numbers, MMD² for text
    n_reference: int
    n_current: int
    drifted: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class DriftReport:
    drifted: bool
    alpha: float
    features: list[FeatureDrift]
    new_topics: dict[str, Any] | None = None
    text_available: bool = True
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]


def psi(reference: Array, current: Array, bins: int = PSI_BINS) -> float:
    """Population stability index over the reference's quantile bins (smoothed so empty bins are finite)."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([reference.min() - 0.5, reference.max() + 0.5])
    inner = edges[1:-1]
    ref_counts = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=len(edges) - 1)
    cur_counts = np.bincount(np.searchsorted(inner, current, side="right"), minlength=len(edges) - 1)
    ref_p = (ref_counts + 0.5) / (ref_counts.sum() + 0.5 * len(ref_counts))
    cur_p = (cur_counts + 0.5) / (cur_counts.sum() + 0.5 * len(cur_counts))
    return float(np.sum((cur_p - ref_p) * np.log(cur_p / ref_p)))


def numeric_drift(name: str, reference: Array, current: Array) -> FeatureDrift:
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, current)
    return FeatureDrift(
        feature=name, kind="numeric", test="ks", statistic=float(result.statistic), p_value=float(result.pvalue),
        effect=psi(reference, current), n_reference=len(reference), n_current=len(current),
        detail={"reference_mean": float(np.mean(reference)), "current_mean": float(np.mean(current))},
    )  # fmt: skip


def _sq_dists(a: Array, b: Array) -> Array:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def _mmd2(kernel: Array, n: int) -> float:
    """Unbiased MMD² from the joint kernel matrix of [reference; current], reference first."""
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    m = kernel.shape[0] - n
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def mmd_test(reference: Array, current: Array, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """(MMD², permutation p-value) with an RBF kernel whose width is the median pairwise distance."""
    joint = np.vstack([reference, current])
    dists = _sq_dists(joint, joint)
    width = float(np.median(dists[np.triu_indices_from(dists, 1)])) or 1.0
    kernel = np.exp(-dists / width)
    n = len(reference)
    observed = _mmd2(kernel, n)
    rng = np.random.default_rng(seed)
    beaten = 0
    for _ in range(permutations):
        order = rng.permutation(len(joint))
        beaten += _mmd2(kernel[np.ix_(order, order)], n) >= observed
    return observed, (beaten + 1) / (permutations + 1)


def _kmeans(points: Array, k: int, rng: np.random.Generator, rounds: int = 20) -> Array:
    centers = points[rng.choice(len(points), size=k, replace=False)]
    for _ in range(rounds):
        nearest = np.argmin(_sq_dists(points, centers), axis=1)
        for j in range(k):
            members = points[nearest == j]
            if len(members):
                centers[j] = members.mean(0)
    return centers


def new_topics(
    reference: Array,
    current: Array,
    texts: list[str],
    *,
    ids: list[str] | None = None,
    quantile: float = 0.99,
    seed: int = 0,
) -> dict[str, Any]:
    """The share of current prompts farther from every reference cluster than nearly all reference prompts.

    Clusters are fitted on half the reference and the radius is calibrated on the other half, so
    under no drift the share stays near 1 - `quantile`. `ids` (the traces the texts came from) are
    kept beside the examples, so erasing a user can remove theirs.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(reference))
    fit, calibrate = reference[order[: len(order) // 2]], reference[order[len(order) // 2 :]]
    k = max(1, min(8, len(fit) // 10))
    centers = _kmeans(fit.copy(), k, rng)
    radius = float(np.quantile(np.sqrt(_sq_dists(calibrate, centers).min(1)), quantile))
    distance = np.sqrt(_sq_dists(current, centers).min(1))
    far = np.flatnonzero(distance > radius)
    worst = far[np.argsort(-distance[far])][:5]
    return {
        "share": float(len(far) / len(current)) if len(current) else 0.0,
        "clusters": k,
        "radius": radius,
        "examples": [texts[i] for i in worst],
        "example_traces": [ids[i] for i in worst] if ids is not None else [],
    }


def decide(
    features: list[FeatureDrift], topics: dict[str, Any] | None, policy: DriftPolicy
) -> tuple[bool, list[FeatureDrift]]:
    """Which features drifted: significant after Bonferroni and (for numbers) a PSI worth acting on."""
    tested = [f for f in features if min(f.n_reference, f.n_current) >= policy.min_samples]
    threshold = policy.alpha / max(1, len(tested))
    for f in features:
        significant = f in tested and f.p_value < threshold
        f.drifted = significant and (f.kind != "numeric" or f.effect >= policy.psi_min)
    topic_drift = topics is not None and topics["share"] > policy.new_topic_share
    return any(f.drifted for f in features) or topic_drift, features


def build_report(
    numeric: dict[str, tuple[Array, Array]],
    text: dict[str, tuple[Array, Array, list[str]]] | None,
    policy: DriftPolicy | None = None,
    text_ids: dict[str, list[str]] | None = None,
) -> DriftReport:
    """Run every test on the samples given and decide; `text` None means embeddings are unavailable."""
    policy = policy or DriftPolicy()
    features: list[FeatureDrift] = []
    notes: list[str] = []
    for name, (ref, cur) in numeric.items():
        if min(len(ref), len(cur)) < 2:
            notes.append(f"{name}: too few samples ({len(ref)} reference, {len(cur)} current)")
            continue
        features.append(numeric_drift(name, ref, cur))
    topics = None
    for name, (ref, cur, texts) in (text or {}).items():
        if min(len(ref), len(cur)) < 4:
            notes.append(f"{name}: too few texts ({len(ref)} reference, {len(cur)} current)")
            continue
        stat, p = mmd_test(ref, cur, policy.permutations)
        features.append(FeatureDrift(name, "text", "mmd", stat, p, stat, len(ref), len(cur)))
        if name == "prompt":
            topics = new_topics(ref, cur, texts, ids=(text_ids or {}).get(name))
    if text is None:
        notes.append("text drift unavailable: install corral[embeddings] (sentence-transformers, torch)")
    drifted, features = decide(features, topics, policy)
    return DriftReport(drifted, policy.alpha, features, topics, text is not None, notes)

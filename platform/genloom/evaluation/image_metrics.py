"""Image-generation metrics computed from feature vectors (numpy in, floats out).

The features come from genloom's own feature network (`evaluation/features.py`),
because Inception weights cannot be downloaded; the formulas are the standard ones:

- FID: Fréchet distance between Gaussians fitted to the two feature sets
  (Heusel et al. 2017), computed as clean-fid and torch-fidelity do, with
  `scipy.linalg.sqrtm` and the same fallback for a singular product.
- KID: the unbiased MMD² estimate with the cubic polynomial kernel
  k(x, y) = (x·y / d + 1)³, averaged over random subsets (Bińkowski et al. 2018;
  torch-fidelity's defaults: 100 subsets of 1,000).
- Precision and recall: improved precision/recall of Kynkäänniemi et al. 2019
  (k-NN manifolds, k = 3).
- Density and coverage: Naeem et al. 2020 (k = 5), as in their `prdc` package.

Everything here works on features; no model, database or torch is involved, so the
maths is tested on its own.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from scipy import linalg

from genloom.errors import BadInput

# Pairwise distances are computed in row blocks so 10,000 × 10,000 never sits in memory.
_BLOCK = 2048


def _features(x, name: str, *, min_rows: int = 2) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise BadInput(f"{name} features must be a 2-D array (samples × dims), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise BadInput(f"{name}: need at least {min_rows} samples, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise BadInput(f"{name} features contain NaN or infinity")
    return arr


def _same_dims(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise BadInput(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]} (same feature network for both sets?)")


# --------------------------------------------------------------------------- FID


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rowvar=False, ddof=1) as clean-fid's `get_reference_statistics`."""
    f = _features(features, "features")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), clean-fid's `frechet_distance`."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # scipy warns on singular products (post-ReLU features have dead units); the
        # fallback below is clean-fid's answer to exactly that, so the warning is noise.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            # A singular product (fewer samples than dims): add eps to the diagonals, as clean-fid does.
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Numerical error gives a tiny imaginary part; a large one means something is wrong.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise BadInput(f"FID: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm; too few samples?")
        covmean = covmean.real
    value = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    # Rounding can push a true 0 a hair below zero; that is reported as it is (no clamp). Anything
    # further below zero is a numerical failure (or covariances that are not covariances): say so.
    scale = float(diff.dot(diff) + abs(np.trace(sigma1)) + abs(np.trace(sigma2)))
    if value < -1e-6 * max(scale, 1.0):
        raise BadInput(
            f"FID came out negative ({value:.4g}): the covariance square root failed numerically; "
            "use more samples than feature dimensions"
        )
    return value


def fid(features_a, features_b) -> float:
    a = _features(features_a, "first set")
    b = _features(features_b, "second set")
    _same_dims(a, b)
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    return frechet_distance(mu1, s1, mu2, s2)


# --------------------------------------------------------------------------- KID


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    gamma = 1.0 / x.shape[1]
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """torch-fidelity's `mmd2(..., mmd_est='unbiased')`: diagonals of K_XX and K_YY excluded."""
    m = k_xx.shape[0]
    kt_xx = k_xx.sum() - np.trace(k_xx)
    kt_yy = k_yy.sum() - np.trace(k_yy)
    return float((kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kid(features_a, features_b, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD² over random subsets, as torch-fidelity's `kid_features_to_metric`.

    torch-fidelity refuses a subset larger than a set; genloom shrinks the subset to
    the smaller set instead, so small evaluations still report a KID."""
    a = _features(features_a, "first set")
    b = _features(features_b, "second set")
    _same_dims(a, b)
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        values[i] = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    return float(values.mean()), float(values.std())


# --------------------------------------------------------------------------- k-NN manifold metrics


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _distances(x: np.ndarray, y: np.ndarray, x_sq: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
    d2 = x_sq[:, None] + y_sq[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.maximum(d2, 0.0))


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest *other* point (prdc's
    `compute_nearest_neighbour_distances`: the k+1-th smallest including itself)."""
    x = np.asarray(features, dtype=np.float64)
    sq = _sq_norms(x)
    radii = np.empty(x.shape[0])
    for start in range(0, x.shape[0], _BLOCK):
        d = _distances(x[start : start + _BLOCK], x, sq[start : start + _BLOCK], sq)
        radii[start : start + _BLOCK] = np.partition(d, k, axis=1)[:, : k + 1].max(axis=1)
    return radii


@dataclasses.dataclass(frozen=True)
class ManifoldMetrics:
    precision: float  # share of generated samples inside the real manifold (k-NN balls, k = pr_k)
    recall: float  # share of real samples inside the generated manifold
    density: float  # expected number of real balls (k = dc_k) holding a generated sample, / k
    coverage: float  # share of real balls (k = dc_k) holding at least one generated sample


def manifold_metrics(real, fake, *, pr_k: int = 3, dc_k: int = 5) -> ManifoldMetrics:
    """Precision/recall (Kynkäänniemi et al. 2019, k = 3) and density/coverage
    (Naeem et al. 2020, k = 5) with prdc's strict `<` comparisons."""
    need = max(pr_k, dc_k) + 1
    r = _features(real, "real set", min_rows=need)
    f = _features(fake, "generated set", min_rows=need)
    _same_dims(r, f)
    if pr_k < 1 or dc_k < 1:
        raise BadInput("k must be at least 1")
    real_pr, real_dc = knn_radii(r, pr_k), knn_radii(r, dc_k)
    fake_pr = knn_radii(f, pr_k)

    r_sq, f_sq = _sq_norms(r), _sq_norms(f)
    fake_in_real = np.zeros(f.shape[0], dtype=bool)  # precision
    density_counts = np.zeros(f.shape[0])
    real_in_fake = np.empty(r.shape[0], dtype=bool)  # recall
    real_covered = np.empty(r.shape[0], dtype=bool)  # coverage
    for start in range(0, r.shape[0], _BLOCK):
        stop = start + _BLOCK
        d = _distances(r[start:stop], f, r_sq[start:stop], f_sq)  # real block × fake
        fake_in_real |= (d < real_pr[start:stop, None]).any(axis=0)
        density_counts += (d < real_dc[start:stop, None]).sum(axis=0)
        real_in_fake[start:stop] = (d < fake_pr[None, :]).any(axis=1)
        real_covered[start:stop] = d.min(axis=1) < real_dc[start:stop]
    return ManifoldMetrics(
        precision=float(fake_in_real.mean()),
        recall=float(real_in_fake.mean()),
        density=float(density_counts.mean() / dc_k),
        coverage=float(real_covered.mean()),
    )


# --------------------------------------------------------------------------- labels


def label_distribution(predicted, num_classes: int) -> np.ndarray:
    """Share of samples the classifier assigns to each class."""
    pred = np.asarray(predicted, dtype=np.int64)
    if pred.size == 0:
        raise BadInput("no samples to classify")
    return np.bincount(pred, minlength=num_classes)[:num_classes] / pred.size


def mode_coverage(sample_shares, real_shares, *, min_ratio: float = 0.1) -> float:
    """Share of the real data's classes that the samples cover: a class counts as covered
    when its sample share is at least `min_ratio` of its real share (a collapsed GAN
    that draws only a few digits scores well below 1)."""
    s, r = np.asarray(sample_shares, float), np.asarray(real_shares, float)
    present = r > 0
    return float((s[present] >= min_ratio * r[present]).mean())


def label_tv_distance(sample_shares, real_shares) -> float:
    """Total-variation distance between the sample and real label distributions (0 = identical)."""
    return float(0.5 * np.abs(np.asarray(sample_shares, float) - np.asarray(real_shares, float)).sum())


def conditional_accuracy(predicted, requested) -> float:
    """Share of conditional samples that the classifier assigns to the label they were asked for."""
    p, q = np.asarray(predicted), np.asarray(requested)
    if p.shape != q.shape or p.size == 0:
        raise BadInput("conditional accuracy needs one requested label per sample")
    return float((p == q).mean())

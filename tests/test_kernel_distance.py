"""KAD against its closed form on Gaussians, its unbiasedness, and the simulation behind the
Fréchet distance's minimum number of clips."""

import sys

import numpy as np
import pytest

from t2a_lib.scoring import kernel_distance as kd
from t2a_lib.scoring.metrics import frechet_distance_ci


def _gaussian_mmd2(d, mu_shift, s1, s2, sigma):
    """MMD² of N(0, s1² I) and N(mu_shift·e1, s2² I) under an RBF kernel of bandwidth sigma:
    E k(x, y) = (σ²/(σ² + v))^{d/2} exp(−‖m‖² / (2(σ² + v))) for x − y ~ N(m, v I)."""
    def e(v, m2):
        return (sigma ** 2 / (sigma ** 2 + v)) ** (d / 2) * np.exp(-m2 / (2 * (sigma ** 2 + v)))
    return e(2 * s1 ** 2, 0) + e(2 * s2 ** 2, 0) - 2 * e(s1 ** 2 + s2 ** 2, mu_shift ** 2)


def test_kad_matches_the_closed_form_on_gaussians():
    """The mean over 20 draws of 600 clips each side is within 3 standard errors of the closed form."""
    rng = np.random.default_rng(0)
    d, sigma = 4, 2.0
    expected = 1000 * _gaussian_mmd2(d, 0.8, 1.0, 1.2, sigma)
    kads = [kd.kernel_audio_distance(rng.normal(0, 1.0, (600, d)), rng.normal(0, 1.2, (600, d)) + np.eye(d)[0] * 0.8,
                                     bandwidth=sigma) for _ in range(20)]
    assert abs(np.mean(kads) - expected) < 3 * np.std(kads) / np.sqrt(20)
    assert expected > 20 and np.std(kads) / np.sqrt(20) < 0.05 * expected  # a tight check of a clear difference


def test_kad_is_unbiased_where_fd_is_not():
    """Two small sets from one Gaussian: KAD averages to 0 (within 3 standard errors); the raw
    Fréchet distance sits far above its true value, 0."""
    rng = np.random.default_rng(1)
    kads = [kd.kernel_audio_distance(rng.normal(size=(20, 8)), rng.normal(size=(20, 8)), bandwidth=3.0)
            for _ in range(300)]
    assert abs(np.mean(kads)) < 3 * np.std(kads) / np.sqrt(len(kads))
    fd = frechet_distance_ci(rng.normal(size=(20, 8)), rng.normal(size=(20, 8)), n_boot=20)["fd"]
    assert fd > 1.0


def test_kad_interval_contains_its_estimate_and_stays_above_zero():
    rng = np.random.default_rng(2)
    est, lo, hi = kd.kernel_audio_distance_ci(rng.normal(size=(60, 6)), rng.normal(size=(40, 6)), n_boot=100)
    assert 0.0 <= lo <= est <= hi
    est, lo, hi = kd.kernel_audio_distance_ci(rng.normal(size=(60, 6)), rng.normal(size=(40, 6)) + 1.0, n_boot=100)
    assert 0.0 < lo <= est <= hi  # a shift of one sd in every dimension is seen
    with pytest.raises(ValueError, match="all equal"):
        kd.median_bandwidth(np.ones((5, 3)))


def test_fd_minimum_clips_by_simulation():
    """Two sets from one 32-dim Gaussian (the reference: 300 clips), n generated clips: the share of
    the Fréchet distance's finite-sample bias that the bias correction leaves, at n = d/2, d, 2d
    and 4d. The rule (n >= 2d) is where that share falls under 15%."""
    rng = np.random.default_rng(3)
    d, left = 32, {}
    for ratio in (0.5, 1, 2, 4):
        n = int(ratio * d)
        fits = [frechet_distance_ci(rng.normal(size=(300, d)), rng.normal(size=(n, d)), n_boot=30, seed=r)
                for r in range(12)]
        raw, corrected = np.mean([f["fd"] for f in fits]), np.mean([f["estimate"] for f in fits])
        left[ratio] = corrected / raw  # the true FD is 0: both are pure bias
        print(f"FD of one Gaussian, n = {ratio} d: raw {raw:.2f}, bias-corrected {corrected:.2f} "
              f"({left[ratio]:.0%} of the bias left)", file=sys.stderr)
    assert kd.fd_minimum_clips(d) == 2 * d
    assert left[2] < 0.15 and left[4] < 0.15
    assert left[1] > 0.15 and left[0.5] > 0.4

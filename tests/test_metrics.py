"""Cross-checks of t2a_lib.scoring.metrics against closed forms, hand computations and independent code."""

import math

import numpy as np
import pytest
import scipy.linalg

from t2a_lib.scoring.metrics import (bootstrap_ci, bootstrap_ci_fn, bootstrap_ci_paired, clap_score,
                                     cosine_similarity_rows, embedding_stats, frechet_audio_distance, frechet_distance,
                                     frechet_distance_ci, inception_score, kl_divergence)
from t2a_lib.world.scenes import Event
from t2a_lib.scoring.event_metrics import (event_f1, event_f1_corpus, events_from_frames, order_correct, order_margin,
                                           presence, presence_probability)
from t2a_lib.scoring.cache import cached, content_key
import t2a_lib.scoring.metrics as metrics_module


def random_spd(d, rng):
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d)


def fd_sqrtm_reference(mu1, s1, mu2, s2):
    """Textbook FD via scipy.linalg.sqrtm of the (non-symmetric) product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    scale = np.abs(covmean).max()
    if np.iscomplexobj(covmean):
        assert np.abs(covmean.imag).max() < 1e-5 * scale
        covmean = covmean.real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


# ----------------------------------------------------------------------------- Fréchet distance

def test_fd_scalar_gaussians():
    # N(0,1) vs N(1,4): 1 + 1 + 4 - 2*sqrt(4) = 2
    assert abs(frechet_distance(0.0, 1.0, 1.0, 4.0) - 2.0) < 1e-12
    assert abs(frechet_distance([0.0], [[1.0]], np.array([1.0]), np.array([[4.0]])) - 2.0) < 1e-12


def test_fd_diagonal_closed_form():
    rng = np.random.default_rng(1)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    sd1, sd2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((sd1 - sd2) ** 2)
    got = frechet_distance(mu1, np.diag(sd1 ** 2), mu2, np.diag(sd2 ** 2))
    assert abs(got - expected) <= 1e-9 * expected


def test_fd_identical_is_zero():
    rng = np.random.default_rng(2)
    mu, s = rng.standard_normal(32), random_spd(32, rng)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8


def test_fd_matches_sqrtm_full_rank():
    rng = np.random.default_rng(3)
    for d in (2, 7, 24):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = random_spd(d, rng), random_spd(d, rng)
        ref = fd_sqrtm_reference(mu1, s1, mu2, s2)
        assert abs(frechet_distance(mu1, s1, mu2, s2) - ref) <= 1e-6 * abs(ref)


def test_fd_rank_deficient():
    rng = np.random.default_rng(4)
    d = 16
    x, y = rng.standard_normal((8, d)), rng.standard_normal((8, d))
    s1, s2 = x.T @ x / 8, y.T @ y / 8  # rank 8 each
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    got = frechet_distance(mu1, s1, mu2, s2)
    # independent reference, roles swapped: tr sqrt of eigenvalues of S2^{1/2} Σ1 S2^{1/2}
    w, v = np.linalg.eigh(s2)
    r2 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(r2 @ s1 @ r2), 0, None)).sum()
    ref_swapped = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    assert abs(got - ref_swapped) <= 1e-6 * abs(ref_swapped)
    assert abs(got - fd_sqrtm_reference(mu1, s1, mu2, s2)) <= 1e-6 * abs(ref_swapped)
    # exact closed form on a shared rank-8 subspace: Σ2 = 2 Σ1 → (3 − 2√2) tr Σ1
    assert abs(frechet_distance(mu1, s1, mu1, 2 * s1) - (3 - 2 * math.sqrt(2)) * np.trace(s1)) < 1e-9


def test_embedding_stats_matches_numpy():
    x = np.random.default_rng(5).standard_normal((50, 3))
    mu, sigma = embedding_stats(x)
    assert np.allclose(mu, x.mean(0)) and np.allclose(sigma, np.cov(x.T))
    mu1, sigma1 = embedding_stats(x[:, :1])
    assert sigma1.shape == (1, 1) and abs(sigma1[0, 0] - x[:, 0].var(ddof=1)) < 1e-12
    with pytest.raises(ValueError, match="at least 2 rows"):
        embedding_stats(x[:1])


def test_fad_finite_sample_bias():
    d, n = 8, 2000
    vals = [frechet_audio_distance(np.random.default_rng(s).standard_normal((n, d)),
                                   np.random.default_rng(1000 + s).standard_normal((n, d)))
            for s in range(6)]
    expected = 2 * d / n + d * (d + 1) / (2 * n)
    assert abs(np.mean(vals) - expected) < 0.25 * expected


def test_fd_errors():
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance([np.nan], [[1.0]], [0.0], [[1.0]])
    with pytest.raises(ValueError, match="sigma"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="dims differ"):
        frechet_audio_distance(np.ones((4, 2)) + np.arange(4)[:, None], np.eye(3))



# ----------------------------------------------------------------------------- FD bootstrap interval

def _gaussian_pair(rng, n, mu1, s1, mu2, s2):
    return rng.multivariate_normal(mu1, s1, n), rng.multivariate_normal(mu2, s2, n)


def test_frechet_distance_ci_matches_its_definition():
    """Recomputed here from the definition: both sets resampled independently (ref indices, then
    gen indices, from one default_rng(seed) stream), basic interval, bias-corrected estimate."""
    rng = np.random.default_rng(20)
    ref, gen = rng.standard_normal((40, 3)), rng.standard_normal((30, 3)) + 0.5
    got = frechet_distance_ci(ref, gen, n_boot=60, alpha=0.1, seed=7)
    r = np.random.default_rng(7)
    boot = []
    for _ in range(60):
        i, j = r.integers(0, 40, size=40), r.integers(0, 30, size=30)
        boot.append(frechet_audio_distance(ref[i], gen[j]))
    fd = frechet_audio_distance(ref, gen)
    q_lo, q_hi = np.quantile(boot, [0.05, 0.95])
    assert got["fd"] == pytest.approx(fd, abs=1e-12)
    assert got["estimate"] == pytest.approx(2 * fd - np.mean(boot), abs=1e-12)
    assert got["bias"] == pytest.approx(np.mean(boot) - fd, abs=1e-12)
    assert got["low"] == pytest.approx(2 * fd - q_hi, abs=1e-12)
    assert got["high"] == pytest.approx(2 * fd - q_lo, abs=1e-12)
    assert (got["percentile_low"], got["percentile_high"]) == pytest.approx((q_lo, q_hi), abs=1e-12)
    assert got["n_boot"] == 60 and got["widened"] is False
    assert frechet_distance_ci(ref, gen, n_boot=60, seed=7) == frechet_distance_ci(ref, gen, n_boot=60, seed=7)
    assert frechet_distance_ci(ref, gen, n_boot=60, seed=7) != frechet_distance_ci(ref, gen, n_boot=60, seed=8)


def test_frechet_distance_ci_contains_its_estimate():
    for n, d in ((2, 1), (3, 2), (10, 3), (60, 4), (60, 1)):
        for seed in range(3):
            rng = np.random.default_rng(100 * n + 10 * d + seed)
            ref, gen = rng.standard_normal((n, d)), rng.standard_normal((n + 1, d)) * 1.3 + 0.2
            ci = frechet_distance_ci(ref, gen, n_boot=100, seed=seed)
            assert ci["low"] <= ci["estimate"] <= ci["high"], (n, d, seed, ci)
            if n >= 10:
                assert ci["low"] < ci["high"] and not ci["widened"]


def test_frechet_distance_ci_widens_a_pathological_interval(monkeypatch):
    # two rows per set: the bootstrap distribution is a few lumps, and a narrow (20 %) interval
    # around its median misses its mean, so the interval is widened to the estimate
    rng = np.random.default_rng(0)
    ref, gen = rng.standard_normal((2, 2)), rng.standard_normal((2, 2)) + 1
    ci = frechet_distance_ci(ref, gen, n_boot=200, alpha=0.8, seed=0)
    assert ci["widened"] is True
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    assert ci["estimate"] in (ci["low"], ci["high"])  # the violated end moved to the estimate
    # a heavy tail at alpha = 0.05: 196 replicates at 1 and 4 at 1000 put the bootstrap mean
    # (≈ 21) above q_hi (= 1), so 2·fd − mean falls below 2·fd − q_hi
    values = iter([0.5] + [1.0] * 196 + [1000.0] * 4)  # full-set FD first, then the replicates
    monkeypatch.setattr(metrics_module, "_fd_of_rows", lambda a, b: next(values))
    ci = frechet_distance_ci(np.eye(3), np.eye(3), n_boot=200)
    mean = (196 + 4000) / 200
    assert ci["widened"] is True and ci["fd"] == 0.5
    assert ci["estimate"] == pytest.approx(1.0 - mean) and ci["low"] == ci["estimate"]
    assert ci["high"] == pytest.approx(1.0 - 1.0)  # 2·fd − q_lo with q_lo = 1


def test_frechet_distance_ci_corrects_bias_and_covers_truth():
    """30 replications of two n = 200, d = 4 Gaussian samples with a known FD (≈ 0.06, of the
    order of the finite-sample bias ≈ 0.09). The bias-corrected estimate is nearly unbiased and
    its basic interval covers the truth (≈ 97 % in 100 replications); the percentile interval of
    plain FD that ``bootstrap_ci_fn`` gives (gen resampled) covers it in ≈ 5 %."""
    d, n = 4, 200
    mu1, mu2 = np.zeros(d), np.full(d, 0.1)
    s1, s2 = np.eye(d), np.diag([1.0, 1.2, 0.8, 1.0])
    true = frechet_distance(mu1, s1, mu2, s2)  # 0.04 + (√1.2 − 1)² + (√0.8 − 1)² ≈ 0.0603
    assert true == pytest.approx(0.04 + (np.sqrt(1.2) - 1) ** 2 + (np.sqrt(0.8) - 1) ** 2, abs=1e-12)
    plain, corrected, bias, basic_hits, pct_hits = [], [], [], 0, 0
    for r in range(30):
        ref, gen = _gaussian_pair(np.random.default_rng(500 + r), n, mu1, s1, mu2, s2)
        ci = frechet_distance_ci(ref, gen, n_boot=200, seed=r)
        plain.append(ci["fd"])
        corrected.append(ci["estimate"])
        bias.append(ci["bias"])
        basic_hits += ci["low"] <= true <= ci["high"]
        _, lo, hi = bootstrap_ci_fn(n, lambda s: frechet_audio_distance(ref, gen[s]), n_boot=100, seed=r)
        pct_hits += lo <= true <= hi
    plain_err, corrected_err = np.mean(plain) - true, np.mean(corrected) - true
    assert plain_err > 0.05  # plain FD is biased upward (≈ 0.09 here)
    assert abs(corrected_err) < 0.3 * abs(plain_err), (plain_err, corrected_err)
    # the bootstrap's bias estimate matches docs/reference.md's 2d/n + d(d+1)/(2n) = 0.09
    assert np.mean(bias) == pytest.approx(2 * d / n + d * (d + 1) / (2 * n), rel=0.25)
    assert basic_hits >= 24, basic_hits  # ≥ 80 %
    assert pct_hits <= 12, pct_hits  # ≤ 40 %: the percentile interval sits above the truth


def test_frechet_distance_ci_errors():
    ok = np.random.default_rng(21).standard_normal((10, 3))
    with pytest.raises(ValueError, match="at least 2 rows in emb_gen"):
        frechet_distance_ci(ok, ok[:1])
    with pytest.raises(ValueError, match="at least 2 rows in emb_ref"):
        frechet_distance_ci(ok[:1], ok)
    bad = ok.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="emb_gen contains NaN"):
        frechet_distance_ci(ok, bad)
    with pytest.raises(ValueError, match="dims differ"):
        frechet_distance_ci(ok, ok[:, :2])
    with pytest.raises(ValueError, match="2-D"):
        frechet_distance_ci(ok[0], ok)
    with pytest.raises(ValueError, match="n_boot"):
        frechet_distance_ci(ok, ok, n_boot=1)
    with pytest.raises(ValueError, match="alpha"):
        frechet_distance_ci(ok, ok, alpha=1.0)

# ----------------------------------------------------------------------------- KL

def test_kl_identical_is_zero():
    logits = np.random.default_rng(6).standard_normal((20, 7))
    assert abs(kl_divergence(logits, logits)) < 1e-12
    assert np.allclose(kl_divergence(logits, logits, per_clip=True), 0.0)


def test_kl_two_class_by_hand():
    p_ref, p_gen = np.array([[0.8, 0.2]]), np.array([[0.5, 0.5]])
    ref_gen = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # = 0.192744757...
    gen_ref = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)  # = 0.223143551...
    assert abs(ref_gen - 0.1927447570) < 1e-9 and abs(gen_ref - 0.2231435513) < 1e-9
    assert abs(kl_divergence(p_ref, p_gen, form="probs") - ref_gen) < 1e-12
    assert abs(kl_divergence(p_ref, p_gen, form="probs", direction="gen||ref") - gen_ref) < 1e-12
    # same numbers from logits: log-probabilities are valid logits
    assert abs(kl_divergence(np.log(p_ref), np.log(p_gen)) - ref_gen) < 1e-12


def test_kl_pairs_by_id():
    rng = np.random.default_rng(7)
    ref, gen = rng.standard_normal((10, 4)), rng.standard_normal((10, 4))
    ids = [f"clip{i}" for i in range(10)]
    perm = rng.permutation(10)
    expected = kl_divergence(ref, gen, per_clip=True)
    got = kl_divergence(ref, gen[perm], ids_ref=ids, ids_gen=[ids[i] for i in perm], per_clip=True)
    assert np.allclose(got, expected)
    assert not np.allclose(kl_divergence(ref, gen[perm], per_clip=True), expected)  # unpaired differs
    with pytest.raises(ValueError, match="clip9"):
        kl_divergence(ref[:9], gen, ids_ref=ids[:9], ids_gen=ids)
    with pytest.raises(ValueError, match="duplicate"):
        kl_divergence(ref[:2], gen[:2], ids_ref=["a", "a"], ids_gen=["a", "b"])


def test_kl_sigmoid_is_bernoulli_divergence():
    rng = np.random.default_rng(8)
    p, q = rng.uniform(0, 1, (30, 6)), rng.uniform(0, 1, (30, 6))
    kl = kl_divergence(p, q, form="sigmoid", per_clip=True)
    assert np.all(kl >= 0) and abs(kl_divergence(p, p, form="sigmoid")) < 1e-12
    by_hand = sum(a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b)) for a, b in zip(p[0], q[0]))
    assert abs(kl[0] - by_hand) < 1e-12


def test_kl_errors():
    with pytest.raises(ValueError, match="NaN"):
        kl_divergence(np.array([[np.nan, 0.0]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="sum to 1"):
        kl_divergence(np.array([[0.5, 0.6]]), np.array([[0.5, 0.5]]), form="probs")
    with pytest.raises(ValueError, match="direction"):
        kl_divergence(np.zeros((1, 2)), np.zeros((1, 2)), direction="gen|ref")
    with pytest.raises(ValueError, match="class counts"):
        kl_divergence(np.zeros((1, 2)), np.zeros((1, 3)))


# ----------------------------------------------------------------------------- IS, CLAP

def test_inception_score_closed_forms():
    n, c = 500, 5
    one = np.zeros((n, c)); one[:, 2] = 1
    assert inception_score(one) == (1.0, 0.0)
    onehot = np.eye(c)[np.arange(n) % c]
    mean, std = inception_score(onehot, n_splits=1)
    assert abs(mean - c) < 1e-12 and std == 0.0
    # 10 shuffled splits: each split scores exp(entropy of its class counts), slightly below C
    perm = np.random.default_rng(0).permutation(n)
    per_split = []
    for part in np.array_split(onehot[perm], 10):
        f = part.mean(0)
        per_split.append(math.exp(-sum(x * math.log(x) for x in f if x > 0)))
    mean, std = inception_score(onehot, n_splits=10, seed=0)
    assert abs(mean - np.mean(per_split)) < 1e-12 and abs(std - np.std(per_split)) < 1e-12
    assert c - 0.2 < mean <= c
    assert abs(inception_score(np.full((100, 7), 1 / 7))[0] - 1.0) < 1e-12


def test_inception_score_errors():
    with pytest.raises(ValueError, match="n_splits"):
        inception_score(np.eye(3), n_splits=10)
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(np.full((20, 2), 0.7))


def test_clap_score_by_hand():
    audio = np.array([[1.0, 0.0], [3.0, 4.0]])
    text = np.array([[1.0, 1.0], [4.0, 3.0]])
    # cos 45° = 1/√2; (3·4 + 4·3) / (5·5) = 24/25
    assert np.allclose(cosine_similarity_rows(audio, text), [1 / math.sqrt(2), 0.96])
    assert abs(clap_score(audio, text) - (1 / math.sqrt(2) + 0.96) / 2) < 1e-12
    with pytest.raises(ValueError, match="zero-norm"):
        clap_score(np.zeros((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="same shape"):
        clap_score(np.ones((2, 2)), np.ones((3, 2)))


# ----------------------------------------------------------------------------- events

REF = [Event("bark", 1.0, 2.0), {"label": "siren", "onset": 3.0, "offset": 5.0}]


def test_presence():
    det = [Event("bark", 1.1, 2.0), Event("bell", 4.0, 4.5)]
    assert presence(["bark", "siren"], det) == dict(recall=0.5, precision=0.5, all_present=False)
    assert presence(["bark"], det[:1]) == dict(recall=1.0, precision=1.0, all_present=True)
    assert presence(["bark"], [])["precision"] == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        presence([], det)


def test_order_correct():
    det = [Event("siren", 3.0, 5.0), Event("bark", 1.0, 2.0)]
    assert order_correct(["bark", "siren"], det)
    assert not order_correct(["siren", "bark"], det)
    assert not order_correct(["bark", "bell"], det)  # missing event
    assert order_correct(["siren"], det) and not order_correct(["bell"], det)
    knocks = [Event("knock", 0.5, 0.7), Event("bell", 1.0, 1.5), Event("knock", 2.0, 2.2)]
    assert order_correct(["knock", "bell", "knock"], knocks)
    assert not order_correct(["knock", "knock", "bell"], knocks)
    assert not order_correct(["knock", "bell", "knock"], knocks[:2])
    assert not order_correct(["bark", "siren"], [Event("bark", 1.0, 2), Event("siren", 1.0, 2)])



# posteriors for the continuous scores: 4 frames of 0.5 s (centres 0.25, 0.75, 1.25, 1.75 s)
POST = np.array([[1.0, 0.0, 0.0, 0.2, 0.1],
                 [1.0, 0.0, 1.0, 0.0, 0.3],
                 [0.0, 0.5, 0.0, 0.0, 0.3],
                 [0.0, 0.5, 1.0, 0.6, 0.0]])
# centroids by hand: c0 = (0.25 + 0.75)/2 = 0.5; c1 = (1.25 + 1.75)/2 = 1.5;
# c2 = (0.75 + 1.75)/2 = 1.25; c3 = (0.2·0.25 + 0.6·1.75)/0.8 = 1.375;
# c4 = (0.1·0.25 + 0.3·0.75 + 0.3·1.25)/0.7 = 0.625/0.7


def test_presence_probability_by_hand():
    # per-class maxima: 1.0, 0.5, 1.0, 0.6, 0.3
    assert presence_probability(POST, [0]) == 1.0
    assert presence_probability(POST, [1, 3]) == pytest.approx((0.5 + 0.6) / 2, abs=1e-15)
    assert presence_probability(POST, [4, 1, 3]) == pytest.approx((0.3 + 0.5 + 0.6) / 3, abs=1e-15)
    assert presence_probability(POST, [1, 1, 4]) == pytest.approx((0.5 + 0.5 + 0.3) / 3, abs=1e-15)  # per occurrence
    assert presence_probability(POST, np.array([4])) == pytest.approx(0.3, abs=1e-15)
    silent = np.zeros((3, 2))
    assert presence_probability(silent, [0, 1]) == 0.0
    assert presence_probability(POST[:1], [0, 3]) == pytest.approx((1.0 + 0.2) / 2, abs=1e-15)  # T = 1
    # independent loop over frames on random posteriors
    p = np.random.default_rng(30).uniform(size=(7, 5))
    ks = [3, 0, 3]
    expected = sum(max(p[t, k] for t in range(7)) for k in ks) / 3
    assert presence_probability(p, ks) == pytest.approx(expected, abs=1e-15)


def test_order_margin_by_hand():
    hop = 0.5
    assert order_margin(POST, [0, 1], hop) == pytest.approx(1.0, abs=1e-12)
    assert order_margin(POST, [1, 0], hop) == pytest.approx(-1.0, abs=1e-12)
    assert order_margin(POST, [0, 2, 1], hop) == pytest.approx(0.25, abs=1e-12)   # min(0.75, 0.25)
    assert order_margin(POST, [0, 1, 2], hop) == pytest.approx(-0.25, abs=1e-12)  # min(1.0, −0.25)
    assert order_margin(POST, [0, 3], hop) == pytest.approx(0.875, abs=1e-12)
    assert order_margin(POST, [4, 3], hop) == pytest.approx(1.375 - 0.625 / 0.7, abs=1e-12)
    assert order_margin(POST, [0, 1], 0.02) == pytest.approx(0.04, abs=1e-12)  # scales with the hop
    # independent loop on random posteriors
    p = np.random.default_rng(31).uniform(size=(9, 4))
    order = [2, 0, 3]
    cents = []
    for k in order:
        num = den = 0.0
        for t in range(9):
            num += (t + 0.5) * 0.1 * p[t, k]
            den += p[t, k]
        cents.append(num / den)
    expected = min(cents[1] - cents[0], cents[2] - cents[1])
    assert order_margin(p, order, 0.1) == pytest.approx(expected, abs=1e-12)


def test_order_margin_edge_cases():
    assert math.isnan(order_margin(POST, [0], 0.5))  # one event: no order
    assert math.isnan(order_margin(POST, [0, 1, 0], 0.5))  # repeated label: one centroid, two places
    zero = POST.copy()
    zero[:, 1] = 0.0
    assert math.isnan(order_margin(zero, [0, 1], 0.5))  # no posterior mass: no centroid
    assert order_margin(np.full((1, 2), 0.4), [0, 1], 0.5) == 0.0  # one frame: same centroid
    assert order_margin(np.full((5, 2), 0.7), [1, 0], 0.5) == 0.0  # flat posteriors: no order


def test_continuous_judge_scores_errors():
    for fn, args in ((presence_probability, ()), (order_margin, (0.5,))):
        with pytest.raises(ValueError, match="2-D"):
            fn(POST[0], [0, 1], *args)
        with pytest.raises(ValueError, match="2-D"):
            fn(POST[None], [0, 1], *args)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            fn(POST * 1.5, [0, 1], *args)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            fn(POST - 0.5, [0, 1], *args)
        nan = POST.copy()
        nan[2, 3] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            fn(nan, [0, 1], *args)
        with pytest.raises(ValueError, match="at least one frame"):
            fn(np.zeros((0, 5)), [0, 1], *args)
        with pytest.raises(ValueError, match="out of range"):
            fn(POST, [0, 5], *args)
        with pytest.raises(ValueError, match="out of range"):
            fn(POST, [-1, 0], *args)
        with pytest.raises(ValueError, match="not an integer"):
            fn(POST, [0, 1.0], *args)
        with pytest.raises(ValueError, match="non-empty"):
            fn(POST, [], *args)
    for hop in (0.0, -0.02, float("nan")):
        with pytest.raises(ValueError, match="hop_seconds"):
            order_margin(POST, [0, 1], hop)

def test_event_f1_collar():
    assert event_f1(REF, REF) == dict(f1=1.0, precision=1.0, recall=1.0, tp=2, fp=0, fn=0)
    near = [Event("bark", 1.15, 2.5), Event("siren", 2.85, 4.0)]  # offsets are not evaluated
    assert event_f1(REF, near)["tp"] == 2
    far = [Event("bark", 1.25, 2.0), Event("siren", 3.0, 5.0)]
    assert event_f1(REF, far) == dict(f1=0.5, precision=0.5, recall=0.5, tp=1, fp=1, fn=1)
    edge = [Event("bark", 1.2, 2.0), Event("siren", 2.8, 5.0)]  # |Δonset| = 0.2 s: inside (≤)
    assert event_f1(REF, edge)["tp"] == 2
    wrong = [Event("bell", 1.0, 2.0), Event("siren", 3.0, 5.0)]
    r = event_f1(REF, wrong)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)


def test_event_f1_maximum_matching():
    # greedy by distance pairs est 1.18 with ref 1.3 (0.12 s) first, leaving ref 1.0 and est 1.45
    # without partners (tp 1); the maximum matching pairs 1.0–1.18 and 1.3–1.45 (tp 2)
    ref = [Event("knock", 1.0, 1.1), Event("knock", 1.3, 1.4)]
    est = [Event("knock", 1.18, 1.2), Event("knock", 1.45, 1.5)]
    assert event_f1(ref, est)["tp"] == 2
    r = event_f1(ref[:1], [est[0], est[0]])  # one-to-one: a reference is matched at most once
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 0)


def test_event_f1_corpus_micro():
    refs = [REF, [Event("bell", 0.0, 1.0)]]
    ests = [REF, [Event("bell", 0.5, 1.0), Event("wind", 0.0, 1.0)]]
    r = event_f1_corpus(refs, ests)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 2, 1)
    assert abs(r["f1"] - 4 / 7) < 1e-12 and abs(r["precision"] - 0.5) < 1e-12
    with pytest.raises(ValueError, match="numbers of clips"):
        event_f1_corpus(refs, ests[:1])


def test_events_from_frames():
    hop, t = 0.01, 300
    p = np.full((t, 2), 0.1)
    p[100:150, 0] = 0.9        # bark 1.00–1.50
    p[152:180, 0] = 0.8        # 2-frame gap (0.02 s < 0.05 s) → merged into 1.00–1.80
    p[250:252, 0] = 0.9        # 0.02 s blip → dropped
    p[200:260, 1] = 0.7        # siren 2.00–2.60
    p[270:300, 1] = 0.9        # 10-frame gap → separate, runs to the end: 2.70–3.00
    ev = events_from_frames(p, ["bark", "siren"], hop)
    expected = [("bark", 1.0, 1.8), ("siren", 2.0, 2.6), ("siren", 2.7, 3.0)]
    assert len(ev) == 3
    for e, (lab, on, off) in zip(ev, expected):
        assert e.label == lab and abs(e.onset - on) < 1e-9 and abs(e.offset - off) < 1e-9
    truth = [Event(*x) for x in expected]
    assert event_f1(truth, ev)["f1"] == 1.0
    with pytest.raises(ValueError, match="labels"):
        events_from_frames(p, ["bark"], hop)
    with pytest.raises(ValueError, match="NaN"):
        events_from_frames(np.full((3, 1), np.nan), ["bark"], hop)


def test_event_validation():
    with pytest.raises(ValueError, match="lacks keys"):
        event_f1([{"label": "bark", "onset": 1.0}], [])
    with pytest.raises(ValueError, match="offset >= onset"):
        event_f1([Event("bark", 2.0, 1.0)], [])
    with pytest.raises(ValueError, match="finite"):
        presence(["bark"], [{"label": "bark", "onset": float("nan"), "offset": 1.0}])


# ----------------------------------------------------------------------------- bootstrap

def test_bootstrap_ci():
    rng = np.random.default_rng(9)
    small, large = rng.normal(1, 1, 100), rng.normal(1, 1, 2000)
    est, lo, hi = bootstrap_ci(small)
    assert est == small.mean() and lo < est < hi
    _, lo2, hi2 = bootstrap_ci(large)
    assert hi2 - lo2 < 0.5 * (hi - lo)  # width ∝ 1/√n: ratio ≈ 0.22
    assert abs((hi - lo) - 2 * 1.96 * small.std() / 10) < 0.25 * (hi - lo)  # ≈ normal-theory width
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    assert bootstrap_ci(small, seed=3) != bootstrap_ci(small, seed=4)


def test_bootstrap_paired_and_fn():
    a = np.random.default_rng(10).normal(size=50)
    assert bootstrap_ci_paired(a, a) == (0.0, 0.0, 0.0)
    est, lo, hi = bootstrap_ci_paired(a + 1.0, a)
    assert abs(est - 1) < 1e-12 and abs(lo - 1) < 1e-12 and abs(hi - 1) < 1e-12  # pairing cancels noise
    emb = np.random.default_rng(11).normal(size=(60, 3))
    est, lo, hi = bootstrap_ci_fn(60, lambda idx: frechet_audio_distance(emb[idx], emb), n_boot=50)
    assert abs(est) < 1e-8 and 0 < lo < hi
    assert bootstrap_ci(a, np.median, n_boot=200)[0] == np.median(a)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="length"):
        bootstrap_ci_paired(a, a[:-1])


# ----------------------------------------------------------------------------- cache

def test_content_key():
    x = np.arange(6, dtype=np.float32)
    assert content_key(x, "fad") == content_key(x.copy(), "fad")
    assert content_key(x, "fad") != content_key(x.astype(np.float64), "fad")
    assert content_key(x) != content_key(x.reshape(2, 3))
    assert content_key(x, "fad") != content_key(x, "kl")
    y = x.copy(); y[0] = 1
    assert content_key(x) != content_key(y)


def test_cached(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(3.0), np.eye(2)

    key = content_key(np.arange(3.0))
    mu, sigma = cached(tmp_path, key, compute)
    mu2, sigma2 = cached(tmp_path, key, compute)
    assert len(calls) == 1 and np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    assert cached(tmp_path, "score", lambda: {"fad": 1.25}) == {"fad": 1.25}
    assert cached(tmp_path, "score", lambda: 1 / 0) == {"fad": 1.25}
    d = cached(tmp_path, "d", lambda: {"a": np.ones(2)})
    assert np.array_equal(cached(tmp_path, "d", lambda: None)["a"], d["a"])
    with pytest.raises(ValueError, match="plain file name"):
        cached(tmp_path, "../x", lambda: 1)


def test_trace_sqrt_product_matches_scipy_sqrtm_for_full_and_rank_deficient_covariances():
    from scipy.linalg import sqrtm

    from t2a_lib.scoring.metrics import _trace_sqrt_product

    rng = np.random.default_rng(4)
    for n1, n2 in ((300, 200), (40, 300), (300, 12)):  # full rank, rank-deficient Σ1, rank-deficient Σ2
        a, b = rng.standard_normal((n1, 64)) @ rng.standard_normal((64, 64)), rng.standard_normal((n2, 64))
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        want = float(np.real(np.trace(sqrtm(s1 @ s2))))
        assert abs(_trace_sqrt_product(s1, s2) - want) <= 1e-6 * abs(want), (n1, n2)


def _same(a, b):
    """``a`` and ``b`` of the same types, dtypes, shapes and values, all the way down."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True), (a, b)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    else:
        assert a == b


CACHED_RESULTS = {
    "float16 array": np.array([[0.1, 1e-3], [np.nan, -2.5]], dtype=np.float16),
    "float32 array": np.linspace(-1, 1, 7, dtype=np.float32)[::2],  # not contiguous
    "int array": np.arange(6, dtype=np.int64).reshape(2, 3),
    "bool 0-d array": np.array(True),
    "tuple of arrays": (np.ones(3, np.float16), np.eye(2, dtype=np.float32), np.array([1, 2], np.uint8)),
    "dict of arrays": {"mu": np.zeros(4, np.float64), "sigma": np.full((2, 2), 0.3, np.float16)},
    "json": {"fad": 1.25, "n": 3, "ok": True},
}


@pytest.mark.parametrize("name", list(CACHED_RESULTS))
def test_cached_hit_returns_what_the_miss_returned(tmp_path, name):
    computed = CACHED_RESULTS[name]
    calls = []

    def compute():
        calls.append(1)
        return computed

    miss = cached(tmp_path, "k", compute)
    hit = cached(tmp_path, "k", compute)
    assert len(calls) == 1
    _same(miss, computed)  # the miss is the computed value, dtypes included ...
    _same(hit, miss)  # ... and the hit is the miss
    assert sorted(p.name for p in tmp_path.iterdir()) in (["k.npz"], ["k.json"])  # no temporary files left


def test_cached_writes_nothing_when_storing_fails_and_refuses_object_arrays(tmp_path, monkeypatch):
    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        cached(tmp_path, "k", lambda: np.ones(3))
    assert list(tmp_path.iterdir()) == []  # no half-written cache for the next call to read
    monkeypatch.undo()
    assert np.array_equal(cached(tmp_path, "k", lambda: np.ones(3)), np.ones(3))
    with pytest.raises(TypeError, match="Python objects"):
        cached(tmp_path, "objects", lambda: np.array([{"a": 1}], dtype=object))
    assert not list(tmp_path.glob("objects*"))

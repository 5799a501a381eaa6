"""How far labellers agree: Cohen's kappa of two, Fleiss' kappa of several, and ``agreement``, the
summary the merges, the notebook and the workshop's teacher page report."""

from __future__ import annotations

import numpy as np
import pandas as pd


def cohen_kappa(a, b) -> float:
    """Cohen's kappa of two raters' labels: (p_o - p_e) / (1 - p_e), p_e from each rater's
    marginals. NaN when p_e == 1 (both raters always gave the same single label)."""
    a, b = np.asarray(a), np.asarray(b)
    p_o = float(np.mean(a == b))
    p_e = sum(float(np.mean(a == c)) * float(np.mean(b == c)) for c in np.union1d(a, b))
    return float("nan") if p_e >= 1.0 else (p_o - p_e) / (1.0 - p_e)


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa from an (items, categories) matrix of rating counts, n raters per item:
    P_i = (sum_j n_ij^2 - n) / (n (n - 1)), p_j = sum_i n_ij / (N n),
    kappa = (mean P_i - sum_j p_j^2) / (1 - sum_j p_j^2); NaN when the chance term is 1."""
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(axis=1)
    if len(counts) == 0 or not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("fleiss_kappa needs items each rated by the same number (>= 2) of raters")
    n = n[0]
    p_bar = float(np.mean(((counts ** 2).sum(axis=1) - n) / (n * (n - 1))))
    p_e = float(((counts.sum(axis=0) / counts.sum()) ** 2).sum())
    return float("nan") if p_e >= 1.0 else (p_bar - p_e) / (1.0 - p_e)


def _pairwise(values: np.ndarray) -> tuple[list, list, list, list]:
    """For every two raters who share items, at once: (i, j), shared items, percent agreement and
    Cohen's kappa (``cohen_kappa`` on 0/1 votes, from counts: p_o = agreeing / n,
    p_e = (yes_i yes_j + no_i no_j) / n^2 over the shared items)."""
    yes, no = (values == 1).astype(float), (values == 0).astype(float)
    rated = yes + no
    n = rated.T @ rated
    agree = yes.T @ yes + no.T @ no
    yes_on_shared, no_on_shared = yes.T @ rated, no.T @ rated  # [i, j]: i's yes / no on items j rated too
    i, j = np.nonzero(np.triu(n, 1))  # only pairs that share items: linear, not quadratic, in a design
    shared = n[i, j]
    p_o = agree[i, j] / shared
    p_e = (yes_on_shared[i, j] * yes_on_shared[j, i] + no_on_shared[i, j] * no_on_shared[j, i]) / shared ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(p_e >= 1.0, np.nan, (p_o - p_e) / (1.0 - p_e))
    return (list(zip(i.tolist(), j.tolist())), shared.astype(int).tolist(), (100.0 * p_o).tolist(),
            kappa.tolist())


def agreement(votes: pd.DataFrame) -> dict:
    """Agreement of raters on 0/1 votes (items x raters, NaN where a rater gave none).

    pairwise {"a vs b": n, percent_agreement (0-100), cohen_kappa} over the items both rated;
    mean_percent_agreement and mean_cohen_kappa over the pairs that share items;
    fleiss_kappa over the items rated by the most common number k >= 2 of raters (an assigned
    design: not always the same people), with fleiss_raters (k) and fleiss_items;
    items_rated (by anyone) and items_multi (by two or more)."""
    nan, names = float("nan"), list(votes.columns)
    out = {"labellers": names, "pairwise": {}}
    values = votes.to_numpy(dtype=float)
    if not np.isin(values[~np.isnan(values)], (0.0, 1.0)).all():
        raise ValueError("agreement expects 0/1 votes (NaN: no vote)")
    for (i, j), n, pct, kappa in zip(*_pairwise(values)):
        out["pairwise"][f"{names[i]} vs {names[j]}"] = {"n": n, "percent_agreement": pct, "cohen_kappa": kappa}
    pct = [v["percent_agreement"] for v in out["pairwise"].values()]
    kap = [v["cohen_kappa"] for v in out["pairwise"].values() if np.isfinite(v["cohen_kappa"])]
    out["mean_percent_agreement"] = float(np.mean(pct)) if pct else nan
    out["mean_cohen_kappa"] = float(np.mean(kap)) if kap else nan
    counts = votes.notna().sum(axis=1)
    multi = counts[counts >= 2]
    out.update(fleiss_kappa=nan, fleiss_raters=0, fleiss_items=0,
               items_rated=int((counts >= 1).sum()), items_multi=len(multi))
    if len(multi):
        k = int(multi.value_counts().sort_index(ascending=False).idxmax())
        rows = votes[counts == k]
        table = np.stack([(rows == 0).sum(axis=1), (rows == 1).sum(axis=1)], axis=1)
        out.update(fleiss_kappa=fleiss_kappa(table), fleiss_raters=k, fleiss_items=len(rows))
    return out

"""memlab.measures.stats, the one home of the studies' shared statistics (issue 28): each
function gives the same bits as the copy a study carried before, and one verdict
vocabulary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from memlab.measures import stats


def same(got, want):
    """Equal, NaN included, and the same float bits."""
    assert type(got) is type(want) or (isinstance(got, float) and isinstance(want, float)), \
        (got, want)
    if isinstance(want, float):
        assert np.float64(got).tobytes() == np.float64(want).tobytes(), (got, want)
    else:
        assert got == want


def samples():
    rng = np.random.default_rng(0)
    out = [np.array([]), np.array([2.5]), np.array([np.nan, 1.0]), np.array([1.0, 1.0])]
    for n in (2, 3, 17, 200):
        values = rng.normal(size=n) * 10 ** rng.uniform(-3, 3) + rng.uniform(-5, 5)
        out.append(values)
        spoiled = values.copy()
        spoiled[:: max(n // 3, 1)] = np.nan
        out.append(spoiled)
        with_inf = values.copy()
        with_inf[-1] = np.inf
        out.append(with_inf)
    return out


# Reference copies (before issue 28).
def _longtail_mean_se(values):
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def _audit_mean_ci(values):
    values = values[np.isfinite(values)]
    if values.size < 2:
        return {"mean": float(values.mean()) if values.size else None, "se": None}
    se = float(values.std(ddof=1) / np.sqrt(values.size))
    return {"mean": float(values.mean()), "se": se, "n": int(values.size)}


def _lesde_mean_se(frame, columns):
    n = len(frame)
    return {c: {"mean": float(frame[c].mean()),
                "se": float(frame[c].std(ddof=1) / np.sqrt(n)) if n > 1 else None}
            for c in columns}


@pytest.mark.parametrize("index", range(len(samples())))
def test_mean_se_gives_each_study_its_old_numbers(index):
    values = samples()[index]
    got = stats.mean_se(values)
    mean, se = _longtail_mean_se(values)
    same(got.mean, mean)
    same(got.se, se)
    old = _audit_mean_ci(values)
    new = got.as_dict("mean", "se", "n")
    for key in old:
        same(new[key], old[key])
    frame = pd.DataFrame({"x": values})
    old = _lesde_mean_se(frame, ["x"])["x"]
    new = stats.mean_se(frame["x"], skip="nan", n=len(frame))
    same(new.mean, old["mean"])
    if old["se"] is None:
        assert math.isnan(new.se) and new.as_dict("se")["se"] is None
    else:
        same(new.se, old["se"])
    if got.n > 1:
        assert (got.low, got.high) == (got.mean - stats.Z95 * got.se,
                                       got.mean + stats.Z95 * got.se)


def _lm_spearman_with_interval(a, b):
    both = np.isfinite(a) & np.isfinite(b)
    n = int(both.sum())
    rho = stats.spearman(a, b)
    if n <= 3 or not np.isfinite(rho):
        return {"rho": rho, "ci_low": float("nan"), "ci_high": float("nan"), "n": n}
    z, half = np.arctanh(np.clip(rho, -0.999999, 0.999999)), 1.959963984540054 * np.sqrt(
        1.06 / (n - 3))
    return {"rho": rho, "ci_low": float(np.tanh(z - half)), "ci_high": float(np.tanh(z + half)),
            "n": n}


def _spectra_spearman_interval(x, y, n_bootstrap=1000, level=0.95, seed=0):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        return math.nan, math.nan, math.nan

    def rho(a, b):
        ra, rb = sp.rankdata(a, axis=-1), sp.rankdata(b, axis=-1)
        ra = ra - ra.mean(axis=-1, keepdims=True)
        rb = rb - rb.mean(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (ra * rb).sum(-1) / np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))

    picks = np.random.default_rng(seed).integers(0, x.size, size=(n_bootstrap, x.size))
    samples_ = rho(x[picks], y[picks])
    samples_ = samples_[np.isfinite(samples_)]
    low, high = (np.quantile(samples_, [(1 - level) / 2, (1 + level) / 2])
                 if samples_.size else (math.nan, math.nan))
    return float(rho(x, y)), float(low), float(high)


@pytest.mark.parametrize("n", [2, 3, 4, 9, 60])
def test_spearman_intervals_give_their_old_numbers(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(size=n)
    b = b + a
    if n > 4:
        a[1] = np.nan
    old, new = _lm_spearman_with_interval(a, b), stats.spearman_with_interval(a, b)
    assert old.keys() == new.keys()
    for key in old:
        same(new[key], old[key])
    for seed in (0, 3):
        for got, want in zip(stats.spearman_interval(a, b, n_bootstrap=200, seed=seed),
                             _spectra_spearman_interval(a, b, 200, seed=seed)):
            same(got, want)


def test_paired_interval_and_t_interval():
    out = stats.paired_interval(np.array([1.0, 2.0, 3.0]))
    half = sp.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert out["difference"] == 2.0 and out["n"] == 3
    assert out["ci_low"] == pytest.approx(2 - half) and out["verdict"] == stats.UNDECIDED
    assert stats.paired_interval(np.array([1.0, 1.1, 0.9]))["verdict"] == stats.YES
    assert stats.paired_interval(np.zeros(4))["verdict"] == stats.NO  # at 0: not larger
    assert stats.paired_interval(np.array([1.0, -1.0, 0.5]))["verdict"] == stats.UNDECIDED
    one = stats.paired_interval(np.array([5.0]))
    assert one["verdict"] == stats.UNDECIDED and one["ci_low"] is None
    assert math.isnan(stats.t_interval(np.array([5.0]))[1])


def test_one_verdict_vocabulary():
    v = stats.verdict_from_interval
    assert v(0.1, 0.3) == "yes" and v(-0.3, -0.1) == "no" and v(-0.1, 0.1) == "cannot decide"
    assert v(float("nan"), float("nan")) == v(None, None) == stats.UNDECIDED
    assert v(-0.3, 0.0) == stats.UNDECIDED and v(-0.3, 0.0, inclusive_below=True) == "no"
    assert v(1.2, 1.5, reference=1.0, above=stats.REPRODUCED) == "reproduced"
    assert v(-2, -1, above=stats.HIGHER, below=stats.LOWER) == "lower"
    # the studies speak it
    from memlab.studies.longtail.verdicts import verdict as longtail_verdict
    from memlab.studies.memorize import removal
    from memlab.studies.noise import verdicts as noise

    assert noise.UNDECIDED == removal.UNDECIDED == stats.UNDECIDED == "cannot decide"
    assert longtail_verdict(0.5, 0.1) == "yes" and longtail_verdict(0.0, 0.1) == "cannot decide"
    assert longtail_verdict(-0.5, float("nan")) == "cannot decide"
    assert noise.sign_verdict(-0.2, -0.1) == "not reproduced"

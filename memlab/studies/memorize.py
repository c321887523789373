"""The memorization study: population → scores → influence → pairs → removal → report.

    import memlab
    result = memlab.memorize("mnist1d", n_models=1000, out="runs/memorize")
    result.scores          # one row per training example: mem, se, acc_in, acc_out, ...
    result.influence       # (n_train, n_test) influence with standard errors (memory-mapped)
    result.pairs           # high-influence pairs, near-duplicates flagged
    result.report()        # runs/memorize/report.html

``memorize`` trains (or resumes) the population and calls :func:`analyze`, which works on
any finished run. Every output lands in the run directory, atomically:
``memorization.parquet``, ``influence.npy`` (+ ``influence_se.npy``), ``pairs.csv``,
``reliability.csv``, ``summary.json``, ``report.html``, and when asked for
``removal.csv``/``removal.json`` (the marginal-utility study) and ``cscores.parquet``.

The marginal-utility study retrains models (several seeds) on the full training set, on the
training set without the examples with mem ≥ threshold, and without as many random ones.
The engine expresses removal through the membership mask: a model trained on "all but R"
is a population member whose subset is the complement of R, so the three arms share the
engine, the initial weights of each seed (a paired design), and its records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from memlab.data import Dataset, load
from memlab.errors import ConfigError
from memlab.measures import cscores as cs
from memlab.measures import memorization as mz
from memlab.population import Run, store, train_population

# The recipe of ``memlab memorize`` with no arguments: MNIST-1D, the MLP 40-100-100-10,
# trained to fit its subsets (≈99% training accuracy), 1,000 models at r = 0.7.
RECIPE = dict(n_models=1000, subset_fraction=0.7, epochs=30, batch_size=64, optimizer="adam",
              lr=0.005)
STRONG_INFLUENCE = 0.4  # Feldman & Zhang: pairs above this are mostly near-duplicates
PRECISION = 0.1  # default requested RMS error of every score (SCIENCE.md §1 bound)
REMOVAL_SEEDS = 8


# ------------------------------------------------------------------ removal study


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t confidence interval of the mean of ``values``."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(
        len(values))
    return mean, mean - float(half), mean + float(half)


@dataclass
class RemovalStudy:
    """Test accuracy after removing the memorized examples vs as many random ones.

    table: one row per (arm, seed): arm in {full, memorized, random}, n_train, train_acc
    (on the arm's own training set), test_acc, high_influence_acc (on the test examples
    of the high-influence pairs). summary: mean and 95% t-interval per arm and metric, and
    of the paired (same seed) differences between arms.
    """

    threshold: float
    removed: np.ndarray
    high_influence_tests: np.ndarray
    table: pd.DataFrame
    settings: dict

    @property
    def n_removed(self) -> int:
        return len(self.removed)

    def summary(self) -> pd.DataFrame:
        rows = []
        metrics = ("test_acc", "high_influence_acc", "train_acc")
        by_arm = {arm: group.sort_values("seed") for arm, group in self.table.groupby("arm")}
        for arm in ("full", "memorized", "random"):
            if arm not in by_arm:
                continue
            for metric in metrics:
                mean, low, high = t_interval(by_arm[arm][metric].to_numpy())
                rows.append(dict(comparison=arm, metric=metric, mean=mean, ci_low=low,
                                 ci_high=high, seeds=len(by_arm[arm])))
        for a, b in (("memorized", "full"), ("random", "full"), ("memorized", "random")):
            if a not in by_arm or b not in by_arm:
                continue
            for metric in metrics[:2]:
                diff = by_arm[a][metric].to_numpy() - by_arm[b][metric].to_numpy()
                mean, low, high = t_interval(diff)
                rows.append(dict(comparison=f"{a} - {b}", metric=metric, mean=mean,
                                 ci_low=low, ci_high=high, seeds=len(diff)))
        return pd.DataFrame(rows)

    def to_json(self) -> dict:
        return {"settings": self.settings, "threshold": self.threshold,
                "removed": self.removed.tolist(),
                "high_influence_tests": self.high_influence_tests.tolist(),
                "summary": self.summary().to_dict(orient="records")}


def _removal_settings(run: Run, threshold: float, seeds: int, removed: np.ndarray,
                      tests: np.ndarray) -> dict:
    digest = hashlib.sha256(removed.astype(np.int64).tobytes() + b"|"
                            + tests.astype(np.int64).tobytes()).hexdigest()[:16]
    return {"threshold": threshold, "seeds": seeds, "n_removed": int(len(removed)),
            "sets": digest, "config": run.config.to_dict(),
            "fingerprint": run.manifest["dataset"]["fingerprint"]}


def removal_study(run: Run, scores: pd.DataFrame, pairs: pd.DataFrame,
                  threshold: float = mz.MEMORIZED, seeds: int = REMOVAL_SEEDS,
                  device: str = "cpu", progress: bool = True, save: bool = True
                  ) -> RemovalStudy:
    """Retrain ``seeds`` models per arm on the full training set, without the examples with
    mem ≥ ``threshold``, and without as many random examples (a fresh random set per seed),
    with the population's recipe. Seed s starts every arm from the same initial weights.
    Saved to (and resumed from) the run's ``removal.csv``/``removal.json``."""
    if seeds < 2:
        raise ConfigError(f"the removal study needs at least 2 seeds for intervals, got {seeds}")
    dataset = run.dataset
    n = dataset.n_train
    mem = scores["mem"].to_numpy()
    removed = np.flatnonzero(np.nan_to_num(mem, nan=-np.inf) >= threshold)
    tests = np.unique(pairs["test"].to_numpy()).astype(np.int64)
    settings = _removal_settings(run, threshold, seeds, removed, tests)
    json_path, csv_path = run.path / "removal.json", run.path / "removal.csv"
    if json_path.exists() and csv_path.exists():
        try:
            saved = json.loads(json_path.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("settings") == settings:
            return RemovalStudy(threshold, removed, tests, pd.read_csv(csv_path), settings)
    if len(removed) == 0 or len(removed) >= n:
        raise ConfigError(f"{len(removed)} of {n} examples have mem >= {threshold}: nothing to "
                          "compare; choose another --threshold")

    # Each arm is a population of `seeds` full-data models with an explicit membership
    # mask, in its own resumable run directory; replicate s of every arm shares its
    # initialization and shuffling stream, so the arms are paired by seed.
    config = dataclasses.replace(run.config, n_models=seeds, save_weights=False,
                                 record_epochs=False, subsets="explicit", sweep={})
    full = np.ones((seeds, n), bool)
    without_memorized = full.copy()
    without_memorized[:, removed] = False
    without_random = full.copy()
    for s in range(seeds):
        rng = np.random.default_rng([run.config.seed, 8, s])
        without_random[s, rng.choice(n, len(removed), replace=False)] = False
    arms = {"full": full, "memorized": without_memorized, "random": without_random}
    rows = []
    for arm, membership in arms.items():
        arm_run = train_population(dataset, config, membership=membership, device=device,
                                   out=run.path / "removal" / f"{settings['sets']}-{arm}",
                                   progress=progress)
        train_correct = arm_run.records("train_correct")
        test_correct = arm_run.records("test_correct")
        for s in range(seeds):
            rows.append(dict(
                arm=arm, seed=s, n_train=int(membership[s].sum()),
                train_acc=float(train_correct[s, membership[s]].mean()),
                test_acc=float(test_correct[s].mean()),
                high_influence_acc=(float(test_correct[s, tests].mean()) if len(tests)
                                    else float("nan")),
                removed_acc=(float(train_correct[s, ~membership[s]].mean())
                             if (~membership[s]).any() else float("nan")),
            ))
    study = RemovalStudy(threshold, removed, tests, pd.DataFrame(rows), settings)
    if save:
        store.atomic_save_table(csv_path, study.table)
        store.atomic_write_json(json_path, study.to_json())
    return study


# ------------------------------------------------------------------ the result


@dataclass
class MemorizationResult:
    """Everything the study measured on one run. ``report(path)`` writes the HTML page."""

    run: Run
    scores: pd.DataFrame
    influence: mz.Influence
    pairs: pd.DataFrame
    reliability: mz.Reliability
    reliability_curve: pd.DataFrame
    duplicates: pd.DataFrame
    proxies: pd.DataFrame
    proxy_correlations: pd.DataFrame
    summary: dict[str, Any]
    settings: dict[str, Any]
    advice: str | None = None
    removal: RemovalStudy | None = None
    cscores: pd.DataFrame | None = None

    def __repr__(self) -> str:
        s = self.summary
        return (f"MemorizationResult({self.run.path}: {s['n_models']} models, "
                f"{s['memorized_fraction']:.1%} of examples with mem >= {s['mem_min']}, "
                f"{s['n_pairs']} high-influence pairs, reliability {s['reliability']:.3f})")

    @property
    def memorized(self) -> pd.DataFrame:
        """The examples with mem ≥ the threshold, most memorized first."""
        return (self.scores[self.scores.mem >= self.settings["mem_min"]]
                .sort_values(["mem", "se"], ascending=[False, True]))

    def save(self) -> None:
        """Write the tables into the run directory (atomically)."""
        path = self.run.path
        store.atomic_save_table(path / "memorization.parquet", self.scores)
        store.atomic_save_table(path / "pairs.csv", self.pairs)
        store.atomic_save_table(path / "reliability.csv", self.reliability_curve)
        store.atomic_save_table(path / "proxies.parquet", self.proxies)
        if self.cscores is not None:
            store.atomic_save_table(path / "cscores.parquet", self.cscores)
        store.atomic_write_json(path / "summary.json", _jsonable(
            {"summary": self.summary, "settings": self.settings, "advice": self.advice,
             "proxy_correlations": self.proxy_correlations.to_dict(orient="records"),
             "removal": self.removal.summary().to_dict(orient="records")
             if self.removal is not None else None}))

    def save_figures(self, directory: str | Path, prefix: str = "memorization_") -> list[Path]:
        """Write the report's figures as PNG files (for papers and docs); returns the paths."""
        import matplotlib.pyplot as plt

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        figures = {"overview": plot_overview(self), "examples": plot_examples(self),
                   "reliability": plot_reliability(self.reliability_curve)}
        if len(self.pairs):
            figures["pairs"] = plot_pairs(self)
        if self.removal is not None:
            figures["removal"] = plot_removal(self.removal)
        if self.cscores is not None:
            figures["cscores"] = plot_cscores(self)
        paths = []
        for name, figure in figures.items():
            path = directory / f"{prefix}{name}.png"
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
            plt.close(figure)
            store.atomic_write_bytes(path, buffer.getvalue())
            paths.append(path)
        return paths

    def report(self, path: str | Path | None = None) -> Path:
        """Write the self-contained HTML report (default: RUN/report.html)."""
        path = Path(path) if path is not None else self.run.path / "report.html"
        return build_report(self).save(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ------------------------------------------------------------------ analysis


def analyze(run: Run, *, mem_min: float = mz.MEMORIZED, infl_min: float = mz.HIGH_INFLUENCE,
            same_label: bool = True, duplicate_threshold: float = mz.NEAR_DUPLICATE,
            precision: float = PRECISION, removal: bool = False,
            removal_seeds: int = REMOVAL_SEEDS, cscores: bool = False,
            cscore_models: int = 64, cscore_ratios=cs.RATIOS, reliability_splits: int = 5,
            device: str = "cpu", n_workers: int | None = None, progress: bool = True,
            report: bool = True) -> MemorizationResult:
    """Measure a finished population run and write the study's outputs into it."""
    config = run.config
    scores = mz.memorization(run)
    infl = mz.influence(run, out=run.path / "influence.npy")
    pairs = mz.high_influence_pairs(run, mem_min, infl_min, same_label, scores=scores,
                                    infl=infl, duplicate_threshold=duplicate_threshold)
    mask, train_correct = run.membership_mask, run.records("train_correct")
    curve = mz.reliability_curve(mask, train_correct, n_splits=reliability_splits,
                                 seed=config.seed)  # ends with all the models
    whole = curve.iloc[-1]
    reliability = mz.Reliability(run.n_models, float(whole.spearman), float(whole.spearman_sd),
                                 reliability_splits)
    dataset = run.dataset
    duplicates = mz.near_duplicates(dataset, duplicate_threshold)
    advice = mz.precision_advice(run.n_models, config.subset_fraction, precision)

    cscore_frame = None
    targets = {"mem": scores["mem"].to_numpy(),
               f"acc_out (C-score at r={config.subset_fraction:g})": scores["acc_out"].to_numpy()}
    if cscores:
        recipe = {k: v for k, v in config.to_dict().items()
                  if k not in ("n_models", "subset_fraction")}
        reuse = {r: run for r in cscore_ratios if math.isclose(r, config.subset_fraction)}
        runs = cs.cscore_sweep(dataset, cscore_ratios, cscore_models, out=run.path / "cscores",
                               reuse=reuse, device=device, n_workers=n_workers,
                               progress=progress, **recipe)
        cscore_frame = cs.cscores(runs)
        targets["cscore"] = cscore_frame["cscore"].to_numpy()
    proxies = cs.proxies(run)
    correlations = cs.rank_correlations(proxies, targets)

    models = run.models_table()
    mem = scores["mem"].to_numpy()
    summary: dict[str, Any] = {
        "dataset": run.manifest["dataset"]["name"], "n_train": dataset.n_train,
        "n_test": dataset.n_test, "n_models": run.n_models,
        "subset_fraction": config.subset_fraction, "epochs": config.epochs,
        "model": config.model, "model_kwargs": config.model_kwargs,
        "optimizer": config.optimizer, "lr": config.lr, "batch_size": config.batch_size,
        "test_acc_mean": float(models.test_acc.mean()),
        "test_acc_sd": float(models.test_acc.std(ddof=1)) if len(models) > 1 else 0.0,
        "train_acc_in_mean": float(models.train_acc_in.mean()),
        "train_acc_in_min": float(models.train_acc_in.min()),
        "train_acc_out_mean": float(models.train_acc_out.mean()),
        "mem_min": mem_min, "infl_min": infl_min,
        "memorized_fraction": float(np.nanmean(mem >= mem_min)),
        "n_memorized": int(np.sum(np.nan_to_num(mem, nan=-1) >= mem_min)),
        "mem_mean": float(np.nanmean(mem)),
        "se_median": float(np.nanmedian(scores["se"])),
        "error_bound": mz.error_bound(run.n_models, config.subset_fraction),
        "reliability": reliability.spearman, "reliability_sd": reliability.spearman_sd,
        "n_pairs": len(pairs), "n_pairs_near_duplicate": int(pairs["near_duplicate"].sum()),
        "n_pair_tests": int(pairs["test"].nunique()) if len(pairs) else 0,
        "n_pairs_strong": int((pairs["infl"] > STRONG_INFLUENCE).sum()),
        "n_pairs_strong_near_duplicate": int(
            ((pairs["infl"] > STRONG_INFLUENCE) & pairs["near_duplicate"]).sum()),
        "n_near_duplicate_tests": len(duplicates),
        "duplicate_threshold": duplicate_threshold,
    }
    if "corrupted" in scores:
        summary["label_noise_fraction"] = float(scores["corrupted"].mean())
        summary["noise_auroc"] = mz.detection_auroc(mem, scores["corrupted"].to_numpy())
    if cscore_frame is not None:
        summary["spearman_mem_cscore"] = mz.spearman(mem, cscore_frame["cscore"].to_numpy())
    settings = dict(mem_min=mem_min, infl_min=infl_min, same_label=same_label,
                    duplicate_threshold=duplicate_threshold, precision=precision,
                    removal_seeds=removal_seeds if removal else None,
                    cscore_models=cscore_models if cscores else None,
                    cscore_ratios=list(cscore_ratios) if cscores else None)
    result = MemorizationResult(run, scores, infl, pairs, reliability, curve, duplicates,
                                proxies, correlations, summary, settings, advice,
                                cscores=cscore_frame)
    if removal:
        result.removal = removal_study(run, scores, pairs, mem_min, removal_seeds,
                                       device=device, progress=progress)
    result.save()
    if report:
        result.report()
    return result


def memorize(data: Dataset | str = "mnist1d", n_models: int = RECIPE["n_models"],
             subset_fraction: float = RECIPE["subset_fraction"], out: str | Path | None = None,
             *, label_noise: float = 0.0, precision: float = PRECISION,
             mem_min: float = mz.MEMORIZED, infl_min: float = mz.HIGH_INFLUENCE,
             same_label: bool = True, duplicate_threshold: float = mz.NEAR_DUPLICATE,
             removal: bool = False, removal_seeds: int = REMOVAL_SEEDS, cscores: bool = False,
             cscore_models: int = 64, cscore_ratios=cs.RATIOS, report: bool = True,
             **train_kwargs) -> MemorizationResult:
    """Train (or resume) a population on ``data`` and measure what it memorizes.

    Mirrors ``memlab memorize``. ``label_noise``: flip this fraction of training labels
    first (seeded by ``seed``), to check that memorization finds them. ``train_kwargs``
    go to :func:`memlab.population.train_population` (model, epochs, lr, seed, device,
    n_workers, progress, ...); unset ones follow :data:`RECIPE`. Warns (and says how many
    models would do) when ``n_models`` cannot guarantee RMS error ≤ ``precision``.
    """
    dataset = load(data) if isinstance(data, str | Path) else data
    if label_noise:
        dataset = dataset.with_label_noise(label_noise, seed=train_kwargs.get("seed", 0))
    advice = mz.precision_advice(n_models, subset_fraction, precision)
    if advice:
        warnings.warn(advice, stacklevel=2)
    recipe = {k: v for k, v in RECIPE.items() if k not in ("n_models", "subset_fraction")}
    train_kwargs = {**recipe, **train_kwargs}
    run = train_population(dataset, n_models=n_models, subset_fraction=subset_fraction,
                           out=out, **train_kwargs)
    return analyze(run, mem_min=mem_min, infl_min=infl_min, same_label=same_label,
                   duplicate_threshold=duplicate_threshold, precision=precision,
                   removal=removal, removal_seeds=removal_seeds, cscores=cscores,
                   cscore_models=cscore_models, cscore_ratios=cscore_ratios,
                   device=train_kwargs.get("device", "cpu"),
                   n_workers=train_kwargs.get("n_workers"),
                   progress=train_kwargs.get("progress", True), report=report)


# ------------------------------------------------------------------ figures and report

_RC = {"font.size": 8.5, "axes.titlesize": 9, "axes.titleweight": "bold", "axes.labelsize": 8.5,
       "xtick.labelsize": 7.5, "ytick.labelsize": 7.5, "legend.fontsize": 7.5,
       "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False,
       "axes.linewidth": 0.8, "savefig.dpi": 150, "svg.fonttype": "none"}
BLUE, ORANGE, RED, GREY = "#3b6ea8", "#e08a2c", "#c0392b", "#8c8c8c"


def _style():
    import matplotlib.pyplot as plt

    return plt.rc_context(_RC)


def _input_kind(dataset: Dataset) -> str:
    """How an input is drawn: 'image' (C×H×W or H×W), 'signal' (1-D curve)."""
    shape = dataset.input_shape
    if (len(shape) == 3 and shape[0] in (1, 3)) or (len(shape) == 2 and min(shape) > 1):
        return "image"
    return "signal"


def draw_input(ax, x: np.ndarray, kind: str, vertical: bool = False, color: str = "k") -> None:
    """Draw one input as the data is: an image as an image, a 1-D signal as a curve
    (``vertical``: value across, position down, as MNIST-1D's authors draw it)."""
    x = np.asarray(x, np.float32)
    if kind == "image":
        image = x[0] if x.ndim == 3 and x.shape[0] == 1 else x
        if image.ndim == 3:  # C×H×W colour -> H×W×C in [0, 1]
            image = np.moveaxis(image, 0, -1)
            image = (image - image.min()) / max(float(np.ptp(image)), 1e-12)
            ax.imshow(image, interpolation="nearest")
        else:
            ax.imshow(image, cmap="gray_r", interpolation="nearest")
    else:
        signal = x.ravel()
        position = np.arange(len(signal))
        if vertical:
            ax.plot(signal, position, color=color, lw=1.2)
            ax.set_ylim(len(signal) - 1, 0)
        else:
            ax.plot(position, signal, color=color, lw=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(kind != "image")
        spine.set_color("#bbbbbb")


def plot_overview(result: MemorizationResult):
    """(a) histogram of mem, (b) memorization by class, (c) reliability curve."""
    import matplotlib.pyplot as plt

    scores, s = result.scores, result.summary
    mem_min = result.settings["mem_min"]
    with _style():
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.1), constrained_layout=True)
        ax = axes[0]
        low = min(-0.2, float(np.floor(np.nanmin(scores["mem"]) * 20) / 20))
        bins = np.arange(low, 1.0001, 0.05)
        if "corrupted" in scores:
            clean = scores.loc[~scores.corrupted, "mem"].dropna()
            flipped = scores.loc[scores.corrupted, "mem"].dropna()
            ax.hist([clean, flipped], bins=bins, stacked=True, color=[BLUE, ORANGE],
                    label=["original label", "flipped label"])
            ax.legend(loc="upper left")
        else:
            ax.hist(scores["mem"].dropna(), bins=bins, color=BLUE)
        ax.axvline(mem_min, color=RED, ls="--", lw=1)
        ax.text(mem_min + 0.03, 0.97, f"mem ≥ {mem_min:g}: {s['memorized_fraction']:.1%}",
                transform=ax.get_xaxis_transform(), va="top", color=RED, fontsize=7.5)
        ax.set_xlabel("memorization score  mem(i)")
        ax.set_ylabel("training examples")
        ax.set_title("(a) Memorization scores", loc="left")

        ax = axes[1]
        dataset = result.run.dataset
        classes = np.arange(dataset.n_classes)
        labels = scores["label"].to_numpy()
        mem = scores["mem"].to_numpy()
        fraction = [np.mean(mem[labels == c] >= mem_min) if (labels == c).any() else np.nan
                    for c in classes]
        mean = [np.nanmean(mem[labels == c]) if (labels == c).any() else np.nan
                for c in classes]
        ax.bar(classes, fraction, color=BLUE, width=0.7, label=f"fraction with mem ≥ {mem_min:g}")
        ax.plot(classes, mean, "o", color="black", ms=4, label="mean mem")
        ax.set_xticks(classes)
        ax.set_xticklabels([_label(dataset, int(c)) for c in classes])
        ax.set_ylim(0, 1.19)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_xlabel("given label")
        ax.set_ylabel("fraction / mean score")
        ax.set_title("(b) Memorization by class", loc="left")
        ax.legend(loc="upper center", ncols=2)

        plot_reliability(result.reliability_curve, ax=axes[2])
        axes[2].set_title("(c) Split-half reliability", loc="left")
    return fig


def plot_reliability(curve: pd.DataFrame, ax=None, label: str | None = None):
    """Spearman correlation between the scores of two disjoint halves vs number of models."""
    import matplotlib.pyplot as plt

    with _style():
        if ax is None:
            fig, ax = plt.subplots(figsize=(4.2, 3.0), constrained_layout=True)
        else:
            fig = ax.figure
        ax.errorbar(curve.n_models, curve.spearman, yerr=curve.spearman_sd, marker="o", ms=3.5,
                    color=BLUE, lw=1.2, capsize=2, label=label)
        for row in curve.itertuples():
            ax.annotate(f"{row.spearman:.2f}", (row.n_models, row.spearman),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=6.5,
                        color="#333333")
        ax.set_xscale("log", base=2)
        ticks = curve.n_models.to_numpy()
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_ylim(min(0.0, float(np.nanmin(curve.spearman)) - 0.05), 1.02)
        ax.set_xlabel("models in the population (split into two halves)")
        ax.set_ylabel("Spearman ρ between halves")
        ax.grid(axis="y", color="#eeeeee", lw=0.6)
    return fig


def _label(dataset: Dataset, y: int) -> str:
    return dataset.class_names[y] if 0 <= y < len(dataset.class_names) else "?"


def plot_examples(result: MemorizationResult, k: int = 24, per_row: int = 8):
    """The ``k`` most memorized training examples, drawn as the data is, with their given
    label and the label the models that held them out predict."""
    import matplotlib.pyplot as plt

    dataset = result.run.dataset
    kind = _input_kind(dataset)
    vertical = kind == "signal" and dataset.name == "mnist1d"
    top = result.scores.sort_values(["mem", "se"], ascending=[False, True]).head(k)
    rows = max(1, math.ceil(len(top) / per_row))
    height = 1.9 if vertical or kind == "image" else 1.4
    with _style():
        fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 1.3, rows * height),
                                 squeeze=False, constrained_layout=True)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, row in zip(axes.flat, top.itertuples()):
            ax.set_axis_on()
            draw_input(ax, dataset.x_train[row.index], kind, vertical)
            ax.set_title(f"#{row.index}  mem {row.mem:.2f}", fontsize=7, fontweight="normal")
            given = _label(dataset, int(row.label))
            if "original_label" in result.scores and row.corrupted:
                given += f" (was {_label(dataset, int(row.original_label))})"
            predicted = _label(dataset, int(row.pred_out))
            ax.set_xlabel(f"given {given}\npredicted {predicted}", fontsize=7,
                          color=RED if int(row.pred_out) != int(row.label) else "black")
    return fig


def plot_pairs(result: MemorizationResult, k: int = 12, per_row: int = 4):
    """The ``k`` strongest high-influence pairs: the training example (left) beside the
    test example it helps (right); near-duplicates flagged."""
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    dataset = result.run.dataset
    kind = _input_kind(dataset)
    vertical = kind == "signal" and dataset.name == "mnist1d"
    pairs = result.pairs.head(k)
    rows = max(1, math.ceil(len(pairs) / per_row))
    height = 2.1 if vertical or kind == "image" else 1.6
    with _style():
        fig = plt.figure(figsize=(per_row * 2.6, rows * height), constrained_layout=True)
        ratios = []
        for p in range(per_row):
            ratios += [1, 1] + ([0.35] if p < per_row - 1 else [])
        grid = GridSpec(rows, len(ratios), figure=fig, width_ratios=ratios)
        for n, pair in enumerate(pairs.itertuples()):
            r, p = divmod(n, per_row)
            left = fig.add_subplot(grid[r, 3 * p])
            right = fig.add_subplot(grid[r, 3 * p + 1])
            draw_input(left, dataset.x_train[pair.train], kind, vertical)
            draw_input(right, dataset.x_test[pair.test], kind, vertical,
                       color=RED if pair.near_duplicate else "k")
            left.set_title(f"train #{pair.train}", fontsize=7, fontweight="normal")
            right.set_title(f"test #{pair.test}", fontsize=7, fontweight="normal")
            left.set_xlabel(f"label {_label(dataset, int(pair.train_label))}\n"
                            f"mem {pair.mem:.2f}", fontsize=7)
            flag = "near-duplicate" if pair.near_duplicate else f"cos {pair.cosine:.2f}"
            right.set_xlabel(f"infl {pair.infl:.2f}±{pair.infl_se:.2f}\n{flag}", fontsize=7,
                             color=RED if pair.near_duplicate else "black")
    return fig


def plot_removal(study: RemovalStudy):
    """Test accuracy (and accuracy on the high-influence test examples) of models trained
    on the full set, without the memorized examples, and without as many random ones."""
    import matplotlib.pyplot as plt

    arms = ["full", "memorized", "random"]
    names = ["full training set", f"without {study.n_removed:,}\nmemorized",
             f"without {study.n_removed:,}\nrandom"]
    colors = [GREY, ORANGE, BLUE]
    metrics = [("test_acc", "(a) Test accuracy"),
               ("high_influence_acc", "(b) Accuracy on high-influence test examples")]
    rng = np.random.default_rng(0)
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.0), constrained_layout=True)
        for ax, (metric, title) in zip(axes, metrics):
            for position, (arm, color) in enumerate(zip(arms, colors)):
                values = study.table.loc[study.table.arm == arm, metric].to_numpy()
                if not np.isfinite(values).any():
                    continue
                jitter = rng.uniform(-0.12, 0.12, len(values))
                ax.scatter(position + jitter, values, s=10, color=color, alpha=0.6, lw=0)
                mean, low, high = t_interval(values)
                ax.errorbar(position + 0.28, mean, yerr=[[mean - low], [high - mean]], fmt="o",
                            color=color, ms=5, capsize=3, lw=1.4)
                ax.annotate(f"{mean:.3f}", (position + 0.36, mean), va="center", fontsize=7)
            ax.set_xticks(range(3))
            ax.set_xticklabels(names)
            ax.set_xlim(-0.5, 2.8)
            ax.set_ylabel("accuracy (95% CI over seeds)")
            ax.set_title(title, loc="left")
            ax.grid(axis="y", color="#eeeeee", lw=0.6)
    return fig


def plot_cscores(result: MemorizationResult):
    """(a) histogram of C-scores, (b) memorization against C-score."""
    import matplotlib.pyplot as plt

    frame, scores = result.cscores, result.scores
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.0), constrained_layout=True)
        axes[0].hist(frame["cscore"].dropna(), bins=np.linspace(0, 1, 41), color=BLUE)
        axes[0].set_xlabel("C-score (held-out accuracy, mean over subset ratios)")
        axes[0].set_ylabel("training examples")
        axes[0].set_title("(a) C-scores", loc="left")
        ax = axes[1]
        ax.scatter(frame["cscore"], scores["mem"], s=3, alpha=0.35, color=BLUE, lw=0,
                   rasterized=True)
        if "corrupted" in scores:
            c = scores.corrupted.to_numpy()
            ax.scatter(frame["cscore"][c], scores["mem"][c], s=9, marker="x", color=RED,
                       lw=0.6, label="flipped label", rasterized=True)
            ax.legend(loc="upper right")
        ax.set_xlabel("C-score")
        ax.set_ylabel("memorization score")
        rho = result.summary.get("spearman_mem_cscore", float("nan"))
        ax.set_title(f"(b) Memorization vs C-score (Spearman {rho:.2f})", loc="left")
    return fig


def _fmt_interval(mean: float, low: float, high: float, digits: int = 3) -> str:
    if not np.isfinite(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def build_report(result: MemorizationResult):
    """The study's HTML page (memlab.report.Report): figures inline, no external files."""
    from memlab.report import Report

    s, settings, run = result.summary, result.settings, result.run
    dataset = run.dataset
    hidden = s["model_kwargs"].get("hidden", [100, 100]) if s["model"] == "mlp" else None
    widths = [math.prod(dataset.input_shape), *(hidden or []), dataset.n_classes]
    arch = f"MLP {'-'.join(map(str, widths))}" if hidden is not None else s["model"]
    report = Report(f"Memorization and influence: {s['dataset']}")
    report.text(
        f"{s['n_models']:,} models ({arch}), each trained on a random {s['subset_fraction']:.0%} "
        f"of the {s['n_train']:,} training examples for {s['epochs']} epochs ({s['optimizer']}, "
        f"lr {s['lr']:g}, batch {s['batch_size']}). For every training example i, mem(i) is "
        "the accuracy on it of the models that trained on it minus that of the models that "
        "held it out; influence infl(i, j) is the same difference on test example j "
        "(Feldman & Zhang 2020). Standard errors are binomial; reliability is the Spearman "
        "correlation between scores from two disjoint halves of the models.")
    if result.advice:
        report.text("Precision: " + result.advice, note=True)

    rows = [
        ("models × subset fraction", f"{s['n_models']:,} × {s['subset_fraction']:g}"),
        ("population test accuracy (mean ± sd over models)",
         f"{s['test_acc_mean']:.3f} ± {s['test_acc_sd']:.3f}"),
        ("subset-model training accuracy, IN (mean; worst model)",
         f"{s['train_acc_in_mean']:.3f}; {s['train_acc_in_min']:.3f}"),
        ("accuracy on held-out training examples, OUT (mean)", f"{s['train_acc_out_mean']:.3f}"),
        (f"examples with mem ≥ {s['mem_min']:g}",
         f"{s['n_memorized']:,} ({s['memorized_fraction']:.1%})"),
        ("mean memorization score", f"{s['mem_mean']:.3f}"),
        ("median standard error of mem", f"{s['se_median']:.3f}"),
        ("a-priori RMS error bound (SCIENCE.md §1)", f"{s['error_bound']:.3f}"),
        ("split-half reliability (Spearman)",
         f"{s['reliability']:.3f} ± {s['reliability_sd']:.3f}"),
        (f"high-influence pairs (mem ≥ {s['mem_min']:g}, infl ≥ {s['infl_min']:g}, same label)",
         f"{s['n_pairs']:,} ({s['n_pair_tests']:,} test examples)"),
        (f"… of which near-duplicates (cosine ≥ {s['duplicate_threshold']:g})",
         f"{s['n_pairs_near_duplicate']:,}"),
        (f"pairs with infl > {STRONG_INFLUENCE:g} (near-duplicates among them)",
         f"{s['n_pairs_strong']:,} ({s['n_pairs_strong_near_duplicate']:,})"),
        ("test examples with a near-duplicate in training", f"{s['n_near_duplicate_tests']:,}"),
    ]
    if "noise_auroc" in s:
        rows.append((f"AUROC of mem for the {s['label_noise_fraction']:.0%} flipped labels",
                     f"{s['noise_auroc']:.3f}"))
    if "spearman_mem_cscore" in s:
        rows.append(("Spearman(mem, C-score)", f"{s['spearman_mem_cscore']:.3f}"))
    report.table(pd.DataFrame(rows, columns=["quantity", "value"]), caption="Summary")
    if s["train_acc_in_mean"] < 0.95:
        report.text(f"The subset models reach only {s['train_acc_in_mean']:.1%} accuracy on "
                    "their own training examples: under-trained models inflate memorization "
                    "and marginal-utility estimates. Consider more epochs.", note=True)

    report.heading("Memorization scores")
    report.figure(plot_overview(result), fmt="png", caption=(
        "(a) Distribution of memorization scores; dashed: the threshold for 'memorized'. "
        "(b) Per class (given label): the fraction of training examples memorized (bars) and "
        "the mean score (dots). (c) Agreement of the scores from two disjoint halves of the "
        "population, as the population grows (mean ± sd over random splits)."))

    report.heading("Most memorized examples")
    report.figure(plot_examples(result), fmt="png", caption=(
        "The most memorized training examples with their given label and the label the "
        "models that held them out predict most often (red: they disagree)."))
    columns = ["index", "label", *(["original_label"] if "original_label" in result.scores
                                   else []), "pred_out", "mem", "se", "acc_in", "acc_out",
               "n_in", "n_out"]
    report.table(result.memorized[columns].head(20), caption="Top 20 memorized examples",
                 float_format="{:.3f}")

    report.heading("High-influence pairs")
    if len(result.pairs):
        report.figure(plot_pairs(result), fmt="png", caption=(
            "Training example (left) and the test example whose accuracy depends on it "
            "(right), strongest first. Red: near-duplicate inputs (cosine similarity of the "
            f"centred inputs ≥ {s['duplicate_threshold']:g}), the known confounder."))
        report.table(result.pairs.head(20), float_format="{:.3f}", caption=(
            "Top 20 high-influence pairs (nn_rank: rank of the training input among the test "
            "input's nearest training neighbours)"))
    else:
        report.text("No pair passes the thresholds.")

    report.heading("Reliability")
    report.table(result.reliability_curve, float_format="{:.3f}", caption=(
        "Split-half reliability: Spearman correlation of memorization scores from two "
        "disjoint halves of n_models models (mean and sd over random splits)"))

    if result.removal is not None:
        study = result.removal
        report.heading("Marginal utility: removing memorized examples")
        report.text(
            f"{study.settings['seeds']} seeds per arm, each trained on the whole training set, "
            f"on the set without the {study.n_removed:,} examples with mem ≥ "
            f"{study.threshold:g}, and without {study.n_removed:,} random examples (a new "
            "random set per seed); same recipe as the population, and seed s starts every arm "
            "from the same weights. Intervals: 95% Student-t over seeds; differences are "
            f"paired by seed. {len(study.high_influence_tests):,} test examples belong to "
            f"high-influence pairs; {s['n_pairs_near_duplicate']:,} of the "
            f"{s['n_pairs']:,} pairs are near-duplicates.")
        report.figure(plot_removal(study), fmt="svg", caption=(
            "Points: seeds; bars: mean with 95% confidence interval."))
        summary = study.summary()
        summary["mean [95% CI]"] = [_fmt_interval(r.mean, r.ci_low, r.ci_high)
                                    for r in summary.itertuples()]
        report.table(summary[["comparison", "metric", "mean [95% CI]", "seeds"]],
                     caption="Removal study (train_acc: each arm's models on their own "
                             "training set)")

    report.heading("Difficulty proxies")
    if result.cscores is not None:
        report.figure(plot_cscores(result), fmt="png", caption=(
            "C-scores: each example's accuracy under models that held it out, averaged over "
            f"subset ratios {', '.join(f'{r:g}' for r in settings['cscore_ratios'])} "
            f"({settings['cscore_models']} models per ratio; the population itself at "
            f"{s['subset_fraction']:g})."))
    report.table(result.proxy_correlations, float_format="{:.3f}", caption=(
        "Spearman correlation of cheap proxies from the training records (averaged over the "
        "models that trained on each example) with memorization and held-out accuracy"
        + ("" if "first_learned" in result.proxies else
           "; train with --record-epochs for first_learned and cumulative_accuracy")))

    report.heading("Reproduce")
    report.code(_command(result))
    return report


def _command(result: MemorizationResult) -> str:
    s, c = result.summary, result.run.config
    parts = ["memlab memorize", f"--data {s['dataset']}", f"--models {s['n_models']}",
             f"--subset {s['subset_fraction']:g}", f"--epochs {c.epochs}",
             f"--optimizer {c.optimizer}", f"--lr {c.lr:g}", f"--batch-size {c.batch_size}"]
    if c.model != "mlp":
        parts.append(f"--model {c.model}")
    if c.model_kwargs.get("hidden"):
        parts.append("--hidden " + ",".join(str(w) for w in c.model_kwargs["hidden"]))
    noise = result.run.dataset.corruption.get("label_noise")
    if noise:
        parts.append(f"--label-noise {noise['fraction']:g}")
    if c.seed:
        parts.append(f"--seed {c.seed}")
    if c.record_epochs:
        parts.append("--record-epochs")
    if result.removal is not None:
        parts.append(f"--removal --removal-seeds {result.removal.settings['seeds']}")
    if result.cscores is not None:
        parts.append(f"--cscores --cscore-models {result.settings['cscore_models']}")
    parts.append(f"--out {result.run.path}")
    lines, line = [], parts[0]
    for part in parts[1:]:  # wrap like a shell command, so the page never scrolls sideways
        if len(line) + len(part) > 76:
            lines.append(line + " \\")
            line = "   "
        line += " " + part
    return "\n".join([*lines, line])

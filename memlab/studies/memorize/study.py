"""The memorization study: population → scores → influence → pairs → removal → report.

    from memlab.studies.memorize import MemorizeConfig, run
    result = run(MemorizeConfig(), out="runs/memorize")      # the README's demo
    result.tables["scores"]     # one row per training example: mem, se, acc_in, acc_out, ...
    result.tables["pairs"]      # high-influence pairs, near-duplicates flagged
    result.summary["reliability"], result.report()

Definitions and estimators: docs/science.md §1 (Feldman 2020; Feldman & Zhang 2020). The
population is trained (or resumed) in ``OUT/population``; the study writes ``tables/``,
``summary.json``, ``report.html`` and the influence matrix ``influence.npy`` (+
``influence_se.npy``, memory-mapped) into ``OUT``; the removal study's arms live in
``OUT/removal/`` and the C-score sweep's populations in ``OUT/cscores/``, each a resumable
run. The figures are drawn from the tables alone: the inputs the example and pair figures
show are stored in the ``examples`` and ``top_pairs`` tables (flattened, with the input
shape in the summary), so ``Result.load(OUT).figures()`` needs no run directory.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab.errors import ConfigError
from memlab.measures import cscores as cs
from memlab.measures import memorization as mz
from memlab.population.config import PopulationConfig
from memlab.studies.base import Result, StudyConfig, saved_result
from memlab.studies.memorize import removal as rm

STUDY = "memorize"
# The recipe of ``memlab memorize`` with no arguments: MNIST-1D, the MLP 40-100-100-10,
# trained to fit its subsets (≈99% training accuracy), 1,000 models at r = 0.7.
RECIPE = PopulationConfig(n_models=1000, subset_fraction=0.7, epochs=30, batch_size=64,
                          optimizer="adam", lr=0.005)
TARGET_SE = 0.1  # default requested RMS error of every score (docs/science.md §1 bound)
STRONG_INFLUENCE = 0.4  # Feldman & Zhang: pairs above this are mostly near-duplicates
REMOVAL_SEEDS = 8
CSCORE_MODELS = 64
N_EXAMPLES = 24  # most memorized examples drawn in the report
N_PAIRS = 12  # strongest pairs drawn in the report
CLI_DATA = ("mnist1d", "digits", "mnist")  # memlab.data.BUILTIN: names `--data` knows
CLI_MODELS = ("mlp", "cnn1d", "cnn2d")  # names `--model` knows without Python registration
STREAM_N_TRAIN = 7  # numpy stream [seed, 7]: which training examples n_train keeps


class TargetSEWarning(UserWarning):
    """``n_models`` cannot guarantee the requested RMS error of every score."""


@dataclass(frozen=True)
class MemorizeConfig(StudyConfig):
    """Memorization and influence of one population (docs/science.md §1).

    data: a built-in dataset name or a path (``.npz`` / directory of ``.npy``); None when
        the dataset is passed to :func:`run` as an object (Python only).
    n_train: train on a random subset of this many training examples (None: all).
    label_noise: flip this fraction of training labels first (seeded by the population's
        seed): planted examples that memorization must find.
    population: the recipe (default: the README's demo, 1,000 MLPs on 70% subsets).
    mem_min, infl_min, same_label, duplicate_threshold: what counts as memorized, a
        high-influence pair, and a near-duplicate pair (cosine of centred inputs).
    target_se: the wanted RMS error of every score; a warning says how many models reach
        it when ``population.n_models`` cannot.
    removal, removal_seeds: the marginal-utility study and its models per arm.
    cscores, cscore_models, cscore_ratios: the C-score sweep (one population per ratio;
        the main population serves at its own ratio).
    """

    data: str | None = "mnist1d"
    n_train: int | None = None
    label_noise: float = 0.0
    population: PopulationConfig = field(default_factory=lambda: RECIPE)
    mem_min: float = mz.MEMORIZED
    infl_min: float = mz.HIGH_INFLUENCE
    same_label: bool = True
    duplicate_threshold: float = mz.NEAR_DUPLICATE
    target_se: float = TARGET_SE
    reliability_splits: int = 5
    removal: bool = False
    removal_seeds: int = REMOVAL_SEEDS
    cscores: bool = False
    cscore_models: int = CSCORE_MODELS
    cscore_ratios: tuple[float, ...] = cs.RATIOS
    device: str = "cpu"
    n_workers: int | None = None

    @classmethod
    def quick(cls, **changes: Any) -> MemorizeConfig:
        """32 MLPs (64-256-10) on digits with 10% of the labels flipped, 50 epochs: the
        flipped labels stand out (under a minute on 2 cores)."""
        population = dataclasses.replace(RECIPE, n_models=32, epochs=50, batch_size=32,
                                         model_kwargs={"hidden": [256]})
        return cls(**{**dict(data="digits", label_noise=0.1, population=population),
                      **changes})

    @classmethod
    def full(cls, **changes: Any) -> MemorizeConfig:
        """The README's MNIST-1D study: the demo with the removal study."""
        return cls(**{**dict(removal=True), **changes})

    def validate(self) -> None:
        """Refuse settings the study cannot use, with the fix."""
        def unit(name: str, value: float) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value <= 1:
                raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")

        if not isinstance(self.population, PopulationConfig):
            raise ConfigError("population must be a memlab.population.PopulationConfig")
        if self.population.subsets != "random" or self.population.sweep:
            raise ConfigError("the memorization study draws random subsets for one recipe: "
                              "use population.subsets='random' and no sweep (train explicit "
                              "masks or sweeps with memlab train)")
        if self.population.task == "language_model":
            raise ConfigError("memorize scores classifiers; for language models use "
                              "memlab lm-memorize")
        for name in ("mem_min", "infl_min", "duplicate_threshold"):
            unit(name, getattr(self, name))
        if not 0 <= self.label_noise < 1:
            raise ConfigError(f"label_noise must lie in [0, 1), got {self.label_noise}")
        if not (isinstance(self.target_se, int | float) and math.isfinite(self.target_se)
                and self.target_se > 0):
            raise ConfigError(f"target_se must be a positive number, got {self.target_se!r}")
        if self.n_train is not None and (isinstance(self.n_train, bool)
                                         or not isinstance(self.n_train, int)
                                         or self.n_train < 2):
            raise ConfigError(f"n_train must be an integer >= 2 or None, got {self.n_train!r}")
        if self.removal and self.removal_seeds < 2:
            raise ConfigError(f"removal_seeds must be at least 2 (intervals over seeds), got "
                              f"{self.removal_seeds}")
        if self.reliability_splits < 1 or self.cscore_models < 1:
            raise ConfigError("reliability_splits and cscore_models must be positive")
        if self.cscores and (not self.cscore_ratios
                             or not all(0 < r < 1 for r in self.cscore_ratios)):
            raise ConfigError(f"cscore_ratios must be numbers in (0, 1), got "
                              f"{self.cscore_ratios}")


# ------------------------------------------------------------------ the Reproduce line


def python_only(config: MemorizeConfig) -> list[str]:
    """Why no ``memlab memorize`` command recreates ``config`` (empty when one does)."""
    p, default = config.population, PopulationConfig()
    reasons = []
    if config.data is None:
        reasons.append("the dataset was passed to run() as a Python object")
    if p.model not in CLI_MODELS and ":" not in p.model:
        reasons.append(f"model {p.model!r} is registered in Python (the command line knows "
                       f"{', '.join(CLI_MODELS)} and package.module:factory)")
    for name in ("init", "reinit"):
        if getattr(p, name) != getattr(default, name):
            reasons.append(f"population.{name} has no command-line option")
    if config.reliability_splits != MemorizeConfig().reliability_splits:
        reasons.append("reliability_splits has no command-line option")
    return reasons


def _number(value: float) -> str:
    return repr(float(value)) if float(value) != int(value) else str(int(value))


def command_parts(config: MemorizeConfig) -> list[str]:
    """The ``memlab memorize`` arguments that recreate ``config`` (every setting that
    differs from the command's defaults), as a list of shell words."""
    base, p, d = MemorizeConfig(), config.population, RECIPE
    parts: list[str] = []

    def flag(name: str, value: Any, default: Any, text: str | None = None) -> None:
        if value != default:
            parts.extend([name, text if text is not None else str(value)])

    def switch(name: str, on: bool) -> None:
        if on:
            parts.append(name)

    flag("--data", config.data, base.data)
    flag("--n-train", config.n_train, base.n_train)
    flag("--label-noise", config.label_noise, base.label_noise, _number(config.label_noise))
    flag("--model", p.model, d.model)
    kwargs = dict(p.model_kwargs)
    hidden = kwargs.pop("hidden", None)
    if hidden is not None:
        parts.extend(["--hidden", ",".join(str(int(w)) for w in hidden)])
    for key, value in kwargs.items():
        import json

        parts.extend(["--model-option", f"{key}={json.dumps(value, separators=(',', ':'))}"])
    flag("--task", p.task, d.task)
    flag("--models", p.n_models, d.n_models)
    flag("--subset", p.subset_fraction, d.subset_fraction, _number(p.subset_fraction))
    flag("--epochs", p.epochs, d.epochs)
    flag("--batch-size", p.batch_size, d.batch_size)
    flag("--optimizer", p.optimizer, d.optimizer)
    flag("--lr", p.lr, d.lr, _number(p.lr))
    flag("--momentum", p.momentum, d.momentum, _number(p.momentum))
    switch("--nesterov", p.nesterov)
    flag("--weight-decay", p.weight_decay, d.weight_decay, _number(p.weight_decay))
    switch("--no-decay-bias-norm", not p.decay_bias_and_norm)
    flag("--schedule", p.schedule, d.schedule)
    flag("--warmup-epochs", p.warmup_epochs, d.warmup_epochs, _number(p.warmup_epochs))
    flag("--lr-step-epochs", p.lr_step_epochs, d.lr_step_epochs)
    flag("--lr-gamma", p.lr_gamma, d.lr_gamma, _number(p.lr_gamma))
    flag("--clip-grad-norm", p.clip_grad_norm, d.clip_grad_norm, _number(p.clip_grad_norm))
    flag("--label-smoothing", p.label_smoothing, d.label_smoothing,
         _number(p.label_smoothing))
    for spec in p.augment:
        parts.extend(["--augment", spec])
    flag("--input-noise", p.input_noise, d.input_noise, _number(p.input_noise))
    flag("--input-dropout", p.input_dropout, d.input_dropout, _number(p.input_dropout))
    flag("--seed", p.seed, d.seed)
    switch("--record-epochs", p.record_epochs)
    switch("--no-weights", not p.save_weights)
    switch("--compact-records", p.compact_records)
    flag("--chunk-size", p.chunk_size, d.chunk_size)
    flag("--compute-dtype", p.compute_dtype, d.compute_dtype)
    flag("--device", config.device, base.device)
    flag("--workers", config.n_workers, base.n_workers)
    flag("--target-se", config.target_se, base.target_se, _number(config.target_se))
    flag("--threshold", config.mem_min, base.mem_min, _number(config.mem_min))
    flag("--infl-min", config.infl_min, base.infl_min, _number(config.infl_min))
    switch("--any-label", not config.same_label)
    flag("--duplicate-threshold", config.duplicate_threshold, base.duplicate_threshold,
         _number(config.duplicate_threshold))
    switch("--removal", config.removal)
    flag("--removal-seeds", config.removal_seeds, base.removal_seeds)
    switch("--cscores", config.cscores)
    flag("--cscore-models", config.cscore_models, base.cscore_models)
    flag("--cscore-ratios", tuple(config.cscore_ratios), tuple(base.cscore_ratios),
         ",".join(_number(r) for r in config.cscore_ratios))
    return parts


def reproduce_command(config: MemorizeConfig, out: str | Path | None = None,
                      width: int = 88) -> str | None:
    """The ``memlab memorize ...`` command that recreates ``config`` (wrapped like a shell
    command at ``width`` columns), or None when no command can (see :func:`python_only`)."""
    if python_only(config):
        return None
    words = ["memlab", "memorize", *command_parts(config)]
    if out is not None:
        words += ["--out", str(out)]
    quoted = [shlex.quote(w) for w in words]
    # Keep each option with its value on one line.
    groups, i = [], 2
    groups.append(" ".join(quoted[:2]))
    while i < len(quoted):
        if i + 1 < len(quoted) and not words[i + 1].startswith("--"):
            groups.append(f"{quoted[i]} {quoted[i + 1]}")
            i += 2
        else:
            groups.append(quoted[i])
            i += 1
    lines, line = [], groups[0]
    for group in groups[1:]:
        if len(line) + len(group) + 3 > width:
            lines.append(line + " \\")
            line = "   "
        line += " " + group
    return "\n".join([*lines, line])


# ------------------------------------------------------------------ the data


def training_data(config: MemorizeConfig, dataset=None):
    """The dataset the population trains on: ``config.data`` (or ``dataset``), a random
    ``n_train`` of its training examples, then ``label_noise`` of the labels flipped."""
    from memlab.data import load

    if dataset is None:
        if config.data is None:
            raise ConfigError("MemorizeConfig.data is None: pass the dataset to run(config, "
                              "out, dataset=...) or name one (mnist1d, digits, mnist, a path)")
        dataset = load(config.data)
    elif config.data is not None:
        raise ConfigError("give either MemorizeConfig.data or run(..., dataset=...), not both "
                          "(set data=None when passing a dataset)")
    if config.n_train is not None and config.n_train < dataset.n_train:
        keep = np.sort(np.random.default_rng([config.population.seed, STREAM_N_TRAIN]).choice(
            dataset.n_train, config.n_train, replace=False))
        dataset = dataset.subset(keep)
        dataset.name = f"{dataset.name}-{config.n_train}"
    if config.label_noise:
        dataset = dataset.with_label_noise(config.label_noise, seed=config.population.seed)
    return dataset


def _flat_inputs(x: np.ndarray, rows: np.ndarray) -> list[list[float]]:
    return [np.asarray(x[int(i)], np.float32).ravel().tolist() for i in rows]


def _vertical(dataset) -> bool:
    """MNIST-1D's authors draw a signal vertically (value across, position down)."""
    return dataset.name.startswith("mnist1d")


# ------------------------------------------------------------------ run


def run(config: MemorizeConfig, out: str | Path | None = None, progress: bool = True, *,
        dataset=None, executor: str = "local", ray_address: str | None = None) -> Result:
    """Train (or resume) the population in ``OUT/population``, measure memorization,
    influence, pairs, reliability (and the removal study and C-scores when asked), and write
    the result into ``out`` (default ``runs/memorize``). Resumable: a second call with the
    same config and ``out`` returns the saved result; the populations resume on their own.

    dataset: a :class:`memlab.data.Dataset` to use instead of ``config.data`` (which must
    then be None). executor / ray_address: where the chunks train (results do not depend
    on it).
    """
    from memlab.population import train_population

    config.validate()
    out = Path(out if out is not None else "runs/memorize")
    saved = saved_result(out, STUDY, config)
    if saved is not None and (dataset is None or saved.summary.get("fingerprint")
                              == dataset.fingerprint()):
        return saved

    p = config.population
    advice = mz.precision_advice(p.n_models, p.subset_fraction, config.target_se)
    if advice:
        advice = advice.replace("requested precision", "requested standard error (target_se)")
        warnings.warn(advice, TargetSEWarning, stacklevel=2)
    data = training_data(config, dataset)
    engine = dict(device=config.device, n_workers=config.n_workers, executor=executor,
                  ray_address=ray_address, progress=progress)
    started = time.perf_counter()
    population = train_population(data, p, out=out / "population", **engine)
    seconds = {"train": time.perf_counter() - started}

    clock = time.perf_counter()
    scores = mz.memorization(population)
    infl = mz.influence(population, out=out / "influence.npy")
    pairs = mz.high_influence_pairs(population, config.mem_min, config.infl_min,
                                    config.same_label, scores=scores, infl=infl,
                                    duplicate_threshold=config.duplicate_threshold)
    mask, train_correct = population.membership_mask, population.records("train_correct")
    curve = mz.reliability_curve(mask, train_correct, n_splits=config.reliability_splits,
                                 seed=p.seed)  # ends with all the models
    duplicates = mz.near_duplicates(data, config.duplicate_threshold)
    mem = scores["mem"].to_numpy()

    tables: dict[str, pd.DataFrame] = {"scores": scores, "pairs": pairs, "reliability": curve,
                                       "near_duplicates": duplicates}
    targets = {"mem": mem,
               f"acc_out (C-score at r={p.subset_fraction:g})": scores["acc_out"].to_numpy()}
    if config.cscores:
        recipe = {k: v for k, v in dataclasses.asdict(p).items()
                  if k not in ("n_models", "subset_fraction")}
        reuse = {r: population for r in config.cscore_ratios
                 if math.isclose(r, p.subset_fraction)}
        runs = cs.cscore_sweep(data, config.cscore_ratios, config.cscore_models,
                               out=out / "cscores", reuse=reuse, **engine, **recipe)
        tables["cscores"] = cs.cscores(runs)
        targets["cscore"] = tables["cscores"]["cscore"].to_numpy()
    tables["proxies"] = cs.proxies(population)
    tables["proxy_correlations"] = cs.rank_correlations(tables["proxies"], targets)
    tables["classes"] = class_table(scores, data.n_classes, config.mem_min)
    top = scores.sort_values(["mem", "se"], ascending=[False, True]).head(N_EXAMPLES).copy()
    top["input"] = _flat_inputs(data.x_train, top["index"].to_numpy())
    tables["examples"] = top.reset_index(drop=True)
    strongest = pairs.head(N_PAIRS).copy()
    strongest["train_input"] = _flat_inputs(data.x_train, strongest["train"].to_numpy())
    strongest["test_input"] = _flat_inputs(data.x_test, strongest["test"].to_numpy())
    tables["top_pairs"] = strongest
    seconds["analysis"] = time.perf_counter() - clock

    summary = headline(config, population, data, scores, pairs, curve, duplicates, tables)
    summary["advice"] = advice
    if config.removal:
        clock = time.perf_counter()
        removed = np.flatnonzero(np.nan_to_num(mem, nan=-np.inf) >= config.mem_min)
        tests = np.unique(pairs["test"].to_numpy()).astype(np.int64)
        table = rm.removal_table(population, removed, tests, config.removal_seeds,
                                 out / "removal", **engine)
        tables["removal"] = table
        tables["removal_summary"] = rm.removal_summary(table)
        summary["removal"] = {
            "seeds": config.removal_seeds, "threshold": config.mem_min,
            "n_removed": int(len(removed)), "n_high_influence_tests": int(len(tests)),
            "sets": rm.sets_digest(removed, tests),
            "test_acc_verdict": rm.verdict(tables["removal_summary"], "test_acc"),
            "high_influence_acc_verdict": rm.verdict(tables["removal_summary"],
                                                     "high_influence_acc")}
        seconds["removal"] = time.perf_counter() - clock
    summary["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    result = Result(STUDY, config.to_dict(), tables, summary)
    result.save(out)
    return result


def class_table(scores: pd.DataFrame, n_classes: int, mem_min: float) -> pd.DataFrame:
    """Per given label: examples, fraction with mem ≥ mem_min, mean mem."""
    rows = []
    for c in range(n_classes):
        mem = scores.loc[scores["label"] == c, "mem"].to_numpy()
        finite = mem[np.isfinite(mem)]
        rows.append(dict(label=c, n=len(mem),
                         memorized_fraction=float(np.mean(finite >= mem_min))
                         if len(finite) else float("nan"),
                         mem_mean=float(finite.mean()) if len(finite) else float("nan")))
    return pd.DataFrame(rows)


def headline(config: MemorizeConfig, population, data, scores: pd.DataFrame,
             pairs: pd.DataFrame, curve: pd.DataFrame, duplicates: pd.DataFrame,
             tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The summary's numbers (strict JSON: NaN becomes null when saved)."""
    from memlab.report import input_kind

    p = config.population
    models = population.models_table()
    mem = scores["mem"].to_numpy()
    strong = pairs["infl"] > STRONG_INFLUENCE
    summary: dict[str, Any] = {
        "dataset": population.manifest["dataset"]["name"], "run_dir": str(population.path),
        "fingerprint": population.manifest["dataset"]["fingerprint"],
        "n_train": data.n_train, "n_test": data.n_test, "n_classes": data.n_classes,
        "class_names": list(data.class_names), "input_shape": list(data.input_shape),
        "input_kind": input_kind(tuple(data.input_shape)), "vertical": _vertical(data),
        "n_models": population.n_models, "subset_fraction": p.subset_fraction,
        "epochs": p.epochs, "model": p.model, "model_kwargs": p.model_kwargs,
        "optimizer": p.optimizer, "lr": p.lr, "batch_size": p.batch_size,
        "weight_decay": p.weight_decay,
        "test_acc_mean": float(models.test_acc.mean()),
        "test_acc_sd": float(models.test_acc.std(ddof=1)) if len(models) > 1 else 0.0,
        "train_acc_in_mean": float(models.train_acc_in.mean()),
        "train_acc_in_min": float(models.train_acc_in.min()),
        "train_acc_out_mean": float(models.train_acc_out.mean()),
        "mem_min": config.mem_min, "infl_min": config.infl_min,
        "memorized_fraction": float(np.nanmean(mem >= config.mem_min)),
        "n_memorized": int(np.sum(np.nan_to_num(mem, nan=-1) >= config.mem_min)),
        "mem_mean": float(np.nanmean(mem)),
        "se_median": float(np.nanmedian(scores["se"])),
        "n_se_zero": int((scores["se"] == 0).sum()),
        "error_bound": mz.error_bound(population.n_models, p.subset_fraction),
        "target_se": config.target_se,
        "reliability": float(curve.spearman.iloc[-1]),
        "reliability_sd": float(curve.spearman_sd.iloc[-1]),
        "n_pairs": len(pairs), "n_pairs_near_duplicate": int(pairs["near_duplicate"].sum()),
        "n_pair_tests": int(pairs["test"].nunique()) if len(pairs) else 0,
        "strong_influence": STRONG_INFLUENCE, "n_pairs_strong": int(strong.sum()),
        "n_pairs_strong_near_duplicate": int((strong & pairs["near_duplicate"]).sum()),
        "n_near_duplicate_tests": len(duplicates),
        "duplicate_threshold": config.duplicate_threshold,
        "recorded_epochs": bool(p.record_epochs),
    }
    if "corrupted" in scores:
        corrupted = scores["corrupted"].to_numpy(bool)
        summary["label_noise_fraction"] = float(corrupted.mean())
        summary["noise_auroc"] = mz.detection_auroc(mem, corrupted)
        summary["mem_mean_flipped"] = float(np.nanmean(mem[corrupted]))
        summary["mem_mean_clean"] = float(np.nanmean(mem[~corrupted]))
    if "cscores" in tables:
        summary["spearman_mem_cscore"] = mz.spearman(mem, tables["cscores"]["cscore"].to_numpy())
        summary["cscore_ratios"] = [float(r) for r in config.cscore_ratios]
        summary["cscore_models"] = config.cscore_models
    return summary

"""The privacy audit of a population: membership inference against every model in turn.

    from memlab.studies.audit import AuditConfig, run
    result = run(AuditConfig(run_dir="runs/memorize", data=None), out="runs/memorize/audit")
    result.summary["lira_online"]["auc"], result.summary["lira_online"]["tpr_at_fpr_0.001"]
    result.tables["examples"]          # one row per training example: mem, mem_se, vulnerability

Every model k of the population is the target in turn and the other t − 1 its shadow models
(leave-one-model-out), so every (model, example) pair is a trial whose answer is the
membership mask. The attacks and metrics are ``memlab.measures.mia``; memorization is
``memlab.measures.memorization`` (counterfactual memorization of per-token accuracy for
language-model runs). On top of the attacks:

- the shadow curve: each attack's AUC and TPR at 0.1% FPR with 1, 2, 4, … shadows per side
  (IN and OUT) up to all of them, and the paired bootstrap difference all − one;
- per example: vulnerability (TPR of ``vulnerability_attack`` on the example's member
  trials at one global threshold of FPR ``vulnerability_fpr``) next to mem and its se;
  planted mislabeled canaries (``label_noise``) against clean examples;
- the exposure study (``exposure=True``): populations trained with different epochs,
  weight decay and MLP width, audited the same way, with memorization on the same axes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from memlab.errors import ConfigError, RunError
from memlab.measures import mia
from memlab.measures.memorization import in_out
from memlab.studies.base import Result, StudyConfig, saved_result

STUDY = "audit"
MAIN_ATTACKS = mia.ATTACKS
CURVE_ATTACKS = ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed",
                 "rmia_online", "rmia_offline")
N_EXPOSED = 24  # most exposed examples shown as inputs


@dataclass(frozen=True)
class AuditConfig(StudyConfig):
    """An audit of the population in ``run_dir`` (trained first from the population
    settings below when ``data`` is given and the run is missing; ``run_dir=None`` trains
    into ``OUT/population``). ``data=None``: audit an existing run only.

    Defaults: the population of ``memlab memorize`` (1,000 MLPs 40-100-100-10, 70% subsets
    of MNIST-1D, 30 epochs of Adam).
    """

    run_dir: str | None = None
    # population (used only when training)
    data: str | None = "mnist1d"
    n_train: int | None = None  # a random subset of this many training examples
    label_noise: float = 0.0  # fraction of labels flipped: the planted canaries
    model: str = "mlp"
    hidden: tuple[int, ...] = ()
    n_models: int = 1000
    subset_fraction: float = 0.7
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 0.005
    weight_decay: float = 0.0
    seed: int = 0
    n_workers: int | None = None
    # the audit
    attacks: tuple[str, ...] = MAIN_ATTACKS
    n_bootstrap: int = 200
    rmia_a: float = 0.3
    rmia_gamma: float = 1.0
    shadow_caps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    curve_attacks: tuple[str, ...] = CURVE_ATTACKS
    curve_examples: int | None = 1000  # examples scored per shadow cap (None: all)
    vulnerability_attack: str = "lira_online"
    vulnerability_fpr: float = 0.01
    # the exposure study: one population per knob value
    exposure: bool = False
    exposure_models: int = 128
    exposure_epochs: tuple[int, ...] = (3, 10, 30, 60)
    exposure_weight_decay: tuple[float, ...] = (0.0, 1e-3, 1e-2, 1e-1)
    exposure_width: tuple[int, ...] = (16, 50, 100, 400)

    @classmethod
    def quick(cls, **changes: Any) -> AuditConfig:
        """64 MLPs on 10%-mislabeled digits, 70% subsets: well under a minute on 2 cores."""
        return cls(**{**dict(data="digits", label_noise=0.1, n_models=64, epochs=30,
                             batch_size=64, lr=0.005, n_bootstrap=100,
                             shadow_caps=(1, 2, 4, 8), curve_examples=None), **changes})

    @classmethod
    def full(cls, **changes: Any) -> AuditConfig:
        """The README's MNIST-1D audit: the memorize population, with the exposure study."""
        return cls(**{**dict(exposure=True), **changes})

    def validate(self) -> None:
        unknown = sorted(set(self.attacks) - set(mia.ATTACKS))
        if unknown:
            raise ConfigError(f"unknown attacks {unknown}; choose from {', '.join(mia.ATTACKS)}")
        if self.vulnerability_attack not in mia.ATTACKS:
            raise ConfigError(f"vulnerability_attack must be one of {', '.join(mia.ATTACKS)}, "
                              f"got {self.vulnerability_attack!r}")
        if not 0 < self.vulnerability_fpr < 1:
            raise ConfigError(f"vulnerability_fpr must lie in (0, 1), got "
                              f"{self.vulnerability_fpr}")
        if self.n_bootstrap < 0 or any(c < 1 for c in self.shadow_caps):
            raise ConfigError("n_bootstrap must be >= 0 and every shadow cap >= 1")
        if not 0 <= self.label_noise < 1:
            raise ConfigError(f"label_noise must lie in [0, 1), got {self.label_noise}")


# ------------------------------------------------------------------ populations


def _training_data(config: AuditConfig):
    from memlab.data import load

    dataset = load(config.data)
    if config.n_train is not None and config.n_train < dataset.n_train:
        keep = np.sort(np.random.default_rng([config.seed, 7]).choice(
            dataset.n_train, config.n_train, replace=False))
        if hasattr(dataset, "subset"):
            dataset = dataset.subset(keep)
        else:  # older Dataset without subset(): same arrays, provenance noted
            dataset = dataclasses.replace(
                dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep],
                provenance={**dataset.provenance, "subset": {"indices": keep.tolist()}})
        dataset.name = f"{dataset.name}-{config.n_train}"
    if config.label_noise:
        dataset = dataset.with_label_noise(config.label_noise, seed=config.seed)
    return dataset


def population_settings(config: AuditConfig, **changes: Any) -> dict[str, Any]:
    settings = dict(model=config.model, n_models=config.n_models,
                    subset_fraction=config.subset_fraction, epochs=config.epochs,
                    batch_size=config.batch_size, optimizer=config.optimizer, lr=config.lr,
                    weight_decay=config.weight_decay, seed=config.seed)
    if config.hidden:
        settings["model_kwargs"] = {"hidden": list(config.hidden)}
    settings.update(changes)
    return settings


def population(config: AuditConfig, out: Path | None, progress: bool = True):
    """The run to audit: opened, or trained (resumably) from the config's settings."""
    from memlab.population import open_run, train_population

    if config.run_dir is None and out is None:
        raise ConfigError("give AuditConfig.run_dir or an output directory to train into")
    path = Path(config.run_dir) if config.run_dir is not None else Path(out) / "population"
    if config.data is None:
        if not path.exists():
            raise RunError(f"no run at {path}; train one (memlab train / memorize) or pass "
                           "--data to train it here")
        return open_run(path)
    return train_population(_training_data(config), **population_settings(config), out=path,
                            n_workers=config.n_workers, progress=progress)


# ------------------------------------------------------------------ what the attacks read


def is_lm(run) -> bool:
    return run.manifest["dataset"].get("task") == "lm"


def attack_inputs(run) -> mia.AttackInputs:
    """Classifiers: the float32 logodds records (log p/(1 − p) from the logits) and the
    margin for the confidence baseline. Language models: minus the per-document loss
    (mean nats per token; log of the per-token geometric-mean probability)."""
    mask = run.membership_mask
    if is_lm(run):
        loss = np.asarray(run.records("train_loss"), dtype=np.float64)
        test = np.asarray(run.records("test_loss"), dtype=np.float64)
        return mia.AttackInputs(-loss, mask, log_prob=-loss, population=-test)
    if "train_logodds" not in run.record_names:
        raise RunError(f"{run.path} has no train_logodds record (runs made before memlab "
                       "recorded it); retrain the population to audit it — float16 losses "
                       "cannot stand in for it")
    return mia.AttackInputs.from_logits_records(
        mask, run.records("train_logodds"), run.records("test_logodds"),
        run.records("train_margin"))


def memorization_table(run) -> pd.DataFrame:
    """index, label, mem, mem_se (+ canary, original_label where labels were flipped)."""
    if is_lm(run):
        means = in_out(run.membership_mask, np.asarray(run.records("train_acc")))
        return pd.DataFrame({"index": np.arange(run.membership_mask.shape[1]),
                             "mem": means.score, "mem_se": means.se, "canary": False})
    from memlab.measures.memorization import memorization

    frame = memorization(run)
    table = pd.DataFrame({"index": frame["index"], "label": frame["label"],
                          "mem": frame["mem"], "mem_se": frame["se"]})
    if "corrupted" in frame:
        table["original_label"] = frame["original_label"]
        table["canary"] = frame["corrupted"].to_numpy(bool)
    else:
        table["canary"] = False
    return table


# ------------------------------------------------------------------ the audit


def _strip(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def audit_scores(inputs: mia.AttackInputs, config: AuditConfig, cap: int | None = None,
                 attacks: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    return mia.attack_scores(inputs, attacks or config.attacks, cap=cap, seed=config.seed,
                             rmia_a=config.rmia_a, rmia_gamma=config.rmia_gamma)


def attack_table(scores: dict[str, np.ndarray], mask: np.ndarray, config: AuditConfig,
                 cap: int | None = None) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """One row of metrics per attack, the metrics with bootstrap replicates (for paired
    differences), and the thinned ROC curves."""
    rows, full, curves = [], {}, []
    for name, score in scores.items():
        trials = mia.Trials.of(score, mask)
        metrics = mia.roc_metrics(score, mask, config.n_bootstrap, seed=config.seed,
                                  trials=trials, return_samples=True)
        full[name] = metrics
        rows.append({"attack": name, **_strip(metrics), **mia.n_shadows(mask, cap)})
        fpr, tpr = mia.roc_curve(score, mask, trials=trials)
        curves.append(pd.DataFrame({"attack": name, "fpr": fpr, "tpr": tpr}))
    return pd.DataFrame(rows), full, pd.concat(curves, ignore_index=True)


def shadow_curve(inputs: mia.AttackInputs, config: AuditConfig) -> tuple[pd.DataFrame, dict]:
    """Metrics against the number of shadows per side, and all − one (paired bootstrap)."""
    t, n = inputs.shape
    if config.curve_examples is not None and config.curve_examples < n:
        cols = np.sort(np.random.default_rng([config.seed, 11]).choice(
            n, config.curve_examples, replace=False))
        inputs = dataclasses.replace(
            inputs, score=inputs.score[:, cols], mask=inputs.mask[:, cols],
            log_prob=None if inputs.log_prob is None else inputs.log_prob[:, cols],
            confidence=None if inputs.confidence is None else inputs.confidence[:, cols])
    mask = inputs.mask
    most = int(max((mask.sum(0) - 1).max(), (t - mask.sum(0) - 1).max()))
    caps = [c for c in sorted(set(config.shadow_caps)) if c < most] + [None]
    attacks = tuple(a for a in config.curve_attacks if a in config.attacks)
    rows, replicates = [], {}
    for cap in caps:
        table, full, _ = attack_table(audit_scores(inputs, config, cap, attacks), mask,
                                      config, cap)
        table["cap"] = cap if cap is not None else -1
        rows.append(table)
        replicates[cap] = full
    curve = pd.DataFrame(pd.concat(rows, ignore_index=True))
    comparison = {}
    if 1 in replicates and config.n_bootstrap >= 2:
        for name in replicates[None]:
            diff = mia.paired_difference(replicates[None][name], replicates[1][name])
            comparison[name] = {
                "auc_all": replicates[None][name]["auc"], "auc_one": replicates[1][name]["auc"],
                **diff, "z": diff["difference"] / diff["se"] if diff["se"] > 0 else None,
                "all_beat_one_by_2se": bool(diff["difference"] >= 2 * diff["se"])}
    return curve, {"examples": int(mask.shape[1]), "caps": [c if c is not None else "all"
                                                           for c in caps],
                   "all_vs_one": comparison}


def compare(full: dict, a: str, b: str) -> dict:
    """a − b in AUC and TPR at 0.1% FPR (paired bootstrap over target models) and a verdict
    computed from the intervals."""
    if a not in full or b not in full or "_samples" not in full[a] or not full[a]["_samples"]:
        return {}
    out = {}
    for metric in ("auc", "tpr_at_fpr_0.001"):
        diff = mia.paired_difference(full[a], full[b], metric)
        verdict = ("higher" if diff["ci_low"] > 0 else "lower" if diff["ci_high"] < 0
                   else "cannot tell")
        out[metric] = {**diff, "verdict": f"{a} {verdict}" + ("" if verdict == "cannot tell"
                                                             else f" than {b}")}
    return out


def examples_table(memo: pd.DataFrame, scores: dict[str, np.ndarray], mask: np.ndarray,
                   config: AuditConfig) -> pd.DataFrame:
    attack = config.vulnerability_attack if config.vulnerability_attack in scores \
        else next(iter(scores))
    vuln = mia.example_vulnerability(scores[attack], mask, config.vulnerability_fpr)
    low = mia.example_vulnerability(scores[attack], mask, 0.001)
    table = memo.copy()
    table["vulnerability"] = vuln["vulnerability"]
    table["vulnerability_fpr_0.001"] = low["vulnerability"]
    table["example_fpr"] = vuln["example_fpr"]
    table["example_auc"] = vuln["example_auc"]
    table["score_gap"] = vuln["score_gap"]
    table["n_in"] = mask.sum(0)
    if "loss" in scores and attack != "loss":
        table["vulnerability_loss"] = mia.example_vulnerability(
            scores["loss"], mask, config.vulnerability_fpr)["vulnerability"]
    return table


def _mean_ci(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if values.size < 2:
        return {"mean": float(values.mean()) if values.size else None, "se": None}
    se = float(values.std(ddof=1) / np.sqrt(values.size))
    return {"mean": float(values.mean()), "se": se, "n": int(values.size)}


def canary_summary(examples: pd.DataFrame) -> dict | None:
    """Planted mislabeled canaries against clean examples: mean vulnerability, the attack's
    TPR on their member trials at the global thresholds, and mem."""
    canary = examples["canary"].to_numpy(bool)
    if not canary.any() or canary.all():
        return None
    out: dict[str, Any] = {"n_canaries": int(canary.sum()), "n_clean": int((~canary).sum())}
    for column in ("vulnerability", "vulnerability_fpr_0.001", "example_auc", "mem",
                   "vulnerability_loss"):
        if column not in examples:
            continue
        values = examples[column].to_numpy(np.float64)
        a, b = _mean_ci(values[canary]), _mean_ci(values[~canary])
        diff = a["mean"] - b["mean"]
        se = np.hypot(a["se"], b["se"]) if a["se"] is not None and b["se"] is not None \
            else None
        out[column] = {"canary": a, "clean": b, "difference": diff,
                       "difference_ci": [diff - 1.96 * se, diff + 1.96 * se] if se else None,
                       "ratio": a["mean"] / b["mean"] if b["mean"] else None}
    # Pooled TPR over member trials (weighted by n_in), at the global thresholds.
    n_in = examples["n_in"].to_numpy(np.float64)
    for column in ("vulnerability", "vulnerability_fpr_0.001"):
        v = examples[column].to_numpy(np.float64)
        out[f"pooled_tpr_{column}"] = {
            "canary": float((v * n_in)[canary].sum() / n_in[canary].sum()),
            "clean": float((v * n_in)[~canary].sum() / n_in[~canary].sum())}
    auc = stats.mannwhitneyu(examples["vulnerability"][canary],
                             examples["vulnerability"][~canary]).statistic
    out["canaries_rank_above_clean"] = float(auc / (canary.sum() * (~canary).sum()))
    return out


def mem_relation(examples: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Spearman(mem, vulnerability) and mean vulnerability per mem bin."""
    ok = examples["mem"].notna() & examples["vulnerability"].notna()
    frame = examples[ok]
    rho = stats.spearmanr(frame["mem"], frame["vulnerability"]).statistic if len(frame) > 2 \
        else float("nan")
    edges = np.array([-1.0, 0.0, 0.1, 0.25, 0.5, 0.75, 1.0 + 1e-9])
    bins = pd.cut(frame["mem"], edges, right=False, include_lowest=True)
    grouped = frame.groupby(bins, observed=True)
    table = pd.DataFrame({
        "mem_bin": [str(b) for b in grouped.groups.keys()],
        "n": grouped.size().to_numpy(),
        "mem_mean": grouped["mem"].mean().to_numpy(),
        "vulnerability_mean": grouped["vulnerability"].mean().to_numpy(),
        "vulnerability_se": (grouped["vulnerability"].std() /
                             np.sqrt(grouped.size())).to_numpy(),
        "example_auc_mean": grouped["example_auc"].mean().to_numpy(),
    })
    memorized = frame["mem"] >= 0.25
    return {"spearman_mem_vulnerability": float(rho),
            "vulnerability_memorized": float(frame["vulnerability"][memorized].mean())
            if memorized.any() else None,
            "vulnerability_not_memorized": float(frame["vulnerability"][~memorized].mean())
            if (~memorized).any() else None}, table


def most_exposed(run, examples: pd.DataFrame, k: int = N_EXPOSED) -> pd.DataFrame:
    """The k most exposed examples (vulnerability, then example AUC) with their inputs
    (flattened) or, for language models, their text."""
    order = examples.sort_values(["vulnerability", "example_auc"], ascending=False).head(k)
    table = order[[c for c in ("index", "label", "original_label", "canary", "mem",
                               "vulnerability", "example_auc") if c in order]].copy()
    index = table["index"].to_numpy()
    if is_lm(run):
        from memlab.studies.lm_memorize import lm_documents

        documents = lm_documents(run)
        table["text"] = [documents.text("train", int(i)) for i in index]
    else:
        x = run.dataset.x_train[index]
        table["input"] = [row.astype(np.float32).ravel().tolist() for row in x]
    return table.reset_index(drop=True)


# ------------------------------------------------------------------ exposure vs knobs


@dataclass(frozen=True)
class EpochRecords:
    """A training callback: every model's train logodds and correctness and its test
    correctness after each epoch in ``epochs`` (records ``audit_train_logodds`` (n_models,
    len(epochs), n_train) float32, ``audit_train_correct``, ``audit_test_correct``)."""

    epochs: tuple[int, ...]
    name: str = "audit"

    def __call__(self, state) -> dict[str, np.ndarray]:
        train, test = state.evaluate("train"), state.evaluate("test")
        return {"train_logodds": train["logodds"].float().cpu().numpy(),
                "train_correct": train["correct"].cpu().numpy(),
                "test_correct": test["correct"].cpu().numpy()}

    def describe(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs)}


@dataclass
class ExposureGroup:
    """One knob value: its models' membership mask and records, model axis first."""

    knob: str
    value: float
    mask: np.ndarray  # (k, n) bool
    logodds: np.ndarray  # (k, n) float32
    train_correct: np.ndarray  # (k, n) bool
    test_acc: float
    train_acc_in: float


def exposure_populations(config: AuditConfig, out: Path, progress: bool = True,
                         dataset: Any = None) -> list[ExposureGroup]:
    """Three populations of ``exposure_models`` models per value: epochs as checkpoints of
    one run (an :class:`EpochRecords` callback; with a constant learning rate the model
    after e epochs of a longer run is the e-epoch model), weight decay and MLP width each
    as one run with the engine's per-model ``sweep`` (every value shares the subsets,
    initial weights and data order of its replicates)."""
    from memlab.population import train_population

    dataset = dataset if dataset is not None else _training_data(config)
    depth = len(config.hidden) if config.hidden else 2
    common = dict(n_workers=config.n_workers, progress=progress)
    groups: list[ExposureGroup] = []

    epochs = tuple(sorted(set(int(e) for e in config.exposure_epochs)))
    if epochs:
        run_ = train_population(
            dataset, **population_settings(config, n_models=config.exposure_models,
                                           epochs=max(epochs)),
            callbacks=[EpochRecords(epochs)], out=out / "epochs", **common)
        mask = run_.membership_mask
        logodds = run_.records("audit_train_logodds")
        correct = run_.records("audit_train_correct")
        test = run_.records("audit_test_correct")
        for j, e in enumerate(epochs):
            c = np.asarray(correct[:, j])
            groups.append(ExposureGroup("epochs", e, mask, np.asarray(logodds[:, j]), c,
                                        float(np.asarray(test[:, j]).mean()),
                                        float(c[mask].mean())))
    sweeps = [("weight_decay", [float(v) for v in config.exposure_weight_decay],
               "weight_decay"),
              ("width", [[int(v)] * depth for v in config.exposure_width], "hidden")]
    for knob, values, key in sweeps:
        if not values:
            continue
        run_ = train_population(
            dataset, **population_settings(config, n_models=config.exposure_models),
            sweep={key: values}, out=out / knob, **common)
        table = run_.models_table()
        column = table[f"sweep_{key}"]
        for value in values:
            rows = np.flatnonzero([_sweep_value(v) == value for v in column])
            if len(rows) < 2:
                raise RunError(f"{out / knob}: found {len(rows)} models for {key}={value}; "
                               "delete that directory and run the exposure study again")
            label = value[0] if isinstance(value, list) else value
            groups.append(ExposureGroup(
                knob, label, run_.membership_mask[rows],
                np.asarray(run_.records("train_logodds")[rows]),
                np.asarray(run_.records("train_correct")[rows]),
                float(table["test_acc"].iloc[rows].mean()),
                float(table["train_acc_in"].iloc[rows].mean())))
    return groups


def _sweep_value(stored: Any) -> Any:
    """A sweep value as the models table stores it (list-valued ones as JSON text or
    arrays) back as a Python value."""
    if isinstance(stored, str):
        return json.loads(stored)
    if isinstance(stored, np.ndarray):
        return stored.tolist()
    return stored.item() if isinstance(stored, np.generic) else stored


def settings_of(config: AuditConfig, base_run) -> AuditConfig:
    """``config`` with the population settings of an existing run (to vary one knob at a
    time around the population that was audited)."""
    c = base_run.manifest["config"]
    hidden = tuple((c.get("model_kwargs") or {}).get("hidden") or ())
    return config.replace(model=c["model"], hidden=hidden, subset_fraction=c["subset_fraction"],
                          epochs=c["epochs"], batch_size=c["batch_size"],
                          optimizer=c["optimizer"], lr=c["lr"],
                          weight_decay=c["weight_decay"], seed=c["seed"])


def exposure_table(config: AuditConfig, out: Path, progress: bool = True,
                   base_run: Any = None) -> pd.DataFrame:
    """Per knob value: LiRA online, LiRA offline (fixed variance) and the loss threshold
    (AUC, TPR at 0.1% and 1% FPR, bootstrap intervals), memorization and accuracy."""

    rows = []
    attacks = ("lira_online", "lira_offline_fixed", "loss")
    dataset = None
    if config.data is None:  # auditing an existing run: vary the knobs around it
        if base_run is None or is_lm(base_run):
            raise ConfigError("the exposure study trains classifier populations; audit a "
                              "classification run or give --data")
        config, dataset = settings_of(config, base_run), base_run.dataset
    for group in exposure_populations(config, out, progress, dataset):
        inputs = mia.AttackInputs.from_logits_records(group.mask, group.logodds)
        scores = audit_scores(inputs, config, attacks=attacks)
        mem = in_out(group.mask, group.train_correct).score
        row = {"knob": group.knob, "value": float(group.value), "n_models": len(group.mask),
               "test_acc": group.test_acc, "train_acc_in": group.train_acc_in,
               "mem_mean": float(np.nanmean(mem)),
               "memorized_fraction": float(np.nanmean(mem >= 0.25))}
        for name, score in scores.items():
            metrics = mia.roc_metrics(score, inputs.mask, config.n_bootstrap, seed=config.seed)
            for key in ("auc", "auc_ci_low", "auc_ci_high", "tpr_at_fpr_0.001",
                        "tpr_at_fpr_0.001_ci_low", "tpr_at_fpr_0.001_ci_high",
                        "tpr_at_fpr_0.01"):
                row[f"{name}_{key}"] = metrics[key]
        vuln = mia.example_vulnerability(scores["lira_online"], inputs.mask,
                                         config.vulnerability_fpr)["vulnerability"]
        memorized = mem >= 0.25
        row["vulnerability_mean"] = float(np.nanmean(vuln))
        row["vulnerability_memorized"] = float(np.nanmean(vuln[memorized])) \
            if memorized.any() else float("nan")
        row["vulnerability_not_memorized"] = float(np.nanmean(vuln[~memorized])) \
            if (~memorized).any() else float("nan")
        row["spearman_mem_vulnerability"] = float(stats.spearmanr(
            mem, vuln, nan_policy="omit").statistic)
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ run


def run(config: AuditConfig, out: str | Path | None = None, progress: bool = True) -> Result:
    """Audit (training the population first if needed) and write tables/, summary.json and
    report.html into ``out`` (default: RUN/audit). Resumable: a second call with the same
    ``out`` and config returns the saved result."""
    config.validate()
    if out is None:
        if config.run_dir is None:
            raise ConfigError("give an output directory or AuditConfig.run_dir")
        out = Path(config.run_dir) / "audit"
    out = Path(out)
    saved = saved_result(out, STUDY, config)
    if saved is not None:
        return saved

    population_run = population(config, out, progress)
    timing: dict[str, float] = {}
    started = clock = time.perf_counter()
    inputs = attack_inputs(population_run)
    mask = inputs.mask
    scores = audit_scores(inputs, config)
    timing["scores"] = time.perf_counter() - clock

    clock = time.perf_counter()
    attacks, full, roc = attack_table(scores, mask, config)
    timing["metrics"] = time.perf_counter() - clock

    clock = time.perf_counter()
    memo = memorization_table(population_run)
    examples = examples_table(memo, scores, mask, config)
    relation, by_mem = mem_relation(examples)
    canaries = canary_summary(examples)
    exposed = most_exposed(population_run, examples)
    timing["examples"] = time.perf_counter() - clock

    clock = time.perf_counter()
    curve, shadows = shadow_curve(inputs, config)
    timing["shadow_curve"] = time.perf_counter() - clock
    timing["audit_total"] = time.perf_counter() - started  # training not included

    tables = {"attacks": attacks, "roc": roc, "examples": examples, "by_mem": by_mem,
              "shadows": curve, "most_exposed": exposed}
    if config.exposure:
        clock = time.perf_counter()
        tables["exposure"] = exposure_table(config, out / "exposure", progress,
                                            population_run)
        timing["exposure"] = time.perf_counter() - clock

    t, n = mask.shape
    summary: dict[str, Any] = {
        name: {**_strip(full[name]), **mia.n_shadows(mask)} for name in scores}
    models = population_run.models_table()
    summary["population"] = {
        "run_dir": str(population_run.path), "n_models": t, "n_train": n,
        "dataset": population_run.manifest["dataset"]["name"],
        "task": "lm" if is_lm(population_run) else "classification",
        "config": population_run.manifest["config"],
        "test_acc_mean": float(models["test_acc"].mean()),
        "train_acc_in_mean": float(models["train_acc_in"].mean()),
        "input_shape": list(population_run.manifest["dataset"].get("input_shape") or []),
    }
    summary["attacks"] = list(scores)
    summary["lira_online_vs_loss"] = compare(full, "lira_online", "loss")
    summary["lira_offline_fixed_vs_loss"] = compare(full, "lira_offline_fixed", "loss")
    summary["lira_online_vs_offline_fixed"] = compare(full, "lira_online", "lira_offline_fixed")
    summary["shadows"] = shadows
    summary["memorization"] = relation
    summary["canaries"] = canaries
    summary["vulnerability"] = {"attack": config.vulnerability_attack,
                                "fpr": config.vulnerability_fpr}
    summary["seconds"] = {k: round(v, 3) for k, v in timing.items()}
    result = Result(STUDY, config.to_dict(), tables, summary)
    result.save(out)
    return result

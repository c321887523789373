"""The leave-one-model-out audit of a population, as tables (docs/science.md §7): what the
attacks of :mod:`memlab.measures.mia` read from a run, one row of metrics per attack, the
power curve against shadows per side, every example's vulnerability next to its
memorization, planted canaries against clean examples.

    inputs = attack_inputs(run)                          # classifier or language model
    scores, table, full, roc = attack_table(inputs, ("lira_online", "loss"),
                                            n_bootstrap=200, seed=0)
    examples = examples_table(memorization_table(run), scores, inputs.mask,
                              attack="lira_online", fpr=0.01)

Every model is the target in turn and the others its shadows, so every (model, example)
pair is a trial whose answer is the membership mask. 95% intervals: the bootstrap over
models as targets *and* shadows (:func:`memlab.measures.mia.audit_metrics`: each resample
of the models scores every attack again from its own shadows); differences: the paired
bootstrap (the same resamples for both attacks, so every table and verdict of one audit
sits on one set of resamples).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from memlab import streams
from memlab.errors import RunError
from memlab.measures import mia
from memlab.measures.inout import in_out
from memlab.measures.stats import (
    HIGHER,
    LOWER,
    UNDECIDED,
    mean_se,
    spearman,
    spearman_brown,
    verdict_from_interval,
)
from memlab.measures.thresholds import MEMORIZED

# Bins of mem for the vulnerability-by-memorization table.
MEM_EDGES = (-1.0, 0.0, 0.1, 0.25, 0.5, 0.75, 1.0 + 1e-9)


# ------------------------------------------------------------------ what the attacks read


def is_lm(run) -> bool:
    """Whether ``run`` is a language-model population (documents, per-token losses)."""
    return run.task.name == "language_model"


def attack_inputs(run) -> mia.AttackInputs:
    """Classifiers: the float32 logodds records (log p/(1 − p) from the logits) and the
    margin for the confidence baseline. Language models: minus the per-document loss
    (mean nats per token; log of the per-token geometric-mean probability). Models that
    diverged in training are left out (``Run.usable_models``: a warning counts them)."""
    rows = run.usable_models()
    mask = run.membership_mask[rows]
    if is_lm(run):
        loss = np.asarray(run.records("train_loss")[rows], dtype=np.float64)
        test = np.asarray(run.records("test_loss")[rows], dtype=np.float64)
        return mia.AttackInputs(-loss, mask, log_prob=-loss, population=-test)
    if "train_logodds" not in run.record_names:
        raise RunError(f"{run.path} has no train_logodds record (runs made before memlab "
                       "recorded it); retrain the population to audit it — float16 losses "
                       "cannot stand in for it")
    return mia.AttackInputs.from_logits_records(
        mask, run.records("train_logodds")[rows], run.records("test_logodds")[rows],
        run.records("train_margin")[rows])


def memorization_table(run) -> pd.DataFrame:
    """index, label, mem, mem_se (+ canary, original_label where labels were flipped);
    language models: counterfactual memorization of per-token accuracy."""
    if is_lm(run):
        rows = run.usable_models()  # (diverged models left out, with a warning)
        means = in_out(run.membership_mask[rows], np.asarray(run.records("train_acc")[rows]))
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


# ------------------------------------------------------------------ attacks and metrics


def strip(metrics: dict) -> dict:
    """The metrics without their private entries (bootstrap replicates: ``_samples``)."""
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def attack_table(inputs: mia.AttackInputs, attacks: Sequence[str], *, n_bootstrap: int,
                 seed: int, cap: int | None = None, rmia_a: float = 0.3,
                 rmia_gamma: float = 1.0
                 ) -> tuple[dict[str, np.ndarray], pd.DataFrame, dict, pd.DataFrame]:
    """The attacks' scores (name -> (t, n)), one row of metrics per attack, the metrics
    with their bootstrap replicates (for paired differences) and the thinned ROC curves
    (:func:`memlab.measures.mia.audit_metrics`)."""
    scores, full = mia.audit_metrics(inputs, tuple(attacks), cap=cap, seed=seed,
                                     n_bootstrap=n_bootstrap, rmia_a=rmia_a,
                                     rmia_gamma=rmia_gamma)
    mask = inputs.mask
    rows, curves = [], []
    for name, score in scores.items():
        rows.append({"attack": name, **strip(full[name]), **mia.n_shadows(mask, cap)})
        fpr, tpr = mia.roc_curve(score, mask)
        curves.append(pd.DataFrame({"attack": name, "fpr": fpr, "tpr": tpr}))
    return scores, pd.DataFrame(rows), full, pd.concat(curves, ignore_index=True)


def shadow_curve(inputs: mia.AttackInputs, attacks: Sequence[str], caps: Sequence[int], *,
                 n_bootstrap: int, seed: int, examples: int | None = None,
                 rmia_a: float = 0.3, rmia_gamma: float = 1.0) -> tuple[pd.DataFrame, dict]:
    """Metrics against the number of shadows per side (each cap below the most any
    example has, then all of them: cap -1), and all − one (paired bootstrap: every cap on
    the same resamples of the models). ``examples``: score this many random examples
    (stream ``[seed, AUDIT_CURVE_EXAMPLES]``; None: all)."""
    t, n = inputs.shape
    if examples is not None and examples < n:
        cols = np.sort(np.random.default_rng([seed, streams.AUDIT_CURVE_EXAMPLES]).choice(
            n, examples, replace=False))
        inputs = dataclasses.replace(
            inputs, score=inputs.score[:, cols], mask=inputs.mask[:, cols],
            log_prob=None if inputs.log_prob is None else inputs.log_prob[:, cols],
            confidence=None if inputs.confidence is None else inputs.confidence[:, cols])
    mask = inputs.mask
    most = int(max((mask.sum(0) - 1).max(), (t - mask.sum(0) - 1).max()))
    capped = [c for c in sorted(set(caps)) if c < most] + [None]
    rows, replicates = [], {}
    for cap in capped:
        _, table, full, _ = attack_table(inputs, attacks, n_bootstrap=n_bootstrap, seed=seed,
                                         cap=cap, rmia_a=rmia_a, rmia_gamma=rmia_gamma)
        table["cap"] = cap if cap is not None else -1
        rows.append(table)
        replicates[cap] = full
    curve = pd.DataFrame(pd.concat(rows, ignore_index=True))
    comparison = all_vs_one(replicates[None], replicates[1]) if 1 in replicates else {}
    return curve, {"examples": int(mask.shape[1]), "caps": [c if c is not None else "all"
                                                           for c in capped],
                   "all_vs_one": comparison}


def all_vs_one(every: dict, one: dict) -> dict:
    """Per attack in both: AUC with all shadows (``every``, metrics with replicates from
    :func:`attack_table`) against one per side (``one``, the same resamples), the paired
    difference, z and whether all beat one by 2 SE (empty without replicates)."""
    comparison = {}
    for name in every:
        if name not in one or not every[name].get("_samples"):
            continue
        diff = mia.paired_difference(every[name], one[name])
        comparison[name] = {
            "auc_all": every[name]["auc"], "auc_one": one[name]["auc"], **diff,
            "z": diff["difference"] / diff["se"] if diff["se"] > 0 else None,
            "all_beat_one_by_2se": bool(diff["difference"] >= 2 * diff["se"])}
    return comparison


def compare(full: dict, a: str, b: str,
            metrics: Sequence[str] = ("auc", "tpr_at_fpr_0.001")) -> dict:
    """a − b in each of ``metrics`` (paired bootstrap over models, :func:`attack_table`'s
    replicates) and a verdict computed from the intervals."""
    if a not in full or b not in full or not full[a].get("_samples"):
        return {}
    out = {}
    for metric in metrics:
        diff = mia.paired_difference(full[a], full[b], metric)
        verdict = verdict_from_interval(diff["ci_low"], diff["ci_high"], above=HIGHER,
                                        below=LOWER)
        out[metric] = {**diff, "verdict": f"{a} {verdict}" + ("" if verdict == UNDECIDED
                                                             else f" than {b}")}
    return out


# ------------------------------------------------------------------ per example


def examples_table(memo: pd.DataFrame, scores: dict[str, np.ndarray], mask: np.ndarray,
                   attack: str, fpr: float) -> pd.DataFrame:
    """``memo`` (:func:`memorization_table`) with each example's vulnerability to
    ``attack`` (its TPR on its member trials at the global threshold of FPR ``fpr``; the
    first attack scored when ``attack`` was not), at FPR 0.1%, its own FPR, AUC and score
    gap, and its vulnerability to the loss threshold."""
    attack = attack if attack in scores else next(iter(scores))
    vuln = mia.example_vulnerability(scores[attack], mask, fpr)
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
            scores["loss"], mask, fpr)["vulnerability"]
    return table


def lira_vulnerability(run, fpr: float = 0.01) -> np.ndarray:
    """Each training example's vulnerability to LiRA (online, every other model a shadow):
    its TPR on its member trials at the global threshold of FPR ``fpr``."""
    inputs = attack_inputs(run)
    scores = mia.attack_scores(inputs, ("lira_online",))["lira_online"]
    return mia.example_vulnerability(scores, inputs.mask, fpr)["vulnerability"]


def canary_summary(examples: pd.DataFrame) -> dict | None:
    """Planted mislabeled canaries against clean examples: mean vulnerability, the attack's
    TPR on their member trials at the global thresholds, and mem (None without canaries,
    or when every example is one)."""
    canary = examples["canary"].to_numpy(bool)
    if not canary.any() or canary.all():
        return None
    out: dict[str, Any] = {"n_canaries": int(canary.sum()), "n_clean": int((~canary).sum())}
    for column in ("vulnerability", "vulnerability_fpr_0.001", "example_auc", "mem",
                   "vulnerability_loss"):
        if column not in examples:
            continue
        values = examples[column].to_numpy(np.float64)
        a, b = (mean_se(values[canary]).as_dict("mean", "se", "n"),
                mean_se(values[~canary]).as_dict("mean", "se", "n"))
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
    """Spearman(mem, vulnerability), mean vulnerability of memorized examples (mem ≥
    MEMORIZED) and of the others, and mean vulnerability per mem bin."""
    ok = examples["mem"].notna() & examples["vulnerability"].notna()
    frame = examples[ok]
    rho = spearman(frame["mem"].to_numpy(np.float64),
                   frame["vulnerability"].to_numpy(np.float64))
    bins = pd.cut(frame["mem"], np.array(MEM_EDGES), right=False, include_lowest=True)
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
    memorized = frame["mem"] >= MEMORIZED
    return {"spearman_mem_vulnerability": rho,
            "vulnerability_memorized": float(frame["vulnerability"][memorized].mean())
            if memorized.any() else None,
            "vulnerability_not_memorized": float(frame["vulnerability"][~memorized].mean())
            if (~memorized).any() else None}, table


def exposure_metrics(mask: np.ndarray, logodds: np.ndarray, correct: np.ndarray, *,
                     attacks: Sequence[str], n_bootstrap: int, seed: int, fpr: float,
                     rmia_a: float = 0.3, rmia_gamma: float = 1.0) -> dict[str, float]:
    """One population's row of the exposure study (``mask``, ``logodds``, ``correct``:
    (k, n)): each attack's AUC and TPR at 0.1% / 1% FPR with bootstrap intervals,
    memorization, and LiRA online's per-example vulnerability at ``fpr`` for memorized
    examples and the others."""
    inputs = mia.AttackInputs.from_logits_records(mask, logodds)
    scores, full = mia.audit_metrics(inputs, tuple(attacks), seed=seed,
                                     n_bootstrap=n_bootstrap, rmia_a=rmia_a,
                                     rmia_gamma=rmia_gamma)
    mem = in_out(mask, correct).score
    row = {"mem_mean": float(np.nanmean(mem)),
           "memorized_fraction": float(np.nanmean(mem >= MEMORIZED))}
    for name, metrics in full.items():
        for key in ("auc", "auc_ci_low", "auc_ci_high", "tpr_at_fpr_0.001",
                    "tpr_at_fpr_0.001_ci_low", "tpr_at_fpr_0.001_ci_high", "tpr_at_fpr_0.01"):
            row[f"{name}_{key}"] = metrics[key]
    vuln = mia.example_vulnerability(scores["lira_online"], inputs.mask, fpr)["vulnerability"]
    memorized = mem >= MEMORIZED
    row["vulnerability_mean"] = float(np.nanmean(vuln))
    row["vulnerability_memorized"] = float(np.nanmean(vuln[memorized])) \
        if memorized.any() else float("nan")
    row["vulnerability_not_memorized"] = float(np.nanmean(vuln[~memorized])) \
        if (~memorized).any() else float("nan")
    # scipy's NaN-omitting form (masked arrays): the last bits differ from stats.spearman's
    row["spearman_mem_vulnerability"] = float(stats.spearmanr(
        mem, vuln, nan_policy="omit").statistic)
    return row


def most_exposed(run, examples: pd.DataFrame, k: int = 24) -> pd.DataFrame:
    """The k most exposed examples (vulnerability, then example AUC) with their inputs
    (flattened) or, for language models, their text."""
    order = examples.sort_values(["vulnerability", "example_auc"], ascending=False).head(k)
    table = order[[c for c in ("index", "label", "original_label", "canary", "mem",
                               "vulnerability", "example_auc") if c in order]].copy()
    index = table["index"].to_numpy()
    if is_lm(run):
        documents = run.dataset  # the run's copy of its documents
        table["text"] = [documents.text("train", int(i)) for i in index]
    else:
        x = run.dataset.x_train[index]
        table["input"] = [row.astype(np.float32).ravel().tolist() for row in x]
    return table.reset_index(drop=True)


def vulnerability_reliability(inputs: mia.AttackInputs, attack: str, fpr: float,
                              seed: int = 0, **attack_options: Any) -> dict[str, float]:
    """The ceiling of the per-example vulnerability as a ground truth: the models split at
    random into two halves, each half audited on its own (its models the targets, the
    others of the half their shadows), the per-example vulnerabilities of the halves
    correlated (Spearman, r) and Spearman–Brown corrected, 2r/(1 + r): the reliability of
    the whole population's vulnerability ranking (as split-half reliability is for
    memorization)."""
    t = inputs.mask.shape[0]
    if t < 8:
        return {"spearman_halves": float("nan"), "reliability": float("nan"), "n_models": t}
    order = np.random.default_rng([seed, streams.MIA_BOOTSTRAP, 2]).permutation(t)
    halves = []
    for rows in (np.sort(order[: t // 2]), np.sort(order[t // 2: 2 * (t // 2)])):
        part = mia.AttackInputs(**{
            field.name: None if getattr(inputs, field.name) is None
            else getattr(inputs, field.name)[rows] for field in dataclasses.fields(inputs)})
        score = mia.attack_scores(part, (attack,), seed=seed, **attack_options)[attack]
        halves.append(mia.example_vulnerability(score, part.mask, fpr)["vulnerability"])
    r = spearman(*halves)
    return {"spearman_halves": r, "reliability": spearman_brown(r), "n_models": t}

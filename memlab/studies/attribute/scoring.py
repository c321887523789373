"""The attribution study's scoring: every method's scores (resumable files), their LDS on
the held-out models with dampings chosen on the validation models, the datamodels and
difference-in-means reference, the ranking with the differences it resolves,
self-influence and each target's top training examples.

``config`` here is the study's config with ``methods``, ``self_influence_methods`` and
``tracin_checkpoints`` resolved for the population (:func:`memlab.studies.attribute.study.
resolve`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab import streams
from memlab.io import atomic_write_json, loads_strict, strict_jsonable
from memlab.measures.attribution import ceiling as ac
from memlab.measures.attribution import datamodels as dm
from memlab.measures.attribution import methods as am
from memlab.measures.attribution.gradients import buffers_from_weights, params_from_weights
from memlab.measures.attribution.lds import column_spearman, lds, predict
from memlab.measures.stats import (
    HIGHER,
    LOWER,
    UNDECIDED,
    Z95,
    spearman_brown,
    verdict_from_interval,
)
from memlab.studies.attribute.config import AttributeConfig, DampingEdgeWarning
from memlab.studies.attribute.retrain import build_template, tracin_checkpoints
from memlab.studies.base import Execution

# The scores fitted on the population itself (every non-held-out model), ranked beside the
# cheap methods; and the control every method must beat (its LDS is 0 up to noise).
REFERENCES = ("datamodels", "diff_in_means")
CONTROL = "random"
# Verdicts of a method against the control: its LDS minus the control's, paired.
BETTER, WORSE = "better", "worse"
# Bootstrap resamples of the ranking: as many as every LDS's se uses, and the same ones
# (drawn with the study's seed), so that a method's interval is its lds ± 1.96 lds_se.
RANKING_BOOT = 200


def _flops_and_seconds(name: str, task, options: dict):
    """(scores, seconds, FLOPs counted over torch operations) of one method call."""
    from torch.utils.flop_counter import FlopCounterMode

    started = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        value = am.compute(name, task, **options)
    return value, time.perf_counter() - started, int(counter.get_total_flops())


def save_scores(path: Path, scores: np.ndarray) -> None:
    """Write (n_train, n_targets) float32 scores, atomically, with plain writes (a full
    disk is an OSError, ENOSPC; a write through a memory map was a SIGBUS)."""
    from memlab.io import atomic_save_npy

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(path, np.asarray(scores, dtype=np.float32))


def method_options(name: str, config: AttributeConfig) -> dict[str, Any]:
    if name == "trak":
        return {"proj_dim": config.proj_dim, "damping": config.dampings,
                "seed": config.population.seed}
    if name.startswith("if_"):
        options = {"damping": config.dampings}
        if name in ("if_cg", "if_lissa", "if_ekfac"):
            options["hessian_examples"] = config.hessian_examples
        if name == "if_cg":
            options["cg_iter"] = config.cg_iter
        return options
    if name == "knn":
        return {"k_neighbours": config.knn_k}
    if name == "random":
        return {"seed": config.population.seed}
    return {}


@dataclass
class DampingChoice:
    """A damping chosen by validation LDS. ``path``: every damping tried -> its validation
    LDS, ascending; ``extended``: the dampings tried beyond the configured grid; ``edge``:
    "lower" or "upper" when the choice is still on that edge of the dampings tried (its
    optimum may lie beyond), ``reason``: why the grid was not extended further."""

    damping: float
    path: dict[float, float]
    extended: tuple[float, ...] = ()
    edge: str | None = None
    reason: str | None = None

    def warning(self, method: str) -> str | None:
        """The one-line warning of a choice on the grid's edge (None when interior)."""
        if self.edge is None:
            return None
        # Past the upper edge the damping swamps the curvature: (H + lam I)^-1 -> I / lam,
        # a rescaled gradient similarity, so the validation LDS levels off, not peaks.
        limit = (" (a large damping turns the inverse curvature into a multiple of the "
                 "identity: the method tends to gradient similarity)"
                 if self.edge == "upper" else "")
        tried = sorted(self.path)
        beyond = ("no damping is best" if self.damping == 0
                  else f"the best damping may lie beyond it{limit}")
        return (f"{method}: the damping chosen on the validation models, {self.damping:g} "
                f"(validation LDS {self.path[self.damping]:.3f}), is on the {self.edge} edge "
                f"of the dampings tried ({tried[0]:g} to {tried[-1]:g}; {self.reason}); "
                f"{beyond}")


def _best(path: dict[float, float]) -> tuple[float, str | None]:
    """The damping of the highest finite LDS (ties: the smallest damping) and the edge of
    the finite part of the grid it is on, if any."""
    finite = sorted(d for d, v in path.items() if math.isfinite(v))
    if not finite:
        return sorted(path)[len(path) // 2], None
    best = max(finite, key=lambda d: path[d])  # the first maximum: the smallest damping
    if len(finite) < 2:
        return best, None
    return best, "upper" if best == finite[-1] else "lower" if best == finite[0] else None


def choose_damping(path: dict[float, float], evaluate: Callable[[float], float],
                   extensions: int) -> DampingChoice:
    """Choose the damping of highest validation LDS from ``path`` (damping -> LDS); while
    the choice is on an edge of the grid, extend it one factor of 10 past that edge
    (``evaluate(damping)`` -> its validation LDS), at most ``extensions`` times. A choice
    still on an edge afterwards says so (``edge``, ``reason``): too few extensions, no
    damping below 0, or no finite LDS beyond it."""
    path = {float(d): float(v) for d, v in path.items()}
    extended: list[float] = []
    while True:
        best, edge = _best(path)
        if edge is None:
            return DampingChoice(best, dict(sorted(path.items())), tuple(extended))
        if len(extended) >= extensions:
            reason = (f"extended {len(extended)} times, the limit" if extensions
                      else "the grid is not extended (damping_extensions=0)")
            break
        if edge == "lower" and best == 0:
            reason = "no damping is below 0"
            break
        beyond = best * 10 if edge == "upper" else best / 10
        if beyond in path or not math.isfinite(beyond) or beyond <= 0:
            reason = f"the LDS at {beyond:g} is not finite"
            break
        path[beyond] = float(evaluate(beyond))
        extended.append(beyond)
    return DampingChoice(best, dict(sorted(path.items())), tuple(extended), edge, reason)


def warn_damping_edges(rows: dict[str, dict]) -> list[dict]:
    """Warn (:class:`DampingEdgeWarning`) about every method whose damping is on its
    grid's edge; the list of them for the summary."""
    edges = []
    for name, row in rows.items():
        if row.get("damping_edge"):
            warnings.warn(row["damping_warning"], DampingEdgeWarning, stacklevel=3)
            edges.append({"method": name, "edge": row["damping_edge"],
                          "damping": row["damping"], "warning": row["damping_warning"]})
    return edges


def score_methods(run, config: AttributeConfig, out: Path, split: dict, outputs: np.ndarray,
                  execution: Execution) -> tuple[dict, dict[str, np.ndarray]]:
    """Compute (or reload) every method's scores; choose dampings on the validation
    models; LDS on the held-out ones. Returns (rows by method, scores by method)."""
    mask = run.membership_mask
    template = build_template(run)
    ds = run.dataset
    targets = slice(0, config.n_targets)
    rows, all_scores = {}, {}
    for name in config.methods:
        meta_path = out / "methods" / f"{name}.json"
        score_path = out / "scores" / f"{name}.npy"
        if meta_path.exists() and score_path.exists():
            saved = loads_strict(meta_path.read_text())
            # TracIn scores saved before checkpoints were weighted by the learning rate
            # their steps used (no checkpoint_lrs) are computed again, not reused.
            if name != "tracin" or "checkpoint_lrs" in saved:
                rows[name] = saved
                all_scores[name] = np.load(score_path, mmap_mode="r")
                continue
            meta_path.unlink()
        n_used = config.trak_models if name == "trak" else config.method_models
        models = list(range(n_used))
        weights = run.weights(models)
        task = am.Problem(template, params_from_weights(template, weights), ds.x_train,
                          ds.y_train, ds.x_test[targets], ds.y_test[targets],
                          np.asarray(mask[models]),
                          buffers=buffers_from_weights(template, weights))
        extra: dict[str, Any] = {}
        if name == "tracin":
            started = time.perf_counter()
            task.checkpoints, epochs, deviation = tracin_checkpoints(run, template, config,
                                                                     models, execution)
            extra = {"checkpoint_epochs": epochs, "retrain_seconds":
                     time.perf_counter() - started, "replay_max_abs_deviation": deviation,
                     # each checkpoint's weight eta_t (model 0's; the same for every model
                     # unless a sweep varies the recipe)
                     "checkpoint_lrs": [lr for _, lr in task.checkpoints[0]]}
        if execution.progress:
            print(f"attribute: {name} ...", flush=True)
        options = method_options(name, config)
        with am.progress(execution.progress):  # the long methods show a bar on stderr
            value, seconds, flops = _flops_and_seconds(name, task, options)
        if isinstance(value, dict):  # a damping grid: choose on the validation models
            with am.progress(execution.progress):
                value, choice, cost = _choose(name, task, options, value, config,
                                              mask[split["validation"]],
                                              outputs[split["validation"]])
            seconds, flops = seconds + cost[0], flops + cost[1]
            scores = value[choice.damping]
            extra.update(damping=choice.damping,
                         validation_lds={str(d): v for d, v in choice.path.items()},
                         damping_extended=list(choice.extended), damping_edge=choice.edge,
                         damping_warning=choice.warning(name))
        else:
            scores = value
        result = lds(scores, mask[split["heldout"]], outputs[split["heldout"]],
                     seed=config.population.seed)
        row = {**result.as_dict(), "seconds": seconds, "flops": flops,
               "n_models_used": n_used, **extra}
        save_scores(score_path, scores)
        if not meta_path.exists():  # (only the scores were lost: the row keeps its timing)
            atomic_write_json(meta_path, row)
        rows[name] = loads_strict(meta_path.read_text())  # as a re-run reads it back
        all_scores[name] = np.load(score_path, mmap_mode="r")
    return rows, all_scores


def _choose(name: str, task, options: dict, value: dict, config: AttributeConfig,
            mask: np.ndarray, outputs: np.ndarray
            ) -> tuple[dict, DampingChoice, tuple[float, int]]:
    """The damping of ``value`` (damping -> scores) with the best LDS on the validation
    models (``mask``, ``outputs``), the grid extended past an edge optimum by computing the
    method again at one more damping each time. Returns (every damping's scores, the
    choice, (seconds, FLOPs) of the extensions)."""
    value = {float(d): s for d, s in value.items()}
    cost = [0.0, 0]

    def validation(scores: np.ndarray) -> float:
        return lds(scores, mask, outputs, n_boot=0).mean

    def evaluate(damping: float) -> float:
        more, seconds, flops = _flops_and_seconds(name, task, {**options, "damping": [damping]})
        cost[0] += seconds
        cost[1] += flops
        value[damping] = next(iter(more.values()))
        return validation(value[damping])

    path = {d: validation(s) for d, s in value.items()}
    return value, choose_damping(path, evaluate, config.damping_extensions), tuple(cost)


def noise_ceiling(config: AttributeConfig, mask: np.ndarray, outputs: np.ndarray,
                  replicate: np.ndarray, scores: dict[str, np.ndarray]
                  ) -> tuple[dict, dict[str, dict], pd.DataFrame]:
    """The LDS ceiling from the held-out models' outputs ``outputs`` and their masks'
    second replicate ``replicate`` (both (n_heldout, n_targets), row k: mask ``mask[k]``),
    and every method's LDS against the mean of the two and its fraction of the ceiling.
    Returns (the ceiling's summary, per-method fields, a per-target table)."""
    seed = config.population.seed
    ceiling = ac.noise_ceiling(outputs, replicate, seed=seed)
    per_method = {name: ac.against_replicates(predict(values, mask), outputs, replicate,
                                              seed=seed, ceiling=ceiling)
                  for name, values in scores.items()}
    frame = pd.DataFrame({"target": np.arange(outputs.shape[1]),
                          "replicate_spearman": ceiling.per_target_r,
                          "spearman_brown": spearman_brown(ceiling.per_target_r),
                          "ceiling": ceiling.per_target})
    return ceiling.as_dict(), per_method, frame


def _sd(values: np.ndarray) -> float:
    """Standard deviation of the finite values (NaN with fewer than two)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _interval(value: float, sd: float) -> tuple[float, float]:
    """The 95% interval value ± 1.96 sd (NaN bounds without a finite value and sd)."""
    if not (math.isfinite(value) and math.isfinite(sd)):
        return float("nan"), float("nan")
    return value - Z95 * sd, value + Z95 * sd


def _mean_lds(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """(k,) LDS of k methods' predictions (n_models, n_targets, k) against ``actual``
    (n_models, n_targets): Spearman over models per target, mean over the finite targets,
    the formula of :func:`memlab.measures.attribution.lds.lds` for all k at once."""
    m, t, k = predicted.shape
    per_target = column_spearman(predicted.reshape(m, t * k),
                                 np.repeat(actual[:, :, None], k, 2).reshape(m, t * k))
    with warnings.catch_warnings():  # a method with no finite target: NaN, said in its row
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_target.reshape(t, k), axis=0)


def _difference(lds_values: np.ndarray, boots: np.ndarray, i: int, j: int | None
                ) -> tuple[float, float, float]:
    """(difference, low, high) of LDS i minus LDS j (j None: minus 0), paired: the
    difference is taken on every bootstrap resample."""
    if j is None:
        value, spread = float(lds_values[i]), _sd(boots[:, i])
    else:
        value, spread = float(lds_values[i] - lds_values[j]), _sd(boots[:, i] - boots[:, j])
    return (value, *_interval(value, spread))


def ranking(scores: dict[str, np.ndarray], mask: np.ndarray, outputs: np.ndarray,
            seed: int = 0, n_boot: int = RANKING_BOOT, control: str = CONTROL
            ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rank ``scores`` (name -> (n_train, n_targets)) by their LDS on the held-out models
    (``mask`` (n_models, n_train), ``outputs`` (n_models, n_targets)) and say which
    differences the data resolves.

    Every LDS and every difference of two LDS gets a 95% interval, estimate ± 1.96
    bootstrap sd, from one bootstrap over targets and held-out models together: the
    resamples every ``lds_se`` is computed from (the same draws with the same ``seed``), so
    a method's interval is its ``lds ± 1.96 lds_se``. A difference is taken on each
    resample (paired), so what two methods share — the same models and targets — cancels
    instead of widening it. Verdicts (:func:`memlab.measures.stats.verdict_from_interval`):

    - ``vs_control``: LDS minus the control's (the score named ``control``; without one,
      the LDS against 0): "better", "worse" or "cannot decide";
    - ``vs_best``: LDS minus the best's (the highest LDS that is not the control): "lower",
      or "cannot decide" — tied with the best as far as these models and targets can tell;
    - ``vs_next``: LDS minus the next one's down the ranking: "higher" or "cannot decide".

    Returns (one row per score, highest LDS first, the control in its place; the summary:
    ``best``, ``runner_up``, ``tied_with_best``, ``better_than_control``,
    ``undecided_vs_control``, ``worse_than_control``, ``control`` (None when not scored),
    ``rows`` (the table's rows) and how the intervals were made)."""
    names = list(scores)
    outputs = np.asarray(outputs, np.float64)
    predicted = np.stack([predict(scores[name], mask) for name in names], axis=2)
    values = _mean_lds(predicted, outputs)
    boots = np.array([_mean_lds(predicted[at], outputs[at])
                      for at in ac._resamples(*outputs.shape, n_boot, seed)])
    boots = boots.reshape(n_boot, len(names))
    order = sorted(range(len(names)), key=lambda i: (not math.isfinite(values[i]), -values[i]))
    has_control = control in names
    reference = names.index(control) if has_control else None
    ranked = [i for i in order if names[i] != control]  # the control is not a contender
    best = ranked[0] if ranked and math.isfinite(values[ranked[0]]) else None
    rows = []
    for rank, i in enumerate(order, start=1):
        name = names[i]
        kind = "control" if name == control else "reference" if name in REFERENCES else "method"
        low, high = _interval(float(values[i]), _sd(boots[:, i]))
        row: dict[str, Any] = {"rank": rank, "method": name, "kind": kind,
                               "lds": float(values[i]), "lds_low": low, "lds_high": high}
        if name != control:
            diff = _difference(values, boots, i, reference)
            row.update(vs_control=diff[0], vs_control_low=diff[1], vs_control_high=diff[2],
                       vs_control_verdict=verdict_from_interval(diff[1], diff[2], above=BETTER,
                                                                below=WORSE))
        if name != control and best is not None and i != best:
            diff = _difference(values, boots, i, best)
            row.update(vs_best=diff[0], vs_best_low=diff[1], vs_best_high=diff[2],
                       vs_best_verdict=verdict_from_interval(diff[1], diff[2], above=HIGHER,
                                                             below=LOWER))
        if name != control and ranked.index(i) + 1 < len(ranked):
            following = ranked[ranked.index(i) + 1]
            diff = _difference(values, boots, i, following)
            row.update(next_method=names[following], vs_next=diff[0], vs_next_low=diff[1],
                       vs_next_high=diff[2],
                       vs_next_verdict=verdict_from_interval(diff[1], diff[2], above=HIGHER,
                                                             below=LOWER))
        rows.append(row)
    frame = pd.DataFrame(rows)
    contenders = [row for row in rows if row["kind"] != "control"]

    def named(verdict_key: str, verdict: str) -> list[str]:
        return [row["method"] for row in contenders if row.get(verdict_key) == verdict]

    summary = {
        "control": control if has_control else None,
        "best": names[best] if best is not None else None,
        "runner_up": names[ranked[1]] if best is not None and len(ranked) > 1 else None,
        "tied_with_best": named("vs_best_verdict", UNDECIDED),
        "better_than_control": named("vs_control_verdict", BETTER),
        "undecided_vs_control": named("vs_control_verdict", UNDECIDED),
        "worse_than_control": named("vs_control_verdict", WORSE),
        "n_boot": n_boot, "n_models": int(outputs.shape[0]), "n_targets": int(outputs.shape[1]),
        "interval": "95%: estimate ± 1.96 sd of a bootstrap over targets and held-out models "
                    "together; differences paired on the same resamples",
        "rows": strict_jsonable(rows),
    }
    return frame, summary


def ground_truth(run, config: AttributeConfig, split: dict, outputs: np.ndarray, out: Path
                 ) -> tuple[dict, dict[str, np.ndarray], pd.DataFrame]:
    """Datamodels and difference in means fitted on every non-held-out model, their
    held-out LDS, and the curve against the number of fitting models. Each is kept in
    ``out`` like a method (``methods/<name>.json``, ``scores/<name>.npy``) and reloaded
    when the study runs there again; the scores returned are the saved float32 ones."""
    mask = np.asarray(run.membership_mask)
    fit, held = split["fit"], split["heldout"]
    curve = pd.DataFrame(dm.models_curve(mask[fit], outputs[fit], mask[held], outputs[held],
                                         seed=config.population.seed))
    names = REFERENCES
    paths = {name: (out / "methods" / f"{name}.json", out / "scores" / f"{name}.npy")
             for name in names}
    if not all(meta.exists() and score.exists() for meta, score in paths.values()):
        rows, scores = _fit_ground_truth(run, config, mask, fit, held, outputs)
        for name in names:
            save_scores(paths[name][1], scores[name])
            if not paths[name][0].exists():  # (kept: its time is the first fit's)
                atomic_write_json(paths[name][0], rows[name])
    return ({name: loads_strict(paths[name][0].read_text()) for name in names},
            {name: np.load(paths[name][1], mmap_mode="r") for name in names}, curve)


def _fit_ground_truth(run, config: AttributeConfig, mask: np.ndarray, fit: np.ndarray,
                      held: np.ndarray, outputs: np.ndarray
                      ) -> tuple[dict, dict[str, np.ndarray]]:
    started = time.perf_counter()
    model = dm.fit_datamodels(mask[fit], outputs[fit], seed=config.population.seed)
    fit_seconds = time.perf_counter() - started
    result = lds(model.weights, mask[held], outputs[held], seed=config.population.seed)
    started = time.perf_counter()
    diff = np.nan_to_num(dm.difference_in_means(mask[fit], outputs[fit]))
    diff_seconds = time.perf_counter() - started
    diff_result = lds(diff, mask[held], outputs[held], seed=config.population.seed)
    train_seconds = run.manifest.get("summary", {}).get("chunk_seconds_total")
    rows = {
        "datamodels": {**result.as_dict(), "seconds": fit_seconds, "n_models_used": len(fit),
                       "ridge_alpha": model.alpha, "population_train_seconds": train_seconds},
        "diff_in_means": {**diff_result.as_dict(), "seconds": diff_seconds,
                          "n_models_used": len(fit)},
    }
    return rows, {"datamodels": model.weights, "diff_in_means": diff}


def self_influence(run, config: AttributeConfig, split: dict) -> tuple[pd.DataFrame, dict]:
    """Self-influence tau_i(i) of a sample of training examples by each method, against
    memorization (Spearman) and, with planted label noise, the AUROC of finding the
    mislabeled examples; the population's own proxies alongside."""
    from memlab.measures.inout import masked_means
    from memlab.measures.memorization import detection_auroc, spearman

    mask = np.asarray(run.membership_mask)
    rng = np.random.default_rng([config.population.seed, streams.ATTRIBUTE_SELF_INFLUENCE])
    n = min(config.self_influence_examples, mask.shape[1])
    rows = np.sort(rng.choice(mask.shape[1], n, replace=False))
    fit = split["fit"]
    logodds = np.asarray(run.records("train_logodds"))[fit][:, rows]
    correct = np.asarray(run.records("train_correct"))[fit][:, rows].astype(float)
    member = mask[fit][:, rows]
    acc_in, acc_out = masked_means(member, correct)
    logodds_in, logodds_out = masked_means(member, logodds)
    with np.errstate(invalid="ignore"):
        mem, mem_logodds = acc_in - acc_out, logodds_in - logodds_out
    loss = np.asarray(run.records("train_loss"))[fit][:, rows]
    final_loss = masked_means(member, loss)[0]
    frame = pd.DataFrame({"index": rows, "mem": mem, "mem_logodds": mem_logodds,
                          "proxy_final_loss": final_loss})
    template = build_template(run)
    ds = run.dataset
    for name in config.self_influence_methods:
        if name not in am.METHODS or name in ("tracin", "if_cg", "if_lissa"):
            continue
        n_used = config.trak_models if name == "trak" else config.method_models
        models = list(range(n_used))
        weights = run.weights(models)
        task = am.Problem(template, params_from_weights(template, weights),
                          ds.x_train, ds.y_train, ds.x_train[rows], ds.y_train[rows],
                          mask[models], buffers=buffers_from_weights(template, weights))
        options = method_options(name, config)
        if "damping" in options:
            options["damping"] = 1.0
        scores = am.compute(name, task, **options)
        frame[f"self_{name}"] = scores[rows, np.arange(n)]
    noise = run.manifest["dataset"].get("corruption", {}).get("label_noise")
    flipped = np.isin(rows, noise["indices"]) if noise else None
    summary = {}
    for column in frame.columns:
        if column in ("index", "mem"):
            continue
        # Low self-influence means the rest of the data pulls against the example.
        entry = {"spearman_mem": spearman(frame[column].to_numpy(), mem)}
        if flipped is not None and flipped.any():
            entry["mislabel_auroc"] = detection_auroc(-frame[column].to_numpy()
                                                      if column.startswith("self_")
                                                      or column == "mem_logodds"
                                                      else frame[column].to_numpy(), flipped)
        summary[column] = entry
    if flipped is not None:
        frame["mislabeled"] = flipped
    return frame, summary


def top_examples(scores: dict[str, np.ndarray], config: AttributeConfig, ds,
                 n_top: int = 5) -> pd.DataFrame:
    rows = []
    for target in range(min(config.top_examples, config.n_targets)):
        for name, values in scores.items():
            column = np.asarray(values[:, target])
            for rank, i in enumerate(np.argsort(-column)[:n_top]):
                rows.append({"target": target, "target_label": int(ds.y_test[target]),
                             "method": name, "rank": rank, "train_index": int(i),
                             "train_label": int(ds.y_train[i]), "score": float(column[i])})
    return pd.DataFrame(rows)


def training_flops(run) -> float:
    """Multiply-adds x 6 (forward 2, backward 4) of every example step of the population."""
    from memlab.models import layer_profile

    d = run.manifest["dataset"]
    macs, _ = layer_profile(build_template(run), tuple(d["input_shape"]))
    steps = run.n_models * run.config.subset_size(d["n_train"]) * run.config.epochs
    return 6.0 * sum(macs) * steps

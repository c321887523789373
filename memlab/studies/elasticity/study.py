"""The local-elasticity study (He & Su 2020; docs/science.md §4): ratio over training, clustering.

    from memlab.studies.elasticity import ElasticityConfig, run
    result = run(ElasticityConfig(data="mnist1d"), out="runs/elasticity")
    result.tables["verdicts"]        # per task: final ReLU vs linear S_rel ratio, and a verdict

Two experiments on one dataset, each for the ReLU MLP and its *linear twin* (the same MLP with
the identity activation), trained as populations by memlab's engine from the base recipe
``config.population``:

1. **Ratio over training.** A C-class MLP is trained on the whole training set; at chosen
   epochs (checkpoints) a callback (:class:`memlab.measures.callbacks.elasticity.
   ElasticityProbe`) computes S_rel and S_ker (one SGD step from the checkpoint on each of
   ``probe_per_class`` training examples per class, scalar = logit of the stepped example's
   class) and records the intra-/inter-class mean ratio of the symmetrized S_rel (and of
   |S_ker|: the signed kernel's inter-class mean can sit near zero).
2. **Clustering.** For each class pair (a, b), a one-logit MLP (``task="binary"``) learns
   "a or b" (positive, 1) against the other classes (negative, 0; as many as positives,
   drawn at random per replicate). After training, S_rel and S_ker on the positives are
   clustered into two groups — K-means on the rows of S_rel, spectral clustering with S_rel
   as affinity, kernel K-means on S_ker — and scored by symmetric accuracy against the
   hidden split a/b. Baselines: K-means on the raw inputs and on their leading principal
   components. The same two-class ratio (within a, within b vs across) is tracked too.

Every population (:class:`~memlab.studies.elasticity.data.ElasticityData`) has its own
resumable run directory under ``out/populations/``: replicate r of the sweep
``activation: [relu, linear]`` gives the ReLU network and its linear twin with the same
initial weights, subset and shuffling (the engine's per-model streams; torch's global RNG is
never seeded). The multi-class models train on an explicit all-ones mask; pair model r on
its positives and its negatives. All similarity rows are one step from the same weights (the
paper instead steps along its SGD pass; see docs/elasticity.md).

With ``run_dir`` set, the study instead measures one model (``member``) of an existing
population run at its final weights.

The verdicts are computed from the seeds: the ReLU network and its twin share replicate r's
weights and data, so their final ratios are compared as paired differences, with a
Student-t 95% interval; an interval that straddles 0 cannot decide.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from memlab import streams, validate
from memlab.data import Dataset
from memlab.errors import ConfigError
from memlab.measures.callbacks.elasticity import STEPPED_COPIES, ElasticityProbe
from memlab.measures.elasticity import (
    cluster_by_similarity,
    cluster_inputs,
    member_similarities,
    per_class_sample,
)
from memlab.measures.stats import ABOVE, BELOW, NO, UNDECIDED, YES, interval_side
from memlab.studies.base import Execution, Result
from memlab.studies.elasticity import tables as tb
from memlab.studies.elasticity.config import ElasticityConfig
from memlab.studies.elasticity.data import ElasticityData, multiclass_data, pair_data

STUDY = "elasticity"
ACTIVATIONS = tb.ACTIVATIONS
HEATMAP_TASKS = 2  # the multi-class population and the first pair: their matrices are tabled
MEMBER_BOOTSTRAP = 1000  # resamples of the probes behind one member's ratio interval


def check_data(config: ElasticityConfig, dataset: Dataset) -> None:
    """The pairs against the dataset's classes, and the memory of the measured step."""
    for a, b in config.pairs:
        if a == b or not (0 <= a < dataset.n_classes and 0 <= b < dataset.n_classes):
            raise ConfigError(
                f"class pair ({a}, {b}) is invalid for {dataset.name} with "
                f"{dataset.n_classes} classes: give two different classes in "
                f"[0, {dataset.n_classes - 1}], e.g. --pairs 5-8")
    if config.pairs and dataset.n_classes < 3:
        raise ConfigError("the clustering experiment needs at least 3 classes (two "
                          "hidden positive classes and negatives); pass --pairs none")
    hidden = list(config.population.model_kwargs.get("hidden", []))
    widths = [math.prod(dataset.input_shape), *hidden, dataset.n_classes]
    n_params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    # The one-step measurement holds STEPPED_COPIES stepped copies of the weights in
    # float64, beside the network and its gradient.
    validate.fits_in_memory(8.0 * n_params * (STEPPED_COPIES + 3),
                            f"--hidden {','.join(map(str, hidden))}",
                            "give smaller hidden widths (the paper's: 100)")


def train_population(probed: ElasticityData, config: ElasticityConfig, run_dir: Path,
                     execution: Execution):
    """Train (or resume) one population: replicate r of ``activation`` relu and linear
    (model v * n_seeds + r) from the base recipe, recording the probes at every measured
    epoch and the final matrices."""
    from memlab.population import train_population as train

    p = config.population
    callbacks = [ElasticityProbe("elasticity", config.epochs, probed.probes, probed.hidden,
                                 probed.mask, p.lr),
                 ElasticityProbe("final", (p.epochs,), probed.probes, probed.hidden,
                                 probed.mask, p.lr, matrices=True)]
    recipe = dataclasses.replace(p, task=probed.task, sweep={"activation": list(ACTIVATIONS)})
    return train(probed.data, recipe, callbacks=callbacks, out=run_dir,
                 membership=np.tile(probed.mask, (len(ACTIVATIONS), 1)),  # per activation
                 **execution.training())


def run(config: ElasticityConfig, out: Path, execution: Execution) -> Result:
    """Both experiments (or, with ``run_dir``, one population member); the populations live
    in ``out/populations/<key>/`` and resume (finished chunks are kept; the result is
    bit-identical to an uninterrupted call)."""
    if config.run_dir is not None:
        return _member_result(config, execution)
    from memlab.data import load

    dataset = load(config.data)
    check_data(config, dataset)
    start = time.perf_counter()
    probed = [multiclass_data(dataset, config)]
    probed += [pair_data(dataset, pair, config) for pair in config.pairs]
    ratio_rows, cluster_rows, matrices, runs = [], [], [], {}
    for t, one in enumerate(probed):
        population = train_population(one, config, out / "populations" / one.key, execution)
        runs[one.name] = str(population.path)
        ratio_rows += tb.ratio_rows(population, one.name, config.epochs, config.n_seeds)
        s_rel_all = np.asarray(population.records("final_s_rel"))[:, -1]  # (n_total, n, n)
        s_ker_all = np.asarray(population.records("final_s_ker"))[:, -1]
        for v, activation in enumerate(ACTIVATIONS):
            for r in range(config.n_seeds):
                k = v * config.n_seeds + r
                if r == 0 and t < HEATMAP_TASKS:
                    matrices.append(tb.matrix_rows(one.name, activation, s_rel_all[k],
                                                   s_ker_all[k], one.hidden[r]))
                if one.pair is not None:
                    found = cluster_by_similarity(s_rel_all[k], s_ker_all[k], r)
                    for method, labels in found.items():
                        cluster_rows.append(tb.cluster_row(one.pair, r, activation, method,
                                                           labels, one.hidden[r]))
        if one.pair is not None:
            for r in range(config.n_seeds):
                probe_x = dataset.x_train[one.probes[r]]
                for method, labels in cluster_inputs(probe_x, config.pca_components,
                                                     r).items():
                    cluster_rows.append(tb.cluster_row(one.pair, r, "inputs", method, labels,
                                                       one.hidden[r]))
    ratio = pd.DataFrame(ratio_rows)
    clustering = pd.DataFrame(cluster_rows, columns=["pair", "seed", "features", "method",
                                                     "symmetric_accuracy"])
    verdicts = tb.ratio_verdicts(ratio)
    versus_inputs = tb.clustering_verdicts(clustering)
    tables = {"ratio": ratio, "ratio_summary": tb.ratio_summary(ratio), "verdicts": verdicts,
              "clustering": clustering, "matrices": pd.concat(matrices, ignore_index=True)}
    if len(clustering):
        tables["clustering_summary"] = tb.clustering_summary(clustering)
        tables["clustering_vs_inputs"] = versus_inputs
    summary = {
        "mode": "study", "dataset": dataset.name, "n_train": int(dataset.n_train),
        "n_classes": int(dataset.n_classes),
        "ratio": {row["task"]: {k: row[k] for k in ("ratio_relu", "ratio_linear",
                                                     "difference", "ci_low", "ci_high", "n",
                                                     "verdict")}
                  for row in verdicts.to_dict(orient="records")},
        "clustering_vs_inputs": {
            f"{row['features']}: {row['method']}": {k: row[k] for k in (
                "accuracy", "difference", "ci_low", "ci_high", "verdict")}
            for row in versus_inputs.to_dict(orient="records")},
        "runs": runs, "seconds": round(time.perf_counter() - start, 1),
    }
    return Result(STUDY, config.to_dict(), tables, summary)


def population_member(run_dir: str | Path, k: int, per_class: int = 20, lr: float = 0.05,
                      seed: int = 0, trust_code: bool = False) -> dict:
    """Similarities at the final weights of model ``k`` of a population run (its multi-class
    logits; scalar = logit of the stepped example's class) on ``per_class`` training
    examples per class of the run's dataset (stream ``[seed, ELASTICITY_PROBES]``). Returns
    the symmetrized matrices, the probes' classes and the two ratios. ``trust_code``: the
    run may import the model module its manifest names (``open_run``)."""
    from memlab.errors import RunError
    from memlab.population import open_run

    if not Path(run_dir).exists():
        raise RunError(f"no run at {run_dir}; train one first (memlab train)")
    population = open_run(run_dir, trust_code=trust_code)
    if not 0 <= k < population.n_models:
        raise ConfigError(f"--member {k} is out of range: {run_dir} has models "
                          f"0..{population.n_models - 1}")
    y = population.dataset.y_train
    probes = per_class_sample(y, np.arange(population.dataset.n_classes), per_class,
                              np.random.default_rng([seed, streams.ELASTICITY_PROBES]))
    found = member_similarities(population.model(k), population.dataset.x_train[probes],
                                y[probes], lr, chunk_size=STEPPED_COPIES)
    return {**found, "model": population.config.model, "dataset": population.dataset.name}


def ratio_interval(s: np.ndarray, classes: np.ndarray, n_bootstrap: int = MEMBER_BOOTSTRAP,
                   seed: int | list[int] = 0, level: float = 0.95) -> dict:
    """The intra/inter ratio of one similarity matrix s (n, n) of probes of ``classes``
    (n,) with a percentile bootstrap interval over the probes (resampled with replacement
    within each class, so every class keeps its size; a pair of copies of one probe is
    not a pair), and whether it lies above 1: "yes" (a step moves its own class more),
    "no" (below 1) or "cannot decide"."""
    s, classes = np.asarray(s, np.float64), np.asarray(classes)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(classes == c) for c in np.unique(classes)]
    ratios = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        pick = np.concatenate([rng.choice(g, len(g)) for g in groups])
        same = classes[pick][:, None] == classes[pick][None, :]
        distinct = pick[:, None] != pick[None, :]
        sub = s[np.ix_(pick, pick)]
        intra, inter = sub[same & distinct], sub[~same]
        ratios[b] = intra.mean() / inter.mean() if intra.size and inter.size else np.nan
    ratios = ratios[np.isfinite(ratios)]
    low, high = ((float(np.quantile(ratios, (1 - level) / 2)),
                  float(np.quantile(ratios, (1 + level) / 2))) if ratios.size
                 else (None, None))
    side = interval_side(low, high, reference=1.0)
    return {"low": low, "high": high, "n_bootstrap": n_bootstrap,
            "verdict": {ABOVE: YES, BELOW: NO}.get(side, UNDECIDED)}


def _member_result(config: ElasticityConfig, execution: Execution) -> Result:
    p = config.population
    member = population_member(config.run_dir, config.member, config.probe_per_class,
                               p.lr, p.seed, execution.trust_code)
    task = f"model {config.member}"
    tables = {"matrices": tb.matrix_rows(task, str(member["model"]), member["s_rel"],
                                         member["s_ker"], member["classes"])}
    # The bootstrap's own stream: the probes' stream [seed, ELASTICITY_PROBES] with a key.
    interval = ratio_interval(member["s_rel"], member["classes"],
                              seed=[p.seed, streams.ELASTICITY_PROBES, 1])
    summary = {"mode": "member", "run_dir": str(config.run_dir), "member": config.member,
               "model": str(member["model"]), "dataset": member["dataset"],
               "ratio_rel": member["ratio_rel"], "ratio_ker": member["ratio_ker"],
               "ratio_rel_low": interval["low"], "ratio_rel_high": interval["high"],
               "ratio_rel_verdict": interval["verdict"],
               "n_bootstrap": interval["n_bootstrap"]}
    return Result(STUDY, config.to_dict(), tables, summary)


def headline_lines(result: Result) -> list[str]:
    """What ``memlab elasticity`` prints: per task the ratio verdict, per method the
    clustering verdict (or the member's two ratios)."""
    s = result.summary
    if s.get("mode") == "member":
        low, high = s.get("ratio_rel_low"), s.get("ratio_rel_high")
        interval = "" if low is None else f" [{low:.3f}, {high:.3f}]"
        return [f"ratio_rel {s['ratio_rel']:.3f}{interval}  ratio_ker {s['ratio_ker']:.3f}; "
                f"above 1: {s.get('ratio_rel_verdict', 'cannot decide')}"]
    lines = []
    for task, row in s["ratio"].items():
        interval = ("no interval" if row["ci_low"] is None
                    else f"95% CI [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]")
        lines.append(f"{task}: S_rel ratio ReLU {row['ratio_relu']:.3f} vs linear "
                     f"{row['ratio_linear']:.3f} (difference {row['difference']:+.3f}, "
                     f"{interval}); ReLU exceeds its twin: {row['verdict']}")
    for method, row in s["clustering_vs_inputs"].items():
        lines.append(f"clustering, {method}: symmetric accuracy {row['accuracy']:.3f}; beats "
                     f"K-means on raw inputs: {row['verdict']}")
    lines.append(f"{s['seconds']:.0f} s")
    return lines

"""Counterfactual memorization of language models (Zhang et al. 2021; docs/science.md §2).

    from memlab.studies.lm_memorize import LMMemorizeConfig, run
    result = run(LMMemorizeConfig(), out="runs/lm_memorize")   # 64 transformers, synthetic
    result.tables["lm_memorization"]      # one row per training document: mem, se, simplicity

Train a population of small language models, model k on its own random 25% of the
documents, then score every training document by counterfactual memorization

    mem(i) = mean{acc_k(i) : k trained on i} − mean{acc_k(i) : k did not}

(acc_k(i): model k's per-token next-token accuracy on document i under teacher forcing; the
standard error is Welch's, from the two groups' sample variances), every (training,
validation) pair by counterfactual influence (the same split, scored on the validation
document), the split-half reliability of the scores against the number of models, and the
shape of memorization against simplicity (mean accuracy over all models), which the paper
finds to be an inverted U (:func:`memlab.measures.shape.simplicity_shape` tests it and
says when the data cannot decide).

Outputs in ``out``: ``population/`` (the run directory; it resumes like any run),
``tables/lm_*.parquet``, ``influence.npy`` and ``influence_se.npy`` ((n_train, n_val)
float32), ``summary.json``, ``config.json`` and ``report.html``.
"""

from __future__ import annotations

import difflib
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from memlab.data.text import Documents
from memlab.errors import RunError
from memlab.io import atomic_save_npy, strict_jsonable
from memlab.measures.inout import in_out, in_out_pairs, masked_means
from memlab.measures.memorization import MEMORIZED, reliability_curve
from memlab.measures.shape import N_BINS, simplicity_shape
from memlab.measures.stats import Z95, spearman_with_interval
from memlab.population import Run, open_run, train_population
from memlab.studies.base import Execution, Result
from memlab.studies.lm_memorize.config import LANGUAGE_MODEL, LM_RECIPE, LMMemorizeConfig

STUDY = "lm_memorize"
TOP_DOCUMENTS = 10  # most memorized documents shown with per-token marks
TOP_PAIRS = 10  # influence pairs shown in the report (5x as many are kept in the table)
VIEW_WIDTH = 64  # characters per line of a token view


# ------------------------------------------------------------------ the population


def train_lm_population(documents: Documents, out: str | Path | None = None,
                        **settings: Any) -> Run:
    """Train a population of language models on ``documents`` with the study's recipe
    (``LM_RECIPE``: 64 transformers, 25% subsets, 40 epochs of Adam) and ``settings``
    overriding any of its fields (``train_population``'s keywords)."""
    return train_population(documents, LM_RECIPE, out=out, **settings)


def lm_documents(run: Run) -> Documents:
    """The documents a language-model run was trained on (its saved copy). The run's task
    is the engine's (``language_model``; a format-1 manifest's dataset ``"lm"`` is read as
    that when the run opens)."""
    if getattr(run.task, "name", None) != LANGUAGE_MODEL:
        raise RunError(f"{run.path} is not a language-model run (train one with memlab "
                       "lm-memorize)")
    return run.dataset


def open_lm_run(path: str | Path) -> tuple[Run, Documents]:
    """Open a finished language-model run and its documents."""
    run = open_run(path)
    return run, lm_documents(run)


# ------------------------------------------------------------------ the study


def run(config: LMMemorizeConfig, out: Path, execution: Execution) -> Result:
    """Train (or resume) the population in ``out/population``, analyze it, and write
    ``influence.npy`` (+ ``influence_se.npy``) into ``out``. Called through
    :func:`memlab.studies.base.run_study`, which validates, reuses a saved result and
    saves this one."""
    documents = config.documents()
    started = time.perf_counter()
    population = train_population(documents, config.population, out=Path(out) / "population",
                                  **execution.training())
    seconds = time.perf_counter() - started
    tables, summary, influence = analyze(population, documents, config)
    atomic_save_npy(Path(out) / "influence.npy", influence.score.astype(np.float32))
    atomic_save_npy(Path(out) / "influence_se.npy", influence.se.astype(np.float32))
    summary["timing"] = {"wall_seconds_this_call": round(seconds, 1),
                         "chunk_seconds_total":
                             population.manifest["summary"]["chunk_seconds_total"]}
    return Result(STUDY, config.to_dict(), tables, strict_jsonable(summary))


# ------------------------------------------------------------------ analysis


def analyze(population: Run, documents: Documents, config: LMMemorizeConfig
            ) -> tuple[dict[str, pd.DataFrame], dict[str, Any], Any]:
    """Tables, summary and the (n_train, n_val) influence estimates of a trained run."""
    rows = population.usable_models()  # (models that diverged: left out, with a warning)
    mask = np.asarray(population.membership_mask[rows])
    acc = np.asarray(population.records("train_acc")[rows], np.float64)
    loss = np.asarray(population.records("train_loss")[rows], np.float64)
    mem = in_out(mask, acc)
    mem_loss = in_out(mask, -loss)  # OUT loss − IN loss, nats per token
    missing = int(((mem.n_in == 0) | (mem.n_out == 0)).sum())
    if missing:
        warnings.warn(f"{missing} documents have no IN or no OUT model: their scores are NaN; "
                      "train more models (--models)", stacklevel=2)
    copies = documents.copies_train
    frame = pd.DataFrame({
        "index": np.arange(documents.n_train), "id": documents.ids_train,
        "kind": documents.kind_train, "copies": copies, "tokens": documents.lengths_train,
        "mem": mem.score, "se": mem.se, "n_in": mem.n_in, "n_out": mem.n_out,
        "acc_in": mem.mean_in, "acc_out": mem.mean_out, "simplicity": acc.mean(0),
        "mem_loss": mem_loss.score, "mem_loss_se": mem_loss.se,
        "text": documents.texts("train"),
    })

    influence = in_out_pairs(mask, np.asarray(population.records("test_acc")[rows], np.float64))
    pairs = top_pairs(influence.score, influence.se, frame, documents)
    # The synthetic corpus plants validation near-duplicates "near:<training id>": are they
    # the strongest pairs?
    near = sum(kind == "near_dup" for kind in documents.kind_test)
    planted_top = int(pairs.planted.head(near).sum()) if near and len(pairs) else None
    reliability = reliability_curve(mask, acc, seed=config.population.seed)
    by_kind = group_summary(frame, "kind")
    by_copies = group_summary(frame, ["kind", "copies"])
    bins = np.minimum((frame.simplicity * N_BINS).astype(int), N_BINS - 1) / N_BINS
    by_simplicity = group_summary(frame.assign(simplicity_bin=bins), "simplicity_bin")
    shape = simplicity_shape(frame.simplicity.to_numpy(), frame.mem.to_numpy())
    top = frame.sort_values("mem", ascending=False).head(TOP_DOCUMENTS)
    token_correct = population.records("train_token_correct")
    top_documents = pd.DataFrame([token_marks(documents, int(i), token_correct, mask, rows)
                                  for i in top["index"]])
    top_documents = top.drop(columns=["text"]).reset_index(drop=True).join(top_documents)

    models = population.models_table()
    random_docs = frame.kind.isin(["unique", "dup"]).to_numpy()  # the synthetic corpus
    summary = {
        "text": config.text, "n_models": population.n_models, "n_train": documents.n_train,
        "n_validation": documents.n_test, "context": documents.context,
        "model": config.population.model, "model_kwargs": dict(config.population.model_kwargs),
        "epochs": config.population.epochs,
        "subset_fraction": config.population.subset_fraction,
        "mem_mean": float(np.nanmean(mem.score)), "mem_median": float(np.nanmedian(mem.score)),
        "memorized_threshold": MEMORIZED,
        "fraction_memorized": float(np.nanmean(mem.score >= MEMORIZED)),
        "n_memorized": int(np.sum(mem.score >= MEMORIZED)),
        "memorized_noise_floor": memorized_noise_floor(mem.score, mem.se, MEMORIZED),
        "se_median": float(np.nanmedian(mem.se)),
        "documents_without_in_or_out": missing,
        "train_acc_in": float(models.train_acc_in.mean()),
        "train_acc_out": float(models.train_acc_out.mean()),
        "validation_acc": float(models.test_acc.mean()),
        "spearman_mem_copies": spearman_with_interval(mem.score, copies.astype(float)),
        "spearman_mem_copies_random": spearman_with_interval(
            mem.score[random_docs], copies[random_docs].astype(float))
        if random_docs.any() and len(set(copies[random_docs])) > 1 else None,
        "pearson_mem_copies": _pearson(mem.score, copies.astype(float)),
        "reliability_all_models": float(reliability.spearman.iloc[-1]),
        "reliability_all_models_sd": float(reliability.spearman_sd.iloc[-1]),
        "simplicity": shape,
        "influence": {"planted_near_duplicates": near, "planted_in_top": planted_top,
                      "infl_max": float(pairs.infl.max()) if len(pairs) else None},
    }
    tables = {"lm_memorization": frame, "lm_influence_pairs": pairs, "lm_by_kind": by_kind,
              "lm_by_copies": by_copies, "lm_by_simplicity": by_simplicity,
              "lm_reliability": reliability, "lm_top_documents": top_documents}
    return tables, summary, influence


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the documents where both are finite (NaN if undefined)."""
    finite = np.isfinite(a) & np.isfinite(b)
    if finite.sum() < 3 or not np.ptp(a[finite]) or not np.ptp(b[finite]):
        return float("nan")
    return float(np.corrcoef(a[finite], b[finite])[0, 1])


def memorized_noise_floor(mem: np.ndarray, se: np.ndarray, threshold: float
                          ) -> dict[str, float | int]:
    """How many documents would score at least ``threshold`` from estimation noise alone.
    With no document memorized each score is about N(0, se_i²) (a difference of two group
    means), so the count at or above the threshold is a sum of independent Bernoulli(p_i),
    p_i = P(N(0, se_i²) ≥ threshold): its mean ``expected`` and standard deviation ``sd``
    over the ``n`` documents with a score and a standard error. The report sets the
    observed count (``n_memorized``) beside it."""
    ok = np.isfinite(mem) & np.isfinite(se)
    with np.errstate(divide="ignore"):  # se = 0: a score that cannot move, p = 0
        p = norm.sf(threshold / se[ok])
    return {"expected": float(p.sum()), "sd": float(np.sqrt((p * (1 - p)).sum())),
            "n": int(ok.sum())}


def group_summary(frame: pd.DataFrame, column: str | list[str]) -> pd.DataFrame:
    """Memorization per group: n, mean, sd, standard error of the mean (document to
    document), its 95% normal interval, and the groups' mean IN/OUT accuracy and
    simplicity. A single grouping column is renamed ``group``."""
    grouped = frame.groupby(column)
    out = grouped.agg(n=("mem", "size"), mem_mean=("mem", "mean"), mem_sd=("mem", "std"),
                      acc_in=("acc_in", "mean"), acc_out=("acc_out", "mean"),
                      simplicity=("simplicity", "mean")).reset_index()
    out["mem_sem"] = out["mem_sd"] / np.sqrt(out["n"])  # standard error of the group mean
    out["mem_ci_low"] = out["mem_mean"] - Z95 * out["mem_sem"]
    out["mem_ci_high"] = out["mem_mean"] + Z95 * out["mem_sem"]
    return out.rename(columns={column: "group"}) if isinstance(column, str) else out


# ------------------------------------------------------------------ documents shown


def top_pairs(values: np.ndarray, se: np.ndarray, frame: pd.DataFrame, documents: Documents,
              k: int = TOP_PAIRS * 5) -> pd.DataFrame:
    """The ``k`` strongest (training, validation) influence pairs, with both texts and
    their character-level similarity (difflib ratio): near-duplicates show up as ~1;
    ``planted``: the validation document is the corpus's near-duplicate of the training one
    (id ``near:<training id>``)."""
    flat = np.where(np.isfinite(values), values, -np.inf).ravel()
    k = min(k, flat.size)
    best = np.argpartition(-flat, k - 1)[:k]
    best = best[np.argsort(-flat[best])]
    train, test = np.unravel_index(best, values.shape)
    test_texts = documents.texts("test")
    rows = []
    for i, j in zip(train, test):
        a, b = frame.text.iloc[i], test_texts[j]
        rows.append({"train": int(i), "validation": int(j), "infl": float(values[i, j]),
                     "infl_se": float(se[i, j]), "mem": float(frame.mem.iloc[i]),
                     "train_id": documents.ids_train[i], "validation_id": documents.ids_test[j],
                     "train_kind": documents.kind_train[i],
                     "validation_kind": documents.kind_test[j],
                     "similarity": difflib.SequenceMatcher(None, a, b).ratio(),
                     "planted": documents.ids_test[j] == f"near:{documents.ids_train[i]}",
                     "train_text": a, "validation_text": b})
    return pd.DataFrame(rows)


def _mark(delta: float) -> str:
    return ("#" if delta >= 0.5 else "+" if delta >= 0.25 else "." if delta >= 0.1 else
            "-" if delta <= -0.1 else " ")


def token_marks(documents: Documents, index: int, token_correct: np.ndarray,
                mask: np.ndarray, rows: np.ndarray | slice = slice(None)) -> dict[str, str]:
    """Training document ``index`` as one character per token (``↵`` a newline, ``·`` a
    token that is not one character) and, per token, a mark of the IN models' accuracy
    minus the OUT models' ('#' >= .5, '+' >= .25, '.' >= .1, '-' <= -.1).
    ``token_correct``: (n_models, n_train, context) bool; ``rows``: the models ``mask``
    holds (the population less its diverged models)."""
    length = int(documents.lengths_train[index])
    correct = np.asarray(token_correct[:, index, :length], np.float64)[rows]  # (t, L)
    with np.errstate(invalid="ignore"):  # NaN: no IN or no OUT model, no mark
        delta = np.subtract(*masked_means(mask[:, [index]], correct))
    chars = [documents.token_strings[t] for t in documents.tokens_train[index, 1:length + 1]]
    chars = ["↵" if c == "\n" else (c if len(c) == 1 else "·") for c in chars]
    return {"shown": "".join(chars), "marks": "".join(_mark(d) for d in delta)}


def token_view(row: Any, width: int = VIEW_WIDTH) -> str:
    """A row of the ``lm_top_documents`` table as text: a header, then each line of the
    document followed by its line of per-token marks."""
    lines = [f"{row.id}  [{row.kind}, copies {row.copies}]  mem {row.mem:.3f} ± {row.se:.3f}  "
             f"IN acc {row.acc_in:.2f}  OUT acc {row.acc_out:.2f}"]
    for start in range(0, len(row.shown), width):
        lines.append("  " + row.shown[start:start + width])
        lines.append("  " + row.marks[start:start + width])
    return "\n".join(lines)


# ------------------------------------------------------------------ what the command prints


def headline_lines(result: Result) -> list[str]:
    """What ``memlab lm-memorize`` prints: memorization by kind, the simplicity verdict,
    the three most memorized documents."""
    s = result.summary
    by_kind = result.tables["lm_by_kind"]
    lines = [f"{s['n_models']} models on {s['n_train']} documents: mean memorization "
             f"{s['mem_mean']:.3f} (median se {s['se_median']:.3f}), "
             f"{s['fraction_memorized']:.1%} of documents >= {s['memorized_threshold']}; "
             f"reliability {s['reliability_all_models']:.3f}",
             f"memorization against simplicity: {s['simplicity']['verdict']}",
             "", "memorization by kind:",
             by_kind[["group", "n", "mem_mean", "mem_sem", "acc_in", "acc_out"]]
             .to_string(index=False, float_format="%.3f"),
             "", "most memorized documents (per token: IN minus OUT accuracy, '#' >= .5):"]
    lines += [token_view(row) + "\n" for row in
              result.tables["lm_top_documents"].head(3).itertuples()]
    return lines

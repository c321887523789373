"""Counterfactual memorization of language models (Zhang et al. 2021; docs/science.md §2).

    from memlab.studies.lm_memorize import LMMemorizeConfig, run
    result = run(LMMemorizeConfig(), out="runs/lm-memorize")     # 64 transformers, synthetic
    result.tables["lm_memorization"]      # one row per training document: mem, se, simplicity

Train a population of small language models, model k on its own random 25% of the
documents, then score every training document by counterfactual memorization

    mem(i) = mean{acc_k(i) : k trained on i} − mean{acc_k(i) : k did not}

(acc_k(i): model k's per-token next-token accuracy on document i under teacher forcing; the
standard error is Welch's, from the two groups' sample variances), every (training,
validation) pair by counterfactual influence (the same split, scored on the validation
document), the split-half reliability of the scores against the number of models, and the
shape of memorization against simplicity (mean accuracy over all models), which the paper
finds to be an inverted U: :func:`simplicity_shape` tests it and says when the data cannot
decide.

Outputs in ``out``: ``population/`` (the run directory; it resumes like any run),
``tables/lm_*.parquet``, ``influence.npy`` and ``influence_se.npy`` ((n_train, n_val)
float32), ``summary.json``, ``config.json`` and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import difflib
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab.data.text import Documents, load_documents
from memlab.errors import ConfigError, RunError
from memlab.io import atomic_save_npy, strict_jsonable
from memlab.measures.memorization import (
    MEMORIZED,
    Z95,
    in_out,
    in_out_pairs,
    reliability_curve,
    spearman,
)
from memlab.population import PopulationConfig, Run, open_run, train_population
from memlab.studies.base import Result, StudyConfig

STUDY = "lm_memorize"
TOP_DOCUMENTS = 10  # most memorized documents shown with per-token marks
TOP_PAIRS = 10  # influence pairs shown in the report (5x as many are kept in the table)
MIN_BIN = 5  # documents a simplicity bin needs to enter the shape test and the bin curve
N_BINS = 10  # simplicity bins of width 0.1
SYNTHETIC_CONTEXT, TEXT_CONTEXT = 48, 64  # synthetic documents are short
TEXT_TRAIN, TEXT_VALIDATION = 800, 200  # real text: sized for 64 models on 2 cores in minutes
VIEW_WIDTH = 64  # characters per line of a token view

# The paper trains each model on a random 25% of the documents; Adam suits transformers.
LM_RECIPE = PopulationConfig(model="transformer", n_models=64, subset_fraction=0.25,
                             epochs=40, batch_size=32, optimizer="adam", lr=3e-3,
                             momentum=0.0, chunk_size=16, task="language_model")


@dataclass(frozen=True)
class LMMemorizeConfig(StudyConfig):
    """A counterfactual-memorization study.

    text: ``synthetic`` (planted long tail), ``shakespeare``, ``bible``, or a path to a
        ``.txt`` (a document per line) or ``.jsonl`` (``text``, ``id``) file.
    context: tokens per document (longer ones are cut); None: 48 for ``synthetic``, 64
        otherwise. n_train / n_validation: documents drawn from a real corpus (None: 800 /
        200; the synthetic corpus has its own planted sizes).
    population: the recipe of the language models (model, n_models, epochs, lr, ...); its
        ``seed`` is not used: ``seed`` below seeds everything.
    seed: the documents drawn, the population's subsets, initializations and shuffling,
        and the reliability splits.
    n_workers: training processes (do not change results).
    """

    text: str = "synthetic"
    context: int | None = None
    n_train: int | None = None
    n_validation: int | None = None
    tokenizer: str = "byte"
    population: PopulationConfig = field(default_factory=lambda: LM_RECIPE)
    seed: int = 0
    n_workers: int | None = None

    @classmethod
    def quick(cls) -> LMMemorizeConfig:
        """A smoke test (seconds on 2 cores), not a result: 8 small MLP language models,
        each on half the synthetic corpus (a few documents have no IN or no OUT model), 3
        epochs at a larger Adam step, in chunks of 4."""
        return cls(population=dataclasses.replace(
            LM_RECIPE, model="mlp", model_kwargs={"hidden": 32, "d_embed": 8}, n_models=8,
            epochs=3, lr=1e-2, subset_fraction=0.5, chunk_size=4))

    @classmethod
    def full(cls) -> LMMemorizeConfig:
        """The README's numbers: 64 transformers on the synthetic corpus (``text`` =
        ``shakespeare`` for the real-text ones)."""
        return cls()

    def documents(self) -> Documents:
        synthetic = self.text == "synthetic"
        context = self.context or (SYNTHETIC_CONTEXT if synthetic else TEXT_CONTEXT)
        n_train = self.n_train if synthetic or self.n_train else TEXT_TRAIN
        n_test = self.n_validation if synthetic or self.n_validation else TEXT_VALIDATION
        return load_documents(self.text, context=context, n_train=n_train, n_test=n_test,
                              seed=self.seed, tokenizer=self.tokenizer)

    def population_config(self) -> PopulationConfig:
        """The recipe trained: ``population`` with this study's seed."""
        return dataclasses.replace(self.population, seed=self.seed, task="language_model")

    def validate(self) -> None:
        """Refuse settings the study cannot estimate from (before any training)."""
        if not isinstance(self.population, PopulationConfig):
            raise ConfigError("LMMemorizeConfig.population must be a PopulationConfig")
        if self.population.n_models < 4:
            raise ConfigError(f"need at least 4 models for IN/OUT estimates and split-half "
                              f"reliability, got {self.population.n_models}")
        if self.population.sweep or self.population.subsets != "random":
            raise ConfigError("the LM study trains one population on random subsets; drop "
                              "the sweep / explicit subsets")
        if self.population.seed not in (0, self.seed):
            raise ConfigError("set LMMemorizeConfig.seed, not population.seed: one seed "
                              "draws the documents and trains the population")
        if self.text == "synthetic" and (self.n_train or self.n_validation):
            raise ConfigError("n_train / n_validation apply to real text; the synthetic corpus "
                              "has its own planted sizes")


# ------------------------------------------------------------------ the population


def train_lm_population(documents: Documents, out: str | Path | None = None,
                        **settings: Any) -> Run:
    """Train a population of language models on ``documents`` with the study's recipe
    (``LM_RECIPE``: 64 transformers, 25% subsets, 40 epochs of Adam) and ``settings``
    overriding any of its fields (``train_population``'s keywords)."""
    return train_population(documents, LM_RECIPE, out=out, **settings)


def lm_documents(run: Run) -> Documents:
    """The documents a language-model run was trained on (its saved copy)."""
    if run.manifest["dataset"].get("task") != "lm":
        raise RunError(f"{run.path} is not a language-model run (train one with memlab "
                       "lm-memorize)")
    return run.dataset


def open_lm_run(path: str | Path) -> tuple[Run, Documents]:
    """Open a finished language-model run and its documents."""
    run = open_run(path)
    return run, lm_documents(run)


# ------------------------------------------------------------------ the study


def run(config: LMMemorizeConfig, out: str | Path | None = None,
        progress: bool = True) -> Result:
    """Train (or resume) the population in ``out/population``, analyze it, and save tables,
    ``influence.npy``, summary and report in ``out`` (a temporary directory if None).
    A second call with the same ``out`` and config returns the saved result."""
    config.validate()
    saved = _saved(out, config)
    if saved is not None:
        return saved
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="memlab-lm-"))
    documents = config.documents()
    started = time.perf_counter()
    population = train_population(documents, config.population_config(),
                                  out=out / "population", n_workers=config.n_workers,
                                  progress=progress)
    seconds = time.perf_counter() - started
    tables, summary, influence = analyze(population, documents, config)
    atomic_save_npy(out / "influence.npy", influence.score.astype(np.float32))
    atomic_save_npy(out / "influence_se.npy", influence.se.astype(np.float32))
    summary["timing"] = {"wall_seconds_this_call": round(seconds, 1),
                         "chunk_seconds_total":
                             population.manifest["summary"]["chunk_seconds_total"]}
    result = Result(study=STUDY, config=config.to_dict(), tables=tables,
                    summary=strict_jsonable(summary))
    result.save(out)
    return result


def _saved(out: str | Path | None, config: LMMemorizeConfig) -> Result | None:
    """The saved result of this config in ``out``, whatever ``n_workers`` made it (the
    number of processes does not change results)."""
    if out is None or not (Path(out) / "summary.json").exists():
        return None
    try:
        result = Result.load(out)
    except RunError:
        return None
    wanted = {**config.to_dict(), "n_workers": None}
    if result.study == STUDY and {**result.config, "n_workers": None} == wanted:
        return result
    return None


# ------------------------------------------------------------------ analysis


def analyze(population: Run, documents: Documents, config: LMMemorizeConfig
            ) -> tuple[dict[str, pd.DataFrame], dict[str, Any], Any]:
    """Tables, summary and the (n_train, n_val) influence estimates of a trained run."""
    mask = np.asarray(population.membership_mask)
    acc = np.asarray(population.records("train_acc"), np.float64)
    loss = np.asarray(population.records("train_loss"), np.float64)
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

    influence = in_out_pairs(mask, np.asarray(population.records("test_acc"), np.float64))
    pairs = top_pairs(influence.score, influence.se, frame, documents)
    # The synthetic corpus plants validation near-duplicates "near:<training id>": are they
    # the strongest pairs?
    near = sum(kind == "near_dup" for kind in documents.kind_test)
    planted_top = int(pairs.planted.head(near).sum()) if near and len(pairs) else None
    reliability = reliability_curve(mask, acc, seed=config.seed)
    by_kind = group_summary(frame, "kind")
    by_copies = group_summary(frame, ["kind", "copies"])
    bins = np.minimum((frame.simplicity * N_BINS).astype(int), N_BINS - 1) / N_BINS
    by_simplicity = group_summary(frame.assign(simplicity_bin=bins), "simplicity_bin")
    shape = simplicity_shape(frame.simplicity.to_numpy(), frame.mem.to_numpy())
    top = frame.sort_values("mem", ascending=False).head(TOP_DOCUMENTS)
    token_correct = population.records("train_token_correct")
    top_documents = pd.DataFrame([token_marks(documents, int(i), token_correct, mask)
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


def spearman_with_interval(a: np.ndarray, b: np.ndarray) -> dict[str, float | int]:
    """Spearman's ρ over the entries finite in both, with a 95% interval from Fisher's z and
    the Fieller–Hartley–Pearson variance 1.06 / (n − 3) (NaN where undefined)."""
    both = np.isfinite(a) & np.isfinite(b)
    n = int(both.sum())
    rho = spearman(a, b)
    if n <= 3 or not np.isfinite(rho):
        return {"rho": rho, "ci_low": float("nan"), "ci_high": float("nan"), "n": n}
    z, half = np.arctanh(np.clip(rho, -0.999999, 0.999999)), Z95 * np.sqrt(1.06 / (n - 3))
    return {"rho": rho, "ci_low": float(np.tanh(z - half)), "ci_high": float(np.tanh(z + half)),
            "n": n}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the documents where both are finite (NaN if undefined)."""
    finite = np.isfinite(a) & np.isfinite(b)
    if finite.sum() < 3 or not np.ptp(a[finite]) or not np.ptp(b[finite]):
        return float("nan")
    return float(np.corrcoef(a[finite], b[finite])[0, 1])


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


# ------------------------------------------------------------------ the inverted U


def _line(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line y = a + b x with the slope's heteroskedasticity-robust (HC1)
    standard error and 95% interval; NaN where fewer than 3 points or x is constant."""
    nan = float("nan")
    if len(x) < 3 or np.ptp(x) == 0:
        return {"slope": nan, "intercept": nan, "se": nan, "ci_low": nan, "ci_high": nan,
                "n": int(len(x))}
    dx = x - x.mean()
    slope = float((dx * (y - y.mean())).sum() / (dx * dx).sum())
    intercept = float(y.mean() - slope * x.mean())
    residual = y - intercept - slope * x
    se = float(np.sqrt(len(x) / (len(x) - 2) * (dx * dx * residual**2).sum())
               / (dx * dx).sum())
    return {"slope": slope, "intercept": intercept, "se": se, "ci_low": slope - Z95 * se,
            "ci_high": slope + Z95 * se, "n": int(len(x))}


PEAKS, RISES, FALLS, UNDECIDED = ("peaks at intermediate simplicity", "rises monotonically",
                                  "falls monotonically", "cannot decide")


def simplicity_shape(simplicity: np.ndarray, mem: np.ndarray, n_bins: int = N_BINS,
                     min_documents: int = MIN_BIN) -> dict[str, Any]:
    """Does memorization peak at intermediate simplicity (the paper's inverted U), rise or
    fall monotonically with it, or can the data not tell? ``simplicity``, ``mem``: (n,)
    per document (NaN entries are dropped).

    The two-lines test (Simonsohn 2018): cut simplicity in [0, 1] into ``n_bins`` equal bins, take
    the bin with the highest mean memorization among bins of at least ``min_documents``,
    break at its mean simplicity x*, and fit one least-squares line to the documents with
    simplicity <= x* and one to those >= x* (HC1 standard errors). Verdict:

    - ``peaks at intermediate simplicity``: the left slope's 95% interval lies above 0 and
      the right slope's below 0;
    - ``rises monotonically``: the slope over all documents lies above 0, the right slope
      is not significantly negative and the left one not significantly negative;
    - ``falls monotonically``: the mirror image;
    - ``cannot decide``: anything else (flat, too few bins, conflicting slopes).

    Choosing x* at the highest bin favours finding a peak a little (the usual caveat of
    the test); the 95% intervals are per slope. Returns the verdict with every slope.
    """
    simplicity, mem = np.asarray(simplicity, np.float64), np.asarray(mem, np.float64)
    ok = np.isfinite(simplicity) & np.isfinite(mem)
    x, y = simplicity[ok], mem[ok]
    bins = np.minimum((x * n_bins).astype(int), n_bins - 1)
    labels, counts = np.unique(bins, return_counts=True)
    kept = labels[counts >= min_documents]
    result: dict[str, Any] = {"verdict": UNDECIDED, "n_documents": int(len(x)),
                              "bins_tested": int(len(kept)), "n_bins": n_bins,
                              "breakpoint": None, "peak_bin": None, "left": None,
                              "right": None, "overall": _line(x, y)}
    if len(kept) < 3:
        result["reason"] = (f"fewer than 3 simplicity bins hold {min_documents} or more "
                            "documents")
        return result
    means = np.array([y[bins == b].mean() for b in kept])
    peak = kept[int(np.argmax(means))]
    breakpoint = float(x[bins == peak].mean())
    left, right, overall = _line(x[x <= breakpoint], y[x <= breakpoint]), \
        _line(x[x >= breakpoint], y[x >= breakpoint]), result["overall"]

    def above(line):  # slope significantly > 0 (False where undefined)
        return bool(line["ci_low"] > 0)

    def below(line):
        return bool(line["ci_high"] < 0)

    if above(left) and below(right):
        verdict = PEAKS
    elif above(overall) and not below(right) and not below(left):
        verdict = RISES
    elif below(overall) and not above(left) and not above(right):
        verdict = FALLS
    else:
        verdict = UNDECIDED
    result.update(verdict=verdict, breakpoint=breakpoint, peak_bin=float(peak / n_bins),
                  left=left, right=right)
    return result


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
                mask: np.ndarray) -> dict[str, str]:
    """Training document ``index`` as one character per token (``↵`` a newline, ``·`` a
    token that is not one character) and, per token, a mark of the IN models' accuracy
    minus the OUT models' ('#' >= .5, '+' >= .25, '.' >= .1, '-' <= -.1).
    ``token_correct``: (n_models, n_train, context) bool."""
    length = int(documents.lengths_train[index])
    correct = np.asarray(token_correct[:, index, :length], np.float64)  # (t, L)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no IN or no OUT model: no marks
        delta = correct[mask[:, index]].mean(0) - correct[~mask[:, index]].mean(0)
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

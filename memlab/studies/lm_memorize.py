"""Counterfactual memorization of language models (Zhang et al. 2021; SCIENCE.md §2).

Train a population of small language models, each on a random 25% of the documents, then
score every training document by counterfactual memorization (per-token accuracy of the
models that trained on it minus that of the models that did not), every (training,
validation) pair by counterfactual influence, and write tables and a report:

    from memlab.studies.lm_memorize import LMStudyConfig, run_lm_memorize
    result = run_lm_memorize(LMStudyConfig(text="synthetic", n_models=64), out="runs/lm")
    result.documents_table      # one row per training document: mem, se, simplicity, ...

Outputs in ``out``: ``population/`` (the run directory), ``tables/*.parquet``,
``influence.npy`` (+ ``influence_se.npy``, (n_train, n_val) float32), ``report.html``.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memlab.data.text import Documents, load_documents
from memlab.errors import ConfigError
from memlab.lm import LM_DEFAULTS, train_lm_population
from memlab.measures.memorization import in_out, in_out_pairs, reliability_curve, spearman
from memlab.population.store import atomic_save_npy, atomic_save_table

MEMORIZED = 0.25  # cf_mem >= this counts as memorized (the label-memorization threshold)
TOP_DOCUMENTS = 10
TOP_PAIRS = 10


@dataclass(frozen=True)
class LMStudyConfig:
    """Everything that defines a study. ``None`` means the source's default: context 48 for
    ``synthetic`` (its documents are short), 64 otherwise; for real text 800 training and
    200 validation documents (sized so that 64 models train on a 2-core CPU in minutes)."""

    text: str = "synthetic"
    n_models: int = 64
    model: str = "transformer"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = LM_DEFAULTS["epochs"]
    batch_size: int = LM_DEFAULTS["batch_size"]
    lr: float = LM_DEFAULTS["lr"]
    subset_fraction: float = LM_DEFAULTS["subset_fraction"]
    context: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    tokenizer: str = "byte"
    seed: int = 0
    chunk_size: int = LM_DEFAULTS["chunk_size"]

    @classmethod
    def quick(cls) -> LMStudyConfig:
        """A smoke-test preset (seconds on 2 cores): 8 small MLP language models, each on
        half the synthetic corpus (every document has IN and OUT models), 3 epochs at a
        larger Adam step, in chunks of 4."""
        return cls(n_models=8, model="mlp", model_kwargs={"hidden": 32, "d_embed": 8},
                   epochs=3, lr=1e-2, subset_fraction=0.5, chunk_size=4)

    def documents(self) -> Documents:
        synthetic = self.text == "synthetic"
        context = self.context or (48 if synthetic else 64)
        n_train = self.n_train if synthetic or self.n_train else 800
        n_test = self.n_test if synthetic or self.n_test else 200
        return load_documents(self.text, context=context, n_train=n_train, n_test=n_test,
                              seed=self.seed, tokenizer=self.tokenizer)


@dataclass
class LMStudyResult:
    documents: Documents
    documents_table: pd.DataFrame  # one row per training document
    pairs: pd.DataFrame  # the strongest influence pairs
    by_kind: pd.DataFrame
    by_copies: pd.DataFrame
    by_simplicity: pd.DataFrame
    reliability: pd.DataFrame
    summary: dict[str, Any]
    token_views: list[str]  # the top memorized documents with per-token IN/OUT marks


def run_lm_memorize(config: LMStudyConfig, out: str | Path, workers: int | None = None,
                    progress: bool = True, figures: str | Path | None = None) -> LMStudyResult:
    """Train (or resume) the population, analyze it, write tables and ``report.html``."""
    out = Path(out)
    documents = config.documents()
    started = time.perf_counter()
    run = train_lm_population(
        documents, out=out / "population", model=config.model,
        model_kwargs=dict(config.model_kwargs), n_models=config.n_models,
        subset_fraction=config.subset_fraction, epochs=config.epochs,
        batch_size=config.batch_size, lr=config.lr, seed=config.seed,
        chunk_size=config.chunk_size, n_workers=workers, progress=progress)
    seconds = time.perf_counter() - started
    result = analyze(run, documents, config)
    result.summary["wall_seconds_this_call"] = round(seconds, 1)
    result.summary["chunk_seconds_total"] = run.manifest["summary"]["chunk_seconds_total"]

    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    for name, frame in (("lm_memorization", result.documents_table),
                        ("lm_influence_pairs", result.pairs), ("lm_by_kind", result.by_kind),
                        ("lm_by_copies", result.by_copies),
                        ("lm_by_simplicity", result.by_simplicity),
                        ("lm_reliability", result.reliability)):
        atomic_save_table(tables / f"{name}.parquet", frame)
    write_report(result, config, out / "report.html", figures)
    return result


# ------------------------------------------------------------------ analysis


def analyze(run, documents: Documents, config: LMStudyConfig) -> LMStudyResult:
    mask = np.asarray(run.membership_mask)
    acc = np.asarray(run.records("train_acc"), np.float64)
    loss = np.asarray(run.records("train_loss"), np.float64)
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

    test_acc = np.asarray(run.records("test_acc"), np.float64)
    infl = in_out_pairs(mask, test_acc)
    atomic_save_npy(run.path.parent / "influence.npy", infl.score.astype(np.float32))
    atomic_save_npy(run.path.parent / "influence_se.npy", infl.se.astype(np.float32))
    pairs = top_pairs(infl.score, infl.se, frame, documents)

    reliability = reliability_curve(mask, acc, seed=config.seed)
    by_kind = _group_summary(frame, "kind")
    by_copies = _group_summary(frame, ["kind", "copies"])
    frame["simplicity_bin"] = np.minimum((frame.simplicity * 10).astype(int), 9) / 10
    by_simplicity = _group_summary(frame, "simplicity_bin")
    frame = frame.drop(columns="simplicity_bin")
    models = run.models_table()
    summary = {
        "text": config.text, "n_models": run.n_models, "n_train": documents.n_train,
        "n_validation": documents.n_test, "context": documents.context,
        "model": config.model, "model_kwargs": dict(config.model_kwargs),
        "epochs": config.epochs, "subset_fraction": config.subset_fraction,
        "mem_mean": float(np.nanmean(mem.score)), "mem_median": float(np.nanmedian(mem.score)),
        "fraction_memorized": float(np.nanmean(mem.score >= MEMORIZED)),
        "se_median": float(np.nanmedian(mem.se)),
        "documents_without_in_or_out": missing,
        "train_acc_in": float(models.train_acc_in.mean()),
        "train_acc_out": float(models.train_acc_out.mean()),
        "validation_acc": float(models.test_acc.mean()),
        "spearman_mem_copies": spearman(mem.score, copies.astype(float)),
        "pearson_mem_copies": _pearson(mem.score, copies.astype(float)),
        "reliability_all_models": float(reliability.spearman.iloc[-1]),
        "simplicity_at_peak": _peak(by_simplicity),
    }
    top = frame.sort_values("mem", ascending=False).head(TOP_DOCUMENTS)
    token_correct = run.records("train_token_correct")
    views = [token_view(documents, int(i), token_correct, mask, row)
             for i, row in zip(top["index"], top.itertuples())]
    return LMStudyResult(documents, frame, pairs, by_kind, by_copies, by_simplicity,
                         reliability, summary, views)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the documents where both are finite (NaN if undefined)."""
    finite = np.isfinite(a) & np.isfinite(b)
    if finite.sum() < 3 or not np.ptp(a[finite]) or not np.ptp(b[finite]):
        return float("nan")
    return float(np.corrcoef(a[finite], b[finite])[0, 1])


def _peak(by_simplicity: pd.DataFrame, min_documents: int = 5) -> float:
    """The simplicity bin (lower edge) with the highest mean memorization, among bins of at
    least ``min_documents`` documents."""
    bins = by_simplicity[by_simplicity["n"] >= min_documents]
    return float(bins.group[bins.mem_mean.idxmax()]) if len(bins) else float("nan")


def _group_summary(frame: pd.DataFrame, column: str | list[str]) -> pd.DataFrame:
    """Memorization summarized per group: n, mean, sd, standard error of the mean, ..."""
    grouped = frame.groupby(column)
    out = grouped.agg(n=("mem", "size"), mem_mean=("mem", "mean"), mem_sd=("mem", "std"),
                      acc_in=("acc_in", "mean"), acc_out=("acc_out", "mean"),
                      simplicity=("simplicity", "mean")).reset_index()
    out["mem_sem"] = out["mem_sd"] / np.sqrt(out["n"])  # standard error of the group mean
    return out.rename(columns={column: "group"}) if isinstance(column, str) else out


def top_pairs(values: np.ndarray, se: np.ndarray, frame: pd.DataFrame, documents: Documents,
              k: int = TOP_PAIRS * 5) -> pd.DataFrame:
    """The ``k`` strongest (training, validation) influence pairs, with both texts and
    their character-level similarity (difflib ratio): near-duplicates show up as ~1."""
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
                     "train_text": a, "validation_text": b})
    return pd.DataFrame(rows)


def token_view(documents: Documents, index: int, token_correct: np.ndarray, mask: np.ndarray,
               row, width: int = 64) -> str:
    """A training document as text, each line followed by a line of marks: per token, the
    IN models' accuracy minus the OUT models' ('#' >= .5, '+' >= .25, '.' >= .1, '-' <= -.1).
    """
    length = int(documents.lengths_train[index])
    correct = np.asarray(token_correct[:, index, :length], np.float64)  # (t, L)
    inside = correct[mask[:, index]].mean(0)
    outside = correct[~mask[:, index]].mean(0)
    delta = inside - outside
    tokens = documents.tokens_train[index, 1:length + 1]
    chars = [documents.token_strings[t] for t in tokens]
    chars = ["↵" if c == "\n" else (c if len(c) == 1 else "·") for c in chars]
    marks = ["#" if d >= 0.5 else "+" if d >= 0.25 else "." if d >= 0.1 else
             "-" if d <= -0.1 else " " for d in delta]
    lines = [f"{row.id}  [{row.kind}, copies {row.copies}]  mem {row.mem:.3f} ± {row.se:.3f}  "
             f"IN acc {row.acc_in:.2f}  OUT acc {row.acc_out:.2f}"]
    for start in range(0, length, width):
        lines.append("  " + "".join(chars[start:start + width]))
        lines.append("  " + "".join(marks[start:start + width]))
    return "\n".join(lines)


# ------------------------------------------------------------------ report


def write_report(result: LMStudyResult, config: LMStudyConfig, path: Path,
                 figures: str | Path | None = None) -> None:
    import matplotlib.pyplot as plt

    from memlab.report import Report

    s = result.summary
    frame = result.documents_table
    prefix = f"lm_{config.text if config.text in ('synthetic', 'shakespeare', 'bible') else 'text'}"
    report = Report(f"Counterfactual memorization: {config.text}")
    report.text(
        f"{s['n_models']} {config.model} language models, each trained on a random "
        f"{config.subset_fraction:.0%} of {s['n_train']} documents (context {s['context']} "
        f"tokens, {config.epochs} epochs). Performance = per-token next-token accuracy under "
        f"teacher forcing. Mean per-token accuracy: {s['train_acc_in']:.3f} on a model's own "
        f"documents, {s['train_acc_out']:.3f} on held-out training documents, "
        f"{s['validation_acc']:.3f} on validation documents.")
    report.text(
        f"Mean counterfactual memorization {s['mem_mean']:.3f} (median standard error "
        f"{s['se_median']:.3f}); {s['fraction_memorized']:.1%} of documents have "
        f"mem ≥ {MEMORIZED}. Split-half reliability (Spearman) with all models: "
        f"{s['reliability_all_models']:.3f}. Spearman(mem, copies) = "
        f"{s['spearman_mem_copies']:.3f}.", note=True)

    figs = []
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(frame.mem.dropna(), bins=40, color="#4c72b0")
    ax.axvline(MEMORIZED, color="k", ls="--", lw=1)
    ax.set(xlabel="counterfactual memorization", ylabel="documents")
    figs.append(("distribution", fig, "Distribution of counterfactual memorization"))

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for kind, part in frame.groupby("kind"):
        ax.scatter(part.simplicity, part.mem, s=6, alpha=0.6, label=kind)
    sim = result.by_simplicity[result.by_simplicity.n >= 5]
    ax.plot(sim.group + 0.05, sim.mem_mean, "k-o", ms=3, lw=1.5, label="bin mean")
    ax.set(xlabel="simplicity (mean accuracy over all models)",
           ylabel="counterfactual memorization")
    ax.legend(fontsize=7, markerscale=2)
    figs.append(("simplicity", fig, "Memorization against simplicity: it peaks at "
                 "intermediate difficulty"))

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for offset, (kind, part) in enumerate(frame.groupby("kind")):
        groups = _group_summary(part, "copies")
        ax.errorbar(groups.group * (1 + 0.04 * offset), groups.mem_mean,
                    yerr=1.96 * groups.mem_sem.fillna(0), fmt="o-", capsize=3, label=kind)
    ax.set(xscale="log", xlabel="exact copies in the training set",
           ylabel="mean memorization (95% CI)")
    ax.set_xticks(sorted(frame.copies.unique()), [str(c) for c in sorted(frame.copies.unique())])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    figs.append(("duplicates", fig, "Memorization against duplicate count, by document kind"))

    fig, ax = plt.subplots(figsize=(5, 3.2))
    rel = result.reliability
    ax.errorbar(rel.n_models, rel.spearman, yerr=rel.spearman_sd, fmt="o-", capsize=3)
    ax.set(xscale="log", xlabel="models (split into two halves)",
           ylabel="split-half Spearman of mem")
    figs.append(("reliability", fig, "Reliability rises with the number of models"))

    for name, fig, caption in figs:
        if figures is not None:
            Path(figures).mkdir(parents=True, exist_ok=True)
            fig.savefig(Path(figures) / f"{prefix}_{name}.png", dpi=90, bbox_inches="tight")
        report.figure(fig, caption)

    report.heading("Memorization by document kind")
    report.table(result.by_kind, caption="mem_sem: standard error of the group mean")
    report.heading("Memorization by document kind and duplicate count")
    report.table(result.by_copies)
    report.heading("Memorization by simplicity")
    report.table(result.by_simplicity)
    report.heading("Reliability")
    report.table(result.reliability)
    report.heading(f"The {TOP_DOCUMENTS} most memorized documents")
    report.text("Under each line of text, per token: IN-model accuracy minus OUT-model "
                "accuracy ('#' ≥ 0.5, '+' ≥ 0.25, '.' ≥ 0.1, '-' ≤ −0.1; ↵ = newline).")
    report.code("\n\n".join(result.token_views))
    report.heading("Strongest influence pairs (training → validation)")
    shown = result.pairs.head(TOP_PAIRS)
    report.code("\n\n".join(
        f"infl {p.infl:.3f} ± {p.infl_se:.3f}  similarity {p.similarity:.2f}  "
        f"(mem {p.mem:.3f})\n  train {p.train_id}: {_one_line(p.train_text)}\n"
        f"  val   {p.validation_id}: {_one_line(p.validation_text)}"
        for p in shown.itertuples()))
    report.table(result.documents_table.drop(columns="text").sort_values("mem", ascending=False)
                 .head(30), caption="Top 30 documents by memorization")
    report.heading("Settings")
    report.code("\n".join(f"{k}: {v}" for k, v in dataclasses.asdict(config).items()))
    report.save(path)


def _one_line(text: str) -> str:
    return text.replace("\n", " ↵ ")


def check_config(config: LMStudyConfig) -> None:
    if config.n_models < 4:
        raise ConfigError(f"need at least 4 models for IN/OUT estimates and reliability, got "
                          f"{config.n_models}")

"""Heavy-tailed self-regularization (Martin & Mahoney): per-layer weight spectra, data-free.

    from memlab.measures.spectra import analyze
    table = analyze("minilm")                  # one row per layer, in the model's order
    table = analyze(model, uncertainty=True)   # + bootstrap interval of α and GOF p-value

Modules, by concern: :mod:`.weights` (inputs → matrices, layer order, conv conventions),
:mod:`.eigen` (ESDs), :mod:`.powerlaw` (Clauset tail fit), :mod:`.bootstrap` (interval,
goodness of fit), :mod:`.alternatives` (likelihood-ratio tests), :mod:`.mp`
(Marchenko–Pastur), :mod:`.phases` (verdicts), :mod:`.analyze` (the per-layer table),
:mod:`.compare` (base vs fine-tuned), :mod:`.smoothing` (SVD smoothing), :mod:`.aspect`
(α corrected for a layer's aspect ratio), :mod:`.models` (every layer of every model of a
population, for the atlas). Plots and reports
are in :mod:`memlab.studies.spectra_study.figures`.
"""

from memlab.measures.spectra.alternatives import LikelihoodRatio, likelihood_ratio_tests
from memlab.measures.spectra.analyze import (
    DEFAULT_MAX_EIGENVALUES_PER_MATRIX,
    SUMMARY_METRICS,
    TABLE_COLUMNS,
    SpectraResult,
    analyze,
    analyze_full,
    population_layers,
    population_spread,
    spearman_interval,
    summarize,
    tail_candidates,
    verdict_counts,
    verdict_kinds,
)
from memlab.measures.spectra.aspect import AspectCorrectedAlpha, aspect_corrected_alpha
from memlab.measures.spectra.bootstrap import (
    TailUncertainty,
    batched_fit,
    fixed_xmin_uncertainty,
    goodness_of_fit,
    tail_uncertainty,
)
from memlab.measures.spectra.compare import compare
from memlab.measures.spectra.eigen import matrix_eigenvalues, resolve_device
from memlab.measures.spectra.mp import MarchenkoPasturFit, fit_marchenko_pastur, mp_edge
from memlab.measures.spectra.phases import (
    ALPHA_HEAVY_TAILED,
    ALPHA_RANDOM_LIKE,
    ALPHA_VERY_HEAVY,
    KIND_WORDS,
    MIN_EIGENVALUES_TO_FIT,
    PHASES,
    VERDICT_KINDS,
    verdict,
    verdict_kind,
)
from memlab.measures.spectra.powerlaw import (
    PowerLawFit,
    candidate_scan,
    fit_power_law,
    fit_truncated_power_law,
)
from memlab.measures.spectra.smoothing import svd_smooth
from memlab.measures.spectra.weights import (
    NAMED_MODELS,
    LayerMatrix,
    LoadedWeights,
    efficientnet_lite0_path,
    load_weights,
    minilm_path,
    natural_key,
)

__all__ = [
    "ALPHA_HEAVY_TAILED", "ALPHA_RANDOM_LIKE", "ALPHA_VERY_HEAVY",
    "DEFAULT_MAX_EIGENVALUES_PER_MATRIX", "KIND_WORDS", "MIN_EIGENVALUES_TO_FIT",
    "NAMED_MODELS", "PHASES", "VERDICT_KINDS",
    "SUMMARY_METRICS", "TABLE_COLUMNS", "AspectCorrectedAlpha", "LayerMatrix",
    "LikelihoodRatio", "LoadedWeights",
    "MarchenkoPasturFit", "PowerLawFit", "SpectraResult", "TailUncertainty", "analyze",
    "analyze_full", "aspect_corrected_alpha", "batched_fit", "candidate_scan", "compare",
    "efficientnet_lite0_path",
    "fit_marchenko_pastur", "fit_power_law", "fit_truncated_power_law",
    "fixed_xmin_uncertainty", "goodness_of_fit", "likelihood_ratio_tests", "load_weights",
    "matrix_eigenvalues",
    "minilm_path", "mp_edge", "natural_key", "population_layers", "population_spread",
    "resolve_device", "spearman_interval", "summarize", "svd_smooth", "tail_candidates",
    "tail_uncertainty", "verdict", "verdict_counts", "verdict_kind", "verdict_kinds",
]

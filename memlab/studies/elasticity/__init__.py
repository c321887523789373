"""Local elasticity (He & Su 2020; docs/science.md §4): one-step similarities of a ReLU MLP
and its linear twin over training, and clustering of hidden classes. See
:mod:`memlab.studies.elasticity.study`."""

from memlab.measures.elasticity import kernel_kmeans, symmetric_accuracy
from memlab.studies.base import Result
from memlab.studies.elasticity import figures as _figures
from memlab.studies.elasticity.study import (
    ACTIVATIONS,
    STUDY,
    ElasticityConfig,
    clustering_summary,
    clustering_verdicts,
    matrices_of,
    multiclass_task,
    pair_task,
    paired_interval,
    population_member,
    ratio_summary,
    ratio_verdicts,
    run,
)

Result.FIGURES[STUDY] = _figures.draw_figures
Result.REPORTS[STUDY] = _figures.build_report

__all__ = ["ACTIVATIONS", "STUDY", "ElasticityConfig", "Result", "clustering_summary",
           "clustering_verdicts", "kernel_kmeans", "matrices_of", "multiclass_task",
           "pair_task", "paired_interval", "population_member", "ratio_summary",
           "ratio_verdicts", "run", "symmetric_accuracy"]

"""Local elasticity (He & Su 2020; docs/science.md §4): one-step similarities of a ReLU MLP
and its linear twin over training, and clustering of hidden classes.

    from memlab.studies.elasticity import ElasticityConfig, run
    result = run(ElasticityConfig(data="mnist1d"), out="runs/elasticity")
    result.tables["verdicts"], result.summary["ratio"], result.report()

See :mod:`memlab.studies.elasticity.study`."""

from memlab.studies.base import Result, Study, register_study
from memlab.studies.elasticity.config import RECIPE, ElasticityConfig

run = STUDY = register_study(Study(
    name="elasticity", package=__name__, config=ElasticityConfig,
    summary="local elasticity: one-step similarity, intra/inter ratio, hidden-class "
            "clustering",
    description=(
        "Train a ReLU MLP and its linear twin (identity activation), measure how one SGD "
        "step on each example moves the others (S_rel, S_ker) at checkpoint epochs, and "
        "cluster the two hidden classes of a union-labeled positive class. Writes tables/, "
        "summary.json and report.html to --out. With --from-run, measure one model of a "
        "population run instead."),
    science="§4", docs="docs/elasticity.md"))

__all__ = ["RECIPE", "STUDY", "ElasticityConfig", "Result", "run"]

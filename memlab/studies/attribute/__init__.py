"""Data attribution against a population's ground truth (docs/science.md §8): LDS of cheap
methods (gradient similarity, TracIn, TRAK, influence functions, representer points,
k-NN), datamodels, self-influence, top-k removal.

    from memlab.studies.attribute import AttributeConfig, run
    result = run(AttributeConfig(run_dir="runs/pop"), out="runs/attribute")
    result.summary["methods"]["trak"]["lds"], result.tables["methods"], result.report()
"""

from memlab.studies.attribute.config import RECIPE, AttributeConfig, DampingEdgeWarning
from memlab.studies.base import Result, Study, register_study

run = STUDY = register_study(Study(
    name="attribute", package=__name__, config=AttributeConfig,
    summary="LDS of data-attribution methods against a population",
    description=(
        "Compute cheap data-attribution scores from a few of the population's models and "
        "score them against the whole population: linear datamodeling score (LDS) on "
        "held-out models, datamodels as the reference, self-influence, optional top-k "
        "removal, cost in seconds and FLOPs. The population is the run RUN, or one trained "
        "first into OUT/population. Writes scores/, tables/, summary.json and report.html "
        "to --out (default runs/attribute)."),
    science="§8", docs="docs/attribution.md"))

__all__ = ["RECIPE", "STUDY", "AttributeConfig", "DampingEdgeWarning", "Result", "run"]

"""Memorization and influence of a population (Feldman & Zhang; docs/science.md §1):
scores, influence, high-influence pairs, reliability, C-scores and the removal study.

    from memlab.studies.memorize import MemorizeConfig, run
    result = run(MemorizeConfig(), out="runs/memorize")
    result.summary["memorized_fraction"], result.tables["scores"], result.report()
"""

from memlab.studies.base import Result, Study, register_study
from memlab.studies.memorize.config import RECIPE, MemorizeConfig, TargetSEWarning

run = STUDY = register_study(Study(
    name="memorize", package=__name__, config=MemorizeConfig,
    headline="memlab.studies.memorize.figures:headline_lines",
    summary="memorization and influence scores, C-scores, removal study, report",
    description=(
        "Train (or resume) a population of subset-trained models and estimate every "
        "training example's memorization score and every train/test influence (Feldman & "
        "Zhang 2020), with standard errors, split-half reliability and a self-contained "
        "HTML report. Without --quick/--full: 512 MLPs on 70% subsets of MNIST-1D, 30 "
        "epochs of Adam (lr 0.005, batch 64). Re-running resumes."),
    science="§1", docs="docs/memorization.md", figure_prefix="memorization_"))

__all__ = ["RECIPE", "STUDY", "MemorizeConfig", "Result", "TargetSEWarning", "run"]

"""Privacy audit of a population (docs/science.md §7): membership inference (LiRA, RMIA,
baselines) against every model in turn, exposure next to memorization.

    from memlab.studies.audit import AuditConfig, run
    result = run(AuditConfig(run_dir="runs/memorize/population"), out="runs/audit")
    result.summary["lira_online"]["auc"], result.tables["examples"], result.report()
"""

from memlab.studies.audit.config import RECIPE, AuditConfig
from memlab.studies.base import Result, Study, register_study

run = STUDY = register_study(Study(
    name="audit", package=__name__, config=AuditConfig,
    headline="memlab.studies.audit.figures:headline_lines",
    summary="privacy audit: LiRA, RMIA and baselines against every model in turn",
    description=(
        "Membership inference from a population: every model is the target in turn and "
        "the others its shadow models, every (model, example) pair a trial with a known "
        "answer. Reports AUC and TPR at 0.1% / 1% FPR with bootstrap intervals, attack "
        "power against the number of shadows, and each example's vulnerability next to "
        "its memorization score. Audits the run RUN, or trains the population first (the "
        "recipe options, --membership included) into OUT/population. Re-running resumes."),
    science="§7", docs="docs/audit.md"))

__all__ = ["RECIPE", "STUDY", "AuditConfig", "Result", "run"]

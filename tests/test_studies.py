"""The study family's conformance suite: every registered study through one contract
(:func:`memlab.testing.check_study`: tiny preset, strict JSON, load without recomputation,
labelled figures from the loaded result, a self-contained report, a second run and a run
with other workers train nothing, the command and its Reproduce line), and a study
defined in this file alone: config + run + figures, registered, becomes a ``memlab``
sub-command with every population flag and passes the same suite.
"""

from __future__ import annotations

import dataclasses
import pkgutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import memlab.studies
from memlab import options
from memlab.engine.config import PopulationConfig
from memlab.options import option
from memlab.studies.base import (
    BUILTIN,
    STUDIES,
    Execution,
    PopulationStudyConfig,
    Result,
    Study,
    all_studies,
    get_study,
    open_or_train,
    register_study,
)
from memlab.testing import check_study, config_from_command, study_parser


@pytest.mark.parametrize("name", BUILTIN)
def test_study_conforms(name, tmp_path):
    check_study(get_study(name), tmp_path / name)


def test_every_study_package_is_registered():
    packages = {m.name for m in pkgutil.iter_modules(memlab.studies.__path__) if m.ispkg}
    assert packages == set(BUILTIN) and set(BUILTIN) <= set(all_studies())
    assert len(BUILTIN) == 10


def test_the_readme_study_table_is_the_registry():
    from memlab.studies.base import study_table

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    begin, end = "<!-- studies:begin -->\n", "<!-- studies:end -->"
    assert begin in readme and end in readme
    stated = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert stated == study_table(), "regenerate it: python scripts/regenerate.py --readme-table"


# ------------------------------------------------------------------ a study in one file


@dataclasses.dataclass(frozen=True)
class AgreementConfig(PopulationStudyConfig):
    """How often two halves of a population agree on each test example."""

    population: PopulationConfig = option(default_factory=lambda: PopulationConfig(
        n_models=4, epochs=2, batch_size=64, chunk_size=4))
    data: str | None = option("digits", help="dataset")
    n_train: int | None = option(150, help="training examples")
    min_agreement: float = option(0.5, help="agreement counted as stable", example="0.7")


def agreement_run(config: AgreementConfig, out: Path, execution: Execution) -> Result:
    population = open_or_train(config, out, execution)
    correct = population.records("test_correct").astype(float)
    half = len(correct) // 2
    agreement = 1 - np.abs(correct[:half].mean(0) - correct[half:].mean(0))
    table = pd.DataFrame({"example": np.arange(len(agreement)), "agreement": agreement})
    return Result("agreement", config.to_dict(), {"agreement": table},
                  {"stable": float(np.mean(agreement >= config.min_agreement))})


def agreement_figures(result: Result) -> dict:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.hist(result.tables["agreement"]["agreement"], bins=10)
    ax.set_xlabel("agreement of the two halves")
    return {"agreement": fig}


AGREEMENT = Study(name="agreement", config=AgreementConfig, run=agreement_run,
                  figures=agreement_figures, summary="agreement of two half-populations")


@pytest.fixture
def agreement():
    register_study(AGREEMENT)
    yield AGREEMENT
    STUDIES.pop("agreement", None)


def test_a_study_defined_in_a_test_file_is_a_command_with_every_population_flag(
        agreement, tmp_path, capsys):
    from memlab.cli import build_parser, main

    parser = build_parser()
    assert "agreement" in parser._subparsers._group_actions[0].choices
    accepted = {s for a in study_parser(agreement)._actions for s in a.option_strings}
    population_flags = {f.name for f in options.flags(PopulationConfig)}
    assert population_flags <= accepted
    assert {"--data", "--n-train", "--label-noise", "--membership", "--min-agreement"} <= accepted
    config = config_from_command(agreement, "memlab agreement --epochs 3 --min-agreement 0.7")
    assert config.population.epochs == 3 and config.min_agreement == 0.7
    assert main(["agreement", "--models", "2", "--epochs", "1", "--workers", "1", "--quiet",
                 "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "summary.json").exists()


def test_a_study_defined_in_a_test_file_passes_the_conformance_suite(agreement, tmp_path):
    check_study(agreement, tmp_path)

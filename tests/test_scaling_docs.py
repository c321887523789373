"""docs/scaling.md's figures are the code's: record sizes, the CIFAR-10 plan, and every
file it names exists (its claims about behaviour are tested where it says)."""

import re
from pathlib import Path

import pytest

from memlab.engine.config import PopulationConfig
from memlab.population.plan import (
    COMPACT_FINAL_RECORD_BYTES,
    FINAL_RECORD_BYTES,
    DataShape,
    plan_run,
)

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "scaling.md").read_text()
GB = 2**30  # as memlab plan prints sizes
CIFAR = DataShape(50_000, 10_000, (3, 32, 32), 10)


def cifar_plan(**settings):
    config = PopulationConfig(model="cnn2d", n_models=4000, subset_fraction=0.7, epochs=30,
                              chunk_size=8, **settings)
    return plan_run(CIFAR, config, workers=16, gflops_per_worker=20_000.0)


def test_the_record_sizes_it_states_are_the_plans():
    # (the plan's sizes are the ones a run writes: tests/test_population.py measures them)
    assert f"at {FINAL_RECORD_BYTES:.0f} bytes per model and example" in DOC
    assert f"about {COMPACT_FINAL_RECORD_BYTES:.0f} bytes per\nmodel and example" in DOC


def test_the_cifar_plan_figures_are_the_plans():
    plan, compact = cifar_plan(), cifar_plan(compact_records=True)
    gb = {name: round(value / GB, 1) for name, value in plan.disk_bytes.items()}
    assert "records take\n6.7 GB" in DOC and gb["records"] == 6.7
    assert f"weights {gb['weights']} GB" in DOC
    assert f"{plan.disk_bytes['records'] / 2 / GB:.1f} GB consolidated" in DOC
    assert f"influence matrix {plan.influence_bytes / GB:.1f} GB more" in DOC
    assert f"records shrink from 6.7 GB to {compact.disk_bytes['records'] / GB:.1f} GB" in DOC
    assert f"needs {plan.training_flops / 1e15:.0f} PFLOP of training" in DOC


@pytest.mark.parametrize("path", sorted(set(re.findall(
    r"`((?:tests|examples|benchmarks|memlab)/[\w/.]+\.(?:py|sh))`", DOC))))
def test_every_file_it_names_exists(path):
    assert (REPO / path).is_file(), path

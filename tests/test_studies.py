"""The study family's conformance suite: every study, run through one shape.

For each study ``memlab.studies.<name>``: its quick preset, shrunk to tiny data, runs
through ``run(config, out)``; the caller's torch and numpy RNG states are untouched; the
summary and config it wrote parse as *strict* JSON (NaN/Infinity rejected); ``Result.load``
gives back the same tables and summary without recomputation; its figures draw from the
loaded result alone and every axis that shows data has a label; the report renders to a
self-contained HTML page; and a second ``run`` with the same ``out`` trains nothing.
"""

from __future__ import annotations

import importlib
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from memlab.io import strict_jsonable
from memlab.population import executor
from memlab.studies.base import Result


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


# name -> (module, a tiny config factory). The expressions shrink each quick preset to
# seconds on 2 CPU cores; everything else is the preset's.
def _tiny(name: str, tmp):
    if name == "elasticity":
        from memlab.studies.elasticity import ElasticityConfig
        from tests.conftest import make_blobs

        path = tmp / "blobs.npz"
        make_blobs(n_train=120, n_classes=3, n_features=8).save(path)
        return ElasticityConfig.quick().replace(
            data=str(path), hidden=(8,), checkpoints=(0, 1), probe_per_class=3,
            pairs=((0, 1),), cluster_per_class=5, n_seeds=2)
    if name == "longtail":
        from memlab.studies.longtail import LongtailConfig

        return LongtailConfig.quick().replace(
            exponents=(1.0,), n_subpopulations=60, control_subpopulations=5, n_train=120,
            n_test=200, hidden=(16,), epochs=5, n_models=8, n_workers=1,
            knobs={"weight_decay": {"weight_decay": 3e-2}})
    if name == "lm_memorize":
        import dataclasses

        from memlab.studies.lm_memorize import LMMemorizeConfig

        quick = LMMemorizeConfig.quick()
        return quick.replace(n_workers=1, population=dataclasses.replace(quick.population,
                                                                        epochs=1))
    if name == "memorize":
        import dataclasses

        from memlab.studies.memorize import MemorizeConfig

        quick = MemorizeConfig.quick()
        return quick.replace(n_train=200, n_workers=1, population=dataclasses.replace(
            quick.population, n_models=8, epochs=3))
    if name == "noise":
        from memlab.studies.noise import NoiseConfig

        return NoiseConfig.quick().replace(
            data="digits", n_train=150, hidden=(16,), noise_fractions=(), seeds=2, epochs=3,
            difficulty_seeds=2, difficulty_n_train=150, capacity_sizes=(150,),
            capacity_widths=(), capacity_seeds=2, capacity_epochs=3, csr_every=3,
            csr_examples=20, lass_iter=2, sweep_epochs=2, regularizers={"dropout": (0.5,)},
            n_workers=1)
    if name == "audit":
        from memlab.studies.audit import AuditConfig

        return AuditConfig.quick(n_models=16, epochs=4, n_train=300, n_bootstrap=20,
                                 shadow_caps=(1, 2, 4), curve_examples=100, n_workers=1)
    if name == "attribute":
        from memlab.studies.attribute import AttributeConfig

        return AttributeConfig.quick(n_models=40, epochs=4, n_targets=10, n_heldout=20,
                                     n_validation=10, trak_models=2, tracin_checkpoints=(2, 4),
                                     self_influence_examples=20, n_workers=1,
                                     methods=("grad_dot", "tracin", "knn", "random"))
    if name == "lesde":
        from memlab.studies.lesde import LESDEConfig

        return LESDEConfig.quick(
            ratios=(0.5, 2.0), noises=(0.0,), n_runs=2, scan_ratios=(1.0,),
            fit_datasets=("digits",), fit_n_train=100, fit_models=2, fit_epochs=2, fit_runs=2,
            stab_datasets=("digits",), stab_n_train=100, stab_models=16, stab_epochs=2,
            n_permutations=1, n_workers=1)
    if name == "spectra_study":
        from memlab.studies.spectra_study import SpectraStudyConfig

        return SpectraStudyConfig.quick(knobs={"label_noise": [0.0, 1.0]}, models_per_config=2,
                                        n_bootstrap=50, base={"hidden": 32, "batch_size": 64,
                                                              "label_noise": 0.0, "epochs": 2})
    raise KeyError(name)


STUDIES = ["audit", "attribute", "elasticity", "lesde", "lm_memorize", "longtail", "memorize",
           "noise", "spectra_study"]


@pytest.fixture(scope="module", params=STUDIES)
def study(request, tmp_path_factory):
    name = request.param
    module = importlib.import_module(f"memlab.studies.{name}")
    out = tmp_path_factory.mktemp(name)
    data_dir = tmp_path_factory.mktemp(f"{name}-data")
    config = _tiny(name, data_dir)
    torch.manual_seed(1234)
    np.random.seed(1234)
    torch_before, numpy_before = torch.get_rng_state(), np.random.get_state()
    result = module.run(config, out, progress=False)
    rng_untouched = (torch.equal(torch_before, torch.get_rng_state())
                     and all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
                             for a, b in zip(numpy_before, np.random.get_state())))
    return name, module, config, out, result, rng_untouched


def test_run_leaves_the_callers_rng_untouched(study):
    name, *_, rng_untouched = study
    assert rng_untouched, f"{name} reseeded or consumed the global torch/numpy RNG"


def test_outputs_are_strict_json(study):
    name, module, config, out, result, _ = study
    written = list(out.rglob("*.json"))  # summaries, configs, manifests, commit markers
    assert (out / "summary.json") in written
    for path in written:
        _strict(path.read_text())  # raises on NaN / Infinity
    assert result.study == module.STUDY


def test_config_round_trips_and_result_loads_without_recomputation(study):
    name, module, config, out, result, _ = study
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config
    loaded = Result.load(out)
    assert loaded.study == result.study and loaded.config == result.config
    assert loaded.summary == strict_jsonable(result.summary)
    assert set(loaded.tables) == set(result.tables)
    for table_name, table in result.tables.items():
        pd.testing.assert_frame_equal(loaded.tables[table_name].reset_index(drop=True),
                                      table.reset_index(drop=True), check_dtype=False,
                                      check_names=False)


def test_figures_draw_from_the_loaded_result_with_labelled_axes(study):
    import matplotlib.pyplot as plt

    name, module, config, out, result, _ = study
    figures = Result.load(out).figures()
    assert figures, f"{name} draws no figures"
    for fig_name, fig in figures.items():
        for ax in fig.axes:
            has_data = bool(ax.lines or ax.collections or ax.patches or ax.images)
            if has_data and ax.get_visible() and ax.axison:
                assert ax.get_xlabel() or ax.get_ylabel() or ax.get_title(), (
                    f"{name}/{fig_name}: an axis with data but no label or title")
        plt.close(fig)


def test_report_renders_self_contained(study):
    name, module, config, out, result, _ = study
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    # nothing fetched: no external image, script, stylesheet or font
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "<script src" not in page
    assert "<figure>" in page


def test_second_run_trains_nothing(study, monkeypatch):
    name, module, config, out, result, _ = study

    def refuse(*args, **kwargs):
        raise AssertionError(f"{name}: a second run with the same out trained a chunk")

    monkeypatch.setattr(executor.ChunkWork, "train", refuse)
    again = module.run(config, out, progress=False)
    assert again.summary == Result.load(out).summary


def test_every_study_package_is_in_the_conformance_suite():
    import pkgutil

    import memlab.studies

    packages = {m.name for m in pkgutil.iter_modules(memlab.studies.__path__)
                if m.ispkg}
    assert packages <= set(STUDIES), f"studies missing from the suite: {packages - set(STUDIES)}"

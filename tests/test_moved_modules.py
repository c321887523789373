"""Run directories written before a module moved still open and resume.

memlab.engine took the training math out of memlab.population, and the built-in models
and datasets moved out of their packages' ``__init__`` files. A manifest records class
paths (a model's, hashed into its fingerprint, and each callback's): the built-in models
keep theirs (``memlab.models:MLP``), and a callback path in a moved module is read under
its new name (``run.MOVED_MODULES``).
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap

import numpy as np
import pytest

import memlab.population
from memlab.engine.callbacks import EpochRecords
from memlab.engine.config import PopulationConfig
from memlab.engine.modelspec import ModelSpec
from memlab.models import MLP, CNN1d, CNN2d, class_path, importable
from memlab.population import open_run, store, train_population
from memlab.population.run import upgrade_manifest
from tests.conftest import make_blobs

# The model record of mlp(hidden=[8]) on make_blobs(), written before the move.
OLD_MLP_FINGERPRINT = "349f747127d6889fba94eb8ba0574b2a4c57cbbf7b4c20e886d9e66cd2569fad"


@pytest.mark.parametrize("model", [MLP, CNN1d, CNN2d])
def test_built_in_models_keep_the_class_path_manifests_record(model):
    path = class_path(model)
    assert path == f"memlab.models:{model.__name__}" and importable(path)


def test_built_in_model_fingerprint_is_unchanged():
    spec = ModelSpec.resolve("mlp", {"hidden": [8]})
    record = spec.describe(spec.build((10,), 3), PopulationConfig(model_kwargs={"hidden": [8]}))
    assert record["class"] == "memlab.models:MLP"
    assert record["fingerprint"] == OLD_MLP_FINGERPRINT
    template = ModelSpec.resolve(MLP((10,), 3, hidden=(8,)))
    assert template.label == "memlab.models:MLP"  # what config.model records for a template


def test_a_callback_recorded_under_its_old_module_resumes(tmp_path):
    settings = dict(model="mlp", model_kwargs={"hidden": [8]}, epochs=1, progress=False,
                    n_workers=1, out=tmp_path / "run")
    train_population(make_blobs(), n_models=2, callbacks=[EpochRecords()], **settings)
    manifest = store.read_manifest(tmp_path / "run")
    assert manifest["callbacks"][0]["class"].startswith("memlab.engine.callbacks:")
    manifest["callbacks"][0]["class"] = manifest["callbacks"][0]["class"].replace(
        "memlab.engine.callbacks", "memlab.population.callbacks")  # as a run from before
    store.write_manifest(tmp_path / "run", manifest)

    upgraded = json.loads(json.dumps(manifest))
    upgrade_manifest(upgraded)
    assert upgraded["callbacks"][0]["class"].startswith("memlab.engine.callbacks:")
    assert open_run(tmp_path / "run").n_models == 2
    run = train_population(make_blobs(), n_models=3, callbacks=[EpochRecords()], **settings)
    assert run.n_models == 3  # grown: the stored callback compared equal


def test_the_population_docstring_example_runs(tmp_path, monkeypatch):
    """The package's example, at 4 models and 1 epoch instead of 2,000 and 30."""
    monkeypatch.chdir(tmp_path)
    doc = memlab.population.__doc__
    code = textwrap.dedent(doc[doc.index("    from "):doc.index("\n\n", doc.index("run ="))])
    ast.parse(code)
    code = code.replace("n_models=2000", "n_models=4, epochs=1, progress=False")
    scope: dict = {}
    exec(compile(code, "memlab/population/__init__.py", "exec"), scope)
    run = scope["run"]
    assert run.membership_mask.shape == (4, 4000)
    assert run.records("test_correct").shape == (4, 1000)
    assert isinstance(run, memlab.population.Run) and np.all(run.membership_mask.sum(1) > 0)


def test_the_faces_re_export_what_users_import():
    from memlab.data import Dataset, load, load_npy_dir, load_npz, save_npy_dir  # noqa: F401
    from memlab.models import (  # noqa: F401
        MODELS,
        build_model,
        call_factory,
        layer_profile,
        register_model,
        resolve_factory,
    )
    from memlab.population import TASKS, PopulationConfig, Run  # noqa: F401

    for face in ("memlab.data", "memlab.models", "memlab.population"):
        module = __import__(face, fromlist=["_"])
        assert len(inspect.getsource(module).splitlines()) < 60, face

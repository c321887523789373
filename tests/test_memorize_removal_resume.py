"""The removal study's arms are populations with explicit masks: a study killed (SIGKILL)
while an arm trains resumes to the same bits as one that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memlab.population import open_run, store
from memlab.studies.base import Result

REPO = Path(__file__).resolve().parents[1]

# Blobs with 20% flipped labels: some examples are memorized, most are not. One model per
# chunk, so an arm is several commits and a kill lands between (or inside) them.
SCRIPT = """
import dataclasses, sys, warnings
warnings.simplefilter("ignore")
from memlab.studies import memorize
from memlab.studies.memorize.config import RECIPE
from tests.conftest import make_blobs
data = make_blobs(n_train=120, n_test=40).with_label_noise(0.2, seed=0)
config = memorize.MemorizeConfig(
    data=None, removal=True, removal_seeds=3, target_se=10,
    population=dataclasses.replace(RECIPE, n_models=8, subset_fraction=0.5, epochs=20,
                                   batch_size=16, chunk_size=1, model_kwargs={"hidden": [16]}))
memorize.run(config, sys.argv[1], progress=False, n_workers=1, dataset=data)
"""


def _arms(out: Path) -> list[Path]:
    return sorted((out / "removal").glob("*-*")) if (out / "removal").exists() else []


@pytest.mark.slow
def test_removal_study_resumes_bit_identically_after_sigkill(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(killed)], env=env, cwd=REPO)
    deadline = time.time() + 240
    # Kill once the first arm ("full") has committed a model and before the study ends.
    while time.time() < deadline and process.poll() is None:
        full = [arm for arm in _arms(killed) if arm.name.endswith("-full")]
        if full and (full[0] / "manifest.json").exists() and store.chunk_is_complete(full[0], 0):
            break
        time.sleep(0.01)
    assert process.poll() is None, "the study finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").exists()
    statuses = [json.loads((arm / "manifest.json").read_text())["status"]
                for arm in _arms(killed) if (arm / "manifest.json").exists()]
    assert "running" in statuses, statuses  # an arm was interrupted mid-training

    subprocess.run([sys.executable, "-c", SCRIPT, str(killed)], env=env, cwd=REPO, check=True)
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-c", SCRIPT, str(straight)], env=env, cwd=REPO,
                   check=True)
    resumed, reference = Result.load(killed), Result.load(straight)
    pd.testing.assert_frame_equal(resumed.tables["removal"], reference.tables["removal"],
                                  check_exact=True)
    assert [a.name for a in _arms(killed)] == [a.name for a in _arms(straight)]
    assert len(_arms(straight)) == 3
    for arm_killed, arm_straight in zip(_arms(killed), _arms(straight)):
        a, b = open_run(arm_killed), open_run(arm_straight)
        np.testing.assert_array_equal(a.membership_mask, b.membership_mask)
        for name in b.record_names:
            np.testing.assert_array_equal(a.records(name), b.records(name), name)

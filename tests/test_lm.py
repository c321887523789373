"""Language-model populations: estimator, stacked training, resumption (memlab.lm)."""

import numpy as np
import pytest
import torch

from memlab.data.text import synthetic_corpus
from memlab.lm import lm_documents, open_lm_run, train_lm_population
from memlab.lm.models import build_lm
from memlab.population import executor
from memlab.population.config import (
    STREAM_SHUFFLE,
    PopulationConfig,
    membership_mask,
    model_rng,
)
from memlab.population.task import token_loss
from tests.conftest import chunk_of, initial_state

TINY_TRANSFORMER = dict(model="transformer", model_kwargs={"d_model": 16, "n_layers": 1,
                                                           "n_heads": 2})
TINY_MLP = dict(model="mlp", model_kwargs={"window": 3, "d_embed": 8, "hidden": 16})


def tiny_corpus(seed: int = 0):
    return synthetic_corpus(n_template=16, n_unique=10, duplicates={3: 2}, n_test_template=4,
                            n_test_unique=3, n_test_near=3, unique_chars=12, context=16,
                            seed=seed)


# ------------------------------------------------------------------ stacked training


def reference_loop(documents, config, k):
    """Model k trained the ordinary way: one nn.Module, autograd, no vmap."""
    torch.manual_seed(0)
    model = build_lm(config.model, documents.n_vocab, documents.context, **config.model_kwargs)
    model.load_state_dict(initial_state(config, documents, k))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    members = np.flatnonzero(membership_mask(config, documents.n_train, range(k, k + 1))[0])
    shuffler = model_rng(config.seed, k, STREAM_SHUFFLE)
    tokens = torch.as_tensor(documents.tokens_train)
    mask = torch.as_tensor(documents.target_mask("train")).float()
    for _ in range(config.epochs):
        order = torch.as_tensor(members[shuffler.permutation(len(members))])
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            logits = model(tokens[batch, :-1])
            losses = token_loss(logits, tokens[batch, 1:])
            loss = (losses * mask[batch]).sum() / mask[batch].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.state_dict()


def train_models(documents, config, models):
    mask = membership_mask(config, documents.n_train, models)
    return chunk_of(documents, config, models, mask)


@pytest.mark.parametrize("arch", [TINY_TRANSFORMER, TINY_MLP])
def test_language_models_trained_together_equal_models_trained_alone(arch):
    documents = tiny_corpus()
    config = PopulationConfig(**arch, n_models=3, subset_fraction=0.5, epochs=3, batch_size=8,
                              optimizer="adam", lr=0.01, momentum=0.0)
    together = train_models(documents, config, range(3))
    for k in range(3):
        alone = train_models(documents, config, range(k, k + 1))
        reference = reference_loop(documents, config, k)
        for name, stacked in together.weights.items():
            np.testing.assert_allclose(stacked[k], alone.weights[name][0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(stacked[k], reference[name].numpy(), rtol=1e-4,
                                       atol=2e-5, err_msg=f"model {k} {name}")
        for record in ("train_loss", "test_loss", "train_acc", "test_acc"):
            np.testing.assert_allclose(together.arrays[record][k], alone.arrays[record][0],
                                       rtol=1e-4, atol=1e-5, err_msg=record)
    first = next(iter(together.weights))
    assert not np.allclose(together.weights[first][0], together.weights[first][1])


def test_records_are_consistent_with_a_plain_forward_pass():
    documents = tiny_corpus()
    config = PopulationConfig(**TINY_TRANSFORMER, n_models=2, subset_fraction=0.5, epochs=2,
                              batch_size=8, optimizer="adam", lr=0.01, momentum=0.0)
    result = train_models(documents, config, range(2))
    model = build_lm(config.model, documents.n_vocab, documents.context, **config.model_kwargs)
    model.load_state_dict({name: torch.from_numpy(w[1]) for name, w in result.weights.items()})
    tokens = torch.as_tensor(documents.tokens_test)
    with torch.no_grad():
        logits = model(tokens[:, :-1])
    mask = documents.target_mask("test")
    hit = (logits.argmax(-1) == tokens[:, 1:]).numpy() & mask
    np.testing.assert_allclose(result.arrays["test_acc"][1], hit.sum(1) / mask.sum(1), atol=1e-6)
    nats = token_loss(logits, tokens[:, 1:]).numpy() * mask
    np.testing.assert_allclose(result.arrays["test_loss"][1], nats.sum(1) / mask.sum(1),
                               rtol=1e-5, atol=1e-5)
    token_correct = result.arrays["train_token_correct"]
    np.testing.assert_allclose(token_correct.sum(2) / documents.lengths_train,
                               result.arrays["train_acc"], atol=1e-6)
    assert not token_correct[:, ~documents.target_mask("train")].any()


def test_model_ignores_documents_outside_its_subset():
    documents = tiny_corpus()
    config = PopulationConfig(**TINY_MLP, n_models=2, subset_fraction=0.5, epochs=2,
                              batch_size=8, optimizer="adam", lr=0.01, momentum=0.0)
    mask = membership_mask(config, documents.n_train)
    before = chunk_of(documents, config, range(2), mask)
    altered = tiny_corpus()
    outside = ~mask[0]
    altered.tokens_train[outside, 1:] = np.where(
        altered.tokens_train[outside, 1:] < altered.vocab_size,
        (altered.tokens_train[outside, 1:] + 7) % altered.vocab_size,
        altered.tokens_train[outside, 1:])
    after = chunk_of(altered, config, range(2), mask)
    for name in before.weights:
        np.testing.assert_array_equal(before.weights[name][0], after.weights[name][0])
        assert not np.array_equal(before.weights[name][1], after.weights[name][1])


# ------------------------------------------------------------------ runs: resume


def test_interrupted_run_resumes_to_identical_records(tmp_path, monkeypatch):
    documents = tiny_corpus()
    settings = dict(**TINY_MLP, n_models=6, chunk_size=2, epochs=2, batch_size=8,
                    progress=False, n_workers=1)
    reference = train_lm_population(documents, out=tmp_path / "straight", **settings)

    real = executor.train_chunk
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(executor, "train_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_lm_population(documents, out=tmp_path / "resumed", **settings)
    monkeypatch.setattr(executor, "train_chunk", real)
    # Resume in 2 worker processes: each reopens the documents from the run directory.
    resumed = train_lm_population(documents, out=tmp_path / "resumed",
                                  **{**settings, "n_workers": 2})
    assert resumed.record_names == reference.record_names
    assert "train_token_correct" in reference.record_names
    for name in reference.record_names:
        np.testing.assert_array_equal(resumed.records(name), reference.records(name), name)
    for name, array in reference.weights().items():
        np.testing.assert_array_equal(resumed.weights()[name], array)
    run, docs = open_lm_run(tmp_path / "resumed")
    assert docs.fingerprint() == documents.fingerprint() == lm_documents(run).fingerprint()
    table = run.models_table()
    assert table.train_acc_in.between(0, 1).all() and table.test_acc.between(0, 1).all()


def test_run_with_other_documents_is_refused(tmp_path):
    from memlab.errors import RunError

    settings = dict(**TINY_MLP, n_models=2, epochs=1, progress=False, n_workers=1)
    train_lm_population(tiny_corpus(), out=tmp_path / "run", **settings)
    with pytest.raises(RunError, match="dataset"):
        train_lm_population(tiny_corpus(seed=1), out=tmp_path / "run", **settings)


def test_bad_model_settings_are_refused_before_training(tmp_path):
    from memlab.errors import ConfigError

    with pytest.raises(ConfigError, match="divisible"):
        train_lm_population(tiny_corpus(), out=tmp_path / "run", model="transformer",
                            model_kwargs={"d_model": 10, "n_heads": 3}, n_models=2)
    with pytest.raises(ConfigError, match="do not use label_smoothing"):
        train_lm_population(tiny_corpus(), out=tmp_path / "run3", label_smoothing=0.1,
                            n_models=2)
    with pytest.raises(ConfigError, match="unknown language model"):
        train_lm_population(tiny_corpus(), out=tmp_path / "run2", model="lstm", n_models=2)


# ------------------------------------------------------------------ the study: resume, RNG

STUDY_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore", UserWarning)  # the quick preset leaves a few NaN documents
from memlab.studies.lm_memorize import LMStudyConfig, run_lm_memorize
run_lm_memorize(LMStudyConfig.quick(), out=sys.argv[1], workers=1, progress=False)
"""


def study_outputs(out):
    """Every table and array the study saved: tables, influence and the run's records."""
    import pandas as pd

    found = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if relative.startswith("population/") and "/records/" not in relative:
            continue
        if path.suffix == ".parquet":
            found[relative] = pd.read_parquet(path)
        elif path.suffix == ".npy":
            found[relative] = np.load(path)
    return found


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*no IN or no OUT model")
def test_lm_study_resumes_after_sigkill_bit_identically_and_leaves_the_rng(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import pandas as pd

    from memlab.population import store
    from memlab.studies.lm_memorize import LMStudyConfig, run_lm_memorize

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", STUDY_SCRIPT, str(killed)], env=env,
                               cwd=repo)
    deadline = time.time() + 120
    while time.time() < deadline and not store.chunk_is_complete(killed / "population", 0):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert store.chunk_is_complete(killed / "population", 0)
    assert not store.chunk_is_complete(killed / "population", 1), "killed too late: no test"

    torch.manual_seed(321)
    before = torch.get_rng_state()
    reference = run_lm_memorize(LMStudyConfig.quick(), out=tmp_path / "straight", workers=1,
                                progress=False)
    assert torch.equal(before, torch.get_rng_state()), "the study moved torch's global RNG"
    assert reference.summary["n_models"] == 8
    # The models learned something: templated text is predictable, random words are not.
    by_kind = reference.by_kind.set_index("group")
    assert by_kind.acc_in["template"] > 2 * by_kind.acc_in["unique"]

    subprocess.run([sys.executable, "-c", STUDY_SCRIPT, str(killed)], env=env, cwd=repo,
                   check=True)
    resumed, straight = study_outputs(killed), study_outputs(tmp_path / "straight")
    assert "tables/lm_memorization.parquet" in straight and "influence.npy" in straight
    assert "population/records/train_acc.npy" in straight
    assert sorted(resumed) == sorted(straight)
    for name, expected in straight.items():
        if isinstance(expected, pd.DataFrame):
            pd.testing.assert_frame_equal(resumed[name], expected, check_exact=True)
        else:
            np.testing.assert_array_equal(resumed[name], expected, err_msg=name)

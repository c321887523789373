"""Language-model populations and the lm_memorize study: stacked training, resumption, the
planted answers of the estimator and of the simplicity-shape test."""

import numpy as np
import pandas as pd
import pytest
import torch

from memlab.data.text import synthetic_corpus
from memlab.engine.config import (
    STREAM_SHUFFLE,
    PopulationConfig,
    membership_mask,
    model_rng,
)
from memlab.engine.task import token_loss
from memlab.measures import shape as shapes
from memlab.models.lm import build_lm
from memlab.population import executor
from memlab.population.run import Run
from memlab.studies.base import Execution
from memlab.studies.lm_memorize import (
    LMMemorizeConfig,
    lm_documents,
    open_lm_run,
    simplicity_shape,
    train_lm_population,
)
from memlab.studies.lm_memorize import run as lm_study
from memlab.studies.lm_memorize import study as lm_module
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
    # The models table is the records summarized: each model's mean accuracy on its own
    # documents, on the others and on the validation set, recomputed here by hand.
    table, acc, mask = run.models_table(), run.records("train_acc"), run.membership_mask
    for k in range(run.n_models):
        assert table.train_acc_in[k] == pytest.approx(acc[k, mask[k]].mean(), abs=1e-6)
        assert table.train_acc_out[k] == pytest.approx(acc[k, ~mask[k]].mean(), abs=1e-6)
        assert table.test_acc[k] == pytest.approx(run.records("test_acc")[k].mean(), abs=1e-6)


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
from memlab.studies.lm_memorize import LMMemorizeConfig, run
run(LMMemorizeConfig.quick(), out=sys.argv[1], n_workers=1, progress=False)
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
    reference = lm_study(LMMemorizeConfig.quick(), out=tmp_path / "straight", n_workers=1,
                         progress=False)
    assert torch.equal(before, torch.get_rng_state()), "the study moved torch's global RNG"
    assert reference.summary["n_models"] == 8
    # The models learned something: templated text is predictable, random words are not.
    by_kind = reference.tables["lm_by_kind"].set_index("group")
    assert by_kind.acc_in["template"] > 2 * by_kind.acc_in["unique"]

    subprocess.run([sys.executable, "-c", STUDY_SCRIPT, str(killed)], env=env, cwd=repo,
                   check=True)
    resumed, straight = study_outputs(killed), study_outputs(tmp_path / "straight")
    assert "tables/lm_memorization.parquet" in straight and "influence.npy" in straight
    assert "tables/lm_top_documents.parquet" in straight
    assert "population/records/train_acc.npy" in straight
    assert sorted(resumed) == sorted(straight)
    for name, expected in straight.items():
        if isinstance(expected, pd.DataFrame):
            pd.testing.assert_frame_equal(resumed[name], expected, check_exact=True)
        else:
            np.testing.assert_array_equal(resumed[name], expected, err_msg=name)


# ------------------------------------------------------------------ planted answers


def planted_shape(kind: str, n: int = 400, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, n)
    y = {"peak": 0.6 - 2.4 * (x - 0.5) ** 2, "rise": 0.1 + 0.5 * x, "fall": 0.7 - 0.5 * x,
         "flat": np.full(n, 0.3)}[kind]
    return x, y + rng.normal(0, noise, n)


@pytest.mark.parametrize("kind, verdict", [
    ("peak", shapes.PEAKS), ("rise", shapes.RISES), ("fall", shapes.FALLS),
    ("flat", shapes.UNDECIDED)])
def test_simplicity_shape_finds_the_planted_shape(kind, verdict):
    shape = simplicity_shape(*planted_shape(kind))
    assert shape["verdict"] == verdict
    if kind == "peak":  # the break lies at the planted maximum, slopes +-2.4 * 0.45 / 2 ...
        assert abs(shape["breakpoint"] - 0.5) < 0.1
        assert shape["left"]["slope"] > 0.5 and shape["right"]["slope"] < -0.5
    if kind == "rise":  # ... and the planted slope is inside the overall 95% interval
        assert shape["overall"]["ci_low"] < 0.5 < shape["overall"]["ci_high"]


def test_simplicity_shape_cannot_decide_from_too_few_documents():
    x, y = planted_shape("peak", n=12)
    shape = simplicity_shape(x, y)
    assert shape["verdict"] == shapes.UNDECIDED and "fewer than 3" in shape["reason"]
    # NaN scores (documents without IN or OUT models) are left out, not counted.
    x, y = planted_shape("rise")
    y[:50] = np.nan
    assert simplicity_shape(x, y)["n_documents"] == 350


class PlantedRun:
    """A duck-typed run whose records are built so that every score is known: unique
    documents 0.25 OUT -> 0.75 IN (mem 0.5), templates 0.625 whether IN or not (mem 0), and
    validation document 0 scores 0.875 for models that trained on training document 3 and
    0.375 otherwise (influence 0.5). Dyadic values: every mean is exact, ties are ties."""

    def __init__(self, documents, n_models=16, seed=0):
        self.mask = np.random.default_rng(seed).random((n_models, documents.n_train)) < 0.5
        self.mask[0], self.mask[1] = True, False  # every document has IN and OUT models
        unique = np.array([kind != "template" for kind in documents.kind_train])
        self.acc = np.where(unique, np.where(self.mask, 0.75, 0.25), 0.625)
        self.test = np.full((n_models, documents.n_test), 0.5)
        self.test[:, 0] = np.where(self.mask[:, 3], 0.875, 0.375)
        self.n_models, self.documents = n_models, documents
        self.manifest = {"task": "language_model", "summary": {"chunk_seconds_total": 0.0}}
        self.diverged, self.path = np.zeros(n_models, bool), "planted"

    membership_mask = property(lambda self: self.mask)
    usable_models = Run.usable_models  # the real rule: diverged models are left out

    def with_a_diverged_model(self) -> "PlantedRun":
        """The same run plus one more model, marked diverged, whose records are NaN."""
        self.mask = np.vstack([self.mask, np.ones(self.documents.n_train, bool)])
        self.acc = np.vstack([self.acc, np.full(self.documents.n_train, np.nan)])
        self.test = np.vstack([self.test, np.full(self.documents.n_test, np.nan)])
        self.diverged = np.append(self.diverged, True)
        self.n_models += 1
        return self

    def records(self, name):
        context = self.documents.context
        return {"train_acc": self.acc, "train_loss": 1 - self.acc, "test_acc": self.test,
                "train_token_correct": np.repeat(self.mask[:, :, None], context, 2)}[name]

    def models_table(self):
        import pandas as pd

        return pd.DataFrame({"train_acc_in": [0.5], "train_acc_out": [0.4], "test_acc": [0.3]})


def test_the_study_recovers_planted_memorization_and_influence():
    documents = tiny_corpus()
    planted = PlantedRun(documents)
    tables, summary, influence = lm_module.analyze(planted, documents, LMMemorizeConfig())
    frame = tables["lm_memorization"]
    unique = frame.kind != "template"
    np.testing.assert_allclose(frame.mem[unique], 0.5, atol=1e-12)
    np.testing.assert_allclose(frame.mem[~unique], 0.0, atol=1e-12)
    np.testing.assert_allclose(frame.se, 0.0, atol=1e-12)  # no spread on either side
    np.testing.assert_allclose(frame.mem_loss, frame.mem, atol=1e-12)  # loss = 1 - acc
    by_kind = tables["lm_by_kind"].set_index("group")
    assert by_kind.mem_mean["template"] == pytest.approx(0.0, abs=1e-12)
    assert by_kind.mem_mean["unique"] == pytest.approx(0.5)
    assert summary["fraction_memorized"] == pytest.approx(unique.mean())
    best = tables["lm_influence_pairs"].iloc[0]
    assert (best.train, best.validation) == (3, 0) and best.infl == pytest.approx(0.5)
    assert influence.score[3, 0] == pytest.approx(0.5)
    assert np.abs(np.delete(influence.score[:, 0], 3)).max() < 0.5  # others: chance overlap
    # Per-token marks: IN models get every token right, OUT models none ('#' everywhere).
    top = tables["lm_top_documents"].iloc[0]
    assert set(top.marks) == {"#"} and len(top.marks) == len(top.shown)
    assert summary["reliability_all_models"] == pytest.approx(1.0)  # noise-free scores


def test_a_diverged_model_is_left_out_with_a_warning():
    """on_diverge="record": the analysis of a run with one more, diverged model (NaN
    records, IN everywhere) is that of the run without it, with a warning counting it."""
    documents = tiny_corpus()
    clean = lm_module.analyze(PlantedRun(documents), documents, LMMemorizeConfig())
    with pytest.warns(UserWarning, match="1 of 17 models diverged and are left out"):
        tables, summary, influence = lm_module.analyze(
            PlantedRun(documents).with_a_diverged_model(), documents, LMMemorizeConfig())
    for name, table in clean[0].items():
        pd.testing.assert_frame_equal(tables[name], table, obj=name)
    np.testing.assert_array_equal(influence.score, clean[2].score)


# ------------------------------------------------------------------ the study: config, resume


def test_config_round_trips_and_refuses_what_it_cannot_estimate():
    import dataclasses

    config = LMMemorizeConfig.quick()
    assert LMMemorizeConfig.from_dict(config.to_dict()) == config
    assert config.population.seed == 0 and config.population.model == "mlp"
    assert config.population.task == "language_model"  # the engine's task, one spelling
    from memlab.errors import ConfigError

    def recipe(**changes):
        return config.replace(population=dataclasses.replace(config.population, **changes))

    for bad, match in [(recipe(n_models=2), "--models must be an integer >= 4"),
                       (recipe(task="classification"), "population.task"),
                       (recipe(model="cnn1d"), "unknown language model"),
                       (recipe(label_smoothing=0.1), "do not use label_smoothing"),
                       (recipe(sweep={"lr": [0.1, 0.2]}), "sweep"),
                       (config.replace(n_train=10), "planted sizes"),
                       (config.replace(context=10**8), "would need")]:
        with pytest.raises(ConfigError, match=match):
            lm_study(bad, out=None)


def test_one_seed_draws_the_documents_and_trains_the_population(monkeypatch):
    from memlab import options

    seeds = [flag.path for flag in options.flags(LMMemorizeConfig) if flag.name == "--seed"]
    assert seeds == [("population", "seed")]  # no second seed beside the recipe's
    drawn = {}
    monkeypatch.setattr("memlab.data.text.load_documents",
                        lambda text, **kwargs: drawn.update(kwargs))
    LMMemorizeConfig(text="shakespeare").replace(population=PopulationConfig(
        seed=3, task="language_model")).documents()
    assert drawn == dict(context=64, n_train=800, n_test=200, seed=3, tokenizer="byte")
    assert LMMemorizeConfig().sizes() == (48, None, None)


def test_a_run_is_a_language_model_run_by_its_task(tmp_path):
    """A run's task is the engine's name; a format-1 manifest (dataset task "lm") opens
    as the same task."""
    from memlab.errors import RunError

    class Fake:
        path = tmp_path
        dataset = "documents"

        def __init__(self, task):
            self.task = type("Task", (), {"name": task})()

    assert lm_documents(Fake("language_model")) == "documents"
    with pytest.raises(RunError, match="not a language-model run"):
        lm_documents(Fake("classification"))
    from memlab.population.run import upgrade_manifest

    old = {"format": 1, "config": {"model": "mlp", "n_models": 2}, "dataset": {"task": "lm"}}
    upgrade_manifest(old)
    assert old["task"] == "language_model"


@pytest.mark.filterwarnings("ignore:.*no IN or no OUT model")
def test_second_run_trains_nothing_and_the_rng_is_untouched(tmp_path, monkeypatch):
    config = LMMemorizeConfig.quick()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = lm_study(config, out=tmp_path, execution=Execution(n_workers=1, progress=False))
    assert torch.equal(state, torch.get_rng_state())

    def refuse(*args, **kwargs):
        raise AssertionError("resuming must not train")

    monkeypatch.setattr(lm_module, "train_population", refuse)
    again = lm_study(config, out=tmp_path, n_workers=2, progress=False)  # workers: the same
    assert again.summary == first.summary
    import pandas as pd

    for name, table in first.tables.items():
        pd.testing.assert_frame_equal(again.tables[name], table, check_exact=True)
    # The figures and report come from the saved tables alone.
    assert set(again.figures()) == {"synthetic_distribution", "synthetic_simplicity",
                                    "synthetic_duplicates", "synthetic_reliability"}
    assert again.summary["simplicity"]["verdict"] in again.report().html()

"""memlab plan: the disk estimate matches what a run really writes."""

from memlab.cli import main
from memlab.engine.config import PopulationConfig
from memlab.models import build_model
from memlab.population import train_population
from memlab.population.plan import flops_per_example_step, plan_run
from tests.conftest import make_blobs


def directory_bytes(path, pattern):
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def test_disk_estimate_matches_a_real_run(tmp_path):
    dataset = make_blobs(n_train=300, n_test=100)
    settings = dict(model="mlp", model_kwargs={"hidden": [16]}, n_models=8, chunk_size=4,
                    epochs=2, record_epochs=True)
    run = train_population(dataset, **settings, out=tmp_path / "run", progress=False,
                           n_workers=1)
    plan = plan_run(dataset, PopulationConfig(**settings), gflops_per_worker=1.0)
    on_disk = {
        "records": directory_bytes(run.path, "t*_[cmlp]*.npy"),  # train_*/test_* records
        "per-epoch records": directory_bytes(run.path, "epoch_t*.npy"),
        "weights": directory_bytes(run.path, "*.safetensors"),
    }
    for name, real in on_disk.items():
        estimate = plan.disk_bytes[name]
        assert abs(estimate - real) / real < 0.1, (name, estimate, real)
    # what memlab memorize adds: the influence matrix and its errors, as the plan says
    from memlab.measures.memorization import influence

    influence(run, out=tmp_path / "influence.npy")
    real = directory_bytes(tmp_path, "influence*.npy")
    assert abs(plan.influence_bytes - real) / real < 0.01, (plan.influence_bytes, real)
    assert "influence matrix" in plan.describe()


def test_flop_count_of_an_mlp():
    model = build_model("mlp", (40,), 10, hidden=[100, 100])
    macs = 40 * 100 + 100 * 100 + 100 * 10
    assert flops_per_example_step(model, (40,)) == 6 * macs - 2 * 40 * 100


def test_plan_command_for_a_dataset_we_do_not_have(capsys):
    assert main(["plan", "--shape", "50000,10000,3x32x32,10", "--model", "cnn2d", "--models",
                 "4000", "--subset", "0.7", "--gflops", "1000", "--workers", "8"]) == 0
    printed = capsys.readouterr().out
    assert "plan for 4,000 models" in printed and "GB" in printed and "8 workers" in printed


def test_compact_disk_estimate_matches_a_real_run(tmp_path):
    dataset = make_blobs(n_train=320, n_test=80)
    settings = dict(model="mlp", model_kwargs={"hidden": [16]}, n_models=8, chunk_size=4,
                    epochs=2, compact_records=True)
    run = train_population(dataset, **settings, out=tmp_path / "run", progress=False,
                           n_workers=1)
    plan = plan_run(dataset, PopulationConfig(**settings), gflops_per_worker=1.0)
    real = directory_bytes(run.path, "t*_[cmlp]*.npy")
    assert abs(plan.disk_bytes["records"] - real) / real < 0.15, (plan.disk_bytes, real)


def test_chunk_size_from_free_gpu_memory():
    from memlab.population.plan import suggest_chunk_size

    dataset = make_blobs(n_train=1000, n_features=40)
    config = PopulationConfig(model="mlp", model_kwargs={"hidden": [100, 100]},
                              n_models=100_000, batch_size=128)
    assert suggest_chunk_size(dataset, config, "cpu") == 32
    small = suggest_chunk_size(dataset, config, "cuda", free_bytes=2**30)
    large = suggest_chunk_size(dataset, config, "cuda", free_bytes=16 * 2**30)
    # Each model: 4 copies of 15,1xx parameters + 3 x 256 examples x 210 activations, float32.
    per_model = 4 * (4 * (40 * 100 + 100 + 100 * 100 + 100 + 100 * 3 + 3) + 3 * 256 * 203)
    assert small == int((0.7 * 2**30 - dataset.x_train.nbytes - dataset.x_test.nbytes)
                        // per_model)
    assert 15 * small < large < 17 * small
    assert suggest_chunk_size(dataset, PopulationConfig(n_models=5), "cuda",
                              free_bytes=16 * 2**30) == 5  # never more than the population


def test_plan_from_a_pilot_says_how_many_models_each_estimator_needs(tmp_path, capsys):
    """The se of every estimator falls as 1/sqrt(models): a pilot of 8 whose 90th percentile
    se is s needs 8 (s / target)² models; the plan is for the automatic estimator's count;
    recipe flags are refused (the pilot's recipe is planned)."""
    import numpy as np

    from memlab.measures import memorization as mz

    dataset = make_blobs(n_train=200, n_test=50)
    pilot = train_population(dataset, model="mlp", model_kwargs={"hidden": [16]}, n_models=8,
                             epochs=3, out=tmp_path / "pilot", progress=False, n_workers=1)
    assert main(["plan", "--pilot", str(pilot.path), "--target-se", "0.05",
                 "--gflops", "10"]) == 0
    printed = capsys.readouterr().out
    mask = np.asarray(pilot.membership_mask)
    records = {r: np.asarray(pilot.records(r)) for r in ("train_correct", "train_margin")}
    se = mz.estimate(mask, records, "binary").se
    binary = int(np.ceil(8 * (np.nanquantile(se, 0.9) / 0.05) ** 2))
    assert f"{binary:,} models for se <= 0.05" in printed
    chosen = mz.choose_estimator(mask, records).estimator
    assert f"automatic estimator: {chosen}" in printed
    assert main(["plan", "--pilot", str(pilot.path), "--epochs", "3"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    assert main(["plan", "--target-se", "0.05", "--gflops", "10"]) == 2
    assert "needs --pilot" in capsys.readouterr().err

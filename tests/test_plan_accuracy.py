"""memlab plan tells the truth: its CPU time, start-up included, is within 1.5x of a real
single-worker run's, for MLP and CNN, float32 and bfloat16, small and large runs.

``python -m tests.test_plan_accuracy`` prints the docs' table (eight cases, with the CPU
model and the load average)."""

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from memlab.cli import build_parser, main
from memlab.cli.plan import markdown_table, plan_from_args, train_cpu_seconds

DATA = ["--data", "mnist1d"]
BF16 = ["--compute-dtype", "bfloat16"]
SMALL = {"mlp": ["--models", "8", "--epochs", "1"], "cnn1d": ["--models", "4", "--epochs", "1"]}
LARGE = {"mlp": ["--models", "128", "--epochs", "4"],
         "cnn1d": ["--models", "32", "--epochs", "2"]}


def case(model, size, dtype):
    flags = [*DATA, "--model", model, *(SMALL if size == "small" else LARGE)[model]]
    return flags + (BF16 if dtype == "bfloat16" else [])


ALL = {f"{'MLP' if m == 'mlp' else 'CNN1d'} {'fp32' if d == 'float32' else 'bf16'} {s}":
       case(m, s, d) for m in ("mlp", "cnn1d") for d in ("float32", "bfloat16")
       for s in ("small", "large")}
# Four of the eight, so that every pair of (architecture, precision, size) values occurs
# (the half fraction of the 2x2x2 design: each pair of values exactly once).
CI = ["MLP fp32 small", "MLP bf16 large", "CNN1d fp32 large", "CNN1d bf16 small"]


def planned_and_measured(cases, out):
    """Plans here while the real runs go on, one at a time, in a fresh process each (CPU
    times: the two never wait for each other's results)."""
    from memlab.population.plan import startup_seconds

    startup_seconds("mnist1d")  # measured before the real runs start (cached)
    with ThreadPoolExecutor(max_workers=1) as pool:
        measured = {name: pool.submit(train_cpu_seconds, flags, os.path.join(out, str(i)))
                    for i, (name, flags) in enumerate(cases.items())}
        planned = {}
        for name, flags in cases.items():
            args = build_parser().parse_args(["plan", *flags, "--workers", "1"])
            planned[name] = plan_from_args(args)[2]
        return [{"case": name, "flags": " ".join(cases[name]),
                 "planned": planned[name].cpu_seconds, "error": planned[name].relative_error,
                 "startup": planned[name].startup_seconds, "measured": measured[name].result(),
                 "ratio": planned[name].cpu_seconds / measured[name].result()}
                for name in cases]


@pytest.mark.slow
def test_plan_is_within_one_and_a_half_times_of_real_runs(tmp_path):
    rows = planned_and_measured({name: ALL[name] for name in CI}, str(tmp_path))
    # CPU time on a machine shared with other jobs is noisy (one run of the same command
    # measured 3.7 and 6.5 CPU-s): a case out of bounds is planned and measured once more.
    for i, row in enumerate(rows):
        if not 1 / 1.5 <= row["ratio"] <= 1.5:
            rows[i] = planned_and_measured({row["case"]: ALL[row["case"]]},
                                           str(tmp_path / f"again{i}"))[0]
    table = markdown_table(rows)
    for row in rows:
        assert 1 / 1.5 <= row["ratio"] <= 1.5, table
        assert row["startup"] > 0.2 * row["measured"], table  # start-up is counted


def test_default_plan_is_measured_and_says_its_error(capsys):
    assert main(["plan", *DATA, "--model", "cnn1d", "--models", "64", "--epochs", "3"]) == 0
    printed = capsys.readouterr().out
    assert "measured here: CPU time of short runs of this model, float32, chunks of 32" \
        in printed
    assert "CPU in all (±" in printed and "start-up" in printed
    assert "assumed" not in printed


def test_no_calibrate_is_instant_and_says_it_assumes(capsys):
    from memlab.engine.config import PopulationConfig
    from memlab.population.plan import DataShape, plan_run

    started = time.process_time()
    assert main(["plan", *DATA, "--model", "cnn1d", "--no-calibrate"]) == 0
    assert time.process_time() - started < 5
    printed = capsys.readouterr().out
    assert "assumed" in printed and "start-up assumed" in printed
    # Per layer kind and precision: a convolution's FLOP is dearer than a linear layer's.
    shape = DataShape(4000, 1000, (40,), 10)
    rate = {}
    for model in ("mlp", "cnn1d"):
        for dtype in ("float32", "bfloat16"):
            plan = plan_run(shape, PopulationConfig(model=model, compute_dtype=dtype),
                            calibrate=False)
            rate[model, dtype] = plan.gflops_per_worker
            assert plan.startup_seconds > 0 and plan.cpu_seconds > plan.train_seconds
    assert rate["mlp", "float32"] > 3 * rate["cnn1d", "float32"]
    assert rate["mlp", "float32"] != rate["mlp", "bfloat16"]


@pytest.mark.parametrize("extra, match", [
    (["--no-calibrate", "--gflops", "0"], "--gflops must be a positive number"),
    (["--model", "cnn1d", "--data", "digits"], "cannot take inputs of shape"),
])
def test_bad_inputs_stay_one_line_errors(extra, match, capsys):
    assert main(["plan", *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


if __name__ == "__main__":
    from memlab.engine.precision import cpu_model

    command = "python -m tests.test_plan_accuracy"
    load = open("/proc/loadavg").read().split()[:3]
    with tempfile.TemporaryDirectory() as out:
        rows = planned_and_measured(ALL, out)
    after = open("/proc/loadavg").read().split()[:3]
    print(f"`{command}` on {cpu_model()} ({os.cpu_count()} cores), load average "
          f"{' '.join(load)} before and {' '.join(after)} after; plan with default "
          "calibration, real runs `memlab train FLAGS --workers 1` in fresh processes "
          "(CPU seconds, user + system):\n")
    print(markdown_table(rows))

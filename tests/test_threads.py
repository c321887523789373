"""Every command that does dense linear algebra outside the training engine's workers
chooses its CPU thread count by one rule (:mod:`memlab.threads`) and says so: ``--threads N``
is accepted by ``spectra``, ``spectra-compare`` and every study command, reaches torch and
the BLAS pools inside the command, and a bad value is a one-line error (exit 2)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memlab import threads
from memlab.cli import main
from memlab.errors import ConfigError
from memlab.studies.base import Execution, get_study, run_study

REPO = Path(__file__).resolve().parents[1]
BAD = ["0", "-1", "abc", "2.5", ""]


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    """Commands set the process's count for good: put torch's and the pools' back."""
    from threadpoolctl import threadpool_limits

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    previous = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the pools' counts on exit
        yield
    torch.set_num_threads(previous)


def blas_threads() -> set[int]:
    """The thread counts of the BLAS pools loaded (numpy's and scipy's OpenBLAS)."""
    from threadpoolctl import threadpool_info

    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_file({"fc1.weight": torch.randn(120, 40, generator=generator),
               "fc2.weight": torch.randn(10, 120, generator=generator)}, str(path))
    return path


@pytest.fixture
def spy_spectra(monkeypatch) -> list[tuple[int, set[int]]]:
    """(torch threads, BLAS pool threads) seen inside each analyze_full/compare call."""
    import memlab.measures.spectra as spectra

    seen: list[tuple[int, set[int]]] = []
    for name in ("analyze_full", "compare"):
        real = getattr(spectra, name)

        def spy(*args, _real=real, **kwargs):
            seen.append((torch.get_num_threads(), blas_threads()))
            return _real(*args, **kwargs)
        monkeypatch.setattr(spectra, name, spy)
    return seen


# ---------------------------------------------------------------- the rule


def test_rule_explicit_environment_cores_and_load():
    assert threads.rule(3, cores=2) == threads.Choice(
        3, "--threads 3; more than the 2 cores this process may use")
    assert threads.rule("1", cores=8, busy=5.0).count == 1
    assert threads.rule(None, cores=4, environment={"OMP_NUM_THREADS": "3"}) == \
        threads.Choice(3, "OMP_NUM_THREADS")
    assert threads.rule(None, cores=4) == threads.Choice(4, "the cores this process may use")
    assert threads.rule(None, cores=4, busy=0.4).count == 4  # a blip costs nothing
    assert threads.rule(None, cores=4, busy=1.0).count == 3
    assert threads.rule(None, cores=2, busy=8.9).count == 1  # oversubscribed: one thread
    assert threads.rule(None, cores=2, busy=0.6).count == 1
    assert threads.rule(None, cores=1, busy=3.0).count == 1


@pytest.mark.parametrize("value", [*BAD, True, 2.0, 1025])
def test_bad_counts_are_one_line_with_the_fix(value):
    with pytest.raises(ConfigError) as error:
        threads.parse(value)
    text = str(error.value)
    assert "\n" not in text and text.startswith("--threads must be an integer")
    assert "e.g. --threads 1, or leave it out" in text
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS must be"):
        threads.rule(None, cores=2, environment={"OMP_NUM_THREADS": "many"})


def test_the_machine_facts_are_sane():
    cores = threads.usable_cores()
    assert 1 <= cores <= len(__import__("os").sched_getaffinity(0))
    assert threads.busy_cores(cores) >= 0
    assert 1 <= threads.choose().count <= cores


def test_the_message():
    assert threads.Choice(2, "the cores this process may use").message == \
        "threads: 2 (the cores this process may use; --threads N to change)"
    assert threads.Choice(1, "--threads 1").message == "threads: 1 (--threads 1)"


# ---------------------------------------------------------------- spectra, spectra-compare


@pytest.mark.parametrize("count", [1, 3])
def test_spectra_threads_reach_torch_and_blas(count, small_model, spy_spectra, capsys):
    assert main(["spectra", str(small_model), "--device", "cpu", "--no-randomize",
                 "--no-tests", "--threads", str(count)]) == 0
    assert spy_spectra == [(count, {count})]
    printed = capsys.readouterr().out
    assert printed.startswith(f"threads: {count} (--threads {count}")


def test_spectra_compare_threads(small_model, spy_spectra, capsys):
    assert main(["spectra-compare", str(small_model), str(small_model), "--device", "cpu",
                 "--threads", "1"]) == 0
    assert spy_spectra == [(1, {1})]
    assert "threads: 1 (--threads 1)" in capsys.readouterr().out


def test_spectra_default_follows_the_rule(small_model, spy_spectra, capsys, monkeypatch):
    """Without --threads: the cores this process may use, fewer under load, and why."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 3)
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 0.0)
    assert main(["spectra", str(small_model), "--device", "cpu", "--no-randomize"]) == 0
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 8.9)
    assert main(["spectra", str(small_model), "--device", "cpu", "--no-randomize"]) == 0
    assert [seen[0] for seen in spy_spectra] == [3, 1]
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("threads:")]
    assert lines == ["threads: 3 (the cores this process may use; --threads N to change)",
                     "threads: 1 (3 cores, 8.9 of them busy with other work: the idle ones, "
                     "at least 1; --threads N to change)"]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert main(["spectra", str(small_model), "--device", "cpu", "--no-randomize"]) == 0
    assert spy_spectra[-1][0] == 2
    assert "threads: 2 (OMP_NUM_THREADS; --threads N to change)" in capsys.readouterr().out


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("command", [["spectra", "minilm"], ["spectra-compare", "a", "b"],
                                     ["memorize", "--quick"], ["spectra-study"],
                                     ["attribute", "--quick"]])
def test_bad_threads_exit_2_in_one_line(command, value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (a study's default --out, never created)
    assert main([*command, "--threads", value]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memlab: error: --threads must be"), \
        captured.err
    assert "e.g. --threads 1" in lines[0] and not captured.out
    assert not any(tmp_path.iterdir())  # refused before any work


def test_bad_threads_as_a_user_sees_it():
    result = subprocess.run([sys.executable, "-m", "memlab", "spectra", "minilm",
                             "--threads", "abc"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr == ("memlab: error: --threads must be an integer in [1, 1024], got "
                             "'abc'; give a positive number of threads, e.g. --threads 1, or "
                             "leave it out for the cores this process may use\n")


# ---------------------------------------------------------------- study commands


class Probe(Exception):
    pass


def probing(monkeypatch, name: str = "memorize") -> tuple[object, list[int]]:
    """The study ``name`` with a run function that records torch's thread count (and stops
    there: nothing is trained)."""
    seen: list[int] = []

    def run(config, out, execution, **inputs):
        seen.append(torch.get_num_threads())
        if execution.threads is not None:
            assert blas_threads() == {execution.threads}
        raise Probe

    return dataclasses.replace(get_study(name), run=run), seen


@pytest.mark.parametrize("count", [1, 3])
def test_study_command_threads_reach_the_study(count, tmp_path, monkeypatch, capsys):
    from memlab.cli import study as cli
    from memlab.testing import study_parser

    study, seen = probing(monkeypatch)
    args = study_parser(study).parse_args(["--quick", "--out", str(tmp_path / "o"),
                                           "--threads", str(count)])
    with pytest.raises(Probe):
        cli.run_command(study, args)
    assert seen == [count]
    printed = capsys.readouterr().out
    assert printed.startswith(f"threads: {count} (--threads {count}") and printed.count(
        "\n") == 1


def test_study_command_default_is_the_rule(tmp_path, monkeypatch, capsys):
    from memlab.cli import study as cli
    from memlab.testing import study_parser

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 6.0)
    study, seen = probing(monkeypatch, "lesde")
    args = study_parser(study).parse_args(["--quick", "--out", str(tmp_path / "o")])
    with pytest.raises(Probe):
        cli.run_command(study, args)
    assert seen == [1]
    assert capsys.readouterr().out.startswith("threads: 1 (2 cores, 6.0 of them busy")


def test_library_execution_threads_are_scoped(tmp_path, monkeypatch):
    """Execution(threads=N): N inside the study, the caller's count after it; None: the
    caller's count inside too."""
    study, seen = probing(monkeypatch)
    torch.set_num_threads(2)
    config = study.config.quick()
    with pytest.raises(Probe):
        run_study(study, config, tmp_path / "a", Execution(threads=1, progress=False))
    assert torch.get_num_threads() == 2
    with pytest.raises(Probe):
        run_study(study, config, tmp_path / "b", Execution(progress=False))
    assert seen == [1, 2]
    with pytest.raises(ConfigError, match="threads must be an integer in"):
        Execution(threads=0)

"""Study outputs have the run store's guarantees (memlab.studies.outputs): one owner per
output directory, a lock, every output checksummed, and a re-run that recomputes exactly
what is missing or damaged, to the same bits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memlab.errors import RunError
from memlab.studies import memorize
from memlab.studies.base import Execution, Result, run_study
from memlab.studies.outputs import OUTPUTS, OWNER

FAST = Execution(n_workers=1, progress=False)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A tiny memorize study (kept as a pristine copy) and the bytes of every output it
    committed."""
    import shutil

    root = tmp_path_factory.mktemp("study")
    run_study("memorize", memorize.MemorizeConfig.tiny(), root / "memorize", FAST)
    shutil.copytree(root / "memorize", root / "pristine")
    files = json.loads((root / "pristine" / OUTPUTS).read_text())["files"]
    return root, {name: (root / "pristine" / name).read_bytes() for name in files}


def _copy(saved, tmp_path=None) -> Path:
    """The study at its own path, as it was first saved (its summary names its path)."""
    import shutil

    root, _ = saved
    shutil.rmtree(root / "memorize", ignore_errors=True)
    shutil.copytree(root / "pristine", root / "memorize")
    return root / "memorize"


def _snapshot(out: Path) -> dict[str, tuple[bytes, tuple[int, int]]]:
    """Each output's bytes and (inode, modification time): a rewritten file changes the
    latter even when it gets the same bytes (or a freed inode number back)."""
    files = json.loads((out / OUTPUTS).read_text())["files"]
    return {name: ((out / name).read_bytes(),
                   (os.stat(out / name).st_ino, os.stat(out / name).st_mtime_ns))
            for name in files}


def test_outputs_are_listed_with_checksums(saved):
    out, files = _copy(saved), saved[1]
    assert {"summary.json", "config.json", "report.html", "influence.npy"} <= set(files)
    assert any(name.startswith("tables/") for name in files)
    # the population keeps its own manifest; its files are not the study's outputs
    assert not any(name.startswith("population/") for name in files)
    owner = json.loads((out / OWNER).read_text())
    assert owner["study"] == "memorize"


def test_second_study_is_refused_and_first_outputs_untouched(saved, tmp_path, capsys):
    from memlab.cli import main

    out = _copy(saved, tmp_path)
    before = _snapshot(out)
    code = main(["noise", "--data", "digits", "--n-train", "60", "--out", str(out),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "holds the results of the study 'memorize'" in lines[0], err
    assert _snapshot(out) == before
    assert not (out / "tables" / "noise.parquet").exists()


def test_same_study_other_settings_is_refused_naming_the_difference(saved, tmp_path):
    out = _copy(saved, tmp_path)
    config = memorize.MemorizeConfig.tiny()
    other = config.replace(population=config.population.__class__(
        **{**config.population.to_dict(), "epochs": 2}))
    with pytest.raises(RunError, match=r"other settings \(population\.epochs: 3 here, 2 "):
        run_study("memorize", other, out, FAST)


def test_a_population_run_directory_is_refused(tmp_path, capsys):
    from memlab.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--models", "2", "--epochs", "1", "--hidden",
                 "8", "--workers", "1", "--quiet", "--out", str(run)]) == 0
    listing = sorted(p.name for p in run.iterdir())
    capsys.readouterr()
    assert main(["memorize", "--data", "digits", "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is a population run directory" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in run.iterdir()) == listing


def test_a_directory_of_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="holds no memlab study"):
        run_study("memorize", memorize.MemorizeConfig.tiny(), tmp_path, FAST)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_each_damaged_output_is_recomputed_to_the_same_bits(saved, tmp_path, damage):
    """Delete or truncate each kind of output (a table, the summary, the config, an array,
    the report); re-running rewrites that file with the bytes it had and trains nothing
    (the population is reused)."""
    from memlab.population import executor

    _, original = saved
    train = executor.ChunkWork.train

    def refuse(*args, **kwargs):
        raise AssertionError("a repair trained a chunk")

    executor.ChunkWork.train = refuse
    try:
        for name in ["summary.json", "tables/scores.parquet", "influence.npy", "config.json",
                     "report.html"]:
            out = _copy(saved)
            path = out / name
            if damage == "delete":
                path.unlink()
            else:
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            if name != "report.html":  # (the report is not read by Result.load)
                with pytest.raises(RunError, match=rf"{name} is (missing|damaged).*same "
                                                   "command again"):
                    Result.load(out)
            run_study("memorize", memorize.MemorizeConfig.tiny(), out, FAST)
            after = _snapshot(out)
            assert set(after) == set(original)
            for file, (content, _) in after.items():
                assert content == original[file], (name, file)
    finally:
        executor.ChunkWork.train = train


def test_intact_files_are_left_alone_by_a_repair(saved, tmp_path):
    out = _copy(saved, tmp_path)
    before = _snapshot(out)
    (out / "tables" / "scores.parquet").unlink()
    run_study("memorize", memorize.MemorizeConfig.tiny(), out, FAST)
    after = _snapshot(out)
    rewritten = [name for name in before if after[name][1] != before[name][1]]
    assert rewritten == ["tables/scores.parquet"], rewritten


def test_a_file_replaced_by_a_directory_is_repaired(saved, tmp_path):
    out = _copy(saved, tmp_path)
    (out / "summary.json").unlink()
    (out / "summary.json").mkdir()
    with pytest.raises(RunError, match="summary.json is not a regular file"):
        Result.load(out)
    run_study("memorize", memorize.MemorizeConfig.tiny(), out, FAST)
    assert (out / "summary.json").read_bytes() == saved[1]["summary.json"]


def test_unfinished_study_is_named_by_load(saved, tmp_path):
    out = _copy(saved, tmp_path)
    (out / OUTPUTS).unlink()
    with pytest.raises(RunError, match="unfinished memorize study.*same command"):
        Result.load(out)


def test_load_names_a_damaged_output(saved, tmp_path):
    out = _copy(saved, tmp_path)
    table = out / "tables" / "scores.parquet"
    table.write_bytes(b"not parquet")
    with pytest.raises(RunError, match=r"tables/scores\.parquet is damaged"):
        Result.load(out)


def test_a_stray_table_is_not_loaded(saved, tmp_path):
    out = _copy(saved, tmp_path)
    (out / "tables" / "noise.parquet").write_bytes((out / "tables" / "scores.parquet")
                                                   .read_bytes())
    assert "noise" not in Result.load(out).tables


def test_symlinked_out_works(saved, tmp_path):
    target = _copy(saved, tmp_path)
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    assert Result.load(link).study == "memorize"
    assert run_study("memorize", memorize.MemorizeConfig.tiny(), link, FAST).summary == \
        Result.load(target).summary


LOCKER = """
import sys, time
from memlab.studies.outputs import StudyOutputs
with StudyOutputs(sys.argv[1]).locked():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_while_one_holds_the_lock(saved, tmp_path):
    out = _copy(saved, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(out)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match=rf"in use by pid {holder.pid}.*another --out"):
            run_study("memorize", memorize.MemorizeConfig.tiny(), out, FAST)
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            run_study("memorize", memorize.MemorizeConfig.tiny(), out, FAST)
            break
        except RunError:
            time.sleep(0.1)


def test_a_study_that_stopped_before_writing_anything_leaves_the_directory_free(tmp_path):
    """A setting found wrong once the data is loaded (n_train above the data set's size)
    stops the study after it claimed OUT; the corrected command may use the same OUT."""
    from memlab.errors import ConfigError

    config = memorize.MemorizeConfig.tiny()
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="exceeds"):
        run_study("memorize", config.replace(n_train=10**9), out, FAST)
    assert run_study("memorize", config, out, FAST).study == "memorize"

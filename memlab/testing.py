"""The study conformance suite, for memlab's studies and anyone else's.

    from memlab.testing import check_study
    check_study(my_study, tmp_path)            # in a pytest test; raises AssertionError

One call runs a study's ``tiny()`` preset (seconds on 2 CPU cores) through
:func:`memlab.studies.base.run_study` and checks the contract every study keeps:

- the caller's torch and numpy random states are untouched;
- every JSON file written parses as *strict* JSON (no NaN/Infinity);
- the config round-trips through JSON; ``Result.load`` gives back the same tables and
  summary without recomputing;
- the figures draw from the loaded result alone, every axis with data labelled;
- the report is a self-contained HTML page (nothing fetched) that reads well at 1280 px
  in headless Chromium: no sideways scrolling, no table, figure or text sticking out, no
  number with more than 12 significant digits, no summary dumped verbatim
  (:func:`check_report`);
- a second run with the same ``out`` trains nothing, and neither does one with another
  execution (other workers): execution is not part of a result's identity;
- every output is listed with its checksum; after a table is deleted and the summary
  truncated, a re-run trains nothing and gives every output back bit for bit (the
  study is deterministic given its populations); another study is refused the ``out``;
- the ``memlab <study>`` command exists, has the common options, and its Reproduce line
  parses back into the same config (the parser and the line share one source).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from memlab.studies.base import Execution, Result, Study, StudyConfig, command_line, run_study

COMMON_FLAGS = ("--quick", "--full", "--seed", "--workers", "--figures", "--out")


def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def study_parser(study: Study) -> Any:
    """The ``memlab <study>`` sub-command's parser, built as the CLI builds it."""
    import argparse

    from memlab.cli.study import add_study_command

    parser = argparse.ArgumentParser(prog="memlab")
    return add_study_command(parser.add_subparsers(dest="command"), study)


def config_from_command(study: Study, command: str) -> StudyConfig:
    """The config ``command`` (a ``memlab <study> ...`` line) builds."""
    from memlab.cli.study import config_from_args

    words = shlex.split(command.replace("\\\n", " "))  # a shell joins continued lines
    assert words[:2] == ["memlab", study.command], command
    return config_from_args(study, study_parser(study).parse_args(words[2:]))


def _check_repair(study: Study, config: StudyConfig, out: Path) -> None:
    """Damage a table and the summary; the re-run recomputes them to the same bits."""
    from memlab.errors import RunError
    from memlab.studies.outputs import OUTPUTS

    files = json.loads((out / OUTPUTS).read_text())["files"]
    before = {name: (out / name).read_bytes() for name in files}
    tables = sorted(name for name in files if name.startswith("tables/"))
    assert tables, f"{study.name} saved no table"
    (out / tables[0]).unlink()
    summary = out / "summary.json"
    summary.write_bytes(summary.read_bytes()[: summary.stat().st_size // 2])
    try:
        Result.load(out)
    except RunError as error:
        assert "summary.json" in str(error) or tables[0] in str(error), error
    else:
        raise AssertionError(f"{study.name}: Result.load read a damaged output")
    run_study(study, config, out, Execution(n_workers=1, progress=False))
    after = json.loads((out / OUTPUTS).read_text())["files"]
    assert set(after) == set(files), f"{study.name}: a repair changed the list of outputs"
    changed = [name for name in files if (out / name).read_bytes() != before[name]]
    assert not changed, (f"{study.name}: recomputing gave other bytes for {changed} "
                         "(a measured duration belongs under a TIMING_KEYS summary key)")
    other = "memorize" if study.name != "memorize" else "noise"
    try:
        run_study(other, None, out)
    except RunError as error:
        assert f"holds the results of the study {study.name!r}" in str(error), error
    else:
        raise AssertionError(f"{other} wrote into {study.name}'s output directory")


def check_command(study: Study, configs: tuple[StudyConfig, ...] = ()) -> None:
    """The command exists with the common options, and each config's Reproduce line
    (default: the presets') parses back into that config."""
    parser = study_parser(study)
    flags = {flag for action in parser._actions for flag in action.option_strings}
    missing = [flag for flag in COMMON_FLAGS if flag not in flags]
    assert not missing, f"memlab {study.command} lacks {missing}"
    for config in configs or (study.config(), study.config.quick(), study.config.full()):
        command = command_line(study, config, out="runs/x")
        if command is None:
            continue
        assert config_from_command(study, command) == config, command


def check_report(path: str | Path, name: str = "report") -> None:
    """The report as a reader sees it in headless Chromium at 1280 px: nothing sticks out
    or scrolls sideways, no number has more than 12 significant digits, no summary is
    dumped into the page (:mod:`memlab.report.browser`). Without a Chromium binary the
    check cannot run: a warning says so (install it: ``apt-get install chromium``)."""
    import warnings

    from memlab.report import browser

    if browser.chromium() is None:
        warnings.warn(f"{name}: report not checked in a browser (no Chromium binary; "
                      "apt-get install chromium)", stacklevel=2)
        return
    problems = browser.inspect_page(path)
    assert not problems, f"{name}: the report at 1280 px: " + "; ".join(problems)


def check_study(study: Study, directory: str | Path, config: StudyConfig | None = None) -> Result:
    """Run ``config`` (default: the study's ``tiny()`` preset) into ``directory`` and
    check the contract (see the module docstring); returns the result."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import torch

    from memlab.io import strict_jsonable
    from memlab.population import executor

    config = study.config.tiny() if config is None else config
    out = Path(directory)
    torch.manual_seed(1234)
    np.random.seed(1234)
    torch_before, numpy_before = torch.get_rng_state(), np.random.get_state()
    result = run_study(study, config, out, Execution(n_workers=1, progress=False))
    assert torch.equal(torch_before, torch.get_rng_state()) and all(
        np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
        for a, b in zip(numpy_before, np.random.get_state())), \
        f"{study.name} reseeded or consumed the global torch/numpy RNG"

    assert (out / "summary.json").exists(), f"{study.name} wrote no summary.json"
    for path in out.rglob("*.json"):  # summaries, configs, manifests, commit markers
        _strict(path.read_text())
    assert result.study == study.name
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config

    loaded = Result.load(out)
    assert loaded.study == result.study and loaded.config == result.config
    assert loaded.summary == strict_jsonable(result.summary)
    assert set(loaded.tables) == set(result.tables)
    for name, table in result.tables.items():
        pd.testing.assert_frame_equal(loaded.tables[name].reset_index(drop=True),
                                      table.reset_index(drop=True), check_dtype=False,
                                      check_names=False)

    figures = loaded.figures()
    assert figures, f"{study.name} draws no figures"
    for fig_name, fig in figures.items():
        for ax in fig.axes:
            has_data = bool(ax.lines or ax.collections or ax.patches or ax.images)
            if has_data and ax.get_visible() and ax.axison:
                assert ax.get_xlabel() or ax.get_ylabel() or ax.get_title(), (
                    f"{study.name}/{fig_name}: an axis with data but no label or title")
        plt.close(fig)

    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), \
        f"{study.name}: the report fetches something"
    assert "@import" not in page and "<script src" not in page
    assert "<figure>" in page, f"{study.name}: the report shows no figure"
    check_report(out / "report.html", study.name)

    train = executor.ChunkWork.train

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"{study.name}: a second run with the same out trained a chunk")

    executor.ChunkWork.train = refuse
    try:
        for execution in (Execution(n_workers=1, progress=False),
                          Execution(n_workers=2, progress=False)):
            again = run_study(study, config, out, execution)
            assert again.summary == loaded.summary, \
                f"{study.name}: re-running with {execution} did not reuse the saved result"
        _check_repair(study, config, out)
    finally:
        executor.ChunkWork.train = train
    check_command(study)
    return result

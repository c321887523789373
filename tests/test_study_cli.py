"""Every study command is generated from its config, and no flag is accepted and dropped.

For every registered study: each flag the parser accepts, given a non-default value,
changes the config at exactly its field, or reaches the Execution or the output step
(--workers --device --executor --ray-address --quiet --threads --out --figures); every
command has --quick --full --seed --workers --figures --out; the Reproduce line parses back
into the config it was printed from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from memlab import options
from memlab.cli import study as cli
from memlab.errors import ConfigError
from memlab.studies.base import Result, all_studies
from memlab.testing import COMMON_FLAGS, check_command, study_parser

STUDIES = {name: s for name, s in sorted(all_studies().items())}
EXECUTION = {"--workers": ("3", "n_workers", 3), "--executor": ("ray", "executor", "ray"),
             "--ray-address": ("auto", "ray_address", "auto"),
             "--device": ("cuda", "device", "cuda"), "--quiet": (None, "progress", False),
             "--threads": ("3", "threads", 3)}
TRUST = {"--trust-run": (None, "trust_code", True)}
OUTPUT = ("--out", "--figures", "--quick", "--full")


def non_default(flag: options.Flag) -> list[str]:
    """Words giving ``flag`` a valid value other than its default."""
    if flag.kind == "switch":
        return [flag.name] if flag.parse(None) != flag.default else []
    example = None if flag.example is None else flag.parse(
        [flag.example] if flag.kind == "repeat" else flag.example)
    if flag.example is not None and example != flag.default:
        text = flag.example
    elif flag.template is not None and flag.name == "--hidden":
        text = "8"
    elif flag.choices:
        text = next(str(c) for c in flag.choices if c != flag.default)
    elif flag.kind == "value" and isinstance(flag.default, bool):
        raise AssertionError(flag.name)
    elif flag.kind == "value" and flag.name == "--chunk-size":
        text = str(flag.default // 2)
    elif flag.kind == "value" and isinstance(flag.default, int):
        text = str(flag.default + 1)
    elif flag.kind == "value" and isinstance(flag.default, float):
        text = repr(flag.default / 2 if flag.default else 0.1)
    elif flag.kind == "list" and flag.default and isinstance(flag.default[0], int | float):
        text = ",".join(options._number(v) for v in flag.default[:-1] or flag.default[:1]
                        ) if len(flag.default) > 1 else options._number(flag.default[0] * 2)
    else:
        raise AssertionError(f"{flag.name}: give the option an example= value")
    return [flag.name, text] if flag.name.startswith("-") else [text]


def parse(study, words):
    return cli.config_from_args(study, study_parser(study).parse_args(words))


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_config_flag_changes_its_field(name):
    study = STUDIES[name]
    base = parse(study, [])
    assert base == study.config()
    checked = 0
    for flag in options.flags(study.config):
        words = non_default(flag)
        if not words:  # the switch of a pair that sets the default value
            assert options.get_path(parse(study, [flag.name]), flag.path) == flag.default
            continue
        try:
            config = parse(study, words)
        except ConfigError as error:
            # refused with a message that names the setting: not dropped, and says why
            assert flag.path[-1] in str(error) or flag.name in str(error), \
                f"{name} {' '.join(words)}: {error}"
            checked += 1
            continue
        assert options.get_path(config, flag.path) != options.get_path(base, flag.path), \
            f"memlab {study.command} {' '.join(words)} did not change {'.'.join(flag.path)}"
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("name", list(STUDIES))
def test_the_other_flags_reach_the_execution_or_the_output(name, monkeypatch, tmp_path):
    study = STUDIES[name]
    parser = study_parser(study)
    config_flags = {flag.name for flag in options.flags(study.config)}
    accepted = {s for action in parser._actions for s in action.option_strings} - {"-h",
                                                                                "--help"}
    # --trust-run on the commands that open an existing run (a config with run_dir) only
    opens_runs = "run_dir" in {f.name for f in dataclasses.fields(study.config)}
    execution_flags = {**EXECUTION, **(TRUST if opens_runs else {})}
    assert accepted - config_flags == set(execution_flags) | set(OUTPUT), \
        f"{name}: flags that reach neither config nor execution nor output"
    monkeypatch.setattr("memlab.validate.device", lambda text, *a, **k: text)
    assert cli.execution_from_args(parser.parse_args([])).trust_code is False
    for flag, (value, field, expected) in execution_flags.items():
        args = parser.parse_args([flag] + ([value] if value else []))
        execution = cli.execution_from_args(args)
        assert getattr(execution, field) == expected, flag

    calls = {}

    def fake_run_study(study_, config, out, execution):
        calls.update(config=config, out=Path(out), execution=execution)
        result = Result(study_.name, config.to_dict(), out=Path(out))
        result.save_figures = lambda directory, prefix=None: calls.update(
            figures=directory) or []
        return result

    monkeypatch.setattr("memlab.studies.base.run_study", fake_run_study)
    for preset in ("--quick", "--full"):
        args = parser.parse_args([preset, "--out", str(tmp_path / "o"), "--figures",
                                  str(tmp_path / "f")])
        cli.run_command(dataclasses.replace(study, headline=lambda result: []), args)
        expected = study.config.quick() if preset == "--quick" else study.config.full()
        assert calls["config"] == expected, preset
        assert calls["out"] == tmp_path / "o" and calls["figures"] == str(tmp_path / "f")


@pytest.mark.parametrize("name", list(STUDIES))
def test_common_flags_and_reproduce_lines(name):
    study = STUDIES[name]
    check_command(study)
    parser = study_parser(study)
    accepted = {s for action in parser._actions for s in action.option_strings}
    assert set(COMMON_FLAGS) <= accepted

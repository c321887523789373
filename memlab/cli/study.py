"""Every study's command, generated from its config: ``memlab <study> [options]``.

A registered :class:`~memlab.studies.base.Study` becomes a sub-command whose options are its
config's fields (each declares its flag and help, :mod:`memlab.options`), the population's
recipe among them, plus the options every study command shares:

    --out DIR          where the results go (default runs/<study>); the same command resumes
    --quick / --full   the config's presets (flags given on top change the preset)
    --figures DIR      also write the figures as PNG files
    --workers N, --device D, --executor local|ray, --ray-address A, --quiet
                       how to compute (an Execution: never part of the result's identity)
    --threads N        CPU threads of the study's own linear algebra (default: the rule of
                       memlab.threads; the command prints the count and why)
    --trust-run        (studies that measure an existing run, RUN / --from-run) let the
                       run's manifest name model code to import (Execution.trust_code)

A flag's default is the preset's value; a flag given changes exactly its field, so every
flag the parser accepts reaches the config or the Execution (tests/test_study_cli.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import warnings
from typing import Any

from memlab import options
from memlab.studies.base import Execution, Study, StudyConfig

# Options every study command has besides its config's, and where each one goes.
EXECUTION_FLAGS = ("--workers", "--device", "--executor", "--ray-address", "--quiet",
                   "--threads")
TRUST_FLAG = "--trust-run"  # the commands that open an existing run (a study with run_dir)
OUTPUT_FLAGS = ("--out", "--figures", "--quick", "--full")


def add_study_command(subparsers: Any, study: Study) -> argparse.ArgumentParser:
    """The sub-command ``memlab <study.command>``, built from ``study.config``."""
    parser = subparsers.add_parser(study.command, help=study.summary,
                                   description=study.description or study.summary)
    add_config_flags(parser, study.config, study.name)
    _add_common(parser, study)
    parser.set_defaults(func=functools.partial(run_command, study))
    return parser


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, title: str) -> None:
    """One option per field of ``config_class`` (the recipe's in a group of their own)."""
    groups: dict[str, Any] = {}
    for flag in options.flags(config_class):
        name = "population (the recipe)" if flag.path[0] == "population" else title
        if name not in groups:
            groups[name] = parser.add_argument_group(name)
        _add_flag(groups[name], flag)


def _add_flag(group: Any, flag: options.Flag) -> None:
    shown = flag.default if flag.template is None else None
    default_text = "" if shown in (None, (), {}, "", False) or flag.kind == "switch" else \
        f" (default: {' '.join(flag.show(shown))})"
    help_text = (flag.help or "").replace("%", "%%") + default_text.replace("%", "%%")
    if not flag.name.startswith("-"):  # a positional (e.g. RUN)
        group.add_argument(flag.dest, nargs="?", default=argparse.SUPPRESS,
                           metavar=flag.name, help=help_text)
        return
    common = dict(dest=flag.dest, default=argparse.SUPPRESS, help=help_text)
    if flag.kind == "switch":  # one of a pair sharing a dest: the last one given wins
        group.add_argument(flag.name, action="store_const", const=flag.parse(None), **common)
    elif flag.kind == "repeat":
        convert = (lambda text, t=flag.template: t.format(text)) if flag.template else str
        group.add_argument(flag.name, action="append", type=convert, metavar=flag.metavar,
                           **common)
    else:
        metavar = flag.metavar or ("{" + ",".join(map(str, flag.choices)) + "}"
                                   if flag.choices and flag.kind == "value"
                                   else flag.name.lstrip("-").upper().replace("-", "_"))
        group.add_argument(flag.name, metavar=metavar, **common)


def _add_common(parser: argparse.ArgumentParser, study: Study) -> None:
    output = parser.add_argument_group("output")
    default = (f"RUN/{study.name} given a run, else runs/{study.name}" if study.beside_run
               else f"runs/{study.name}")
    output.add_argument("--out", default=None, help=f"output directory (default: {default}); "
                        "running the same command again resumes")
    presets = output.add_mutually_exclusive_group()
    presets.add_argument("--quick", action="store_true",
                         help="the quick preset: minutes on 2 CPU cores (a smoke test)")
    presets.add_argument("--full", action="store_true",
                         help="the full preset: the settings behind the docs' figures")
    output.add_argument("--figures", default=None, metavar="DIR",
                        help="also write the figures as PNG files into DIR")
    how = add_execution_flags(parser)
    add_threads_flag(how)
    if "run_dir" in {f.name for f in dataclasses.fields(study.config)}:
        add_trust_flag(how)


def add_trust_flag(group: Any) -> None:
    """--trust-run: the run given may import the model code its manifest names."""
    group.add_argument(TRUST_FLAG, dest="trust_run", action="store_true", help=(
        "trust the given run: import the package.module its manifest names as its model "
        "factory (or augmentation) to rebuild or retrain its models; without it such a run "
        "runs no code (built-in and memlab's own models need no trust)"))


def add_threads_flag(group: Any) -> None:
    """--threads N: the CPU threads of a command's own linear algebra (every command that
    computes outside the training engine's workers has it; :mod:`memlab.threads`)."""
    from memlab import threads

    group.add_argument(threads.FLAG, dest="threads", default=None, metavar="N",
                       help=threads.HELP)


def add_execution_flags(parser: argparse.ArgumentParser) -> Any:
    """--workers --device --executor --ray-address --quiet: an :class:`Execution` (the
    argument group is returned)."""
    how = parser.add_argument_group("execution (how to compute; never changes a result)")
    how.add_argument("--workers", type=int, default=None,
                     help="worker processes for training (default: one per core)")
    how.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    how.add_argument("--executor", default="local", choices=["local", "ray"],
                     help="where chunks train: this machine, or Ray tasks (default: local)")
    how.add_argument("--ray-address", default=None,
                     help="a Ray cluster ('auto', 'host:6379'); default: start a local one")
    how.add_argument("--quiet", action="store_true", help="no progress bars")
    return how


def config_from_args(study: Study, args: argparse.Namespace) -> StudyConfig:
    """The config the options describe: the chosen preset with every given flag applied,
    validated (nothing is trained)."""
    preset = (study.config.quick() if getattr(args, "quick", False)
              else study.config.full() if getattr(args, "full", False) else study.config())
    return apply_flags(preset, args)


def apply_flags(preset: Any, args: argparse.Namespace, sizing_data: Any = None) -> Any:
    """``preset`` with every flag given in ``args`` applied, validated. A refused value's
    message names the flag the user typed. ``--chunk-size auto`` is sized for
    ``args.device`` on ``sizing_data`` (default: the config's training data)."""
    from memlab import validate
    from memlab.errors import ConfigError
    from memlab.studies.base import settings_name

    given: dict[tuple[str, ...], Any] = {}
    typed: dict[tuple[str, ...], str] = {}  # path -> the flag the user typed
    flags = list(options.flags(type(preset)))
    what = settings_name(preset)
    try:  # every problem of every flag in one message (validate.all_problems)
        with validate.all_problems(what):
            for flag in flags:
                if flag.template is not None or not hasattr(args, flag.dest) \
                        or flag.path in typed:
                    continue  # a shorthand, or a switch's pair, shares its option's dest
                raw = getattr(args, flag.dest)
                typed[flag.path] = flag.name
                with validate.check():
                    value = raw if flag.kind == "switch" else flag.parse(raw)
                    if flag.choices and flag.kind == "value" and value not in flag.choices:
                        raise ConfigError(f"{flag.name} must be one of "
                                          f"{', '.join(map(str, flag.choices))}, got {raw!r}")
                    given[flag.path] = value
            _model_kwargs_follow_the_model(preset, given)
            chunk = given.get(("population", "chunk_size"))
            if chunk == "auto":
                given[("population", "chunk_size")] = 32  # sized below, once the recipe is known
            config = options.replace_paths(preset, given)
            config.validate()
            _check_effect(config, typed)
            validate.stop_if_problems()
            if chunk == "auto":
                config = _auto_chunk_size(config, args.device, sizing_data)
                config.validate()
    except ConfigError as error:
        problems = getattr(error, "problems", None) or [str(error)]
        raise validate.ConfigProblems([_in_flags(text, flags) for text in problems],
                                      what) from None
    return config


def _check_effect(config: Any, typed: dict[tuple[str, ...], str]) -> None:
    """A flag that is accepted has an effect: the flags given for settings that change
    nothing with this config (``config.without_effect()``: e.g. a method's option when the
    method is not scored) are one problem."""
    from memlab import validate

    ineffective = getattr(config, "without_effect", dict)()
    given = [(name, ineffective[path[0]]) for path, name in typed.items()
             if len(path) == 1 and path[0] in ineffective]
    if given:
        listed = ", ".join(f"{name} ({why})" for name, why in given)
        validate.problem(f"{'this option has' if len(given) == 1 else 'these options have'} "
                         f"no effect with the other settings: {listed}; drop "
                         f"{'it' if len(given) == 1 else 'them'}, or select what "
                         f"{'it applies' if len(given) == 1 else 'they apply'} to")


def _in_flags(message: str, flags: list[options.Flag]) -> str:
    """'n_models must be ...' -> '--models must be ...': the option as the user typed it."""
    first, _, rest = message.partition(" ")
    if not rest.startswith("must"):
        return message
    for flag in flags:
        name = flag.path[-1] if flag.template is None else flag.name.lstrip("-")
        if first in (name, ".".join(flag.path)):
            return f"{flag.name}{message[len(first):]}"
    return message


def _model_kwargs_follow_the_model(preset: StudyConfig, given: dict) -> None:
    """A preset's model keyword arguments (e.g. the MLP's hidden widths) belong to its
    model: a --model that names another one starts from none; --model-option adds to them."""
    model, kwargs = ("population", "model"), ("population", "model_kwargs")
    population = getattr(preset, "population", None)
    if population is None:
        return
    base = population.model_kwargs
    if model in given and given[model] != population.model:
        base = {}
    if kwargs in given or base != population.model_kwargs:
        given[kwargs] = {**base, **given.get(kwargs, {})}


def _auto_chunk_size(config: StudyConfig, device: str, data: Any = None) -> StudyConfig:
    """``--chunk-size auto``: 32 on a CPU, as many models as fit in a GPU's free memory."""
    import dataclasses

    from memlab.population.plan import suggest_chunk_size
    from memlab.studies.base import training_data

    if data is None and getattr(config, "data", None) is None:
        return config
    data = training_data(config) if data is None else data
    size = suggest_chunk_size(data, config.population, device)
    return dataclasses.replace(config, population=dataclasses.replace(
        config.population, chunk_size=size))


def execution_from_args(args: argparse.Namespace) -> Execution:
    from memlab import threads, validate

    return Execution(n_workers=validate.workers(args.workers, "--workers"),
                     device=validate.device(args.device, "--device"),
                     executor=args.executor, ray_address=args.ray_address,
                     progress=not args.quiet,
                     trust_code=bool(getattr(args, "trust_run", False)),
                     threads=None if getattr(args, "threads", None) is None
                     else threads.parse(args.threads))


def run_command(study: Study, args: argparse.Namespace) -> int:
    """Options -> config + execution -> ``run_study`` -> headline, where the results are."""
    from memlab import threads, validate
    from memlab.studies.base import default_out, run_study

    config = config_from_args(study, args)
    execution = execution_from_args(args)
    choice = threads.choose(execution.threads)
    execution = dataclasses.replace(execution, threads=choice.count)
    if execution.trust_code and getattr(config, "run_dir", None) is None:
        from memlab.errors import ConfigError

        raise ConfigError(f"{TRUST_FLAG} trusts the run given to measure (RUN, --from-run); "
                          "without one there is none: a model named with --model is "
                          "imported as given")
    out = validate.output_dir(args.out if args.out is not None
                              else default_out(study, config))
    if args.figures is not None:
        validate.output_dir(args.figures, "--figures")  # before any work is done
    threads.use(choice.count)
    if not args.quiet:  # (--quiet: only the results)
        print(choice.message, flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = run_study(study, config, out, execution)
        except OSError as error:  # a full or read-only disk while measuring: one line
            from memlab.population.store import disk_error

            converted = disk_error(error, out)
            if converted is None:
                raise
            raise converted from None
    for warning in caught:
        if warning.category.__module__.startswith("memlab"):
            print(f"memlab: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
    headline = study.function("headline")
    for line in headline(result) if headline is not None else []:
        print(line)
    print(f"summary: {result.out / 'summary.json'}\nreport:  {result.out / 'report.html'}")
    if args.figures is not None:
        paths = result.save_figures(args.figures)
        print(f"figures: {len(paths)} PNG files in {args.figures}")
    return 0

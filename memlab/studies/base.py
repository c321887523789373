"""The study contract: one shape for every study, one opening, one registry.

    from memlab.studies import memorize
    result = memorize.run(memorize.MemorizeConfig.quick(), out="runs/memorize")
    result.summary["noise_auroc"];  result.tables["scores"];  result.report()

A study is a :class:`Study` registered with :func:`register_study`:

- ``config``: a frozen dataclass deriving from :class:`StudyConfig` (or
  :class:`PopulationStudyConfig` when it trains a population: the data options and the
  whole :class:`~memlab.population.PopulationConfig` nested as ``population``), with the
  papers' defaults and ``quick()`` / ``full()`` presets. Each field declares its flag and
  help (:func:`memlab.options.option`): the ``memlab <study>`` command and the report's
  Reproduce line are generated from the config.
- ``run(config, out, execution, **inputs) -> Result``: the science, and nothing else:
  :func:`run_study` validates, picks the output directory, returns a saved result with the
  same config, and saves what ``run`` returns. ``execution`` (:class:`Execution`: workers,
  device, executor, progress) says *how* to compute, never *what*, so it is not part of
  the config and a result computed with 2 workers is the result for 8.
- ``figures(result)`` / ``report(result)``: drawn from a result's tables and summary alone
  (so a loaded result draws the same figures); ``headline(result)``: the lines the command
  prints.

:class:`Result` holds what a study found: ``tables`` (name -> DataFrame, saved as Parquet),
``summary`` (strict JSON: an undefined number is ``null``, never NaN). ``Result.load(out)``
reads one back without recomputing anything. ``memlab.testing.check_study`` is the
conformance suite every registered study passes (a third party's too).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlab import options, streams, threads, validate
from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError, RunError
from memlab.io import dumps_strict, loads_strict, strict_jsonable
from memlab.links import docs_page
from memlab.options import option
from memlab.studies.outputs import OUTPUTS, OWNER, StudyOutputs

if TYPE_CHECKING:
    import pandas as pd

SUMMARY = "summary.json"
CONFIG = "config.json"
TABLES = "tables"
REPORT = "report.html"
# Measured durations: they differ from one computation to the next, so they are kept
# apart from the results (summary.json holds the same bits however often it is
# recomputed) and are not part of what a repair must give back.
TIMINGS = "timings.json"
TIMING_KEYS = ("seconds", "seconds_per_part", "seconds_total", "timing", "timing_s")


@dataclass(frozen=True)
class StudyConfig:
    """Base of every study's config: frozen, JSON round-trippable, with presets."""

    @classmethod
    def quick(cls) -> StudyConfig:
        """A preset that runs in seconds to minutes on 2 CPU cores (CI, smoke tests)."""
        return cls()

    @classmethod
    def full(cls) -> StudyConfig:
        """The preset behind the docs pages' figures."""
        return cls()

    @classmethod
    def tiny(cls) -> StudyConfig:
        """Seconds on 2 CPU cores, every part of the study exercised: the conformance
        suite's preset (:func:`memlab.testing.check_study`)."""
        return cls.quick()

    def to_dict(self) -> dict[str, Any]:
        return strict_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudyConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} settings: {sorted(unknown)}")
        converted = {}
        for name, value in values.items():
            default = getattr(cls(), name) if known[name].default is not dataclasses.MISSING \
                or known[name].default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(default) and isinstance(value, dict):
                # a nested config (e.g. the PopulationConfig a study trains) from its dict
                converted[name] = type(default).from_dict(value)
            elif isinstance(value, list) and (isinstance(default, tuple)
                                              or str(known[name].type).startswith("tuple")):
                # JSON turns tuples into lists; give tuple fields their tuples back.
                converted[name] = tuple(value)
            else:
                converted[name] = value
        return cls(**converted)

    def validate(self) -> None:
        """Refuse settings the study cannot use, with the fix (a study overrides this)."""

    def python_only(self) -> list[str]:
        """Why no command line recreates this config (empty when one does): settings
        without a flag that differ from the defaults."""
        return [f"{name} has no command-line option"
                for name in options.python_only_fields(self)]

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class Result:
    """What a study found. ``study`` names it; ``config`` is its config as a dict.

    tables: name -> DataFrame (saved as ``tables/<name>.parquet``).
    summary: headline numbers, strict-JSON serializable (``null`` for undefined). Its
        measured durations (the keys in ``TIMING_KEYS``) are saved apart, in timings.json.
    figures(): name -> matplotlib Figure, drawn from the tables and summary alone (so a
        loaded result draws the same figures); a study registers its figure function in
        ``FIGURES``.
    """

    study: str
    config: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None

    inputs: dict[str, Any] = field(default_factory=dict)  # fingerprints of injected inputs

    def figures(self) -> dict:
        """name -> matplotlib Figure, drawn in memlab's one figure style."""
        draw = _registered(self.study, "figures")
        if draw is None:
            return {}
        from memlab.report import style

        with style():
            return draw(self)

    def save_figures(self, directory: str | Path, prefix: str | None = None) -> list[Path]:
        """Write every figure as ``<directory>/<prefix><name>.png`` (prefix: the study's name
        and an underscore) in memlab's one style and resolution; returns the paths."""
        from memlab.report import save_figure

        if prefix is None:
            registered = STUDIES.get(self.study)
            prefix = registered.figure_prefix if registered is not None else None
            prefix = f"{self.study}_" if prefix is None else prefix
        return [save_figure(fig, Path(directory) / f"{prefix}{name}.png")
                for name, fig in self.figures().items()]

    def report(self):
        """The study's :class:`memlab.report.Report` (call ``.save(path)`` or ``.html()``)."""
        write = _registered(self.study, "report")
        if write is not None:
            from memlab.report import style

            with style():
                return write(self)
        from memlab.report import Report, style

        # No report of its own: the summary's numbers (rounded), every figure and the head
        # of every table; the full numbers are in summary.json and the tables.
        page = Report(f"memlab {self.study}")
        page.heading("Summary")
        page.table(summary_rows(self.summary), caption="summary.json, rounded")
        with style():
            for name, fig in self.figures().items():
                page.heading(name)
                page.figure(fig, caption=name)
        for name, table in self.tables.items():
            page.heading(f"Table {name}", collapsed=True)
            page.table(table.head(30), caption=f"{name} (first 30 rows of tables/{name}.parquet)")
        return page

    def save(self, out: str | Path | None = None, report: bool = True) -> Path:
        """Write tables, summary.json, config.json (and report.html) under ``out``, each
        atomically, then ``outputs.json`` with every output's checksum (the commit marker:
        :mod:`memlab.studies.outputs`). ``out`` must be new, empty or this result's own: a
        directory holding another study's results is refused. A file that already holds
        exactly what would be written is left untouched."""
        out = out if out is not None else self.out
        if out is None:
            raise ConfigError("Result.save needs an output directory")
        out = Path(out)
        outputs = StudyOutputs(out)
        with outputs.locked():
            outputs.claim(self.study, self.config, strict_jsonable(self.inputs))
            self.out = out  # (the report's Reproduce line names it)
            # In the order summary.json keeps (sorted keys): a report drawn now and one
            # drawn from the loaded result are the same page.
            self.summary = sorted_keys(self.summary)
            outputs.uncommit()
            for name, table in self.tables.items():
                outputs.write(f"{TABLES}/{name}.parquet", table_bytes(table))
            outputs.write(CONFIG, json_bytes({"study": self.study, "config": self.config,
                                              "inputs": self.inputs}))
            results = {k: v for k, v in self.summary.items() if k not in TIMING_KEYS}
            timings = {k: v for k, v in self.summary.items() if k in TIMING_KEYS}
            outputs.write(SUMMARY, json_bytes(results))
            (outputs.write(TIMINGS, json_bytes(timings)) if timings
             else (out / TIMINGS).unlink(missing_ok=True))
            if report:
                outputs.write(REPORT, self.report().html().encode("utf-8"))
            outputs.commit()
        return out

    @classmethod
    def load(cls, out: str | Path) -> Result:
        """Read a saved result (no recomputation), every file checked against the checksum
        it was saved with: a missing or damaged file is a one-line RunError naming it."""
        out = Path(out)
        outputs = StudyOutputs(out)
        damage = outputs.damage()
        if damage is not None:  # the report is not read here (and is redrawn on a re-run)
            damage.pop(REPORT, None)
        if damage is None:
            owner = outputs.owner() if out.is_dir() else None
            if owner is not None and (out / OWNER).exists():
                raise RunError(f"{out} holds an unfinished {owner['study']} study (no "
                               f"{OUTPUTS}); run the same command again to finish it")
            if owner is None:
                raise RunError(f"{out} holds no saved study result (no {CONFIG} / {SUMMARY}); "
                               "run the study first")
            # Saved before outputs.json existed: no checksums to check against.
            files = [CONFIG, SUMMARY, *(p.relative_to(out).as_posix()
                                        for p in sorted((out / TABLES).glob("*.parquet")))]
        elif damage:
            raise outputs.damage_error(damage)
        else:
            files = list(outputs.manifest())
        meta, summary = _read_document(out, CONFIG), _read_document(out, SUMMARY)
        if TIMINGS in files:
            summary.update(_read_document(out, TIMINGS))
        tables = {Path(name).stem: _read_table(out, name) for name in sorted(files)
                  if name.startswith(f"{TABLES}/") and name.endswith(".parquet")}
        return cls(meta["study"], meta["config"], tables, summary, out,
                   meta.get("inputs", {}))


def summary_rows(summary: dict[str, Any], limit: int = 200) -> pd.DataFrame:
    """A summary as a two-column table for a page: nested keys joined with dots, numbers
    rounded (:func:`memlab.report.numbers.fmt`), lists of more than 8 items elided."""
    import pandas as pd

    from memlab.report.numbers import fmt

    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (list, tuple)):
            shown = ", ".join(fmt(v) if not isinstance(v, (dict, list)) else "…"
                              for v in value[:8])
            rows.append((prefix, f"[{shown}{', …' if len(value) > 8 else ''}]"))
        else:
            rows.append((prefix, fmt(value)))

    walk("", summary)
    return pd.DataFrame(rows[:limit], columns=["quantity", "value"])


def sorted_keys(document: Any) -> Any:
    """``document`` with every dict's keys in sorted order (values unchanged)."""
    if isinstance(document, dict):
        return {k: sorted_keys(document[k]) for k in sorted(document, key=str)}
    if isinstance(document, list):
        return [sorted_keys(v) for v in document]
    return document


def table_bytes(table: pd.DataFrame) -> bytes:
    """A table as Parquet bytes (what ``tables/<name>.parquet`` holds)."""
    import io

    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


def json_bytes(document: Any) -> bytes:
    return (dumps_strict(document) + "\n").encode("utf-8")


def _read_document(out: Path, name: str) -> dict[str, Any]:
    try:
        document = loads_strict((out / name).read_text())
    except FileNotFoundError:
        raise RunError(f"{out} holds no saved study result (no {name}); run the study "
                       "first") from None
    except (OSError, ValueError) as error:
        raise RunError(f"{out / name} is unreadable ({error}); run the same command again "
                       "to recompute it") from None
    if not isinstance(document, dict):
        raise RunError(f"{out / name} is not a JSON object; run the same command again to "
                       "recompute it")
    return document


def _read_table(out: Path, name: str) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_parquet(out / name)
    except Exception as error:  # noqa: BLE001 (pyarrow raises its own error types)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunError(f"{out / name} is unreadable ({first}); run the same command again "
                       "to recompute it") from None


# ------------------------------------------------------------------ how to compute


@dataclass(frozen=True)
class Execution:
    """How a study computes, never what: none of it changes a number (the engine's models
    are the same bits on any number of workers, and a chunk trains the same on any
    executor), so it is never stored in a config nor part of "is this the saved result".

    n_workers: worker processes (None: one per core). device: ``cpu``, ``cuda``,
    ``cuda:N``. executor: ``local`` or ``ray`` (``ray_address``: a cluster, else a local
    one). progress: progress bars on standard error. trust_code: a study given an existing
    run (``run_dir``, ``RUN``) may import the ``package.module`` its manifest names as its
    model factory or augmentation (to rebuild or retrain its models; ``--trust-run``): a
    permission, not a setting, so it never changes a number either. threads: CPU threads
    of the study's own linear algebra while it runs (None: leave the process's setting;
    ``--threads``, the command line's rule: :mod:`memlab.threads`); the training engine's
    workers run one each regardless. It may change the last bits of a parallel reduction,
    never a finding.
    """

    n_workers: int | None = None
    device: str = "cpu"
    executor: str = "local"
    ray_address: str | None = None
    progress: bool = True
    trust_code: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        validate.workers(self.n_workers, "n_workers")
        validate.device(self.device, "device", available=False)
        validate.choice(self.executor, "executor", ("local", "ray"))
        validate.boolean(self.progress, "progress")
        validate.boolean(self.trust_code, "trust_code")
        if self.threads is not None:
            validate.threads(self.threads, "threads")

    def training(self) -> dict[str, Any]:
        """The keyword arguments of :func:`memlab.population.train_population`."""
        return dict(device=self.device, n_workers=self.n_workers, executor=self.executor,
                    ray_address=self.ray_address, progress=self.progress)


EXECUTION_FIELDS = tuple(f.name for f in dataclasses.fields(Execution))


# ------------------------------------------------------------------ the contract


# Where a study package keeps its functions when the Study does not name them.
CONVENTIONS = {"run": "study:run", "figures": "figures:draw_figures",
               "report": "figures:build_report", "headline": "study:headline_lines"}


@dataclass(frozen=True)
class Study:
    """A study: what the registry, the command line, the conformance suite and the README
    table know about it. ``run``, ``figures``, ``report`` and ``headline`` are functions or
    ``"package.module:function"`` strings (imported when first needed, so that building the
    command line imports no study's science); with ``package``, the ones not given are
    found by convention (``CONVENTIONS``: ``<package>.study:run``,
    ``<package>.figures:draw_figures``, ...).

    run(config, out, execution, **inputs) -> Result; figures(result) -> {name: Figure};
    report(result) -> memlab.report.Report; headline(result) -> lines the command prints.
    """

    name: str
    config: type[StudyConfig]
    summary: str  # one line: what it measures (the CLI's help, the README's table)
    run: Callable[..., Result] | str | None = None
    package: str | None = None  # e.g. "memlab.studies.memorize"
    description: str = ""
    figures: Callable[[Result], dict] | str | None = None
    report: Callable[[Result], Any] | str | None = None
    headline: Callable[[Result], list[str]] | str | None = None
    science: str = ""  # the docs/science.md section, e.g. "§1"
    docs: str = ""  # the study's docs page, e.g. "docs/memorization.md"
    figure_prefix: str | None = None  # PNG names: <prefix><figure>.png (default: "<name>_")
    # Given a run (``run_dir``) and no ``out``: results in RUN/<name> rather than runs/<name>
    beside_run: bool = False

    @property
    def command(self) -> str:
        """The ``memlab`` sub-command: the name with hyphens."""
        return self.name.replace("_", "-")

    def __call__(self, config: StudyConfig | None = None, out: str | Path | None = None,
                 execution: Execution | None = None, **inputs: Any) -> Result:
        """``run_study(self, ...)``: ``memlab.studies.<name>.run`` is the study itself.
        Keywords that name :class:`Execution` fields (``n_workers``, ``device``,
        ``executor``, ``ray_address``, ``progress``, ``trust_code``, ``threads``) build the
        execution; the rest are inputs (e.g. ``dataset=``)."""
        how = {k: inputs.pop(k) for k in list(inputs) if k in EXECUTION_FIELDS}
        if how:
            if execution is not None:
                raise ConfigError("give an Execution or its fields as keywords, not both")
            execution = Execution(**how)
        return run_study(self, config, out, execution, **inputs)

    def function(self, role: str) -> Callable | None:
        """``run`` / ``figures`` / ``report`` / ``headline`` as a callable (or None: the
        study has none)."""
        target = getattr(self, role)
        if target is None and self.package is not None:
            target = f"{self.package}.{CONVENTIONS[role]}"
            module, _, name = target.partition(":")
            try:
                return getattr(importlib.import_module(module), name, None)
            except ModuleNotFoundError as error:
                if error.name != module:  # the module exists but fails to import
                    raise
                return None
        if isinstance(target, str):
            module, _, name = target.partition(":")
            target = getattr(importlib.import_module(module), name)
        return target


STUDIES: dict[str, Study] = {}


def _builtin() -> tuple[str, ...]:
    """memlab's own studies: every package under memlab/studies registers one on import."""
    import pkgutil
    import sys

    here = sys.modules[__name__.rpartition(".")[0]].__path__
    return tuple(sorted(m.name for m in pkgutil.iter_modules(here) if m.ispkg))


BUILTIN = _builtin()
ENTRY_POINTS = "memlab.studies"  # a pip package's studies: [project.entry-points] group


def register_study(study: Study, replace: bool = False) -> Study:
    """Add ``study`` to the registry (the CLI, the conformance suite and ``Result.load``
    find it there); refuses a second study of the same name unless ``replace``."""
    if not isinstance(study, Study):
        raise ConfigError(f"register_study takes a memlab.studies.base.Study, got "
                          f"{type(study).__name__}")
    if not (dataclasses.is_dataclass(study.config) and issubclass(study.config, StudyConfig)):
        raise ConfigError(f"study {study.name!r}: config must be a StudyConfig dataclass")
    if study.run is None and study.package is None:
        raise ConfigError(f"study {study.name!r}: give run= (or package=, whose study.run "
                          "is found by convention)")
    known = STUDIES.get(study.name)
    if known is not None and known != study and not replace:
        raise ConfigError(f"a study named {study.name!r} is registered already; choose "
                          "another name or pass replace=True")
    STUDIES[study.name] = study
    return study


def all_studies() -> dict[str, Study]:
    """Every registered study: memlab's own, installed packages' (entry points), and any
    registered in this process."""
    for name in BUILTIN:
        importlib.import_module(f"memlab.studies.{name}")
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINTS):
        if point.name in STUDIES:
            continue
        try:  # another package's study: a broken one is reported, memlab's still work
            loaded = point.load()
            register_study(loaded() if callable(loaded) and not isinstance(loaded, Study)
                           else loaded)
        except Exception as error:  # noqa: BLE001
            import warnings

            warnings.warn(f"the study {point.name!r} of {point.value} could not be loaded "
                          f"({type(error).__name__}: {error}); it is left out", stacklevel=2)
    return dict(STUDIES)


def get_study(name: str) -> Study:
    if name not in STUDIES and name in BUILTIN:
        importlib.import_module(f"memlab.studies.{name}")
    if name not in STUDIES:
        all_studies()
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; registered: {', '.join(sorted(STUDIES))}")
    return STUDIES[name]


def study_table() -> str:
    """The README's table of studies, from the registry (Markdown, one row per study)."""
    rows = ["| study | what it measures | docs (science §) |", "|---|---|---|"]
    for name, study in sorted(all_studies().items()):
        if name not in BUILTIN:
            continue
        # Absolute links: the README is also the package index's page, where docs/ is not.
        page = study.docs.removeprefix("docs/").removesuffix(".md")
        science = f" ({study.science})" if study.science else ""
        docs = f"[{page}]({docs_page(page)}){science}" if study.docs else ""
        rows.append(f"| `memlab {study.command}` | {study.summary} | {docs} |")
    return "\n".join(rows) + "\n"


def _registered(name: str, role: str) -> Callable | None:
    try:
        return get_study(name).function(role)
    except ConfigError:
        return None


# ------------------------------------------------------------------ the Reproduce line


def _double_quoted(match: re.Match) -> str:
    text = match.group(1)
    for special in ("\\", '"', "$", "`"):  # what a shell reads specially inside "..."
        text = text.replace(special, "\\" + special)
    return f'"{text}"'


def reproduce_text(result: Result) -> str:
    """The report's Reproduce line: the ``memlab`` command that recreates ``result``
    (:func:`command_line`), or why none can and the Python call that does. A JSON argument
    (``--knobs '{...}'``) is shown double-quoted, which a shell reads as the same
    argument: the page check that refuses summaries dumped as JSON
    (:mod:`memlab.report.browser`) would take a single-quoted object for one."""
    study = get_study(result.study)
    config = study.config.from_dict(result.config)
    command = command_line(study, config, result.out)
    if command is not None:
        return re.sub(r"'(\{[^']*\})'", _double_quoted, command)
    module = study.package or f"memlab.studies.{study.name}"
    return (f"No memlab {study.command} command recreates this config: "
            + "; ".join(python_only(config)) + f". Reproduce it in Python with {module}.run("
            f"{type(config).__name__}.from_dict(config)) and the same objects (the config is "
            "in config.json).")


def python_only(config: StudyConfig) -> list[str]:
    """Why no ``memlab`` command recreates ``config`` (empty when one does)."""
    return config.python_only()


def command_line(study: Study | str, config: StudyConfig, out: str | Path | None = None,
                 width: int = 88) -> str | None:
    """The ``memlab <study> ...`` command that recreates ``config`` (every setting that
    differs from the config's defaults, wrapped like a shell command at ``width``
    columns), or None when none can (:func:`python_only`). Generated from the same field
    metadata as the parser, so the two cannot disagree (tests/test_study_cli.py)."""
    import shlex

    study = get_study(study) if isinstance(study, str) else study
    if python_only(config):
        return None
    words = ["memlab", study.command, *options.words(config)]
    if out is not None:
        words += ["--out", str(out)]
    groups, i = [" ".join(shlex.quote(w) for w in words[:2])], 2
    while i < len(words):  # keep each option with its value on one line
        if i + 1 < len(words) and not words[i + 1].startswith("--"):
            groups.append(f"{shlex.quote(words[i])} {shlex.quote(words[i + 1])}")
            i += 2
        else:
            groups.append(shlex.quote(words[i]))
            i += 1
    lines, line = [], groups[0]
    for group in groups[1:]:
        if len(line) + len(group) + 3 > width:
            lines.append(line + " \\")
            line = "   "
        line += " " + group
    return "\n".join([*lines, line])


# ------------------------------------------------------------------ the one opening


def default_out(study: Study | str, config: StudyConfig | None = None) -> Path:
    """Where a study's results go when no ``out`` is given: ``runs/<name>``, or
    ``RUN/<name>`` for a study that writes beside the run it is given (``beside_run``)."""
    study = get_study(study) if isinstance(study, str) else study
    run_dir = getattr(config, "run_dir", None)
    if study.beside_run and run_dir is not None:
        return Path(run_dir) / study.name
    return Path("runs") / study.name


def run_study(study: Study | str, config: StudyConfig | None = None,
              out: str | Path | None = None, execution: Execution | None = None,
              **inputs: Any) -> Result:
    """Validate ``config``, choose ``out`` (None: ``runs/<name>``), return the saved result
    when ``out`` holds one with the same config and inputs, else run the study and save
    what it found. ``inputs``: Python objects a study accepts besides its config (e.g. a
    ``dataset=``); each is identified by its ``fingerprint()`` when it has one."""
    study = get_study(study) if isinstance(study, str) else study
    config = study.config() if config is None else config
    if not isinstance(config, study.config):
        raise ConfigError(f"{study.name} takes a {study.config.__name__}, got "
                          f"{type(config).__name__}")
    config.validate()
    execution = execution if execution is not None else Execution()
    out = Path(out) if out is not None else default_out(study, config)
    validate.output_dir(out, "out")
    identity = strict_jsonable({name: _fingerprint(value) for name, value in inputs.items()
                                if value is not None})
    outputs = StudyOutputs(out)
    with outputs.locked():
        outputs.claim(study.name, config.to_dict(), identity)
        damage = outputs.damage()
        if damage == {}:  # finished here, every output intact
            return Result.load(out)
        if damage and set(damage) <= {REPORT}:  # drawn from the tables alone: redraw it
            outputs.discard(list(damage))
            result = Result.load(out)
            result.save(out)
            return result
        timings = (_read_document(out, TIMINGS) if damage and TIMINGS not in damage
                   and (out / TIMINGS).exists() else None)
        outputs.discard(list(damage or {}))  # a study's caches must not reuse damaged files
        run = study.function("run")
        if run is None:
            raise ConfigError(f"study {study.name!r} has no run function ({study.package}"
                              ".study:run is missing)")
        with threads.limited(execution.threads):
            result = run(config, out, execution, **inputs)
        result.study, result.config, result.inputs = study.name, config.to_dict(), identity
        if timings is not None:  # a repair: the durations are the original computation's
            result.summary.update(timings)
        result.save(out)
    return result


def _fingerprint(value: Any) -> Any:
    if hasattr(value, "fingerprint"):
        return value.fingerprint()
    raise ConfigError(f"cannot identify the input {type(value).__name__} (it has no "
                      "fingerprint()); pass it through the config instead")


# ------------------------------------------------------------------ studies that train


# Model names a fresh ``memlab`` process knows (memlab.models.MODELS, memlab.models.lm).
COMMAND_LINE_MODELS = ("mlp", "cnn1d", "cnn2d", "transformer")


@dataclass(frozen=True)
class PopulationStudyConfig(StudyConfig):
    """Base of every study that trains a population: the data it trains on and the whole
    recipe, nested (every recipe option is available in every such study).

    data: a built-in dataset name or a path (``.npz`` / directory of ``.npy``); None when
        the dataset is passed to ``run`` as an object (Python only).
    n_train: train on a random subset of this many training examples (None: all).
    label_noise: flip this fraction of training labels first (seeded by the population's
        seed): planted examples with a known answer.
    membership: an explicit (n_models, n_train) bool mask (``.npy``) instead of random
        subsets.
    population: the recipe (:class:`memlab.population.PopulationConfig`).
    """

    data: str | None = option("mnist1d", example="digits",
                              help="mnist1d | digits | mnist | path/to/data.npz")
    n_train: int | None = option(None, help="train on a random subset of this many training "
                                            "examples (default: all)", example="200")
    label_noise: float = option(0.0, metavar="FRACTION", help=(
        "flip the labels of this fraction of training examples first"), example="0.1")
    membership: str | None = option(None, metavar="MASK.npy", example="mask.npy", help=(
        "explicit (n_models, n_train) bool membership mask instead of random subsets"))
    population: PopulationConfig = option(default_factory=PopulationConfig)

    def validate(self) -> None:
        """The data options; a study adds its own checks (and calls this one, inside its
        own ``validate.all_problems``: every problem is reported at once)."""
        with validate.all_problems(settings_name(self)):
            if not isinstance(self.population, PopulationConfig):
                raise ConfigError("population must be a memlab.population.PopulationConfig")
            if self.data is not None and not (isinstance(self.data, str) and self.data):
                validate.problem(f"data must be a dataset name or path, got {self.data!r}")
            if self.n_train is not None:
                with validate.check():
                    validate.integer(self.n_train, "n_train", minimum=2)
            with validate.check():
                validate.real(self.label_noise, "label_noise", minimum=0, maximum=1,
                              open_high=True)
            if self.population.subsets == "explicit" and self.membership is None:
                validate.problem("population.subsets='explicit' needs a membership mask: "
                                 "give membership (--membership MASK.npy)")

    def python_only(self) -> list[str]:
        reasons = super().python_only()
        if self.data is None:
            reasons.append("the dataset was passed to run() as a Python object")
        model = self.population.model
        if ":" not in model and model not in COMMAND_LINE_MODELS:
            reasons.append(f"model {model!r} is registered in Python (the command line knows "
                           f"{', '.join(COMMAND_LINE_MODELS)} and package.module:factory)")
        return reasons

    def recipe(self) -> PopulationConfig:
        """The population's recipe as trained: explicit subsets when a mask is given."""
        if self.membership is None:
            return self.population
        return dataclasses.replace(self.population, subsets="explicit")


def settings_name(config: StudyConfig) -> str:
    """How a message names a config's settings: ``AttributeConfig`` -> ``attribute
    settings``, ``LmMemorizeConfig`` -> ``lm memorize settings``."""
    import re

    name = type(config).__name__.removesuffix("Config") or type(config).__name__
    return " ".join(re.findall(r"[A-Z][a-z0-9]*|[a-z0-9]+", name)).lower() + " settings"


def check_run_dir(config: PopulationStudyConfig, analysis_seed: bool = True) -> None:
    """With ``config.run_dir``, the population is that run's: refuse the options that
    describe one to train (they would be accepted and dropped). ``population.seed`` may
    differ when it also seeds the study's own draws (``analysis_seed``)."""
    run_dir = getattr(config, "run_dir", None)
    if run_dir is None:
        return
    if not isinstance(run_dir, str) or not run_dir:
        raise ConfigError(f"run_dir must be a run directory, got {run_dir!r}")
    default = type(config)()
    given = [f"--{name.replace('_', '-')}" for name in ("n_train", "label_noise", "membership")
             if getattr(config, name) != getattr(default, name)]
    if config.data not in (None, default.data):
        given.insert(0, "--data")
    recipe = config.population
    if analysis_seed:
        recipe = dataclasses.replace(recipe, seed=default.population.seed)
    names = {flag.path[-1]: flag.name for flag in options.flags(PopulationConfig)
             if flag.template is None}
    given += [names.get(f.name, f.name) for f in dataclasses.fields(PopulationConfig)
              if getattr(recipe, f.name) != getattr(default.population, f.name)]
    if given:
        raise ConfigError(
            f"RUN ({run_dir}) is the population to measure; {', '.join(given)} describe one "
            "to train (--quick and --full set them too): give either RUN or the training "
            "options" + (" (--seed alone may go with RUN: it seeds the study's own draws)"
                         if analysis_seed else ""))


def training_data(config: PopulationStudyConfig, dataset: Any = None) -> Any:
    """The dataset a study trains on: ``config.data`` (or ``dataset``), a random ``n_train``
    of its training examples (stream ``[seed, streams.N_TRAIN]``), then ``label_noise`` of
    the labels flipped (seeded by the population's seed)."""
    import numpy as np

    from memlab.data import load

    if dataset is None:
        if config.data is None:
            raise ConfigError(f"{type(config).__name__}.data is None: pass the dataset to "
                              "run(config, out, dataset=...) or name one (mnist1d, digits, "
                              "mnist, a path)")
        dataset = load(config.data)
    elif config.data is not None:
        raise ConfigError(f"give either {type(config).__name__}.data or run(..., dataset=...)"
                          ", not both (set data=None when passing a dataset)")
    seed = config.population.seed
    if config.n_train is not None and config.n_train > dataset.n_train:
        raise ConfigError(f"n_train (--n-train) {config.n_train:,} exceeds the "
                          f"{dataset.n_train:,} "
                          f"training examples of {dataset.name}; give at most "
                          f"{dataset.n_train:,} (or leave it out to use them all)")
    if config.n_train is not None and config.n_train < dataset.n_train:
        keep = np.sort(np.random.default_rng([seed, streams.N_TRAIN]).choice(
            dataset.n_train, config.n_train, replace=False))
        dataset = dataset.subset(keep)
        dataset.name = f"{dataset.name}-{config.n_train}"
    if config.label_noise:
        dataset = dataset.with_label_noise(config.label_noise, seed=seed)
    return dataset


def load_membership(path: str | None) -> Any:
    """The mask a ``membership`` path names (no pickles: untrusted files run no code)."""
    if path is None:
        return None
    import numpy as np

    from memlab.io import check_regular

    try:
        check_regular(path)  # (a FIFO would block the read forever)
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read membership {path} as a .npy bool array ({error}); "
                          "save one with numpy.save(path, mask)") from None


def open_or_train(config: PopulationStudyConfig, out: Path, execution: Execution,
                  data: Any = None, *, run_dir: str | Path | None = None,
                  name: str = "population", **train: Any) -> Any:
    """The population a study measures: the run at ``run_dir`` when given (opened and
    verified), else ``config.population`` trained (or resumed) on ``data`` (default:
    :func:`training_data`) in ``out/name``. ``train``: more ``train_population`` keywords
    (callbacks, model, ...). An opened run imports the code its manifest names only with
    ``execution.trust_code``; a trained one runs the code the config names."""
    from memlab.population import open_run, train_population

    if run_dir is not None:
        path = Path(run_dir)
        if not path.exists():
            raise RunError(f"no run at {path}; train one (memlab train / memorize) or give "
                           "--data to train it here")
        return open_run(path, trust_code=execution.trust_code)
    data = training_data(config) if data is None else data
    return train_population(data, config.recipe(), membership=load_membership(
        config.membership), out=Path(out) / name, **execution.training(), **train)

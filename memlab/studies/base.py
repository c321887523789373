"""The one shape every study has: a frozen config, ``run(config, out) -> Result``.

    config = memlab.studies.audit.AuditConfig.quick()
    result = memlab.studies.audit.run(config, out="runs/audit")
    result.summary["lira_online"]["auc"];  result.tables["examples"];  result.report()

A study module defines

- ``<Name>Config``: a frozen dataclass deriving from :class:`StudyConfig`, with the
  papers' defaults, and ``quick()`` (seconds to a few minutes on 2 CPU cores) and ``full()``
  (the README's figures) presets;
- ``run(config, out) -> Result``: resumable (a second call with the same ``out`` trains
  nothing new), writes its tables, ``summary.json``, figures and ``report.html`` into
  ``out`` through :meth:`Result.save`.

A :class:`Result` holds what a study found: ``tables`` (name -> DataFrame, saved as
Parquet), ``summary`` (a dict saved as strict JSON: an undefined number is ``null``, never
NaN), and the study's figure and report functions. ``Result.load(out)`` reads a saved result
back without recomputing anything.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from memlab.errors import ConfigError, RunError
from memlab.io import atomic_save_table, atomic_write_json, loads_strict, strict_jsonable

SUMMARY = "summary.json"
CONFIG = "config.json"
TABLES = "tables"
REPORT = "report.html"


@dataclass(frozen=True)
class StudyConfig:
    """Base of every study's config: frozen, JSON round-trippable, with presets."""

    @classmethod
    def quick(cls) -> StudyConfig:
        """A preset that runs in seconds to minutes on 2 CPU cores (CI, smoke tests)."""
        return cls()

    @classmethod
    def full(cls) -> StudyConfig:
        """The preset behind the README's figures."""
        return cls()

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

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class Result:
    """What a study found. ``study`` names it; ``config`` is its config as a dict.

    tables: name -> DataFrame (saved as ``tables/<name>.parquet``).
    summary: headline numbers, strict-JSON serializable (``null`` for undefined).
    figures(): name -> matplotlib Figure, drawn from the tables and summary alone (so a
        loaded result draws the same figures); a study registers its figure function in
        ``FIGURES``.
    """

    study: str
    config: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None

    # study name -> functions(result) drawing its figures / writing its report.
    FIGURES: ClassVar[dict[str, Callable[[Result], dict]]] = {}
    REPORTS: ClassVar[dict[str, Callable[[Result], Any]]] = {}

    def figures(self) -> dict:
        """name -> matplotlib Figure, drawn in memlab's one figure style."""
        draw = self.FIGURES.get(self.study)
        if draw is None:
            return {}
        from memlab.report import style

        with style():
            return draw(self)

    def save_figures(self, directory: str | Path, prefix: str | None = None) -> list[Path]:
        """Write every figure as ``<directory>/<prefix><name>.png`` (prefix: the study's name
        and an underscore) in memlab's one style and resolution; returns the paths."""
        from memlab.report import save_figure

        prefix = f"{self.study}_" if prefix is None else prefix
        return [save_figure(fig, Path(directory) / f"{prefix}{name}.png")
                for name, fig in self.figures().items()]

    def report(self):
        """The study's :class:`memlab.report.Report` (call ``.save(path)`` or ``.html()``)."""
        write = self.REPORTS.get(self.study)
        if write is not None:
            from memlab.report import style

            with style():
                return write(self)
        from memlab.report import Report

        page = Report(f"memlab {self.study}")
        page.code(json.dumps(self.summary, indent=2))
        for name, table in self.tables.items():
            page.table(table.head(30), caption=name)
        return page

    def save(self, out: str | Path | None = None, report: bool = True) -> Path:
        """Write tables, summary.json, config.json (and report.html) under ``out``."""
        out = Path(out if out is not None else self.out)
        if out is None:
            raise ConfigError("Result.save needs an output directory")
        (out / TABLES).mkdir(parents=True, exist_ok=True)
        for name, table in self.tables.items():
            atomic_save_table(out / TABLES / f"{name}.parquet", table)
        atomic_write_json(out / CONFIG, {"study": self.study, "config": self.config})
        atomic_write_json(out / SUMMARY, self.summary)
        if report:
            self.report().save(out / REPORT)
        self.out = out
        return out

    @classmethod
    def load(cls, out: str | Path) -> Result:
        """Read a saved result (no recomputation)."""
        out = Path(out)
        try:
            meta = loads_strict((out / CONFIG).read_text())
            summary = loads_strict((out / SUMMARY).read_text())
        except FileNotFoundError:
            raise RunError(f"{out} holds no saved study result (no {CONFIG} / {SUMMARY}); "
                           "run the study first") from None
        except (ValueError, json.JSONDecodeError) as error:
            raise RunError(f"{out}: unreadable study result ({error}); run the study again "
                           "with a new --out") from None
        tables = {path.stem: pd.read_parquet(path)
                  for path in sorted((out / TABLES).glob("*.parquet"))}
        return cls(meta["study"], meta["config"], tables, summary, out)


def saved_result(out: str | Path | None, study: str, config: StudyConfig) -> Result | None:
    """The result saved in ``out`` by the same study with the same config, if any (so a
    second ``run`` call returns without recomputing)."""
    if out is None or not (Path(out) / SUMMARY).exists():
        return None
    try:
        result = Result.load(out)
    except RunError:
        return None
    if result.study == study and result.config == config.to_dict():
        return result
    return None

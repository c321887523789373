"""Config fields that declare their command-line flag: one source for the parser, the help
text and the Reproduce line.

    @dataclass(frozen=True)
    class MyConfig(StudyConfig):
        n_targets: int = option(100, help="test examples attributed")
        methods: tuple[str, ...] = option(("trak", "knn"), help="methods to score",
                                          choices=("trak", "knn", "grad_dot"))
        same_label: bool = option(True, flag="--any-label", help="keep pairs whose labels differ")

A field's flag is ``--field-name`` unless ``flag=`` says otherwise. How a value is written
on the command line follows from the field's type:

- ``int``, ``float``, ``str`` (``| None``: the word ``none`` gives None): one word;
- ``bool``: a pair of switches, the declared one setting the opposite of the field's own
  default (``flag=`` names it, e.g. ``--no-weights`` for save_weights, default True) and
  its negation the default (``--weights``), so a preset's choice can be undone;
- ``tuple[X, ...]``: comma-separated words (an empty word: the empty tuple);
- anything else (dicts, nested tuples): ``parse`` (text or, with ``repeat=True``, the list
  of repeated words -> value) and ``show`` (value -> words) must be given, or ``cli=False``
  keeps the field out of the command line (the Reproduce line then says so).

A nested config (``population: PopulationConfig``) contributes its own fields' flags.
Layer: imports only ``errors`` (and the standard library), so every config can use it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from memlab.errors import ConfigError

METADATA_KEY = "memlab.option"


@dataclass(frozen=True)
class OptionSpec:
    """What a field declares about its command line (see :func:`option`)."""

    flag: str | None = None
    help: str = ""
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None
    parse: Callable[[Any], Any] | None = None
    show: Callable[[Any], list[str]] | None = None
    repeat: bool = False
    cli: bool = True
    example: str | None = None  # a valid non-default value as typed (for generated tests)
    # shorter flags feeding a repeat option: flag -> (metavar, help, word template), e.g.
    # {"--hidden": ("W1,W2", "...", "hidden=[{}]")}: `--hidden 64,64` is one more word
    # `hidden=[64,64]` of the option.
    shorthands: dict[str, tuple[str, str, str]] | None = None


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           flag: str | None = None, help: str = "", metavar: str | None = None,
           choices: tuple[Any, ...] | None = None, parse: Callable[[Any], Any] | None = None,
           show: Callable[[Any], list[str]] | None = None, repeat: bool = False,
           cli: bool = True, example: str | None = None,
           shorthands: dict[str, tuple[str, str, str]] | None = None) -> Any:
    """A dataclass field that declares its flag and help (see the module docstring)."""
    spec = OptionSpec(flag, help, metavar, tuple(choices) if choices else None, parse, show,
                      repeat, cli, example, shorthands)
    kwargs: dict[str, Any] = {"metadata": {METADATA_KEY: spec}}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


@dataclass(frozen=True)
class Flag:
    """One command-line flag, resolved from a field: where its value goes (``path``: the
    field names from the outer config down), how to read and write it."""

    name: str                      # "--lr"
    path: tuple[str, ...]          # ("population", "lr")
    kind: str                      # "value" | "switch" | "list" | "repeat"
    help: str
    metavar: str | None
    choices: tuple[Any, ...] | None
    parse: Callable[[Any], Any]    # the word (list: the comma text; repeat: the words)
    show: Callable[[Any], list[str]]  # value -> words after the flag ([] for a switch)
    default: Any                   # the field's value in the default config
    example: str | None
    template: str | None = None    # a shorthand's word template (see OptionSpec.shorthands)

    @property
    def dest(self) -> str:
        return "cfg__" + "__".join(self.path)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """(X, True) for ``X | None``, else (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _number(value: Any) -> str:
    """A value as it is typed on a command line, round-tripping exactly: 0.005, 1e-05,
    3.0 (a float stays a float), 30, true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


_SCALARS: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str}


def _scalar_parser(kind: Any, name: str) -> Callable[[str], Any]:
    convert = _SCALARS[kind]

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            what = {int: "an integer", float: "a number", str: "a word"}[kind]
            raise ConfigError(f"{name} takes {what}, got {text!r}") from None
    return parse


def _resolve(field: dataclasses.Field, annotation: Any, default: Any,
             path: tuple[str, ...]) -> Flag:
    spec: OptionSpec = field.metadata.get(METADATA_KEY, OptionSpec())
    name = spec.flag or "--" + field.name.replace("_", "-")
    kind_type, optional = _strip_optional(annotation)
    origin = typing.get_origin(kind_type)
    if spec.parse is not None:
        if spec.show is None:
            raise TypeError(f"option {name}: a custom parse needs a show (its inverse)")
        kind = "repeat" if spec.repeat else "value"
        return Flag(name, path, kind, spec.help, spec.metavar, spec.choices, spec.parse,
                    spec.show, default, spec.example)
    if kind_type is bool:
        raise TypeError("switches are resolved by _switches")
    if kind_type in _SCALARS:
        convert = _scalar_parser(kind_type, name)

        def parse_one(text: str) -> Any:
            return None if optional and text.lower() == "none" else convert(text)

        def show_one(value: Any) -> list[str]:
            return ["none" if value is None else _number(value)]
        return Flag(name, path, "value", spec.help, spec.metavar, spec.choices, parse_one,
                    show_one, default, spec.example)
    if origin is tuple:
        args = typing.get_args(kind_type)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
            convert = _scalar_parser(args[0], name)

            def parse_list(text: str) -> Any:
                if optional and text.lower() == "none":
                    return None
                return tuple(convert(part.strip()) for part in text.split(",")
                             if part.strip())

            def show_list(value: Any) -> list[str]:
                if value is None:
                    return ["none"]
                return [",".join(_number(v) for v in value)]
            return Flag(name, path, "list", spec.help, spec.metavar, spec.choices, parse_list,
                        show_list, default, spec.example)
    raise TypeError(f"option {name} ({annotation}) needs parse= and show=, or cli=False")


def _switches(field: dataclasses.Field, default: Any, path: tuple[str, ...]
              ) -> Iterator[Flag]:
    """A bool field's two switches: the declared flag sets the opposite of the field's own
    default (``--no-weights`` always means save_weights=False, whatever a study's recipe
    defaults to); its negation (``--weights``) sets the other value."""
    spec: OptionSpec = field.metadata.get(METADATA_KEY, OptionSpec())
    name = spec.flag or "--" + field.name.replace("_", "-")
    declared = field.default if field.default is not dataclasses.MISSING else default
    negation = "--" + name[len("--no-"):] if name.startswith("--no-") else "--no-" + name[2:]
    for flag, target, help_text in ((name, not declared, spec.help),
                                    (negation, declared, f"the opposite of {name}")):
        yield Flag(flag, path, "switch", help_text, None, None,
                   lambda value, target=target: target, lambda value: [], default,
                   spec.example, None)


def _type_hints(cls: type) -> dict[str, Any]:
    import sys

    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, vars(module) if module else None)


def flags(config_class: type, defaults: Any = None,
          path: tuple[str, ...] = ()) -> Iterator[Flag]:
    """Every flag of ``config_class`` (nested configs' flags included), in field order."""
    defaults = config_class() if defaults is None else defaults
    hints = _type_hints(config_class)
    for field in dataclasses.fields(config_class):
        spec: OptionSpec = field.metadata.get(METADATA_KEY, OptionSpec())
        value = getattr(defaults, field.name)
        if not spec.cli:
            continue
        if dataclasses.is_dataclass(value) and spec.parse is None:
            yield from flags(type(value), value, (*path, field.name))
            continue
        if _strip_optional(hints[field.name])[0] is bool:
            yield from _switches(field, value, (*path, field.name))
            continue
        flag = _resolve(field, hints[field.name], value, (*path, field.name))
        yield flag
        for name, (metavar, help_text, template) in (spec.shorthands or {}).items():
            yield dataclasses.replace(flag, name=name, metavar=metavar, help=help_text,
                                      example=None, template=template)


def python_only_fields(config: Any, defaults: Any = None, path: tuple[str, ...] = ()
                       ) -> list[str]:
    """Fields without a flag whose value differs from the defaults (dotted names)."""
    defaults = type(config)() if defaults is None else defaults
    reasons = []
    for field in dataclasses.fields(config):
        spec: OptionSpec = field.metadata.get(METADATA_KEY, OptionSpec())
        value, default = getattr(config, field.name), getattr(defaults, field.name)
        if dataclasses.is_dataclass(value) and spec.cli and spec.parse is None:
            reasons += python_only_fields(value, default, (*path, field.name))
        elif not spec.cli and value != default:
            reasons.append(".".join((*path, field.name)))
    return reasons


def get_path(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def replace_paths(config: Any, changes: dict[tuple[str, ...], Any]) -> Any:
    """``config`` with each ``path -> value`` applied (nested configs rebuilt, so their
    checks run again)."""
    direct = {path[0]: value for path, value in changes.items() if len(path) == 1}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in changes.items():
        if len(path) > 1:
            nested.setdefault(path[0], {})[path[1:]] = value
    for name, inner in nested.items():
        direct[name] = replace_paths(getattr(config, name), inner)
    return dataclasses.replace(config, **direct) if direct else config


def words(config: Any, defaults: Any = None) -> list[str]:
    """The flags and values that turn ``defaults`` (the config class's defaults) into
    ``config``: the inverse of parsing, used by the Reproduce line."""
    defaults = type(config)() if defaults is None else defaults
    out: list[str] = []
    for flag in flags(type(config), defaults):
        value = get_path(config, flag.path)
        if value == flag.default or flag.template is not None:
            continue
        if flag.kind == "switch":
            if value == flag.parse(None):  # the one of the pair that sets this value
                out.append(flag.name)
        elif flag.kind == "repeat":
            for word in flag.show(value):
                out += [flag.name, word]
        elif not flag.name.startswith("-"):  # a positional (e.g. RUN): the value alone
            out = [*flag.show(value), *out]
        else:
            out += [flag.name, *flag.show(value)]
    return out


def key_value(option_text: str, flag: str) -> tuple[str, list]:
    """``KEY=V1,V2`` -> (KEY, [V1, V2]) with each value parsed as JSON (else a string);
    commas inside brackets stay (``hidden=[50,50],[100,100]`` gives two lists)."""
    key, sep, text = option_text.partition("=")
    if not sep or not key or not text:
        raise ConfigError(f"{flag} takes KEY=VALUE[,VALUE...], got {option_text!r}")
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    values = []
    for part in [*parts, current]:
        try:
            values.append(json.loads(part))
        except json.JSONDecodeError:
            values.append(part)
    return key.replace("-", "_"), values


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))

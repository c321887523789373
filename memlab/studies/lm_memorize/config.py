"""What the language-model study measures, and with which population (docs/science.md §2)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from memlab import validate as check
from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError
from memlab.options import option
from memlab.studies.base import StudyConfig

LANGUAGE_MODEL = "language_model"  # the engine's task (memlab.engine.config.TASK_NAMES)
# memlab.models.lm.LM_MODELS and their keyword arguments (named here without torch)
LM_MODELS = {"transformer": ("d_model", "n_layers", "n_heads"),
             "mlp": ("window", "d_embed", "hidden")}
CORPORA = ("synthetic", "shakespeare", "bible")
SYNTHETIC_CONTEXT, TEXT_CONTEXT = 48, 64  # synthetic documents are short
TEXT_TRAIN, TEXT_VALIDATION = 800, 200  # real text: sized for 64 models on 2 cores in minutes
UNUSED = ("label_smoothing", "input_noise", "input_dropout")  # not for token prediction

# The paper trains each model on a random 25% of the documents; Adam suits transformers.
LM_RECIPE = PopulationConfig(model="transformer", n_models=64, subset_fraction=0.25,
                             epochs=40, batch_size=32, optimizer="adam", lr=3e-3,
                             momentum=0.0, chunk_size=16, task=LANGUAGE_MODEL)


@dataclass(frozen=True)
class LMMemorizeConfig(StudyConfig):
    """A counterfactual-memorization study of language models.

    text: ``synthetic`` (planted long tail), ``shakespeare``, ``bible``, or a path to a
        ``.txt`` (a document per line) or ``.jsonl`` (``text``, ``id``) file.
    context: tokens per document (longer ones are cut); None: 48 for ``synthetic``, 64
        otherwise. n_train / n_validation: documents drawn from a real corpus (None: 800 /
        200; the synthetic corpus has its own planted sizes).
    population: the recipe of the language models (model, n_models, epochs, lr, ...; task
        ``language_model``). Its ``seed`` seeds everything: the documents drawn, the
        subsets, initializations and shuffling, and the reliability splits.
    """

    text: str = option("synthetic", metavar="SOURCE", example="shakespeare", help=(
        "synthetic | shakespeare | bible | path/to/file.txt (a document per line) | "
        "path/to/file.jsonl ('text' and 'id' fields)"))
    context: int | None = option(None, example="32", help=(
        "tokens per document, longer ones are truncated (default: 48 for synthetic, else 64)"))
    n_train: int | None = option(None, example="100", help=(
        f"training documents drawn from a real corpus (default: {TEXT_TRAIN})"))
    n_validation: int | None = option(None, example="50", help=(
        f"validation documents drawn from a real corpus (default: {TEXT_VALIDATION})"))
    tokenizer: str = option("byte", choices=("byte", "char"), help=(
        "byte: UTF-8 bytes; char: the corpus's own characters"))
    population: PopulationConfig = option(default_factory=lambda: LM_RECIPE)

    @classmethod
    def quick(cls, **changes: Any) -> LMMemorizeConfig:
        """A smoke test (seconds on 2 cores), not a result: 8 small MLP language models,
        each on half the synthetic corpus (a few documents have no IN or no OUT model), 3
        epochs at a larger Adam step, in chunks of 4."""
        population = dataclasses.replace(
            LM_RECIPE, model="mlp", model_kwargs={"hidden": 32, "d_embed": 8}, n_models=8,
            epochs=3, lr=1e-2, subset_fraction=0.5, chunk_size=4)
        return cls(**{"population": population, **changes})

    @classmethod
    def full(cls, **changes: Any) -> LMMemorizeConfig:
        """docs/lm.md's numbers: 64 transformers on the synthetic corpus (``text`` =
        ``shakespeare`` for the real-text ones)."""
        return cls(**changes)

    @classmethod
    def tiny(cls) -> LMMemorizeConfig:
        quick = cls.quick()
        return quick.replace(population=dataclasses.replace(quick.population, epochs=1))

    @property
    def corpus(self) -> str:
        """The corpus's short name (``text`` for a file): the figures' file names."""
        return self.text if self.text in CORPORA else "text"

    def sizes(self) -> tuple[int, int | None, int | None]:
        """(context, n_train, n_validation) as drawn (None: the synthetic corpus's own)."""
        synthetic = self.text == "synthetic"
        context = self.context or (SYNTHETIC_CONTEXT if synthetic else TEXT_CONTEXT)
        if synthetic:
            return context, self.n_train, self.n_validation
        return context, self.n_train or TEXT_TRAIN, self.n_validation or TEXT_VALIDATION

    def documents(self) -> Any:
        """The :class:`memlab.data.text.Documents` the population trains on."""
        from memlab.data.text import load_documents

        context, n_train, n_test = self.sizes()
        return load_documents(self.text, context=context, n_train=n_train, n_test=n_test,
                              seed=self.population.seed, tokenizer=self.tokenizer)

    def validate(self) -> None:
        """Refuse settings the study cannot estimate from (before any training)."""
        super().validate()
        p = self.population
        if not isinstance(p, PopulationConfig):
            raise ConfigError("LMMemorizeConfig.population must be a PopulationConfig")
        if not (isinstance(self.text, str) and self.text):
            raise ConfigError(f"text must be a corpus name or a path, got {self.text!r}")
        for name in ("context", "n_train", "n_validation"):
            if getattr(self, name) is not None:
                check.integer(getattr(self, name), f"--{name.replace('_', '-')}", minimum=1)
        if p.task != LANGUAGE_MODEL:
            raise ConfigError(f"the LM study trains language models: population.task must be "
                              f"{LANGUAGE_MODEL!r}, got {p.task!r}")
        if p.model not in LM_MODELS and ":" not in p.model:
            raise ConfigError(f"unknown language model {p.model!r} (--model): choose one of "
                              f"{', '.join(LM_MODELS)} or give package.module:factory")
        if p.init != "seed":
            raise ConfigError("population.init must be 'seed' here: the LM study builds its "
                              "models by name (init='pretrained' needs a model object: train "
                              "it with memlab.population.train_population)")
        known = LM_MODELS.get(p.model, ())
        for key, value in (p.model_kwargs.items() if known else ()):
            if key not in known:
                raise ConfigError(f"population.model_kwargs: {key!r} is not an option of the "
                                  f"language model {p.model!r} (it takes {', '.join(known)}: "
                                  f"--model-option {known[0]}=...)")
            check.integer(value, f"population.model_kwargs[{key!r}] (--model-option "
                                 f"{key}=...)", minimum=1)
        check.integer(p.n_models, "--models", minimum=4,
                      fix="IN/OUT estimates and split-half reliability need at least 4")
        if p.sweep or p.subsets != "random":
            raise ConfigError("the LM study trains one population on random subsets; drop "
                              "the sweep / explicit subsets")
        unused = [name for name in UNUSED if getattr(p, name)] + (
            ["augment"] if p.augment else [])
        if unused:
            raise ConfigError(f"language-model populations do not use {', '.join(unused)}: "
                              "drop them")
        if self.text == "synthetic" and (self.n_train or self.n_validation):
            raise ConfigError("n_train / n_validation apply to real text; the synthetic corpus "
                              "has its own planted sizes")
        self._check_memory()

    def _check_memory(self) -> None:
        """The sizes the config implies within this machine's memory, before any work
        (``--context 10**8`` or ``--model-option d_model=10**7`` would otherwise allocate
        until the process is killed). Lower bounds on what training allocates
        (memlab/models/lm.py's architectures): the token arrays and, for the transformer,
        one batch of attention scores per model of a chunk (batch, 4 heads, T, T); then
        each model's weights with gradient and Adam state."""
        p = self.population
        context = self.context or TEXT_CONTEXT
        documents = (self.n_train or TEXT_TRAIN) + (self.n_validation or TEXT_VALIDATION)
        chunk = min(p.chunk_size, p.n_models)
        kwargs = p.model_kwargs
        if p.model == "transformer":
            width = kwargs.get("d_model", 64)
            n_params = 12 * kwargs.get("n_layers", 2) * width * width + (context + 2 * 260) * width
            attention = 4.0 * p.batch_size * 4 * context * context
        elif p.model == "mlp":
            width = kwargs.get("hidden", 256)
            n_params = width * (8 * 24 + 260)
            attention = 0.0
        else:
            return  # a factory of the user's: sizes unknown
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                   for v in (width, n_params)):
            return  # refused by the model itself, with its own message
        check.fits_in_memory(8.0 * documents * (context + 1) + chunk * attention,
                             f"documents of {context:,} tokens", "give a smaller --context")
        check.fits_in_memory(16.0 * chunk * n_params,
                             f"{chunk} models of {n_params:,} parameters (width {width:,})",
                             "give a smaller width (--model-option d_model=... / hidden=...) "
                             "or --chunk-size")

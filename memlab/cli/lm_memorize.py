"""``memlab lm-memorize``: counterfactual memorization of a population of language models."""

from __future__ import annotations

import argparse
import dataclasses

from memlab import validate
from memlab.cli.common import add_study_arguments, finish, preset
from memlab.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "lm-memorize", help="counterfactual memorization and influence of language models",
        description="Train a population of small language models, each on a random subset "
                    "(default 25%) of the documents, and measure which training documents "
                    "they memorize counterfactually and which validation documents depend on "
                    "a single training document (Zhang et al. 2021). Writes the run, Parquet "
                    "tables, summary.json and report.html to --out; re-running resumes.")
    add_study_arguments(parser, out="runs/lm-memorize")
    parser.add_argument("--text", default=None,
                        help="synthetic | shakespeare | bible | path/to/file.txt (a document "
                             "per line) | path/to/file.jsonl ('text' and 'id' fields) "
                             "(default: synthetic)")
    parser.add_argument("--models", type=int, default=None,
                        help="models in the population (default 64; the paper used 400)")
    parser.add_argument("--model", choices=("transformer", "mlp"), default=None,
                        help="tiny decoder-only transformer (default), or the cheaper MLP "
                             "over the last 8 tokens")
    parser.add_argument("--d-model", type=int, default=None,
                        help="transformer width (default 64); for --model mlp: hidden units")
    parser.add_argument("--layers", type=int, default=None,
                        help="transformer layers (default 2)")
    parser.add_argument("--epochs", type=int, default=None, help="(default 40)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate "
                        "(default 3e-3)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="documents per step (default 32)")
    parser.add_argument("--subset-fraction", type=float, default=None,
                        help="fraction of the documents each model trains on (default 0.25)")
    parser.add_argument("--context", type=int, default=None,
                        help="tokens per document, longer ones are truncated (default: 48 "
                             "for synthetic, else 64)")
    parser.add_argument("--n-train", type=int, default=None,
                        help="training documents drawn from a real corpus (default 800)")
    parser.add_argument("--n-validation", type=int, default=None,
                        help="validation documents drawn from a real corpus (default 200)")
    parser.add_argument("--tokenizer", choices=("byte", "char"), default=None,
                        help="(default: byte)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="models trained together in one vectorized pass (default 16)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memlab.studies import lm_memorize

    check_options(args)
    config = preset(lm_memorize.LMMemorizeConfig, args)
    recipe = config.population
    model = args.model or recipe.model
    changes = {name: value for name, value in (
        ("model", args.model), ("n_models", args.models), ("epochs", args.epochs),
        ("lr", args.lr), ("batch_size", args.batch_size),
        ("subset_fraction", args.subset_fraction), ("chunk_size", args.chunk_size))
        if value is not None}
    kwargs = dict(recipe.model_kwargs) if model == recipe.model else {}
    if model == "transformer":
        if args.d_model is not None:
            kwargs["d_model"] = args.d_model
        if args.layers is not None:
            kwargs["n_layers"] = args.layers
    else:
        if args.layers is not None:
            raise ConfigError("--layers applies to --model transformer only")
        if args.d_model is not None:
            kwargs["hidden"] = args.d_model
    config = config.replace(
        population=dataclasses.replace(recipe, model_kwargs=kwargs, **changes),
        **{name: value for name, value in (
            ("text", args.text), ("context", args.context), ("n_train", args.n_train),
            ("n_validation", args.n_validation), ("tokenizer", args.tokenizer))
           if value is not None})
    check_sizes(config)
    result = lm_memorize.run(config, args.out, progress=not args.quiet)
    # --figures DIR: lm_<corpus>_<name>.png, so the two corpora's figures sit side by side
    corpus = config.text if config.text in ("synthetic", "shakespeare", "bible") else "text"
    return finish(result, headline(result), args, prefix=f"lm_{corpus}_")


def headline(result) -> list[str]:
    """What the study found, in a few lines: memorization by kind, the simplicity verdict,
    the three most memorized documents."""
    from memlab.studies.lm_memorize.study import token_view

    s = result.summary
    by_kind = result.tables["lm_by_kind"]
    lines = [f"{s['n_models']} models on {s['n_train']} documents: mean memorization "
             f"{s['mem_mean']:.3f} (median se {s['se_median']:.3f}), "
             f"{s['fraction_memorized']:.1%} of documents >= {s['memorized_threshold']}; "
             f"reliability {s['reliability_all_models']:.3f}",
             f"memorization against simplicity: {s['simplicity']['verdict']}",
             "", "memorization by kind:",
             by_kind[["group", "n", "mem_mean", "mem_sem", "acc_in", "acc_out"]]
             .to_string(index=False, float_format="%.3f"),
             "", "most memorized documents (per token: IN minus OUT accuracy, '#' >= .5):"]
    lines += [token_view(row) + "\n" for row in
              result.tables["lm_top_documents"].head(3).itertuples()]
    return lines


def check_options(args: argparse.Namespace) -> None:
    """Every option typed, finite and in range before any work."""
    validate.output_dir(args.out)
    if args.models is not None:
        validate.integer(args.models, "--models", minimum=4,
                         fix="IN/OUT estimates and split-half reliability need at least 4")
    for option in ("epochs", "batch_size", "chunk_size", "d_model", "layers", "context",
                   "n_train", "n_validation"):
        if getattr(args, option) is not None:
            validate.integer(getattr(args, option), f"--{option.replace('_', '-')}",
                             minimum=1)
    if args.lr is not None:
        validate.real(args.lr, "--lr", minimum=0, open_low=True)
    if args.subset_fraction is not None:
        validate.fraction(args.subset_fraction, "--subset-fraction",
                          fix="each model trains on part of the documents (the paper: 0.25)")
    if args.text in (None, "synthetic") and (args.n_train or args.n_validation):
        raise ConfigError("--n-train/--n-validation apply to real text; the synthetic corpus "
                          "has its own planted sizes")


def check_sizes(config) -> None:
    """The sizes the config implies within this machine's memory, before any work
    (``--context 10**8`` or ``--d-model 10**7`` would otherwise allocate until the process
    is killed). Lower bounds on what training allocates (memlab/models/lm.py's
    architectures): the token arrays and, for the transformer, one batch of attention
    scores per model of a chunk (batch, 4 heads, T, T); then each model's weights with
    gradient and Adam state."""
    recipe = config.population
    context = config.context or 64
    documents = (config.n_train or 800) + (config.n_validation or 200)
    chunk = min(recipe.chunk_size, recipe.n_models)
    if recipe.model == "transformer":
        width = recipe.model_kwargs.get("d_model", 64)
        n_params = 12 * recipe.model_kwargs.get("n_layers", 2) * width * width \
            + (context + 2 * 260) * width
        attention = 4.0 * recipe.batch_size * 4 * context * context
    else:
        width = recipe.model_kwargs.get("hidden", 256)
        n_params = width * (8 * 24 + 260)
        attention = 0.0
    validate.fits_in_memory(8.0 * documents * (context + 1) + chunk * attention,
                            f"documents of {context:,} tokens", "give a smaller --context")
    validate.fits_in_memory(16.0 * chunk * n_params,
                            f"{chunk} models of {n_params:,} parameters (width {width:,})",
                            "give a smaller --d-model or --chunk-size")

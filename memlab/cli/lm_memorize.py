"""``memlab lm-memorize``: counterfactual memorization of a population of language models."""

from __future__ import annotations

import argparse
from pathlib import Path

from memlab import validate
from memlab.errors import ConfigError
from memlab.io import dumps_strict


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "lm-memorize", help="counterfactual memorization and influence of language models",
        description="Train a population of small language models, each on a random subset "
                    "(default 25%%) of the documents, and measure which training documents "
                    "they memorize counterfactually and which validation documents depend on "
                    "a single training document (Zhang et al. 2021). Writes the run, Parquet "
                    "tables and report.html to --out; re-running resumes the training.")
    parser.add_argument("--text", default="synthetic",
                        help="synthetic | shakespeare | bible | path/to/file.txt (a document "
                             "per line) | path/to/file.jsonl ('text' and 'id' fields) "
                             "(default: %(default)s)")
    parser.add_argument("--models", type=int, default=64, help="models in the population "
                        "(default: %(default)s; the paper used 400)")
    parser.add_argument("--out", type=Path, default=Path("runs/lm-memorize"),
                        help="output directory (default: %(default)s)")
    parser.add_argument("--model", choices=("transformer", "mlp"), default="transformer",
                        help="tiny decoder-only transformer, or the cheaper MLP over the last "
                             "8 tokens (default: %(default)s)")
    parser.add_argument("--d-model", type=int, default=None,
                        help="transformer width (default 64); for --model mlp: hidden units")
    parser.add_argument("--layers", type=int, default=None,
                        help="transformer layers (default 2)")
    parser.add_argument("--epochs", type=int, default=40, help="(default: %(default)s)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate "
                        "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per step")
    parser.add_argument("--subset-fraction", type=float, default=0.25,
                        help="fraction of the documents each model trains on "
                             "(default: %(default)s)")
    parser.add_argument("--context", type=int, default=None,
                        help="tokens per document, longer ones are truncated (default: 48 "
                             "for synthetic, else 64)")
    parser.add_argument("--n-train", type=int, default=None,
                        help="training documents drawn from a real corpus (default 800)")
    parser.add_argument("--n-validation", type=int, default=None,
                        help="validation documents drawn from a real corpus (default 200)")
    parser.add_argument("--tokenizer", choices=("byte", "char"), default="byte",
                        help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=16,
                        help="models trained together in one vectorized pass")
    parser.add_argument("--workers", type=int, default=None,
                        help="CPU worker processes (default: one per core)")
    parser.add_argument("--figures", type=Path, default=None,
                        help="also write each figure as DIR/lm_*.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memlab.studies.lm_memorize import LMStudyConfig, check_config, run_lm_memorize

    check_options(args)
    model_kwargs = {}
    if args.model == "transformer":
        if args.d_model is not None:
            model_kwargs["d_model"] = args.d_model
        if args.layers is not None:
            model_kwargs["n_layers"] = args.layers
    else:
        if args.layers is not None:
            raise ConfigError("--layers applies to --model transformer only")
        if args.d_model is not None:
            model_kwargs["hidden"] = args.d_model
    if args.text == "synthetic" and (args.n_train or args.n_validation):
        raise ConfigError("--n-train/--n-validation apply to real text; the synthetic corpus "
                          "has its own planted sizes")
    config = LMStudyConfig(
        text=args.text, n_models=args.models, model=args.model, model_kwargs=model_kwargs,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        subset_fraction=args.subset_fraction, context=args.context, n_train=args.n_train,
        n_test=args.n_validation, tokenizer=args.tokenizer, seed=args.seed,
        chunk_size=args.chunk_size)
    check_config(config)
    result = run_lm_memorize(config, args.out, workers=args.workers, progress=not args.quiet,
                             figures=args.figures)
    s = result.summary
    # Strict JSON on stdout too: an undefined number prints as null, never NaN.
    print(dumps_strict({k: (round(v, 4) if isinstance(v, float) else v)
                        for k, v in s.items()}))
    print("\nmemorization by kind:")
    print(result.by_kind[["group", "n", "mem_mean", "mem_sem", "acc_in", "acc_out"]]
          .to_string(index=False, float_format="%.3f"))
    print("\nmost memorized documents (per token: IN minus OUT accuracy, '#' >= .5):")
    print("\n\n".join(result.token_views[:3]))
    print(f"\nreport: {args.out / 'report.html'}")
    return 0


def check_options(args: argparse.Namespace) -> None:
    """Every option typed, finite and in range, and the sizes it implies within this
    machine's memory, before any work (``--context 10**8`` or ``--d-model 10**7`` would
    otherwise allocate until the process is killed)."""
    validate.output_dir(args.out)
    if args.figures is not None:
        validate.output_dir(args.figures, "--figures")
    validate.integer(args.models, "--models", minimum=4,
                     fix="IN/OUT estimates and split-half reliability need at least 4")
    for option in ("epochs", "batch_size", "chunk_size"):
        validate.integer(getattr(args, option), f"--{option.replace('_', '-')}", minimum=1)
    for option in ("d_model", "layers", "context", "n_train", "n_validation"):
        if getattr(args, option) is not None:
            validate.integer(getattr(args, option), f"--{option.replace('_', '-')}",
                             minimum=1)
    validate.workers(args.workers)
    validate.seed(args.seed, "--seed")
    validate.real(args.lr, "--lr", minimum=0, open_low=True)
    validate.fraction(args.subset_fraction, "--subset-fraction",
                      fix="each model trains on part of the documents (the paper: 0.25)")
    # Lower bounds on what training allocates (memlab/models/lm.py's architectures): the
    # token arrays and, for the transformer, one batch of attention scores per model of a
    # chunk (batch, 4 heads, T, T); then each model's weights with gradient and Adam state.
    context = args.context or 64
    documents = (args.n_train or 800) + (args.n_validation or 200)
    chunk = min(args.chunk_size, args.models)
    if args.model == "transformer":
        width = args.d_model or 64
        n_params = 12 * (args.layers or 2) * width * width + (context + 2 * 260) * width
        attention = 4.0 * args.batch_size * 4 * context * context
    else:
        width = args.d_model or 256
        n_params = width * (8 * 24 + 260)
        attention = 0.0
    validate.fits_in_memory(8.0 * documents * (context + 1) + chunk * attention,
                            f"documents of {context:,} tokens", "give a smaller --context")
    validate.fits_in_memory(16.0 * chunk * n_params,
                            f"{chunk} models of {n_params:,} parameters (width {width:,})",
                            "give a smaller --d-model or --chunk-size")

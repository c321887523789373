"""``memlab audit``: membership inference against every model of a population in turn.

    memlab audit RUN                                  audit an existing run (any task)
    memlab audit --data mnist1d --models 1000 --out RUN   train the population, then audit

Results go to RUN/audit (or ``--audit-out``): summary.json, tables/examples.parquet,
report.html."""

from __future__ import annotations

import argparse
import json

# The audit's defaults, written out so that building the parser imports nothing heavy.
RECIPE = dict(n_models=1000, subset_fraction=0.7, epochs=30, batch_size=64, optimizer="adam",
              lr=0.005)
ATTACKS = ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed",
           "rmia_online", "rmia_offline", "loss", "confidence")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "audit", help="privacy audit: LiRA, RMIA and baselines against every model in turn",
        description="Membership inference from a population: every model is the target in "
                    "turn and the others its shadow models, every (model, example) pair a "
                    "trial with a known answer. Reports AUC and TPR at 0.1%% / 1%% FPR with "
                    "bootstrap intervals, attack power against the number of shadows, and "
                    "each example's vulnerability next to its memorization score.")
    parser.add_argument("run_dir", nargs="?", default=None, metavar="RUN",
                        help="an existing population run to audit (omit and give --data to "
                             "train one first)")
    from memlab.cli.train import add_population_arguments

    add_population_arguments(
        parser, data=None, models=RECIPE["n_models"], subset=RECIPE["subset_fraction"],
        epochs=RECIPE["epochs"], batch_size=RECIPE["batch_size"],
        optimizer=RECIPE["optimizer"], lr=RECIPE["lr"])
    parser.add_argument("--n-train", type=int, default=None,
                        help="train on a random subset of this many training examples")
    parser.add_argument("--out", default=None,
                        help="run directory to train into when --data is given (default: "
                             "runs/audit)")
    group = parser.add_argument_group("audit")
    group.add_argument("--audit-out", default=None, metavar="DIR",
                       help="where the audit's results go (default: RUN/audit)")
    group.add_argument("--attacks", default=",".join(ATTACKS),
                       help="comma-separated attacks (default: all)")
    group.add_argument("--bootstrap", type=int, default=200,
                       help="bootstrap resamples of target models (default: %(default)s)")
    group.add_argument("--shadow-caps", default="1,2,4,8,16,32,64,128,256",
                       help="shadows per side for the power curve; all are always added "
                            "(default: %(default)s)")
    group.add_argument("--curve-examples", type=int, default=1000,
                       help="examples scored per shadow cap, 0 = all (default: %(default)s)")
    group.add_argument("--vulnerability-fpr", type=float, default=0.01,
                       help="global FPR at which each example's TPR is its vulnerability "
                            "(default: %(default)s)")
    group.add_argument("--exposure", action="store_true",
                       help="also train one population per epochs / weight-decay / width "
                            "value and audit each")
    group.add_argument("--exposure-models", type=int, default=128,
                       help="models per population of the exposure study (default: "
                            "%(default)s)")
    parser.set_defaults(func=run)


def _ints(text: str, what: str) -> tuple[int, ...]:
    from memlab.errors import ConfigError

    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from memlab.errors import ConfigError
    from memlab.studies.audit import AuditConfig
    from memlab.studies.audit import run as audit

    if args.run_dir is not None and args.data is not None:
        raise ConfigError("give either RUN (audit an existing run) or --data (train one), "
                          "not both")
    if args.run_dir is None and args.data is None:
        raise ConfigError("nothing to audit: give a run directory (memlab audit RUN) or "
                          "--data to train a population first")
    run_dir = args.run_dir if args.run_dir is not None else (args.out or "runs/audit")
    hidden = ()
    if args.hidden:
        hidden = _ints(args.hidden, "--hidden")
    config = AuditConfig(
        run_dir=str(run_dir), data=args.data, n_train=args.n_train,
        label_noise=args.label_noise, model=args.model, hidden=hidden, n_models=args.models,
        subset_fraction=args.subset, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        n_workers=args.workers,
        attacks=tuple(a.strip() for a in args.attacks.split(",") if a.strip()),
        n_bootstrap=args.bootstrap, shadow_caps=_ints(args.shadow_caps, "--shadow-caps"),
        curve_examples=args.curve_examples or None,
        vulnerability_fpr=args.vulnerability_fpr, exposure=args.exposure,
        exposure_models=args.exposure_models)
    out = Path(args.audit_out) if args.audit_out else Path(run_dir) / "audit"
    result = audit(config, out, progress=not args.quiet)
    s = result.summary
    rows = {name: {k: s[name][k] for k in ("auc", "auc_ci_low", "auc_ci_high",
                                           "tpr_at_fpr_0.001", "tpr_at_fpr_0.01")}
            for name in s["attacks"]}
    print(json.dumps(rows, indent=2))
    for key in ("lira_online_vs_loss",):
        for metric, d in (s.get(key) or {}).items():
            print(f"{metric}: {d['verdict']} ({d['difference']:+.4f}, 95% CI "
                  f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}])")
    print(f"summary:  {out / 'summary.json'}\n"
          f"examples: {out / 'tables' / 'examples.parquet'}\n"
          f"report:   {out / 'report.html'}")
    return 0

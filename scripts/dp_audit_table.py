"""docs/dp.md's table: DP-SGD populations at ε ∈ {1, 4, 8, ∞} and their audited ε̂.

For each dataset and target ε (δ = 1e-5), one population of MLPs with 100 privacy canaries
(``memlab train ... --dp-epsilon ε``; ∞: no DP, the same canaries), then the black-box audit
of ``memlab audit RUN --dp`` (``memlab.measures.dp_canaries``): black-box (the privacy
canaries' log-odds) and white-box (the gradient canaries of DP runs) lower bounds at 95%
confidence, the models' test accuracy and the privacy canaries' accuracy when in and out.

    python scripts/dp_audit_table.py --out runs/dp-table        # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from memlab.data import load
from memlab.engine.precision import cpu_flags, cpu_model
from memlab.measures.dp_canaries import audit_privacy_canaries
from memlab.population import train_population

SETTINGS = {
    "mnist1d": dict(hidden=[100, 100], n_train=None, epochs=20),
    "mnist": dict(hidden=[100, 100], n_train=10_000, epochs=10),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/dp-table")
    parser.add_argument("--models", type=int, default=128)
    parser.add_argument("--epsilons", default="1,4,8,inf")
    parser.add_argument("--data", default="mnist1d,mnist")
    args = parser.parse_args()
    flags = cpu_flags()
    print(f"CPU: {cpu_model()}; ISA: "
          f"{' '.join(f for f in ('avx2', 'avx512f', 'avx512_bf16') if f in flags)}; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    print("\n| data | ε (accountant) | σ | black-box ε̂: population / one-run | white-box ε̂: "
          "population / one-run | test acc | canary acc in / out | train + audit |\n"
          "|---|---|---|---|---|---|---|---|")
    for name in args.data.split(","):
        settings = SETTINGS[name]
        dataset = load(name)
        if settings["n_train"]:
            dataset = dataset.subset(range(settings["n_train"]))
        for text in args.epsilons.split(","):
            epsilon = float(text)
            dp = ({"dp_epsilon": epsilon, "dp_delta": 1e-5} if math.isfinite(epsilon)
                  else {"dp_canaries": 100})
            started = time.perf_counter()
            run = train_population(dataset, model="mlp",
                                   model_kwargs={"hidden": settings["hidden"]},
                                   n_models=args.models, epochs=settings["epochs"],
                                   batch_size=128, lr=0.1, progress=False,
                                   save_weights=False,
                                   out=Path(args.out) / f"{name}-eps{text}", **dp)
            audit = audit_privacy_canaries(run)
            seconds = time.perf_counter() - started
            sigma = run.manifest["dp"][0]["dp_noise_multiplier"] if run.manifest.get("dp") \
                else 0.0
            claimed = f"{audit['epsilon']:.2f}" if audit["epsilon"] else "∞ (no DP)"
            white = (f"{audit['epsilon_lower_bound_whitebox_population']:.2f} / "
                     f"{audit['epsilon_lower_bound_whitebox_one_run']:.2f}"
                     if "whitebox" in audit else "— (no DP step)")
            print(f"| {name} | {claimed} | {sigma:.2f} | "
                  f"{audit['epsilon_lower_bound_blackbox_population']:.2f} / "
                  f"{audit['epsilon_lower_bound_blackbox_one_run']:.2f} | {white} | "
                  f"{run.models_table()['test_acc'].mean():.3f} | "
                  f"{audit['canary_accuracy_in']:.2f} / {audit['canary_accuracy_out']:.2f} | "
                  f"{seconds:.0f} s |", flush=True)


if __name__ == "__main__":
    main()

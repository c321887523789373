"""What the privacy audit measures, and which population it attacks (docs/science.md §7)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from memlab import validate
from memlab.engine.config import PopulationConfig
from memlab.errors import ConfigError
from memlab.options import option
from memlab.studies.base import PopulationStudyConfig, check_run_dir

# memlab.measures.mia.ATTACKS, written out so that the command line imports no science
# (tests/test_audit.py checks that the two agree).
ATTACKS = ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed",
           "rmia_online", "rmia_offline", "loss", "confidence")
CURVE_ATTACKS = ("lira_online", "lira_online_fixed", "lira_offline", "lira_offline_fixed",
                 "rmia_online", "rmia_offline")

# The recipe of ``memlab memorize`` at 1,000 models (docs/audit.md's audit table; the
# memorize demo itself now trains 512): MLPs 40-100-100-10 on 70% subsets of MNIST-1D,
# 30 epochs of Adam (lr 0.005, batch 64).
RECIPE = PopulationConfig(n_models=1000, subset_fraction=0.7, epochs=30, batch_size=64,
                          optimizer="adam", lr=0.005)


def _curve_examples(text: str) -> int | None:
    if text.strip().lower() in ("0", "none", "all"):
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--curve-examples takes an integer (0: all), got {text!r}") from None


@dataclass(frozen=True)
class AuditConfig(PopulationStudyConfig):
    """Membership inference against every model of a population in turn: the run in
    ``run_dir``, or one trained first (into ``OUT/population``) from the data options and
    ``population`` (an explicit ``membership`` mask included).

    data, n_train, label_noise, membership, population: see
        :class:`~memlab.studies.base.PopulationStudyConfig` (default: the population of
        ``memlab memorize``). With ``run_dir`` they stay at their defaults, except
        ``population.seed``, which also seeds the audit's own draws (bootstrap, shadow
        orders, the shadow curve's examples).
    exposure: also train one population per value of epochs, weight decay and MLP width
        (``exposure_models`` models each, varying ``population``, or the recipe of the run
        in ``run_dir``) and audit each.
    """

    run_dir: str | None = option(None, flag="RUN", example="runs/memorize/population", help=(
        "an existing population run to audit, any task (omit it to train one from the "
        "options below)"))
    population: PopulationConfig = option(default_factory=lambda: RECIPE)
    attacks: tuple[str, ...] = option(ATTACKS, example="lira_online,loss",
                                      help="comma-separated attacks")
    # 100: each resample scores every attack again; the interval is the estimate ± t × the
    # replicates' SD, which 100 resamples give to ±7% (tests/test_audit_coverage.py uses 100).
    n_bootstrap: int = option(100, flag="--bootstrap",
                              help="bootstrap resamples of the models (targets and shadows);"
                                   " 0: no intervals (point estimates only, CIs null)")
    rmia_a: float = option(0.3, help="RMIA's offline scaling a")
    rmia_gamma: float = option(1.0, help="RMIA's likelihood-ratio threshold gamma")
    shadow_caps: tuple[int, ...] = option((1, 2, 4, 8, 16, 32, 64, 128, 256), help=(
        "shadows per side for the power curve; all are always added"))
    curve_attacks: tuple[str, ...] = option(CURVE_ATTACKS, example="lira_online",
                                            help="attacks of the power curve")
    curve_examples: int | None = option(
        1000, parse=_curve_examples, show=lambda value: ["0" if value is None else str(value)],
        example="100", help="examples scored per shadow cap, 0 = all")
    vulnerability_attack: str = option("lira_online", choices=ATTACKS, help=(
        "the attack whose per-example TPR is each example's vulnerability"))
    vulnerability_fpr: float = option(0.01, help=(
        "global FPR at which each example's TPR is its vulnerability"))
    dp: bool = option(False, help=(
        "also audit the run's differential privacy: epsilon lower bounds from its privacy "
        "canaries beside the accountant's epsilon (runs trained with --dp-noise-multiplier or "
        "--dp-epsilon, or with --dp-canaries N)"))
    exposure: bool = option(False, help=(
        "also train one population per epochs / weight-decay / width value and audit each"))
    exposure_models: int = option(128, help="models per population of the exposure study")
    exposure_epochs: tuple[int, ...] = option((3, 10, 30, 60), help=(
        "epochs of the exposure study (checkpoints of one run)"))
    exposure_weight_decay: tuple[float, ...] = option((0.0, 1e-3, 1e-2, 1e-1), help=(
        "weight decays of the exposure study (one sweep run)"))
    exposure_width: tuple[int, ...] = option((16, 50, 100, 400), help=(
        "MLP widths of the exposure study (every hidden layer; one sweep run)"))

    @classmethod
    def quick(cls, **changes: Any) -> AuditConfig:
        """64 MLPs on 10%-mislabeled digits, 70% subsets, 50 bootstrap resamples, the shadow
        curve on 500 examples: about a minute on 2 cores."""
        return cls(**{**dict(data="digits", label_noise=0.1,
                             population=dataclasses.replace(RECIPE, n_models=64),
                             n_bootstrap=50, shadow_caps=(1, 2, 4, 8), curve_examples=500),
                      **changes})

    @classmethod
    def full(cls, **changes: Any) -> AuditConfig:
        """docs/audit.md's MNIST-1D audit: the memorize population, with the exposure study."""
        return cls(**{**dict(exposure=True), **changes})

    @classmethod
    def tiny(cls) -> AuditConfig:
        quick = cls.quick()
        return quick.replace(
            n_train=300, population=dataclasses.replace(quick.population, n_models=16,
                                                        epochs=4),
            n_bootstrap=20, shadow_caps=(1, 2, 4), curve_examples=100, exposure=True,
            exposure_models=8, exposure_epochs=(1, 3), exposure_weight_decay=(0.0, 0.01),
            exposure_width=(8, 16))

    def validate(self) -> None:
        """Every problem at once (:func:`memlab.validate.all_problems`)."""
        problem = validate.problem
        with validate.all_problems("audit settings"):
            super().validate()
            with validate.check():
                check_run_dir(self)
            for field in ("attacks", "curve_attacks"):
                unknown = sorted(set(getattr(self, field)) - set(ATTACKS))
                if unknown:
                    problem(f"unknown attacks {unknown} in {field}; choose from "
                            f"{', '.join(ATTACKS)}")
            if not self.attacks:
                problem("attacks is empty: name at least one attack")
            if self.vulnerability_attack not in ATTACKS:
                problem(f"vulnerability_attack must be one of {', '.join(ATTACKS)}, "
                        f"got {self.vulnerability_attack!r}")
            with validate.check():
                validate.fraction(self.vulnerability_fpr, "vulnerability_fpr")
            with validate.check():
                validate.integer(self.n_bootstrap, "n_bootstrap", minimum=0)
                if self.n_bootstrap == 1:  # one resample gives no interval: say so
                    problem("n_bootstrap must be 0 (no intervals: point estimates only, "
                            "every _ci_low/_ci_high null) or at least 2, got 1")
            with validate.check():
                validate.integer_list(self.shadow_caps, "shadow_caps", example="1,2,4")
            if self.curve_examples is not None:
                with validate.check():
                    validate.integer(self.curve_examples, "curve_examples", minimum=1,
                                     fix="0 on the command line (None in Python): all")
            if self.population.sweep:
                problem("the audit attacks one recipe: no population.sweep (--sweep); "
                        "--exposure varies epochs, weight decay and width")
            if self.exposure:
                with validate.check():
                    validate.integer(self.exposure_models, "exposure_models", minimum=2)
            with validate.check():
                validate.boolean(self.dp, "dp")

    def without_effect(self) -> dict[str, str]:
        """Settings that change nothing with this config (field -> why); the command line
        refuses such flags when they are given."""
        ineffective = {}
        if not self.exposure:
            for name in ("exposure_models", "exposure_epochs", "exposure_weight_decay",
                         "exposure_width"):
                ineffective[name] = "it belongs to the exposure study: give --exposure"
        attacks = (*self.attacks, *self.curve_attacks, self.vulnerability_attack)
        if not any(str(a).startswith("rmia") for a in attacks):
            for name in ("rmia_a", "rmia_gamma"):
                ineffective[name] = "no RMIA attack is among the attacks"
        return ineffective

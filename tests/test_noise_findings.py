"""The noise report's finding: every headline sentence computed from planted study tables,
both ways ("reproduced" where the planted answer holds, "not reproduced" where it is
reversed, "cannot decide" where the interval holds 0), and the pointers it gives when a
measure cannot answer. Synthetic tables only: milliseconds."""

import numpy as np
import pandas as pd
import pytest

from memlab.measures.stats import NOT_REPRODUCED, REPRODUCED, UNDECIDED
from memlab.studies.noise.figures import (
    learned_last_sentence,
    phase_sentence,
    real_first_sentence,
    tally_sentence,
)
from memlab.studies.noise.verdicts import censored_first_learned, directions, learned_last
from tests.test_noise import CONFIG, planted_tables

EPOCHS, SEEDS = 30, 8  # planted_tables' defaults


def dynamics(tables: dict) -> dict:
    """The summary's ``dynamics``: condition -> its row of the dynamics table."""
    return {row["condition"]: row for row in tables["dynamics"].to_dict(orient="records")}


# ------------------------------------------------------------------ real data first


def test_real_data_first_from_planted_tables_both_ways():
    tables = planted_tables()  # real at 100% by epoch 10, randY at 20-21 on every seed
    sentence = real_first_sentence(directions(tables, **CONFIG), dynamics(tables), EPOCHS,
                                   SEEDS)
    assert sentence.startswith("Real data is learned first: it reaches 99% training accuracy "
                               "at epoch 10, randY at epoch 21")
    assert sentence.endswith(f"{REPRODUCED}.") and "over 8 paired seeds" in sentence

    tables = planted_tables(randy_slower=False)  # the other way round
    sentence = real_first_sentence(directions(tables, **CONFIG), dynamics(tables), EPOCHS,
                                   SEEDS)
    assert sentence.startswith("Real data is not learned first")
    assert sentence.endswith(f"{NOT_REPRODUCED}.") and "-10.5" in sentence


def test_real_data_first_cannot_decide_when_the_interval_holds_zero():
    tables = planted_tables()
    found = directions(tables, **CONFIG)
    row = found.finding.str.startswith("real data reaches 99%")
    found.loc[row, ["estimate", "ci_low", "ci_high", "verdict"]] = [1.0, -2.0, 4.0, UNDECIDED]
    sentence = real_first_sentence(found, dynamics(tables), EPOCHS, 3)
    assert sentence.startswith(f"Whether real data is learned before random labels: "
                               f"{UNDECIDED}")
    assert "holds 0" in sentence and "--seeds, now 3" in sentence


def test_real_data_first_points_to_more_epochs_when_nothing_is_fit():
    tables = planted_tables()
    unfit = dynamics(tables)
    unfit["real"].update({"epochs_to_0.9": None, "epochs_to_0.99": float("nan"),
                          "final_train_acc": 0.31})
    sentence = real_first_sentence(directions(tables, **CONFIG), unfit, 3, SEEDS)
    assert UNDECIDED in sentence and "within 3 epochs (final 0.31)" in sentence
    assert "train longer (--epochs" in sentence
    # Real data reaching 90% but not 99%: the 90% direction answers.
    partly = dynamics(tables)
    partly["real"]["epochs_to_0.99"] = None
    sentence = real_first_sentence(directions(tables, **CONFIG), partly, EPOCHS, SEEDS)
    assert "reaches 90% training accuracy at epoch 9" in sentence and REPRODUCED in sentence


# ------------------------------------------------------------------ noisy labels last


def examples_table(clean_first: np.ndarray, corrupted_first: np.ndarray,
                   never: float = 0.0) -> pd.DataFrame:
    """An ``examples`` table of one partial-noise condition (plus real, which has no
    corrupted example and is skipped): mean first-learned epochs, and the corrupted
    examples' share of seeds that never learned them."""
    n_clean, n_corrupted = len(clean_first), len(corrupted_first)
    noisy = pd.DataFrame({
        "condition": "noise50", "corrupted": [False] * n_clean + [True] * n_corrupted,
        "first_learned": np.concatenate([clean_first, corrupted_first]),
        "never_learned_fraction": [0.0] * n_clean + [never] * n_corrupted})
    real = pd.DataFrame({"condition": "real", "corrupted": False, "first_learned": 1.0,
                         "never_learned_fraction": 0.0}, index=range(5))
    return pd.concat([real, noisy], ignore_index=True)


def test_noisy_labels_learned_last_both_ways_and_undecided():
    rng = np.random.default_rng(0)
    early, late = rng.uniform(1, 4, 200), rng.uniform(15, 25, 200)
    rows = learned_last(examples_table(early, late), EPOCHS)
    assert [row["condition"] for row in rows] == ["noise50"]  # real has nothing to compare
    assert rows[0]["verdict"] == REPRODUCED and rows[0]["ci_low"] > 10
    sentence = learned_last_sentence(rows, EPOCHS)
    assert sentence.startswith("Noisy labels are learned last — mean epoch first learned, "
                               "noise50: corrupted examples at epoch ")
    assert 18 < rows[0]["corrupted"] < 22 and 2 < rows[0]["clean"] < 3
    assert f"({REPRODUCED})" in sentence and f"counts as epoch {EPOCHS + 1}" in sentence

    reversed_rows = learned_last(examples_table(late, early), EPOCHS)
    assert reversed_rows[0]["verdict"] == NOT_REPRODUCED
    assert learned_last_sentence(reversed_rows, EPOCHS).startswith(
        "Noisy labels are not learned last")

    # The null: corrupted examples learned exactly like the clean ones.
    null = learned_last(examples_table(early, early.copy()), EPOCHS)
    assert null[0]["difference"] == pytest.approx(0) and null[0]["verdict"] == UNDECIDED
    assert learned_last_sentence(null, EPOCHS).startswith(
        f"Whether noisy labels are learned last: {UNDECIDED}")
    assert learned_last_sentence([], EPOCHS) is None  # no partial noise: no sentence


def test_never_learned_examples_count_as_one_epoch_past_the_cap():
    table = pd.DataFrame({"first_learned": [2.0, 4.0, np.nan],
                          "never_learned_fraction": [0.0, 0.5, 1.0]})
    # half the seeds learned it at 4, half never (= 31): 17.5; never by any seed: 31
    np.testing.assert_allclose(censored_first_learned(table, 30), [2.0, 17.5, 31.0])
    # Leaving the never-learned seeds out would make late noisy labels look early: with
    # them counted, corrupted examples that are mostly never learned are learned last.
    rows = learned_last(examples_table(np.full(50, 5.0), np.full(50, 3.0), never=0.9),
                        EPOCHS)
    assert rows[0]["corrupted"] == pytest.approx(0.1 * 3 + 0.9 * 31)
    assert rows[0]["verdict"] == REPRODUCED


# ------------------------------------------------------------------ the memorization phase


def test_phase_from_planted_tables_both_ways():
    tables = planted_tables()  # noise50's validation accuracy peaks at epoch 5, falls by 0.2
    found = directions(tables, **CONFIG)
    sentence = phase_sentence(found, dynamics(tables), SEEDS)
    assert sentence.startswith("A memorization phase")
    assert "on noise50 validation accuracy peaks at epoch 5" in sentence
    assert f"({REPRODUCED})" in sentence

    curves = tables["seed_curves"]  # flat: no fall after the peak
    curves.loc[curves.condition == "noise50", "val_acc"] = 0.5
    flat = dynamics(tables)
    flat["noise50"].update(best_val_epoch=1, best_val_acc=0.5, final_val_acc=0.5)
    sentence = phase_sentence(directions(tables, **CONFIG), flat, SEEDS)
    assert "on noise50 it stays flat after its peak at epoch 1" in sentence
    assert NOT_REPRODUCED in sentence

    late = dynamics(planted_tables())  # the peak comes after training reaches 100%
    late["noise50"].update(best_val_epoch=12)
    rows = found.copy()
    rows.loc[rows.finding.str.startswith("noise50"), "verdict"] = NOT_REPRODUCED
    assert "peaks only at epoch 12, after training accuracy reaches 100%" in phase_sentence(
        rows, late, SEEDS)


def test_phase_cannot_decide_and_is_absent_without_partial_noise():
    tables = planted_tables()
    found = directions(tables, **CONFIG)
    row = found.finding.str.startswith("noise50")
    found.loc[row, ["estimate", "ci_low", "ci_high", "verdict"]] = [0.02, -0.01, 0.05,
                                                                    UNDECIDED]
    sentence = phase_sentence(found, dynamics(tables), 2)
    assert f"is 0.020 [-0.010, 0.050]: {UNDECIDED} (more seeds: --seeds, now 2)" in sentence
    assert phase_sentence(found[~row], dynamics(tables), SEEDS) is None


# ------------------------------------------------------------------ the tally and its pointers


def test_tally_names_the_flags_that_decide_the_undecided():
    found = directions(planted_tables(), **CONFIG)  # CSR planted equal: cannot decide
    config = {"csr_seeds": 3, "capacity_seeds": 2, "seeds": 8}
    text = tally_sentence(found, config)
    assert text.startswith(f"Of the paper's {len(found)} directions measured here, "
                           f"{len(found) - 1} reproduced, 0 did not and 1 {UNDECIDED}")
    assert text.endswith("The undecided ones need more models: --csr-seeds (now 3).")
    found.loc[found.finding.str.contains("largest size"), "verdict"] = UNDECIDED
    assert "--capacity-seeds (now 2), --csr-seeds (now 3)" in tally_sentence(found, config)
    decided = found[found.verdict != UNDECIDED]
    assert "need more models" not in tally_sentence(decided, config)

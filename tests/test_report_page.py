"""The report page: numbers rounded to their uncertainty, the finding first, collapsible
sections, and the browser check that finds what a reader would trip over."""

import numpy as np
import pandas as pd
import pytest

from memlab.report import Report, browser, numbers
from memlab.studies.base import summary_rows


@pytest.mark.parametrize("value, se, expected", [
    (0.60874525, 0.0312, "0.609 ± 0.031"),
    (0.5969166666666668, 0.0004, "0.59692 ± 0.00040"),
    (1234.5, 56.0, "1234 ± 56"),  # never fewer than 0 decimals
    (0.5, 0.0, "0.5"),  # no uncertainty: 4 significant digits
    (float("nan"), 0.1, numbers.MISSING),
])
def test_a_value_is_rounded_to_its_standard_error(value, se, expected):
    assert numbers.fmt_se(value, se) == expected


def test_an_interval_is_rounded_to_its_half_width():
    assert numbers.fmt_interval(0.60874525, 0.5474, 0.6699) == "0.609 [0.547, 0.670]"
    assert numbers.fmt_interval(0.114, 0.024, 0.204) == "0.114 [0.024, 0.204]"
    assert numbers.fmt_interval(0.5, None, 0.6) == "0.5"  # a missing bound: the value alone
    assert numbers.fmt(0.09832642857142856) == "0.09833"
    assert numbers.fmt(12345678) == "12,345,678" and numbers.fmt(None) == numbers.MISSING
    assert numbers.fmt(3e-9) == "3e-9"


@pytest.mark.parametrize("text, digits", [("0.00120", 3), ("1,234", 4), ("1200", 2),
                                          ("0.5969166666666668", 16), ("-3.25e-4", 3)])
def test_significant_digits(text, digits):
    assert browser.significant_digits(text) == digits


def test_long_numbers_are_found_in_text_but_not_in_identifiers():
    text = "auc 0.8656522449321429 and 0.61, run a3f1234567890123456b, seed 20261207"
    assert browser.long_numbers(text) == ["0.8656522449321429"]


def test_table_shows_values_with_their_intervals_and_drops_the_bounds():
    frame = pd.DataFrame({"attack": ["lira"], "auc": [0.60874525], "auc_lo": [0.5474],
                          "auc_hi": [0.6699], "mem": [0.31], "se": [0.021],
                          "ratio": [0.5969166666666668], "n": [12]})
    page = Report("t")
    page.table(frame, intervals={"auc": ("auc_lo", "auc_hi")}, se={"mem": "se"})
    out = page.html()
    assert "0.609 [0.547, 0.670]" in out and "0.310 ± 0.021" in out and ">0.5969<" in out
    assert "auc_lo" not in out and ">se<" not in out and "0.5969166" not in out


def test_the_finding_comes_first_and_sections_collapse():
    page = Report("Title")
    page.heading("Details", collapsed=True)
    page.text("secondary")
    page.finding("The finding.", "")
    out = page.html()
    assert out.index("The finding.") < out.index("Details")  # added last, shown first
    assert '<details><summary><h2>Details</h2>' in out  # collapsed: no "open"
    page.heading("Main")
    assert "<details open><summary><h2>Main</h2>" in page.html()


def test_summary_rows_round_and_flatten():
    rows = summary_rows({"a": {"b": 0.5969166666666668, "c": [1, 2.123456789]}, "n": 3})
    assert rows.values.tolist() == [["a.b", "0.5969"], ["a.c", "[1, 2.123]"], ["n", "3"]]


needs_chromium = pytest.mark.skipif(browser.chromium() is None,
                                    reason="no Chromium binary (apt-get install chromium)")


@needs_chromium
def test_the_browser_check_finds_what_a_reader_trips_over(tmp_path):
    wide = pd.DataFrame({f"a_long_column_name_number_{i}": [0.123456789012345] for i in
                         range(30)})
    page = Report("bad")
    page.text('{"auc_ci_low": 0.60874525, "balanced_accuracy": 0.5969166666666668}')
    page.table(wide, float_format="{:.15f}")
    page.text("x" * 400)  # an unbreakable word wraps (overflow-wrap)
    import matplotlib.pyplot as plt

    page.figure(plt.figure(figsize=(30, 2)), caption="wide figure")  # scaled to the page
    problems = browser.inspect_page(page.save(tmp_path / "bad.html"))
    text = " | ".join(problems)
    assert "significant digits" in text and "JSON" in text, text
    assert "table" in text, text  # a table too wide for the page
    assert "figure" not in text and "svg" not in text, text  # figures shrink to fit

    good = Report("good")
    good.finding("A finding with 0.61 [0.55, 0.67].")
    good.table(pd.DataFrame({"method": ["trak"], "lds": [0.3], "lo": [0.2], "hi": [0.4]}),
               intervals={"lds": ("lo", "hi")})
    good.heading("Reproduce", collapsed=True)
    good.code("memlab attribute " + " ".join(f"--option-{i} value" for i in range(60)))
    assert browser.inspect_page(good.save(tmp_path / "good.html")) == []
    shot = browser.screenshot(tmp_path / "good.html", tmp_path / "good.png", height=600)
    from PIL import Image

    assert Image.open(shot).size == (browser.WIDTH, 600)
    assert np.asarray(Image.open(shot).convert("L")).min() < 100  # something is drawn

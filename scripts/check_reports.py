"""Render every study's report as a reader would, and list what a reader would trip over.

    python scripts/check_reports.py                 # every study's --quick preset + user-model runs
    python scripts/check_reports.py memorize audit  # selected entries
    python scripts/check_reports.py --list

Each entry is one memlab command (its outputs go to ``--runs``, default ``runs/reports/``,
which resumes); then its ``report.html`` is checked in headless Chromium at 1280 px
(:func:`memlab.report.browser.inspect_page`: sideways scrolling, tables or figures sticking
out, numbers with more than 12 significant digits, a summary dumped verbatim) and a
screenshot is written beside it (``report.png``) for a person to look at. The conformance
suite (``memlab.testing.check_study``) runs the same check on every study's tiny preset in
the tests; this script covers the presets users run and a user's own CNN, which take minutes.
Exit 1 when any report has a problem.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_CNN = ("--data mnist --n-train 1000 --model examples.small_resnet:SmallResNet "
            "--models 32 --epochs 8 --optimizer adam --lr 0.003 --batch-size 64")

ENTRIES: dict[str, str] = {
    "memorize": "memorize --quick --quiet --out {runs}/memorize",
    "noise": "noise --quick --quiet --out {runs}/noise",
    "elasticity": "elasticity --quick --quiet --out {runs}/elasticity",
    "lm-memorize": "lm-memorize --quick --quiet --out {runs}/lm-memorize",
    "longtail": "longtail --quick --quiet --out {runs}/longtail",
    "lesde": "lesde --quick --quiet --out {runs}/lesde",
    "spectra-study": "spectra-study --quick --quiet --out {runs}/spectra-study",
    "spectra-minilm": "spectra minilm --out {runs}/spectra-minilm",
    "audit": "audit --quick --quiet --out {runs}/audit",
    "attribute": "attribute --quick --quiet --out {runs}/attribute",
    # A user's own model: a small ResNet-style CNN with BatchNorm and dropout on 1,000 MNIST
    # images (examples/small_resnet.py), through memorization, then audit and attribution
    # of that same population (--trust-run: the run names a user module).
    "user-memorize": f"memorize {USER_CNN} --quiet --out {{runs}}/user-memorize",
    "user-audit": "audit {runs}/user-memorize/population --trust-run --quiet "
                  "--out {runs}/user-audit",
    "user-attribute": "attribute {runs}/user-memorize/population --trust-run --targets 20 "
                      "--heldout 10 --validation 6 --trak-models 4 --quiet "
                      # (if_exact: the exact Hessian of this CNN takes over 10 minutes)
                      "--methods grad_dot,grad_cos,tracin,trak,if_cg,representer,knn,random "
                      "--out {runs}/user-attribute",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="entries to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--runs", default="runs/reports", help="where the runs go")
    args = parser.parse_args(argv)
    if args.list:
        for name, command in ENTRIES.items():
            print(f"{name:16} memlab {command}")
        return 0
    unknown = [name for name in args.names if name not in ENTRIES]
    if unknown:
        print(f"check_reports: unknown entries {unknown}; see --list", file=sys.stderr)
        return 2
    from memlab.report import browser

    if browser.chromium() is None:
        print("check_reports: no Chromium binary (apt-get install chromium)", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    failed = []
    for name in args.names or ENTRIES:
        words = shlex.split(ENTRIES[name].format(runs=args.runs))
        out = Path(words[words.index("--out") + 1])
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "memlab", *words], cwd=ROOT,
                              env=env)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            failed.append(name)
            print(f"{name}: memlab exited {done.returncode} ({seconds:.0f} s)")
            continue
        page = ROOT / out / "report.html"
        problems = browser.inspect_page(page)
        browser.screenshot(page, page.with_name("report.png"))
        print(f"{name}: {len(problems)} problems ({seconds:.0f} s); screenshot "
              f"{page.with_name('report.png').relative_to(ROOT)}")
        for problem in problems:
            print(f"  - {problem}")
        if problems:
            failed.append(name)
    print(f"{len(failed)} of {len(args.names or ENTRIES)} reports with problems"
          + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

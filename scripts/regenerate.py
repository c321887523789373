"""Regenerate every figure in docs/figures and every number the README and docs/ state.

    python scripts/regenerate.py --list            # what would run, and how long it took here
    python scripts/regenerate.py --quick           # the quick entries (CI runs these)
    python scripts/regenerate.py                   # everything (about 1.5 hours on 2 cores)
    python scripts/regenerate.py memorize noise    # selected entries
    python scripts/regenerate.py --readme-table    # the README's study table, from the registry

Each entry is one memlab command: its outputs go to ``--runs`` (default ``runs/``, which
resumes), its figures to ``--figures`` (default ``docs/figures``). The README and docs name
the same command next to each figure and number; ``tests/test_regenerate.py`` checks that
every PNG in docs/figures is produced by an entry here.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Entry:
    name: str
    command: str  # memlab arguments (or "python SCRIPT ..."); {runs}, {figures} filled in
    figures: tuple[str, ...]  # file-name prefixes of the PNGs it writes into {figures}
    minutes: float  # wall time measured on the 2-core development machine (README)
    quick: bool = False  # part of the CI set


ENTRIES = (
    Entry("memorize", "memorize --out {runs}/memorize --removal --figures {figures}",
          ("memorization_",), 6.0),
    Entry("noise-mnist1d", "noise --quick --data mnist1d --out {runs}/noise-mnist1d "
          "--figures {figures}",
          ("noise_",), 15.0),
    Entry("noise-digits", "noise --quick --data digits --out {runs}/noise-digits", (), 15.0),
    Entry("elasticity-mnist1d",
          "elasticity --data mnist1d --out {runs}/elasticity-mnist1d --figures {figures}",
          ("elasticity_mnist1d_",), 2.6),
    Entry("elasticity-digits",
          "elasticity --data digits --out {runs}/elasticity-digits --figures {figures}",
          ("elasticity_digits_",), 2.5),
    Entry("lm-synthetic", "lm-memorize --out {runs}/lm-synthetic --figures {figures}",
          ("lm_synthetic_",), 20.0),
    Entry("lm-shakespeare",
          "lm-memorize --text shakespeare --out {runs}/lm-shakespeare --figures {figures}",
          ("lm_shakespeare_",), 15.0),
    Entry("longtail", "longtail --quick --out {runs}/longtail --figures {figures}",
          ("longtail_tail", "longtail_memorization", "longtail_accuracy", "longtail_cost",
           "longtail_theory"), 2.0),
    Entry("longtail-grid", "longtail --quick --grid --exponents 1 --out {runs}/longtail-grid",
          (), 7.0),
    Entry("lesde", "lesde --full --out {runs}/lesde --figures {figures}", ("lesde_",), 8.0),
    Entry("lesde-quick", "lesde --quick --out {runs}/lesde-quick", (), 0.6, quick=True),
    Entry("spectra-study", "spectra-study --out {runs}/spectra-study --figures {figures}",
          ("spectra_study_",), 6.0),
    Entry("spectra-minilm", "spectra minilm --out {runs}/spectra-minilm", (), 0.5, quick=True),
    # docs/atlas.md: the default MNIST-1D population, digits with 10% flipped labels, and
    # HT-SR's question on 1,024 models over four knobs
    Entry("atlas-mnist1d", "atlas --out {runs}/atlas-mnist1d --figures {figures}",
          ("atlas_",), 3.0),
    Entry("atlas-digits", "atlas --quick --out {runs}/atlas-digits", (), 1.0),
    Entry("atlas-knobs",
          "spectra-study --hidden 64,64 --models 64 --knob hidden=64,96,128,192 "
          "--knob weight_decay=0,0.0001,0.001,0.01 --knob epochs=5,10,30,60 "
          "--knob label_noise=0,0.2,0.5,1 --out {runs}/atlas-knobs", (), 1.5),
    Entry("spectra-benchmark",
          "python benchmarks/spectra.py --quick --repeats 1 --figures {figures}",
          ("spectra_minilm_",), 2.0),
    Entry("lm-quick", "lm-memorize --quick --out {runs}/lm-quick", (), 0.3, quick=True),
    Entry("audit", "audit {runs}/memorize/population --workers 1 --out {runs}/audit", (), 3.0),
    Entry("attribute-population",
          "train --data mnist1d --models 1000 --subset 0.5 --epochs 30 --batch-size 64 "
          "--optimizer adam --lr 0.005 --out {runs}/pop-mnist1d-50", (), 5.0),
    Entry("attribute", "attribute {runs}/pop-mnist1d-50 --targets 100 --trak-models 10 "
          "--removal --out {runs}/attribute", (), 10.0),
    Entry("attribute-mnist-lr",
          "python scripts/attribution_mnist.py lr --out {runs}/attribution-mnist-lr", (), 15.0),
    Entry("attribute-mnist-mlp",
          "python scripts/attribution_mnist.py mlp --out {runs}/attribution-mnist-mlp", (), 15.0),
    # docs/performance.md's race (add --baseline OLD, a worktree of the previous release,
    # for before/after rows) and the LM roofline.
    Entry("engine-benchmark", "python benchmarks/population.py --cpu-time --full", (), 30.0),
    Entry("stacking-ceiling", "python benchmarks/stacking_ceiling.py", (), 2.0),
    # docs/dp.md: the ε table and the DP speed race
    Entry("dp-audit-table", "python scripts/dp_audit_table.py --out {runs}/dp-table", (), 6.0),
    Entry("dp-benchmark", "python benchmarks/dp_population.py", (), 1.0),
    Entry("lm-roofline", "python benchmarks/lm_population.py --roofline", (), 2.0),
)


def write_readme_table() -> int:
    """The README's study table between its markers, generated from the registry."""
    from memlab.studies.base import study_table

    path = ROOT / "README.md"
    text = path.read_text()
    begin, end = "<!-- studies:begin -->\n", "<!-- studies:end -->"
    head, rest = text.split(begin, 1)
    path.write_text(head + begin + study_table() + end + rest.split(end, 1)[1])
    print(f"wrote the study table of {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="entries to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="only the quick entries")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--runs", default="runs", help="where the runs go (default: runs/)")
    parser.add_argument("--figures", default=str(ROOT / "docs" / "figures"),
                        help="where the figures go (default: docs/figures)")
    parser.add_argument("--readme-table", action="store_true",
                        help="rewrite the README's table of studies from the study registry")
    args = parser.parse_args(argv)
    if args.readme_table:
        return write_readme_table()
    known = {entry.name: entry for entry in ENTRIES}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        print(f"regenerate: unknown entries {unknown}; see --list", file=sys.stderr)
        return 2
    chosen = [known[name] for name in args.names] if args.names else [
        entry for entry in ENTRIES if entry.quick or not args.quick]
    for entry in chosen:
        words = shlex.split(entry.command.format(runs=args.runs, figures=args.figures))
        command = words if words[0] == "python" else ["memlab", *words]
        if args.list:
            print(f"{entry.name:20s} {entry.minutes:5.1f} min{'  (quick)' if entry.quick else ''}"
                  f"  {shlex.join(command)}")
            continue
        print(f"== {entry.name}: {shlex.join(command)}", flush=True)
        started = time.perf_counter()
        program = sys.executable if command[0] == "python" else str(
            Path(sys.executable).parent / "memlab")
        result = subprocess.run([program, *command[1:]], cwd=ROOT)
        print(f"== {entry.name}: exit {result.returncode} after "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        if result.returncode != 0:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The IN/OUT estimator has one home, memlab/measures/inout.py (issue 28).

1. No other module under memlab/ defines the estimator's functions or computes masked
   IN/OUT means itself (an AST scan, with the heuristic checked on the code it replaced).
2. Every path that used to carry its own copy (LM memorization, stability, datamodels, the
   streamed influence, the LM token marks, the attribution study's self-influence, the
   audit's per-example vulnerability) gives the same bits as that copy.
3. The estimator against a brute-force loop on a random mask.
"""

from __future__ import annotations

import ast
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from memlab.measures import inout
from memlab.measures.stats import newcombe_interval

ROOT = Path(__file__).resolve().parents[1]
HOME = Path("memlab/measures/inout.py")
ESTIMATOR = {"in_out", "in_out_pairs", "estimate_influence", "loss_influence",
             "difference_in_means"}

# ------------------------------------------------------------------ 1. the AST scan
#
# Heuristic for "computes masked IN/OUT means itself", per function:
# - a *mask* is a name or attribute containing "mask", or a name assigned from one (views,
#   casts, subscripts, .T; its complement ~mask is the OUT mask);
# - a *count* is a sum over the model axis (axis 0) of a mask alone, or a name assigned
#   from one; t − count (or shape[0] − count) and (~mask).sum(0) are OUT counts;
# - a *masked sum* is a model-axis sum (sum/nansum over axis 0) of an expression mixing a
#   mask with other data, or a matrix product with a mask; total − IN sum is an OUT sum;
# - a *masked mean* is a masked sum divided by a count (a division, or a call given both,
#   such as ratio(sum, count)), or a model-axis mean of rows selected by a mask.
# A function is flagged when it has both an IN and an OUT masked mean. Per-model
# accuracies (sums over axis 1) and IN-only averages (C-score proxies, learning dynamics
# of the IN models) are not the IN/OUT estimator and are not flagged.

_REDUCE = {"sum", "nansum", "mean", "nanmean"}
_CASTS = {"asarray", "array", "ascontiguousarray", "asanyarray", "astype"}


def _is_zero(node) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0


def _model_axis(call: ast.Call):
    """(operand, reduction) if ``call`` reduces over axis 0 (x.sum(0), np.sum(x, axis=0),
    ...), else None."""
    f = call.func
    if not (isinstance(f, ast.Attribute) and f.attr in _REDUCE):
        return None
    axis0 = any(k.arg == "axis" and _is_zero(k.value) for k in call.keywords)
    if isinstance(f.value, ast.Name) and f.value.id in ("np", "numpy"):
        if call.args and (axis0 or (len(call.args) > 1 and _is_zero(call.args[1]))):
            return call.args[0], f.attr
        return None
    if axis0 or (call.args and _is_zero(call.args[0])):
        return f.value, f.attr
    return None


class _Function:
    def __init__(self, node):
        self.node = node
        self.mask: dict[str, str] = {}  # name -> "in" / "out" (complement)
        self.count: dict[str, str] = {}
        self.sum: dict[str, str] = {}
        self.means: list[tuple[int, str]] = []

    # --- classifiers: each returns None, "in" or "out"
    def mask_kind(self, e):
        if isinstance(e, ast.Name):
            return self.mask.get(e.id) or ("in" if "mask" in e.id.lower() else None)
        if isinstance(e, ast.Attribute):
            if "mask" in e.attr.lower():
                return "in"
            return self.mask_kind(e.value) if e.attr == "T" else None
        if isinstance(e, ast.Subscript):
            return self.mask_kind(e.value)
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Invert):
            return "out" if self.mask_kind(e.operand) == "in" else None
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) \
                and e.func.attr in _CASTS:
            inner = e.func.value if e.func.attr == "astype" else (e.args or [None])[0]
            return self.mask_kind(inner) if inner is not None else None
        return None

    def has_mask(self, e):
        kinds = {self.mask_kind(n) for n in ast.walk(e)} - {None}
        return ("out" if "out" in kinds else "in") if kinds else None

    def count_kind(self, e):
        if isinstance(e, ast.Name):
            return self.count.get(e.id)
        if isinstance(e, ast.Subscript):
            return self.count_kind(e.value)
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Sub):
            left, right = self.count_kind(e.left), self.count_kind(e.right)
            if left is None and right == "in" and self.mask_kind(e.left) is None:
                return "out"  # t - n_in, mask.shape[0] - n_in
            return None
        if isinstance(e, ast.Call):
            reduced = _model_axis(e)
            if reduced is not None:
                return self.mask_kind(reduced[0]) if reduced[1] in ("sum", "nansum") else None
            f = e.func
            if isinstance(f, ast.Attribute) and f.attr == "astype":
                return self.count_kind(f.value)
            if isinstance(f, ast.Attribute) and f.attr == "maximum" and e.args:
                return self.count_kind(e.args[0])
        return None

    def sum_kind(self, e):
        if isinstance(e, ast.Name):
            return self.sum.get(e.id)
        if isinstance(e, ast.Subscript):
            return self.sum_kind(e.value)
        if isinstance(e, ast.BinOp):
            if isinstance(e.op, ast.MatMult):
                sides = [self.has_mask(e.left), self.has_mask(e.right)]
                if any(sides) and not all(sides):
                    return "out" if "out" in sides else "in"
                return None
            if isinstance(e.op, ast.Add | ast.Sub):
                left, right = self.sum_kind(e.left), self.sum_kind(e.right)
                if isinstance(e.op, ast.Sub) and left is None and right == "in":
                    return "out"  # column totals minus the IN sums
                return left or right
            return None
        if isinstance(e, ast.Call):
            reduced = _model_axis(e)
            if reduced is not None and reduced[1] in ("sum", "nansum"):
                operand = reduced[0]
                if self.mask_kind(operand) is None:
                    return self.has_mask(operand)
                return None
            f = e.func
            if isinstance(f, ast.Attribute) and f.attr in _CASTS:
                inner = f.value if f.attr == "astype" else (e.args or [None])[0]
                return self.sum_kind(inner) if inner is not None else None
        return None

    def mean_kind(self, e):
        """A model-axis mean of mask-selected rows: x[mask].mean(0),
        np.nanmean(np.where(mask, x, nan), 0)."""
        if not isinstance(e, ast.Call):
            return None
        reduced = _model_axis(e)
        if reduced is None or reduced[1] not in ("mean", "nanmean"):
            return None
        operand = reduced[0]
        if isinstance(operand, ast.Subscript):
            return self.has_mask(operand.slice)
        if isinstance(operand, ast.Call) and isinstance(operand.func, ast.Attribute) \
                and operand.func.attr == "where" and operand.args:
            return self.mask_kind(operand.args[0])
        return None

    def analyze(self) -> set[str]:
        assignments = sorted(
            (n for n in ast.walk(self.node) if isinstance(n, ast.Assign | ast.AugAssign)),
            key=lambda n: (n.lineno, n.col_offset))
        for _ in range(2):  # twice: names assigned in a loop and used above it
            for node in assignments:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    pairs = [(target, node.value)]
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        pairs = list(zip(target.elts, node.value.elts))
                    for name, value in pairs:
                        if isinstance(name, ast.Name):
                            self.assign(name.id, value)
        for n in ast.walk(self.node):
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
                self.record(n, self.sum_kind(n.left), self.count_kind(n.right))
            elif isinstance(n, ast.Call):
                kind = self.mean_kind(n)
                if kind:
                    self.means.append((n.lineno, kind))
                elif _model_axis(n) is None:
                    args = list(n.args) + [k.value for k in n.keywords]
                    sums = [k for k in map(self.sum_kind, args) if k]
                    counts = [k for k in map(self.count_kind, args) if k]
                    if sums and counts:
                        self.record(n, sums[0], counts[0])
        return {kind for _, kind in self.means}

    def assign(self, name, value):
        for table, kind in ((self.mask, self.mask_kind(value)),
                            (self.count, self.count_kind(value)),
                            (self.sum, self.sum_kind(value))):
            if kind:
                table[name] = kind
                return

    def record(self, node, sum_kind, count_kind):
        if sum_kind and count_kind:
            self.means.append((node.lineno, "out" if "out" in (sum_kind, count_kind)
                               else "in"))


def masked_in_out_means(source: str) -> list[str]:
    """Names (with line numbers) of the functions in ``source`` that compute masked IN and
    OUT means themselves."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = _Function(node)
            if function.analyze() == {"in", "out"}:
                found.append(f"{node.name} (line {node.lineno})")
    return found


def estimator_definitions(source: str) -> list[str]:
    return [f"{node.name} (line {node.lineno})" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef) and node.name in ESTIMATOR]


def _sources() -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in (ROOT / "memlab").rglob("*.py"))


def test_only_inout_defines_or_computes_the_in_out_estimator():
    scanned = _sources()
    assert HOME in scanned and len(scanned) > 50, scanned
    definitions, computations = {}, {}
    for path in scanned:
        source = (ROOT / path).read_text()
        if path == HOME:
            assert set(ESTIMATOR) <= {n.split()[0] for n in estimator_definitions(source)}
            assert masked_in_out_means(source), "the heuristic finds the estimator at home"
            continue
        if estimator_definitions(source):
            definitions[str(path)] = estimator_definitions(source)
        if masked_in_out_means(source):
            computations[str(path)] = masked_in_out_means(source)
    listing = f"{len(scanned)} files scanned: " + ", ".join(map(str, scanned))
    assert not definitions, f"estimator defined outside {HOME}: {definitions}\n{listing}"
    assert not computations, f"masked IN/OUT means outside {HOME}: {computations}\n{listing}"


# The code the estimator replaced (as it was before issue 28): the heuristic flags each.
OLD_COPIES = {
    "stability.loss_influence": '''
        def loss_influence(mask, loss):
            n_in = mask.sum(0).astype(np.float64)
            n_out = mask.shape[0] - n_in
            total, total2 = loss.sum(0), (loss ** 2).sum(0)
            for start in range(0, mask.shape[1], _BLOCK):
                rows = slice(start, start + _BLOCK)
                m = mask[:, rows].T.astype(np.float64)  # (b, t)
                s_in, s2_in = m @ loss, m @ loss ** 2
                s_out, s2_out = total - s_in, total2 - s2_in
                ni, no = n_in[rows, None], n_out[rows, None]
                mean_in, mean_out = s_in / ni, s_out / no
        ''',
    "datamodels.difference_in_means": '''
        def dim(mask, outputs):
            m = np.asarray(mask, np.float64)
            y = np.asarray(outputs, np.float64)
            n_in = m.sum(0)[:, None]
            n_out = m.shape[0] - n_in
            sum_in = m.T @ y
            sum_out = y.sum(0)[None, :] - sum_in
            return (sum_in / n_in - sum_out / n_out).astype(np.float32)
        ''',
    "memorization.in_out": '''
        def in_out(mask, scores):
            t, n = mask.shape
            n_in = np.zeros(n, np.int64)
            total_in, total = np.zeros(n), np.zeros(n)
            for rows in _row_blocks(t, 2 * n):
                m = np.asarray(mask[rows], dtype=bool)
                c = np.asarray(scores[rows], dtype=bool)
                n_in += m.sum(0)
                total_in += (c * m).sum(0)
                total += c.sum(0)
            n_out = t - n_in
            return InOut(n_in, n_out, _ratio(total_in, n_in), _ratio(total - total_in, n_out))
        ''',
    "memorization.estimate_influence": '''
        def blocks(mask, correct_test, t, n, m):
            n_in = np.zeros(n, np.int64)
            for rows in _row_blocks(t, n):
                n_in += np.asarray(mask[rows], dtype=bool).sum(0)
            n_out = t - n_in
            c = np.asarray(correct_test[:, cols], dtype=np.float32)
            total = c.sum(0, dtype=np.float64)
            member = np.asarray(mask[:, rows], dtype=np.float32)
            hits_in = member.T @ c
            hits_out = total[None, :] - hits_in
            acc_in = _ratio(hits_in, n_in[rows, None])
            acc_out = _ratio(hits_out, n_out[rows, None])
        ''',
    "lm_memorize.token_marks": '''
        def token_marks(documents, index, token_correct, mask):
            correct = np.asarray(token_correct[:, index, :length], np.float64)
            delta = correct[mask[:, index]].mean(0) - correct[~mask[:, index]].mean(0)
        ''',
    "attribute.self_influence": '''
        def self_influence(run, config, split):
            mask = np.asarray(run.membership_mask)
            member = mask[fit][:, rows]
            mem = (np.where(member, correct, 0).sum(0) / member.sum(0)
                   - np.where(~member, correct, 0).sum(0) / (~member).sum(0))
        ''',
    "mia.example_vulnerability": '''
        def example_vulnerability(scores, mask, fpr=0.01):
            n_in = mask.sum(0)
            n_out = mask.shape[0] - n_in
            tpr = (above & mask).sum(0) / n_in
            own_fpr = (above & ~mask).sum(0) / n_out
            gap = (np.nansum(finite * mask, 0) / n_in) - (np.nansum(finite * ~mask, 0) / n_out)
        ''',
}
# Look-alikes that are not the estimator: per-model accuracies (axis 1), IN-only averages,
# a rank-sum AUC, the estimator's callers.
NOT_THE_ESTIMATOR = {
    "per-model accuracy": '''
        def models_table(in_subset, train_score):
            n_in = in_subset.sum(1)
            n_out = in_subset.shape[1] - n_in
            acc_in = np.where(in_subset, train_score, 0).sum(1) / n_in
            acc_out = np.where(in_subset, 0, train_score).sum(1) / np.maximum(n_out, 1)
            train_acc = (train_correct & mask).sum(1) / mask.sum(1)
        ''',
    "IN-only proxies": '''
        def proxies(run):
            mask = run.membership_mask
            n_in = mask.sum(0)
            for rows in _row_blocks(t, 6 * n):
                m = np.asarray(mask[rows])
                loss_sum += np.where(m, np.asarray(loss[rows], np.float64), 0).sum(0)
            return loss_sum / n_in
        ''',
    "rank-sum AUC and callers": '''
        def vulnerability(scores, mask):
            n_in = mask.sum(0)
            n_out = mask.shape[0] - n_in
            auc = ((ranks * mask).sum(0) - n_in * (n_in + 1) / 2) / (n_in * n_out)
            tpr, fpr = masked_means(mask, above)
            marks = np.subtract(*masked_means(mask[:, [i]], tokens))
            return in_out(mask, scores).score, in_out_pairs(mask, test).score, marks
        ''',
}


@pytest.mark.parametrize("name", OLD_COPIES)
def test_the_heuristic_flags_the_copies_it_replaced(name):
    assert masked_in_out_means(textwrap.dedent(OLD_COPIES[name])), name


@pytest.mark.parametrize("name", NOT_THE_ESTIMATOR)
def test_the_heuristic_leaves_look_alikes_alone(name):
    assert not masked_in_out_means(textwrap.dedent(NOT_THE_ESTIMATOR[name])), name


# ------------------------------------------------------------------ 2. the same bits
#
# Reference copies of the code each path carried before issue 28 (verbatim arithmetic).


def _old_mean_var(total, total_sq, count):
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        var = (total_sq - count * mean**2) / (count - 1)
        var = np.where(count > 1, np.maximum(var, 0.0), np.nan)
    return mean, var


def _old_ratio(hits, counts):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def _old_in_out(mask, scores):  # memorization.in_out (one block of models)
    t, n = mask.shape
    binary = scores.dtype == bool
    m = np.asarray(mask, dtype=bool)
    c = np.asarray(scores, dtype=bool if binary else np.float64)
    n_in = np.zeros(n, np.int64) + m.sum(0)
    total_in, total = np.zeros(n) + (c * m).sum(0), np.zeros(n) + c.sum(0)
    n_out = t - n_in
    if binary:
        return n_in, n_out, _old_ratio(total_in, n_in), _old_ratio(total - total_in, n_out)
    square_in, square = np.zeros(n) + (c * c * m).sum(0), np.zeros(n) + (c * c).sum(0)
    mean_in, var_in = _old_mean_var(total_in, square_in, n_in)
    mean_out, var_out = _old_mean_var(total - total_in, square - square_in, n_out)
    return n_in, n_out, mean_in, mean_out, var_in, var_out


def _old_in_out_pairs(mask, scores_test):  # memorization.in_out_pairs
    performance = np.asarray(scores_test, np.float64)
    member = np.asarray(mask, bool).astype(np.float64)
    n_in = member.sum(0)[:, None]
    n_out = mask.shape[0] - n_in
    sum_in = member.T @ performance
    square_in = member.T @ performance**2
    mean_in, var_in = _old_mean_var(sum_in, square_in, n_in)
    mean_out, var_out = _old_mean_var(performance.sum(0)[None, :] - sum_in,
                                      (performance**2).sum(0)[None, :] - square_in, n_out)
    return n_in, n_out, mean_in, mean_out, var_in, var_out


def _old_loss_influence(mask, loss, block=2048):  # stability.loss_influence
    mask = np.asarray(mask, dtype=bool)
    loss = np.asarray(loss, dtype=np.float64)
    n_in = mask.sum(0).astype(np.float64)
    n_out = mask.shape[0] - n_in
    total, total2 = loss.sum(0), (loss ** 2).sum(0)
    delta = np.empty((mask.shape[1], loss.shape[1]))
    se = np.empty_like(delta)
    for start in range(0, mask.shape[1], block):
        rows = slice(start, start + block)
        m = mask[:, rows].T.astype(np.float64)
        s_in, s2_in = m @ loss, m @ loss ** 2
        s_out, s2_out = total - s_in, total2 - s2_in
        ni, no = n_in[rows, None], n_out[rows, None]
        mean_in, mean_out = s_in / ni, s_out / no
        var_in = np.clip(s2_in - ni * mean_in ** 2, 0, None) / (ni - 1)
        var_out = np.clip(s2_out - no * mean_out ** 2, 0, None) / (no - 1)
        delta[rows] = mean_in - mean_out
        se[rows] = np.sqrt(var_in / ni + var_out / no)
    return delta, se, n_in, n_out


def _old_difference_in_means(mask, outputs):  # attribution.datamodels.difference_in_means
    m = np.asarray(mask, np.float64)
    y = np.asarray(outputs, np.float64)
    n_in = m.sum(0)[:, None]
    n_out = m.shape[0] - n_in
    sum_in = m.T @ y
    sum_out = y.sum(0)[None, :] - sum_in
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sum_in / n_in - sum_out / n_out).astype(np.float32)


def _old_influence(mask, correct_test, block_rows, block_cols):  # estimate_influence
    t, n = mask.shape
    m = correct_test.shape[1]
    values, se = np.empty((n, m), np.float32), np.empty((n, m), np.float32)
    n_in = np.asarray(mask, dtype=bool).sum(0)
    n_out = t - n_in
    for c0 in range(0, m, block_cols):
        cols = slice(c0, min(c0 + block_cols, m))
        c = np.asarray(correct_test[:, cols], dtype=np.float32)
        total = c.sum(0, dtype=np.float64)
        for r0 in range(0, n, block_rows):
            rows = slice(r0, min(r0 + block_rows, n))
            member = np.asarray(mask[:, rows], dtype=np.float32)
            hits_in = member.T @ c
            hits_out = total[None, :] - hits_in
            acc_in = _old_ratio(hits_in, n_in[rows, None])
            acc_out = _old_ratio(hits_out, n_out[rows, None])
            values[rows, cols] = acc_in - acc_out
            lo, hi = newcombe_interval(acc_in, n_in[rows, None], acc_out, n_out[rows, None])
            se[rows, cols] = (hi - lo) / (2 * 1.959963984540054)
    return values, se, n_in, n_out


def _old_token_delta(correct, column):  # lm_memorize.token_marks
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return correct[column].mean(0) - correct[~column].mean(0)


def _old_self_influence(member, correct):  # attribute.study.self_influence
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(member, correct, 0).sum(0) / member.sum(0)
                - np.where(~member, correct, 0).sum(0) / (~member).sum(0))


def _old_vulnerability(scores, mask, above):  # mia.example_vulnerability
    n_in = mask.sum(0)
    n_out = mask.shape[0] - n_in
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (above & mask).sum(0) / n_in
        own_fpr = (above & ~mask).sum(0) / n_out
        finite = np.where(np.isfinite(scores), scores, np.nan)
        gap = (np.nansum(finite * mask, 0) / n_in) - (np.nansum(finite * ~mask, 0) / n_out)
    return tpr, own_fpr, gap


def same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype,
                                                                 got.shape, want.shape)
    assert got.tobytes() == want.tobytes(), np.flatnonzero(got.ravel() != want.ravel())[:10]


def population(t=37, n=11, m=7, seed=0, edges=True):
    rng = np.random.default_rng(seed)
    mask = rng.random((t, n)) < 0.45
    if edges:  # an example no model trained on, and one every model did
        mask[:, 0], mask[:, 1] = False, True
    return mask, rng


def test_lm_path_matches_the_old_code_bit_for_bit():
    mask, rng = population()
    acc = rng.random(mask.shape)  # per-token accuracy of each document
    loss = rng.exponential(size=mask.shape)
    test_acc = rng.random((mask.shape[0], 5))
    for scores in (acc, -loss, acc > 0.5):
        got = inout.in_out(mask, scores)
        fields = ("n_in", "n_out", "mean_in", "mean_out", "var_in", "var_out")
        for name, want in zip(fields, _old_in_out(mask, scores)):
            same_bits(getattr(got, name), want)
    got = inout.in_out_pairs(mask, test_acc)
    fields = ("n_in", "n_out", "mean_in", "mean_out", "var_in", "var_out")
    for name, want in zip(fields, _old_in_out_pairs(mask, test_acc)):
        same_bits(getattr(got, name), want)
    # token marks: per-token 0/1 correctness of one document against its own column
    tokens = (rng.random((mask.shape[0], 9)) < 0.6).astype(np.float64)
    for index in range(mask.shape[1]):
        with np.errstate(invalid="ignore"):
            got = np.subtract(*inout.masked_means(mask[:, [index]], tokens))
        same_bits(got, _old_token_delta(tokens, mask[:, index]))


@pytest.mark.parametrize("n", [13, 2 * inout.LOSS_BLOCK + 5])
def test_stability_path_matches_the_old_code_bit_for_bit(n):
    rng = np.random.default_rng(n)
    t = 12
    mask = np.argsort(rng.random((t, n)), axis=0) < 6  # 6 models with and 6 without each
    loss = rng.gamma(2.0, size=(t, 4))
    loss[:, 0] = 1.5  # a constant loss: variance 0 on both sides
    got = inout.loss_influence(mask, loss)
    for name, want in zip(("delta", "se", "n_in", "n_out"), _old_loss_influence(mask, loss)):
        same_bits(getattr(got, name), want)


def test_datamodel_path_matches_the_old_code_bit_for_bit():
    mask, rng = population(t=40, n=15, m=6, seed=3)
    outputs = rng.normal(size=(40, 6)) * 3 + 1
    same_bits(inout.difference_in_means(mask, outputs),
              _old_difference_in_means(mask, outputs))
    from memlab.measures.attribution import datamodels

    assert datamodels.difference_in_means is inout.difference_in_means


def test_streamed_influence_matches_the_old_code_bit_for_bit(tmp_path):
    mask, rng = population(t=41, n=17, m=9, seed=4)
    correct = rng.random((41, 9)) < 0.7
    for rows, cols in ((17, 9), (4, 5), (1, 2)):
        want = _old_influence(mask, correct, rows, cols)
        got = inout.estimate_influence(mask, correct, block_rows=rows, block_cols=cols)
        for name, value in zip(("values", "se", "n_in", "n_out"), want):
            same_bits(getattr(got, name), value)
    on_disk = inout.estimate_influence(mask, correct, out=tmp_path / "i.npy", block_rows=3)
    same_bits(np.asarray(on_disk.values), want[0])


def test_direct_masked_means_match_the_old_code_bit_for_bit():
    mask, rng = population(t=30, n=12, seed=5)
    correct = (rng.random(mask.shape) < 0.6).astype(float)
    logodds = rng.normal(size=mask.shape).astype(np.float32)
    logodds[3, 4], logodds[5, 6] = np.inf, -np.inf  # spoils only its own side
    for values in (correct, logodds):
        acc_in, acc_out = inout.masked_means(mask, values)
        with np.errstate(invalid="ignore"):
            same_bits(acc_in - acc_out, _old_self_influence(mask, values))
    scores = rng.normal(size=mask.shape)
    scores[2, 3], scores[7, 8] = -np.inf, np.nan
    scores = np.where(np.isnan(scores), -np.inf, scores)
    above = scores > 0.5
    tpr, fpr, gap = _old_vulnerability(scores, mask, above)
    got_tpr, got_fpr = inout.masked_means(mask, above)
    finite = np.where(np.isfinite(scores), scores, np.nan)
    gap_in, gap_out = inout.masked_means(mask, finite, skip_nan=True)
    with np.errstate(invalid="ignore"):
        same_bits(gap_in - gap_out, gap)
    same_bits(got_tpr, tpr)
    same_bits(got_fpr, fpr)


def test_audit_vulnerability_matches_the_old_code_bit_for_bit():
    from memlab.measures import mia

    mask, rng = population(t=30, n=12, seed=6, edges=False)
    scores = rng.normal(size=mask.shape)
    scores[1, 2] = np.nan
    got = mia.example_vulnerability(scores, mask, 0.1)
    clean = np.where(np.isnan(scores), -np.inf, scores)
    tpr, fpr, gap = _old_vulnerability(clean, mask, clean > got["threshold"][0])
    same_bits(got["vulnerability"], tpr)
    same_bits(got["example_fpr"], fpr)
    same_bits(got["score_gap"], gap)


# ------------------------------------------------------------------ 3. brute force


def brute_force(mask, scores):
    """(n, m) IN mean − OUT mean of every column of ``scores`` for every mask column."""
    out = np.full((mask.shape[1], scores.shape[1]), np.nan)
    for i in range(mask.shape[1]):
        inside, outside = scores[mask[:, i]], scores[~mask[:, i]]
        if len(inside) and len(outside):
            out[i] = inside.mean(0) - outside.mean(0)
    return out


def test_the_estimator_equals_a_brute_force_loop_on_a_random_mask():
    mask, rng = population(t=53, n=19, m=8, seed=7)
    real = rng.normal(size=(53, 19))
    test = rng.normal(size=(53, 8))
    binary = rng.random((53, 8)) < 0.5
    np.testing.assert_allclose(inout.in_out(mask, real).score, np.diag(brute_force(mask, real)),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inout.in_out_pairs(mask, test).score, brute_force(mask, test),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inout.difference_in_means(mask[:, 2:], test),
                               brute_force(mask[:, 2:], test), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inout.estimate_influence(mask, binary).values,
                               brute_force(mask, binary.astype(float)), atol=1e-6)
    diag_in, diag_out = inout.masked_means(mask, real)
    np.testing.assert_allclose(diag_in - diag_out, np.diag(brute_force(mask, real)),
                               rtol=1e-12, atol=1e-12)
    keep = mask[:, 2:]  # loss_influence needs two models on each side
    loss = rng.exponential(size=(53, 8))
    np.testing.assert_allclose(inout.loss_influence(keep, loss).delta, brute_force(keep, loss),
                               rtol=1e-12, atol=1e-12)

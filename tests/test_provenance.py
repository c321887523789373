"""Provenance per chunk (issue: beyond one machine): every chunk's done.json says where it
was trained; consolidation refuses a run whose chunks mixed compute dtypes (naming them) and
flags any other mix (host, CPU, device, versions); ``memlab info`` prints the table."""

import json
import shutil

import pytest

from memlab.cli import main
from memlab.errors import RunError
from memlab.population import provenance, store, train_population
from tests.conftest import make_blobs

SETTINGS = dict(model="mlp", model_kwargs={"hidden": [8]}, n_models=4, chunk_size=2,
                epochs=1, progress=False, n_workers=1)


def fake(run_dir, chunk: int, **changes) -> None:
    """Rewrite chunk ``chunk``'s done.json as if another machine had trained it (its own
    checksum made again, as that machine would have), and drop the consolidated records so
    that the next call consolidates again."""
    info = store.read_chunk_info(run_dir, chunk)
    info.pop("checksum", None)
    info["provenance"] = {**info["provenance"], **changes}
    marker = store.with_checksum(info)
    (store.chunk_dir(run_dir, chunk) / "done.json").write_text(json.dumps(marker, indent=2))
    shutil.rmtree(run_dir / "records")


def test_every_chunk_records_where_it_was_trained(tmp_path, capsys):
    train_population(make_blobs(), **SETTINGS, out=tmp_path / "run")
    for chunk in (0, 1):
        recorded = store.read_chunk_info(tmp_path / "run", chunk)["provenance"]
        assert set(recorded) == set(provenance.KEYS)
        assert recorded["compute_dtype"] == "float32" and recorded["device"] == "cpu"
    capsys.readouterr()
    assert main(["info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "trained on (chunks):" in out and "compute_dtype float32" in out


def test_mixed_compute_dtypes_are_refused_naming_the_chunks(tmp_path):
    train_population(make_blobs(), **SETTINGS, out=tmp_path / "run")
    fake(tmp_path / "run", 1, compute_dtype="bfloat16")
    with pytest.raises(RunError, match=r"float32: chunks 0; bfloat16: chunks 1") as error:
        train_population(make_blobs(), **SETTINGS, out=tmp_path / "run")
    assert "\n" not in str(error.value)


def test_other_mixes_are_flagged_in_the_manifest_and_by_info(tmp_path, capsys):
    train_population(make_blobs(), **SETTINGS, out=tmp_path / "run")
    fake(tmp_path / "run", 1, host="another-node", cpu="AMD EPYC 9654")
    capsys.readouterr()
    run = train_population(make_blobs(), **SETTINGS, out=tmp_path / "run")
    assert run.manifest["provenance"] == {"mixed": ["host", "cpu"], "unknown_chunks": 0}
    assert "different host, cpu" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "run")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "| compute_dtype" in line]
    assert len(rows) == 2 and any("another-node" in row for row in rows)


def test_chunks_from_before_provenance_count_as_unknown():
    summary = provenance.check_chunks({0: {"files": {}}, 1: {"provenance": {"host": "a"}}})
    assert summary == {"mixed": [], "unknown_chunks": 1}
    assert provenance._ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"

"""A run's folder as Snakemake leaves it (issue 25, items 1 and 6).

Relocatable runs: nothing under results/ names a path by its absolute form, so a run that is copied (its
original deleted), moved, or run with --directory reads only its own files. Before, the decoded index
recorded each shard's folder by absolute path: a copy rebuilt its stores from the original's pixels.

Failure lists that stay: when more files fail to decode than decode.max_failed_fraction allows, Snakemake
deletes the failed job's outputs (results/decoded/errors.parquet among them); the list the message names
is a log of the job (logs/decode_failed.csv), which Snakemake keeps.
"""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, SNAKEMAKE_ENV
from dicom_factory import mammo_like, write_dicom

from mammoflow.decode import image_path

STORES = ["results/data/32/original/images.npy", "results/data/32/processed/images.npy"]


def snakemake(workdir, *args, check=True):
    # Targets first: --configfile, --config and --forcerun each take every word after them.
    command = [sys.executable, "-m", "snakemake", *args, "-s", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--cores", "2",
               "--configfile", str(REPO / "tests/config/tiny.yaml")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=SNAKEMAKE_ENV)
    if check and done.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def _absolute_paths(results, roots: list[str]) -> list[str]:
    """Files under ``results`` that hold any of ``roots`` (parquet: in any text cell or the file's bytes)."""
    found = []
    for path in sorted(p for p in results.rglob("*") if p.is_file()):
        texts = [path.read_bytes().decode("latin-1")]
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            texts += [str(v) for c in frame.columns if frame[c].dtype == object for v in frame[c]]
        if any(root in text for text in texts for root in roots):
            found.append(str(path.relative_to(results)))
    return found


@pytest.mark.slow
def test_a_copied_run_rebuilds_equal_stores_from_its_own_shards(tmp_path):
    first, copy = tmp_path / "runA", tmp_path / "runB"
    snakemake(first, *STORES)
    stores = {target: (first / target).read_bytes() for target in STORES}
    subprocess.run(["cp", "-a", str(first), str(copy)], check=True)
    subprocess.run(["rm", "-rf", str(first)], check=True)
    assert _absolute_paths(copy / "results", [str(first), str(copy), str(tmp_path)]) == []
    assert pd.read_parquet(copy / "results/decoded/index.parquet")["shard_dir"].unique().tolist() == [
        "shard000",
        "shard001",
    ]
    done = snakemake(copy, *STORES, "--forcerun", "preprocess")
    assert "preprocess" in done.stdout + done.stderr  # the stores were rebuilt, from the copy's shards
    for target, before in stores.items():
        assert (copy / target).read_bytes() == before, target


def _folder_with_bad_files(root, good: int = 8):
    """The issue's held-out case: 3 of 11 files cannot be decoded."""
    rows = []
    for i in range(good):
        write_dicom(image_path(root, 1 + i // 2, 10 + i), mammo_like(200, 160, seed=i), "raw")
        rows.append((1 + i // 2, 10 + i, "LR"[i % 2], "CC", i % 2))
    image_path(root, 9, 90).parent.mkdir(parents=True)
    image_path(root, 9, 90).write_text("not a DICOM file")
    image_path(root, 9, 91).write_bytes(b"")
    rows += [(9, 90, "L", "CC", 0), (9, 91, "R", "CC", 0), (9, 92, "L", "MLO", 0)]  # 92: no file
    columns = ["patient_id", "image_id", "laterality", "view", "cancer"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "train.csv", index=False)


@pytest.mark.slow
def test_the_failure_list_the_message_names_exists_after_the_failure(tmp_path):
    data, run = tmp_path / "rsna", tmp_path / "run"
    _folder_with_bad_files(data)
    done = snakemake(run, "results/decoded/index.parquet", "--config", f"rsna_dir={data}", check=False)
    assert done.returncode != 0
    assert not (run / "results/decoded/errors.parquet").exists()  # the failed job's output: deleted
    log = (run / "logs/decode_index.log").read_text()
    message = (
        "3 of 11 files (27.3%) could not be decoded, more than decode.max_failed_fraction=0.01; "
        "the list: logs/decode_failed.csv"
    )
    assert message in log
    assert "the list with reasons: logs/decode_failed.csv" in done.stdout + done.stderr  # onerror's line
    kept = pd.read_csv(run / "logs/decode_failed.csv").set_index("image_id")["reason"]
    assert sorted(kept.index) == [90, 91, 92]
    assert "not a DICOM file" in kept[90] and kept[91] == "empty file" and kept[92] == "file not found"
    for image_id in (90, 91, 92):  # and each in the log too
        assert f"{image_id}.dcm: " in log

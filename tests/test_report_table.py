"""The Table 2 replica's numbers: aggregation over folds, the paper's values, the pooled AUC, its interval."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from sklearn.metrics import roc_auc_score

from mammoflow.matrix import Matrix
from mammoflow.report.build import table_markdown
from mammoflow.report.table2 import PAPER_METRICS, build_table, paper_table, table_csv
from mammoflow.stats import _grouped_auc, pooled_auc

SHARED_TABLE = REPO.parent / "shared/paper/table2.csv"


def _write_cell(results, protocol, res, dataset, model, fold, metrics, predictions=None):
    cell = results / "train" / protocol / str(res) / dataset / model / f"fold{fold}"
    cell.mkdir(parents=True)
    full = {"confusion": {"tn": 1, "fp": 2, "fn": 3, "tp": 4}, "pf1": 0.5, "breast": {"auc": 0.7}, **metrics}
    summary = {"metrics": full, "warnings": [], "seconds": 10.0, "weights": "random", "device": "cpu"}
    (cell / "metrics.json").write_text(json.dumps(summary))
    if predictions is not None:
        predictions.to_parquet(cell / "predictions.parquet")


def _five(a, auc, p, r, f1):
    return dict(zip(PAPER_METRICS, (a, auc, p, r, f1), strict=True))


@pytest.fixture
def fake(tmp_path):
    """resnet18/original/256: folds 0-2 ok, fold 3 failed (log, no metrics), fold 4 missing;
    resnet34/original/256: one fold ok; processed: nothing."""
    results = tmp_path / "results"
    _write_cell(results, "clean", 256, "original", "resnet18", 0, _five(0.9, 0.6, 0.1, 0.2, None))
    _write_cell(results, "clean", 256, "original", "resnet18", 1, _five(0.8, 0.7, 0.2, 0.4, 0.3))
    _write_cell(results, "clean", 256, "original", "resnet18", 2, _five(0.7, None, 0.3, 0.6, 0.5))
    log = tmp_path / "logs/train/clean/256/original/resnet18/fold3.log"
    log.parent.mkdir(parents=True)
    log.write_text("epoch 1\nRuntimeError: CUDA out of memory\n")
    _write_cell(results, "clean", 256, "original", "resnet34", 0, _five(0.5, 0.5, 0.5, 0.5, 0.5))
    done = tmp_path / "logs/train/clean/256/original/resnet34/fold1.log"  # ran once, outputs deleted since
    done.parent.mkdir(parents=True)
    done.write_text("epoch 1\ndone\n")
    matrix = Matrix(["clean"], [256], ["original", "processed"], ["resnet18", "resnet34"], 5)
    return results, matrix


def test_aggregation_by_hand(fake):
    results, matrix = fake
    cells, table, _ = build_table(results, matrix, resamples=0)
    assert len(cells) == 2 * 2 * 5
    r18 = cells[(cells["model"] == "resnet18") & (cells["dataset"] == "original")].set_index("fold")
    assert r18["status"].tolist() == ["ok", "ok", "ok", "failed", "missing"]
    assert "CUDA out of memory" in r18.loc[3, "warnings"]
    row = table[(table["model"] == "resnet18") & (table["dataset"] == "original")].iloc[0]
    assert (row["folds_ok"], row["folds"], row["failed_folds"], row["missing_folds"]) == (3, 5, "3", "4")
    assert row["accuracy_mean"] == pytest.approx(0.8)
    assert row["accuracy_sd"] == pytest.approx(0.1)  # sample sd of 0.9, 0.8, 0.7
    assert row["auc_mean"] == pytest.approx(0.65) and row["auc_n"] == 2  # undefined AUC left out, not 0
    assert row["auc_sd"] == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert row["f1_mean"] == pytest.approx(0.4)
    assert row["recall_sd"] == pytest.approx(0.2)
    assert row["breast_auc_mean"] == pytest.approx(0.7)
    r34 = cells[(cells["model"] == "resnet34") & (cells["dataset"] == "original")].set_index("fold")
    assert r34.loc[1, "status"] == "missing"
    one = table[(table["model"] == "resnet34") & (table["dataset"] == "original")].iloc[0]
    assert one["accuracy_mean"] == 0.5 and np.isnan(one["accuracy_sd"])  # one fold: no sd
    empty = table[table["dataset"] == "processed"]
    assert (empty["folds_ok"] == 0).all() and empty["accuracy_mean"].isna().all()
    assert list(table["dataset"]) == ["original", "original", "processed", "processed"]


def test_paper_values_match_the_published_table(fake):
    results, matrix = fake
    _, table, _ = build_table(results, matrix, resamples=0)
    published = pd.read_csv(REPO / "src/mammoflow/report/paper_table2.csv")
    if SHARED_TABLE.is_file():  # the packaged copy is the paper's table, byte for byte
        assert SHARED_TABLE.read_bytes() == (REPO / "src/mammoflow/report/paper_table2.csv").read_bytes()
    for _, row in table.iterrows():
        paper = published[(published["resolution"] == 256) & (published["dataset"] == row["dataset"])]
        paper = paper[paper["model"] == row["model"]].iloc[0]
        for name in PAPER_METRICS:
            assert row[f"{name}_paper"] == paper[name]
    r18 = table.iloc[0]
    assert r18["accuracy_diff"] == pytest.approx(0.8 - 0.96)
    assert len(paper_table()) == 30
    csv = table_csv(table)
    assert csv.loc[0, "auc_paper"] == 0.61
    md = table_markdown(table)
    assert "0.80 ± 0.10 (0.96, -0.16)" in md
    assert "3/5 folds; failed: 3; missing: 4" in md


def test_paper_values_absent_at_other_resolutions(tmp_path):
    results = tmp_path / "results"
    _write_cell(results, "clean", 64, "original", "resnet18", 0, _five(0.9, 0.6, 0.1, 0.2, 0.1))
    _, table, _ = build_table(results, Matrix(["clean"], [64], ["original"], ["resnet18"], 1), resamples=0)
    assert table["accuracy_paper"].isna().all() and table["accuracy_diff"].isna().all()


def test_weighted_auc_equals_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(float)
    p = np.round(rng.random(300) + 0.3 * y, 2)  # rounded: many ties
    w = rng.integers(0, 4, (3, 300)).astype(float)
    _, groups = np.unique(p, return_inverse=True)
    ours = _grouped_auc(groups, y, w, groups.max() + 1)
    for i in range(3):
        assert ours[i] == pytest.approx(roc_auc_score(y, p, sample_weight=w[i]))


def test_pooled_auc_bootstraps_patients():
    rng = np.random.default_rng(2)
    patients = np.repeat(np.arange(100), 4)
    y = np.repeat(rng.random(100) < 0.3, 4).astype(int)
    p = rng.random(400) + 0.4 * y
    frame = pd.DataFrame({"patient_id": patients, "cancer": y, "probability": p})
    auc, low, high = pooled_auc(frame, resamples=400, seed=0)
    assert auc == pytest.approx(roc_auc_score(y, p))
    assert low < auc < high and 0.05 < high - low < 0.4
    assert pooled_auc(frame, resamples=400, seed=0) == (auc, low, high)  # seeded
    one_class = frame.assign(cancer=0)
    assert all(np.isnan(v) for v in pooled_auc(one_class, resamples=10))


def test_stage_timings_from_benchmark_files(tmp_path):
    from mammoflow.report.provenance import rule_of, stage_timings

    header = "s\th:m:s\tmax_rss\n"
    files = [("phantom.tsv", 3), ("train/clean/32/x/m/fold0.tsv", 10), ("train/clean/32/x/m/fold1.tsv", 20),
             ("gan/clean/fold0/stage16.tsv", 5), ("gan/clean/fold0/fid.tsv", 1),
             ("gan/clean/fold0/synthesize32.tsv", 2)]  # fmt: skip
    for relative, seconds in files:
        path = tmp_path / "benchmarks" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{header}{seconds}\t0:00:{seconds:02d}\t100\n")
    timings = stage_timings(tmp_path).set_index("rule")
    assert timings.loc["train", "jobs"] == 2 and timings.loc["train", "total_s"] == 30
    assert timings.loc["train", "longest_s"] == 20
    assert set(timings.index) == {"phantom", "train", "gan_stage", "gan_fid", "synthesize"}
    assert rule_of(Path("report.tsv")) == "report"


# ------------------------------------------------------------ real images only, breast level, protocols
def _predictions(rng, patients, fold, synthetic=0, shift=0.0):
    """Two views of each breast of ``patients``; cancer in the left breast of every third patient."""
    rows = []
    for patient in patients:
        for laterality in ("L", "R"):
            cancer = int(laterality == "L" and patient % 3 == 0)
            for view in ("CC", "MLO"):
                image = patient * 10 + (laterality == "R") * 2 + (view == "MLO")
                rows.append((image, patient, laterality, view, cancer, "real", fold))
    for i in range(synthetic):
        rows.append((9_000_000 + 100 * fold + i, -1 - i - 100 * fold, "L", "SYN", 1, "synthetic", fold))
    frame = pd.DataFrame(
        rows, columns=["image_id", "patient_id", "laterality", "view", "cancer", "source", "fold"]
    )
    frame["probability"] = np.clip(0.3 * frame["cancer"] + rng.random(len(frame)) * 0.7 + shift, 0, 1)
    frame.loc[frame["source"] == "synthetic", "probability"] = 0.99  # the leak: synthetic positives are easy
    return frame


def test_real_only_rows_and_breast_level_at_out_of_fold_thresholds(tmp_path):
    from mammoflow.classify.metrics import breast_level, cell_metrics
    from mammoflow.stats import f1_at_out_of_fold_threshold

    rng = np.random.default_rng(3)
    results = tmp_path / "results"
    folds = [_predictions(rng, range(f * 12, f * 12 + 12), f, synthetic=4) for f in range(2)]
    for fold, frame in enumerate(folds):
        metrics, _ = cell_metrics(frame)
        metrics["real_only"], _ = cell_metrics(frame[frame["source"] == "real"])
        _write_cell(results, "paper", 256, "augmented", "resnet18", fold, metrics, frame)
    matrix = Matrix(["paper"], [256], ["augmented"], ["resnet18"], 2)
    _, table, _ = build_table(results, matrix, resamples=0)
    assert list(table["scored"]) == ["all", "real"]
    published, real = table.iloc[0], table.iloc[1]
    assert published["auc_paper"] == 0.83 and np.isnan(real["auc_paper"])  # the paper's value: as published
    real_frames = [f[f["source"] == "real"] for f in folds]
    assert real["auc_mean"] == pytest.approx(
        np.mean([roc_auc_score(f["cancer"], f["probability"]) for f in real_frames])
    )
    assert real["auc_mean"] < published["auc_mean"]  # the synthetic positives flatter the published row
    everything = pd.concat(real_frames)
    assert real["pooled_auc"] == pytest.approx(roc_auc_score(everything["cancer"], everything["probability"]))
    breasts = pd.concat([breast_level(f).assign(fold=k) for k, f in enumerate(real_frames)])
    oof = f1_at_out_of_fold_threshold(breasts)
    assert real["breast_pf1_oof_mean"] == pytest.approx(oof["pf1"].mean())
    assert real["breast_threshold_oof_mean"] == pytest.approx(oof["threshold"].mean())
    assert real["breast_pf1_mean"] == pytest.approx(
        np.mean([cell_metrics(f)[0]["breast"]["pf1"] for f in real_frames])
    )
    assert "real images only" in table_markdown(table)


def test_protocol_difference_is_paired_on_the_same_real_images():
    from mammoflow.report.compare import paired_auc_difference, protocol_comparison, reading

    rng = np.random.default_rng(4)
    clean = _predictions(rng, range(60), 0)
    paper = _predictions(rng, range(60), 0, synthetic=10, shift=0.05)
    paper["probability"] = np.where(
        paper["source"] == "real", 0.5 * paper["probability"] + 0.5 * paper["cancer"], 0.99
    )
    result = paired_auc_difference(clean, paper, resamples=300, seed=0)
    real = paper[paper["source"] == "real"]
    expected = roc_auc_score(real["cancer"], real["probability"]) - roc_auc_score(
        clean["cancer"], clean["probability"]
    )
    assert result["images"] == 240 and result["patients"] == 60
    assert result["difference"] == pytest.approx(expected) and expected > 0
    assert result["low"] < result["difference"] < result["high"]
    same = paired_auc_difference(clean, clean, resamples=100)
    assert same["difference"] == 0 and same["low"] == 0 and same["high"] == 0  # paired: no spread at all
    assert paired_auc_difference(clean.assign(cancer=0), paper, resamples=10) is None

    pooled = {
        ("clean", 256, "processed", "resnet18", "all"): clean,
        ("paper", 256, "processed", "resnet18", "all"): paper,
        ("clean", 256, "original", "resnet18", "all"): clean,
    }
    comparison = protocol_comparison(pooled, resamples=300)
    assert list(comparison["dataset"]) == ["processed"]  # original ran under clean only
    sentence = reading(comparison)
    assert "higher AUC than the clean one in 1 of 1" in sentence
    assert ("wholly above zero in 1" in sentence) == (comparison["low"].iloc[0] > 0)
    assert "nothing to compare" in reading(comparison.iloc[:0])


def test_external_tests_are_read_from_every_external_json(tmp_path):
    from mammoflow.report.compare import external_table, external_tests

    record = {"name": "site-b", "n_images": 8, "image": {"auc": {"value": 0.7, "lo": 0.6, "hi": 0.8}},
              "breast": {"pf1": {"value": 0.3, "lo": 0.1, "hi": 0.5}}}  # fmt: skip
    path = tmp_path / "results/predict/site-b/external.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    (tmp_path / "results/predict/unlabelled").mkdir()  # a run without labels writes no external.json
    tests = external_tests(tmp_path / "results")
    assert [t["name"] for t in tests] == ["site-b"] and tests[0]["path"] == str(path)
    assert tests[0]["protocol"] == "?" and tests[0]["thresholds"] == {"pf1_oof": None, "spec90_oof": None}
    rows = external_table(tests[0])
    assert rows.values.tolist() == [["AUC", "0.700 (0.600–0.800)", "—"], ["pF1", "—", "0.300 (0.100–0.500)"]]
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"external\.json"):
        external_tests(tmp_path / "results")


def test_real_only_row_counts_its_folds_against_every_cell(tmp_path):
    from mammoflow.classify.metrics import cell_metrics

    frame = _predictions(np.random.default_rng(5), range(12), 0, synthetic=3)
    metrics, _ = cell_metrics(frame)
    metrics["real_only"], _ = cell_metrics(frame[frame["source"] == "real"])
    _write_cell(tmp_path / "results", "paper", 256, "augmented", "resnet18", 0, metrics, frame)
    matrix = Matrix(["paper"], [256], ["augmented"], ["resnet18"], 3)
    _, table, _ = build_table(tmp_path / "results", matrix, resamples=0)
    real = table[table["scored"] == "real"].iloc[0]
    assert (real["folds_ok"], real["folds"], real["missing_folds"]) == (1, 3, "1,2")

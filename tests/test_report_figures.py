"""The report's figures (mammoflow.report.figures) and the workflow picture (mammoflow.report.dag)."""

import io
import json
import shutil
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE_ENV
from matplotlib.image import imread

from mammoflow.report import dag, figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY_CSV = """epoch,train_loss,valid_loss,accuracy,auc,precision,recall,f1,seconds
1,0.7154465019702911,0.707408232628541,0.2,0.875,0.2,1.0,0.33333333333333337,0.5124838390001969
"""


def decoded(png: bytes) -> np.ndarray:
    assert png[:8] == PNG_MAGIC
    image = imread(io.BytesIO(png), format="png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    return image


def history(epochs: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    e = np.arange(1, epochs + 1)
    return pd.DataFrame(
        {
            "epoch": e,
            "train_loss": 0.7 / e,
            "valid_loss": 0.5 + 0.05 * e,
            "accuracy": rng.uniform(0.8, 1, epochs),
            "auc": rng.uniform(0.5, 0.9, epochs),
            "precision": rng.uniform(0, 0.5, epochs),
            "recall": rng.uniform(0, 0.7, epochs),
            "f1": rng.uniform(0, 0.5, epochs),
            "seconds": 1.0,
        }
    )


# ------------------------------------------------------------------------------------------ figures
def test_epoch_curves_folds_of_three_data_sets():
    histories = {
        f"{dataset}, fold {k}": history(3, seed=10 * d + k)
        for d, dataset in enumerate(["original", "processed", "processed + synthetic"])
        for k in range(5)
    }
    image = decoded(figures.epoch_curves(histories, "resnet18, paper protocol, 256 px"))
    assert 1000 < image.shape[1] < 1300  # about 10.5 inches at 110 dpi


def test_epoch_curves_one_epoch_a_missing_fold_and_an_undefined_auc():
    one_epoch = pd.read_csv(io.StringIO(HISTORY_CSV))
    undefined = one_epoch.assign(auc=np.nan)  # a fold without positives: AUC is empty in history.csv
    histories = {"original, fold 0": one_epoch, "original, fold 1": undefined, "processed, fold 1": one_epoch}
    assert figures.split_fold_label("processed + synthetic, fold 12") == ("processed + synthetic", 12)
    assert figures.split_fold_label("processed") == ("processed", None)
    decoded(figures.epoch_curves(histories, "one epoch"))


def test_epoch_curves_without_histories_or_values():
    decoded(figures.epoch_curves({}, "nothing yet"))
    decoded(figures.epoch_curves({"empty, fold 0": pd.DataFrame(columns=["epoch", "auc"])}, "no rows"))
    decoded(figures.epoch_curves({"odd": pd.DataFrame({"epoch": [1], "seconds": [2.0]})}, "no metric"))


def test_confusion_matrices_with_and_without_positives():
    matrices = {
        "original": np.array([[950, 20], [15, 5]]),
        "processed": np.array([[900, 70], [10, 10]]),
        "processed + synthetic": np.array([[880, 90], [4, 16]]),
        "no cancer": np.array([[10, 3], [0, 0]]),
    }
    decoded(figures.confusion_matrices(matrices, "resnet18, 256 px"))
    decoded(figures.confusion_matrices({"only one": matrices["original"]}, "one panel"))
    decoded(figures.confusion_matrices({}, "none"))
    with pytest.raises(ValueError, match="shape"):
        figures.confusion_matrices({"bad": np.zeros(3)}, "bad")


def test_confusion_from_metrics_json_structure():
    metrics = {"metrics": {"n": 20, "confusion": {"tn": 1, "fp": 15, "fn": 0, "tp": 4}}}
    expected = np.array([[1, 15], [0, 4]])
    assert (figures.confusion_from_metrics(metrics) == expected).all()
    assert (figures.confusion_from_metrics(metrics["metrics"]) == expected).all()
    with pytest.raises(ValueError, match="confusion"):
        figures.confusion_from_metrics({"metrics": {"n": 3}})


def test_roc_curves_skip_one_class_curves():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1)
    p_with_gap = p.copy()
    p_with_gap[:5] = np.nan
    curves = {
        "resnet18": (y, p),
        "resnet34": (y, p_with_gap),
        "no cancer": (np.zeros(30), rng.uniform(size=30)),
        "no images": (np.array([]), np.array([])),
    }
    decoded(figures.roc_curves(curves, "processed, 256 px"))
    decoded(figures.roc_curves({}, "nothing"))
    with pytest.raises(ValueError, match="labels"):
        figures.roc_curves({"bad": (np.zeros(3), np.zeros(4))}, "bad")


def test_image_grid_of_pngs():
    sheet = figures.confusion_matrices({"a": np.eye(2, dtype=int)}, "a")
    one_row = decoded(figures.image_grid([("stage 16", sheet), ("stage 32", sheet)], 2))
    two_rows = decoded(figures.image_grid([("stage 16", sheet), ("stage 32", sheet), ("stage 64", sheet)], 2))
    assert two_rows.shape[0] > 1.5 * one_row.shape[0]
    with pytest.raises(ValueError, match="PNG"):
        figures.image_grid([("broken", b"not a png")], 2)


# ---------------------------------------------------------------------------------------------- DAG
@pytest.fixture(scope="module")
def real_rulegraph(tmp_path_factory) -> str:
    """The repository's rule graph for the tiny config (one Snakemake run for the whole module). An empty
    working directory is enough: the workflow has no checkpoints, so the graph does not depend on results."""
    config = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
    with pytest.MonkeyPatch.context() as patch:  # Snakemake's SLURM plugin probe: see tests/shims/scontrol
        patch.setenv("PATH", SNAKEMAKE_ENV["PATH"])
        return dag.rulegraph_dot(REPO / "Snakefile", tmp_path_factory.mktemp("workdir"), config)


def test_parse_dot_of_the_real_rulegraph(real_rulegraph):
    assert real_rulegraph.startswith("digraph") and real_rulegraph.rstrip().endswith("}")
    nodes, edges = dag.parse_dot(real_rulegraph)
    rules = set(nodes.values())
    assert {"all", "phantom", "decode", "preprocess", "folds", "train"} <= rules
    assert len(rules) == len(nodes)  # a rule graph: one node per rule
    named = {(nodes[a], nodes[b]) for a, b in edges}
    assert {("preprocess", "train"), ("folds", "train"), ("phantom", "decode"), ("train", "all")} <= named


def test_render_dag_with_graphviz_and_with_matplotlib(real_rulegraph, monkeypatch):
    counts = {"train": 12, "decode": 2}
    png, mime = dag.render_dag(real_rulegraph, counts, engine="matplotlib")
    assert mime == "image/png"
    decoded(png)
    if shutil.which("dot"):
        svg, mime = dag.render_dag(real_rulegraph, counts, engine="graphviz")
        assert mime == "image/svg+xml"
        text = svg.decode()
        assert text.startswith("<svg") and text.rstrip().endswith("</svg>")
        assert "<?xml" not in text and "DOCTYPE" not in text
        assert "train ×12" in text and "decode ×2" in text
    # Without Graphviz, auto falls back to matplotlib and graphviz says why it cannot draw.
    monkeypatch.setattr(dag.shutil, "which", lambda name: None)
    assert dag.render_dag(real_rulegraph)[1] == "image/png"
    with pytest.raises(RuntimeError, match="dot"):
        dag.render_dag(real_rulegraph, engine="graphviz")
    with pytest.raises(ValueError, match="engine"):
        dag.render_dag(real_rulegraph, engine="ascii")


def test_parse_dot_of_a_job_dag_counts_jobs():
    job_dag = r"""digraph snakemake_dag {
    graph[bgcolor=white, margin=0];
    node[shape=box, style=rounded, fontname=sans,                 fontsize=10, penwidth=2];
    edge[penwidth=2, color=grey];
	0[label = "all", color = "0.00 0.6 0.85", style="rounded"];
	1[label = "decode\nshard: 000", color = "0.07 0.6 0.85", style="rounded,dashed"];
	2[label = "decode\nshard: 001", color = "0.07 0.6 0.85", style="rounded"];
	3[label = "gan_stage\nstage: 16", color = "0.33 0.6 0.85", style="rounded"];
	4[label = "gan_stage\nstage: 32", color = "0.33 0.6 0.85", style="rounded"];
	1 -> 0
	2 -> 0
	3 -> 4
	4 -> 0
	4 -> 4
	"x y" -> 0 [color=red];
}
"""
    nodes, edges = dag.parse_dot(job_dag)
    assert Counter(nodes.values()) == {"all": 1, "decode": 2, "gan_stage": 2, "x y": 1}
    assert ("4", "4") in edges and ("x y", "0") in edges
    assert dag.layers(nodes, edges) == {"1": 0, "2": 0, "3": 0, "x y": 0, "4": 1, "0": 2}
    decoded(dag.render_dag(job_dag, {"decode": 2}, engine="matplotlib")[0])
    decoded(dag.render_dag("digraph empty {\n}\n", engine="matplotlib")[0])


def fake_python(tmp_path, script: str) -> str:
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_rulegraph_dot_output_and_failure(tmp_path, monkeypatch):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text("rule all:\n")
    noisy = (
        "echo 'Building DAG of jobs...'\n"
        "echo 'digraph snakemake_dag {'\necho '0[label = \"all\"];'\necho '}   '\n"
    )
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, noisy))
    dot = dag.rulegraph_dot(snakefile, tmp_path, {"path": tmp_path})
    assert dot == 'digraph snakemake_dag {\n0[label = "all"];\n}\n'

    monkeypatch.setattr(
        sys, "executable", fake_python(tmp_path, "echo 'WorkflowError: bad config' >&2\nexit 1\n")
    )
    with pytest.raises(RuntimeError, match="bad config"):
        dag.rulegraph_dot(snakefile, tmp_path, {})
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, "echo 'nothing to draw'\n"))
    with pytest.raises(RuntimeError, match="no graph"):
        dag.rulegraph_dot(snakefile, tmp_path, {})
    with pytest.raises(FileNotFoundError):
        dag.rulegraph_dot(tmp_path / "missing", tmp_path, {})


def test_rulegraph_config_reaches_snakemake_as_json(tmp_path, monkeypatch):
    # The fake interpreter copies the --configfile it is given, to check what Snakemake would read.
    copy = tmp_path / "seen.json"
    script = f'while [ "$1" != "--configfile" ]; do shift; done\ncp "$2" {copy}\necho "digraph g {{}}"\n'
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, script))
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text("")
    dag.rulegraph_dot(snakefile, tmp_path, {"protocols": ["clean", "paper"], "dir": tmp_path})
    assert json.loads(copy.read_text()) == {"protocols": ["clean", "paper"], "dir": str(tmp_path)}

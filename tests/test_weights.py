"""Pretrained files: what a run needs, the DAG stopping when they are missing, cells that load files put in
the weights folder by hand with the network blocked, and the `weights` step fetching from a local hub."""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, SNAKEMAKE_ENV
from store_factory import write_store

from mammoflow.config import load_yaml, merge
from mammoflow.folds import make_folds
from mammoflow.weights import catalog

BASE = load_yaml(REPO / "config.yaml")
TINY = load_yaml(REPO / "tests/config/tiny.yaml")
# Block every internet socket of a process, and write down who tried: a job that catches the error (as
# hub clients do) would otherwise hide its attempt.
SITECUSTOMIZE = """
import os, socket, sys, traceback
_log = os.environ["NETWORK_ATTEMPTS"]
with open(os.environ["NETWORK_GUARDED"], "a") as out:  # which processes ran guarded (the control)
    out.write(" ".join(sys.orig_argv[1:4]) + "\\n")

def _refuse(what, *args):
    with open(_log, "a") as out:
        out.write(f"{os.getpid()} {what} {args!r}\\n" + "".join(traceback.format_stack(limit=8)) + "\\n")
    raise OSError(f"network blocked by the test ({what})")

_connect = socket.socket.connect
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse("connect", address)
    return _connect(self, address)

socket.socket.connect = connect
socket.socket.connect_ex = lambda self, address: connect(self, address)
socket.getaddrinfo = lambda *args, **kwargs: _refuse("getaddrinfo", *args[:2])
socket.create_connection = lambda address, *args, **kwargs: _refuse("create_connection", address)
"""


def _config(**over) -> dict:
    return merge(copy.deepcopy(BASE), over)


def test_what_a_run_needs():
    needed = catalog.needed(_config())
    assert [n.tag for n in needed] == [
        "resnet18.tv_in1k",
        "resnet34.bt_in1k",
        "resnet152.a1h_in1k",
        "efficientnet_b0.ra_in1k",
        "maxvit_nano_rw_256.sw_in1k",
        catalog.INCEPTION_FILE,
        "deit_base_distilled_patch16_224.fb_in1k",  # config.yaml's projected discriminator
        "tf_efficientnet_lite0.in1k",
    ]
    # Per model through model_settings; no GAN without the augmented data set; FID's substitute needs none.
    config = _config(model_settings={"resnet152": {"pretrained": False}}, datasets=["processed"])
    assert "resnet152.a1h_in1k" not in [n.tag for n in catalog.needed(config)]
    assert catalog.inception(config) is None and catalog.inception(_config(gan={"inception": "none"})) is None
    assert catalog.needed(merge(_config(), TINY)) == []  # the test config: random start, no Inception
    projected = catalog.projected(_config(gan={"feature_networks": ["tf_efficientnet_lite0"]}))
    assert [n.tag for n in projected] == ["tf_efficientnet_lite0.in1k"]  # gan.feature_networks decides
    assert catalog.projected(_config(gan={"discriminator": "residual"})) == []
    assert catalog.projected(_config(gan={"feature_weights": "random"})) == []  # on purpose: no files


def test_a_missing_file_is_named_on_one_line(tmp_path):
    config = _config(weights={"folder": str(tmp_path)}, models=["resnet18"], datasets=["processed"])
    (need,) = catalog.needed(config)
    with pytest.raises(catalog.MissingWeights) as missing:
        catalog.require(config, need)
    message = str(missing.value)
    assert "\n" not in message and "timm/resnet18.tv_in1k/model.safetensors" in message
    assert "`snakemake weights`" in message and "by hand" in message
    bin_file = tmp_path / "timm/resnet18.tv_in1k/pytorch_model.bin"  # the hub's other format will do
    bin_file.parent.mkdir(parents=True)
    bin_file.write_bytes(b"x")
    assert catalog.require(config, need) == str(bin_file)


def _snakemake(workdir: Path, config: dict, *args: str, targets=(), env=None) -> subprocess.CompletedProcess:
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    tiny = str(REPO / "tests/config/tiny.yaml")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", *args, "--configfile", tiny, str(configfile), "--", *targets]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env or SNAKEMAKE_ENV)


def test_dry_run_stops_when_pretrained_weights_are_missing(tmp_path):
    """pretrained: true and an empty weights folder: `snakemake -n` fails with the one line; the `weights`
    rule itself still plans (it is what fills the folder)."""
    pretrained = {"train": {"pretrained": True}, "weights": {"folder": str(tmp_path / "empty")}}
    done = _snakemake(tmp_path, pretrained, "-n")
    out = done.stdout + done.stderr
    assert done.returncode != 0
    (line,) = [line for line in out.splitlines() if "pretrained weights missing from" in line]
    assert f"{tmp_path}/empty/: timm/resnet18.tv_in1k/model.safetensors (train resnet18)" in line
    assert "`snakemake weights`" in line
    planned = _snakemake(tmp_path, pretrained, "-n", targets=["weights"])
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "weights        1" in planned.stdout


@pytest.mark.parametrize("preset", ["presets/demo.yaml", "presets/rehearsal.yaml", "tests/config/tiny.yaml"])
def test_the_presets_that_say_so_need_no_weights_folder(tmp_path, preset):
    """`make demo`, the rehearsal and the tests run where no weights can be had: their DAG builds with an
    empty weights folder (random initialisation, FID's substitute, random or no feature networks)."""
    empty = tmp_path / "empty"
    configfile = tmp_path / "empty.yaml"
    configfile.write_text(yaml.safe_dump({"weights": {"folder": str(empty)}}))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
               "-n", "--quiet", "rules", "--configfile", str(REPO / preset), str(configfile)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=SNAKEMAKE_ENV)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def _timm_file(folder: Path, tag: str, kind: str) -> Path:
    """Random weights of ``tag``'s network (3 channels, 1000 classes) in a format a timm hub entry serves."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in timm.create_model(tag, pretrained=False).state_dict().items()}
    path = folder / "timm" / tag / kind
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "model.safetensors":
        save_file(state, str(path), metadata={"format": "pt"})
    else:
        torch.save(state, path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_cells_use_files_put_there_by_hand_with_the_network_blocked(tmp_path):
    folder = tmp_path / "weights"
    files = {
        "resnet18": _timm_file(folder, "resnet18.tv_in1k", "model.safetensors"),
        "efficientnet_b0": _timm_file(folder, "efficientnet_b0.ra_in1k", "pytorch_model.bin"),
    }
    (tmp_path / "site").mkdir()
    (tmp_path / "site/sitecustomize.py").write_text(SITECUSTOMIZE)
    attempts, guarded = tmp_path / "network_attempts.txt", tmp_path / "guarded.txt"
    env = {
        **SNAKEMAKE_ENV,
        "PYTHONPATH": str(tmp_path / "site"),  # the rules put src/ in front of it
        "NETWORK_ATTEMPTS": str(attempts),
        "NETWORK_GUARDED": str(guarded),
        "HF_HUB_OFFLINE": "0",  # nothing may rely on the offline switch: the files must be enough
    }
    config = {
        "weights": {"folder": str(folder)},
        "models": list(files),
        "resolutions": [32],
        "datasets": ["processed"],
        "train": {"pretrained": True},
    }
    # The store and folds written here: only the train rule runs (the data stages have their own tests).
    images = np.random.default_rng(0).integers(0, 255, (24, 32, 32), dtype=np.uint8)
    manifest = write_store(tmp_path / "results/data/32/processed", images, np.arange(24) % 3 == 0)
    make_folds(manifest, 2, 0).to_parquet(tmp_path / "results/data/folds.parquet")
    cells = [f"results/train/clean/32/processed/{m}/fold0/metrics.json" for m in files]
    done = _snakemake(tmp_path, config, "--allowed-rules", "train", targets=cells, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not attempts.exists(), attempts.read_text()
    jobs = [line for line in guarded.read_text().splitlines() if line == "-m mammoflow train"]
    assert len(jobs) == len(cells)  # every job process ran with the network blocked
    for path in cells:
        summary = json.loads((tmp_path / path).read_text())
        weights = files[summary["model"]]
        assert summary["weights"] == f"imagenet:{weights.parent.name}"
        assert summary["pretrained"]["file"] == str(weights)
        assert summary["pretrained"]["sha256"] == _sha256(weights)
        metadata = json.loads((tmp_path / path).with_name("model.json").read_text())
        assert metadata["pretrained"] == summary["pretrained"]
    # The control: the guard catches and notes an attempt.
    probe = "import urllib.request; urllib.request.urlopen('https://huggingface.co', timeout=5)"
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode != 0
    assert "create_connection (('huggingface.co', 443),)" in attempts.read_text()


class _Hub(http.server.BaseHTTPRequestHandler):
    """A local stand-in for huggingface.co and torch-fidelity's release page: real HTTP, real files."""

    files: ClassVar[dict[str, bytes]] = {}

    def log_message(self, *args):
        pass

    def _headers(self, body: bytes | None) -> None:
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", "c0ffee" * 6 + "c0ff")
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.end_headers()

    def do_HEAD(self):
        self._headers(self.files.get(self.path))

    def do_GET(self):
        body = self.files.get(self.path)
        self._headers(body)
        if body is not None:
            self.wfile.write(body)


def test_weights_step_fetches_from_a_hub_and_records_the_manifest(tmp_path):
    """`mammoflow weights` against a local HTTP hub: a timm entry's safetensors downloaded into the folder,
    a file already there kept, an Inception file of the wrong SHA-256 refused and not installed."""
    source = _timm_file(tmp_path / "hub", "resnet18.tv_in1k", "model.safetensors")
    by_hand = _timm_file(tmp_path / "weights", "efficientnet_b0.ra_in1k", "pytorch_model.bin")
    _Hub.files = {
        "/timm/resnet18.tv_in1k/resolve/main/model.safetensors": source.read_bytes(),
        "/inception.pth": b"not the reference network",
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    env = {**SNAKEMAKE_ENV, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    need = [
        {"kind": "timm", "tag": t, "used_by": "test"} for t in ("resnet18.tv_in1k", "efficientnet_b0.ra_in1k")
    ]
    code = (
        "import sys, json; from mammoflow.weights.fetch import fetch_all; "
        "from mammoflow.weights.catalog import Needed; "
        "fetch_all(sys.argv[1], [Needed(**n) for n in json.loads(sys.argv[2])], sys.argv[3])"
    )
    run = [
        sys.executable,
        "-c",
        code,
        str(tmp_path / "weights"),
        json.dumps(need),
        f"{endpoint}/inception.pth",
    ]
    try:
        done = subprocess.run(run, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        manifest = json.loads((tmp_path / "weights/manifest.json").read_text())
        fetched, kept = manifest["files"]
        assert fetched["file"] == "timm/resnet18.tv_in1k/model.safetensors"
        assert fetched["sha256"] == _sha256(source) == _sha256(tmp_path / "weights" / fetched["file"])
        assert fetched["source"].startswith("https://huggingface.co/timm/resnet18.tv_in1k/blob/c0ffee")
        assert kept["sha256"] == _sha256(by_hand) and "by hand" in kept["source"]
        inception = [{"kind": "inception", "tag": catalog.INCEPTION_FILE, "used_by": "test"}]
        refused = subprocess.run(
            [*run[:4], json.dumps(inception), run[-1]], capture_output=True, text=True, env=env
        )
        assert refused.returncode != 0 and "is not the expected 6726825d" in refused.stderr
        assert not (tmp_path / "weights" / catalog.INCEPTION_FILE).exists()
    finally:
        server.shutdown()


def test_report_counts_cells_not_started_from_the_configured_weights(tmp_path):
    from mammoflow import paths
    from mammoflow.report.weights_check import weight_mismatches

    config = _config(models=["resnet18", "resnet34"], model_settings={"resnet34": {"pretrained": False}})

    def started(tag):
        return {
            "weights": f"imagenet:{tag}" if tag else "random",
            "pretrained": {"pretrained": bool(tag), "tag": tag},
        }

    recorded = {
        ("resnet18", 0): started("resnet18.tv_in1k"),
        ("resnet18", 1): started("resnet18.a1_in1k"),
        ("resnet34", 0): started(None),
        # An older cell: its download failed and it trained from random, with a notice.
        ("resnet34", 1): {"weights": "random", "weights_notice": "NOTICE: ..."},
    }  # fmt: skip
    cells = [("clean", 32, "processed", model, fold) for model, fold in recorded]
    for (model, fold), summary in recorded.items():
        path = Path(paths.cell_dir("clean", 32, "processed", model, fold, root=tmp_path)) / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(summary))
    found = weight_mismatches(tmp_path, config, [*cells, ("clean", 32, "processed", "resnet18", 2)])
    assert found["cells"] == 1  # the a1_in1k cell; resnet34 is configured random, both its cells are
    assert found["examples"] == [
        "clean/32/processed/resnet18 fold 1: started from resnet18.a1_in1k, configured: resnet18.tv_in1k"
    ]
    config["model_settings"] = {}  # now resnet34 should be pretrained: its two cells are not
    assert weight_mismatches(tmp_path, config, cells)["cells"] == 3

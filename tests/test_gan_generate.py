"""Using a generator: `mammoflow gan generate`, `synthesize` and `gan-fid` from a published StyleGAN-XL
pickle (a fixture written in its format) and from mammoflow's network.pt files; what they record about
the network; bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from store_factory import write_store

from mammoflow.atomic import file_sha256
from mammoflow.cli import main
from mammoflow.gan.network_io import FORMAT, draw, generator_payload, load_network, to_uint8
from mammoflow.gan.networks import Generator as OldGenerator
from mammoflow.gan.networks import GeneratorSpec
from mammoflow.gan.stylegan_xl import StemConfig, build_stem, grow_generator
from mammoflow.gan.stylegan_xl.pickle_writer import write_network_pickle


def mammoflow(*args, check=True):
    """The command in a fresh process (the entry point as users call it)."""
    done = subprocess.run(
        [sys.executable, "-m", "mammoflow", *map(str, args)], capture_output=True, text=True
    )
    if check and done.returncode:
        raise AssertionError(done.stderr[-3000:])
    return done


def run(capsys, *args) -> tuple[int, str]:
    """The command in this process (no interpreter start-up): (exit code, stderr)."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """A 3-channel StyleGAN-XL pickle (32 px), the same generator as network.pt (format 2), and an
    earlier-format network.pt."""
    folder = tmp_path_factory.mktemp("networks")
    torch.manual_seed(0)
    g = build_stem(
        StemConfig.configured(resolution=16, cbase=64, cmax=8, syn_layers=3, w_dim=16, img_channels=3)
    )
    g = grow_generator(g, 32, head_layers=3).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    pickle_path = write_network_pickle(g, folder / "network-snapshot-000100.pkl")
    pt_path = folder / "network.pt"
    torch.save(generator_payload(g, kimg=0.1), pt_path)
    old = OldGenerator(
        GeneratorSpec(
            (16, 32), cbase=64, cmax=8, syn_layers=2, head_layers=1, z_dim=64, w_dim=16, map_layers=2
        )
    )
    old_path = folder / "old.pt"
    torch.save(
        {"format": FORMAT, "spec": old.spec.to_dict(), "state": old.state_dict(), "kimg": 0.2}, old_path
    )
    return {"generator": g, "pkl": pickle_path, "pt": pt_path, "old": old_path}


def test_generate_writes_raw_images_for_given_latents(networks, tmp_path, capsys):
    z = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    with torch.no_grad():
        want = networks["generator"](torch.from_numpy(z), None, truncation_psi=1).numpy()
    out = tmp_path / "pkl.npy"
    done = mammoflow("gan", "generate", "--network", networks["pkl"], "--latents", tmp_path / "z.npy",
                     "--out", out, "--batch", 2, "--threads", 1)  # fmt: skip
    images = np.load(out)
    assert images.dtype == np.float32 and images.shape == (5, 3, 32, 32)
    # batches of 2 against one of 5: the same sums in another order
    np.testing.assert_allclose(images, want, rtol=0, atol=1e-5)
    assert file_sha256(networks["pkl"])[:12] in done.stderr
    out = tmp_path / "pt.npy"
    assert run(capsys, "gan", "generate", "--network", networks["pt"], "--latents", tmp_path / "z.npy",
               "--out", out, "--batch", 5)[0] == 0  # fmt: skip
    np.testing.assert_array_equal(np.load(out), want)
    out = tmp_path / "old.npy"
    assert run(capsys, "gan", "generate", "--network", networks["old"], "--latents", tmp_path / "z.npy",
               "--out", out)[0] == 0  # fmt: skip
    assert np.load(out).shape == (5, 1, 32, 32)


@pytest.mark.parametrize(
    ("latents", "message"),
    [
        (np.zeros((3, 32), np.float32), "latents of shape (3, 32); the network takes (N, 64)"),
        (np.full((2, 64), np.nan, np.float32), "NaN or infinite"),
        (np.array([{"z": 1}], dtype=object), "not a numpy .npy array of latents"),
    ],
)
def test_bad_latents_get_one_line(networks, tmp_path, capsys, latents, message):
    path = tmp_path / "z.npy"
    np.save(path, latents, allow_pickle=True)
    code, err = run(capsys, "gan", "generate", "--network", networks["pkl"], "--latents", path,
                    "--out", tmp_path / "x.npy")  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert message in err and str(path) in err
    assert not (tmp_path / "x.npy").exists()


def test_load_network_says_which_file(networks):
    for kind, name in (("pkl", "StyleGAN-XL pickle"), ("pt", "mammoflow stage"), ("old", "mammoflow stage")):
        _, payload = load_network(networks[kind])
        source = payload["source"]
        assert source["kind"] == name and source["sha256"] == file_sha256(networks[kind])
        assert source["file"] == networks[kind].name and source["resolution"] == 32


def test_rgb_networks_become_gray_by_luma():
    images = torch.stack([torch.full((2, 2), v) for v in (1.0, -1.0, 0.0)])[None]
    assert to_uint8(images)[0, 0, 0] == round((0.299 - 0.587 + 1) * 127.5)


def test_synthesize_from_a_published_network(networks, tmp_path, capsys):
    out = tmp_path / "synthetic"
    common = ["--protocol", "paper", "--part", "all", "--folds", 2]
    assert (
        run(
            capsys,
            "synthesize",
            "--network",
            networks["pkl"],
            "--res",
            16,
            "--count",
            6,
            "--out",
            out,
            *common,
        )[0]
        == 0
    )
    images = np.load(out / "images.npy")
    assert images.shape == (6, 16, 16) and images.dtype == np.uint8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["network"]["kind"] == "StyleGAN-XL pickle"
    assert summary["network"]["sha256"] == file_sha256(networks["pkl"])
    assert summary["resized"] == "32 -> 16 px (area)" and "published" in summary["published"]["note"]
    assert [s["resolution"] for s in summary["published"]["grown"]] == [16, 32]
    assert len(pd.read_parquet(out / "manifest.parquet")) == 6
    code, err = run(
        capsys,
        "synthesize",
        "--network",
        networks["pkl"],
        "--res",
        64,
        "--count",
        2,
        "--out",
        tmp_path / "big",
        *common,
    )
    assert code == 2 and "a 32 px generator cannot make 64 px images" in err


def test_fid_of_a_published_network(networks, tmp_path, capsys):
    rng = np.random.default_rng(1)
    store = tmp_path / "store"
    write_store(store, rng.integers(0, 255, (8, 16, 16), dtype=np.uint8), np.array([1, 0] * 4))
    folds = tmp_path / "folds.parquet"
    pd.DataFrame({"image_id": 1000 + np.arange(8), "protocol": "paper", "fold": np.arange(8) % 2}).to_parquet(
        folds
    )
    out = tmp_path / "published" / "16px" / "fid.json"
    out.parent.mkdir(parents=True)
    code, err = run(capsys, "gan-fid", "--networks", networks["pkl"], "--stores", store, "--folds", folds,
                    "--protocol", "paper", "--part", "all", "--resolution", 16, "--out", out, "--images", 8,
                    "--batch", 4, "--inception", "none")  # fmt: skip
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["network"]["sha256"] == file_sha256(networks["pkl"]) and report["resolution"] == 16
    assert report["stage"] == 32 and report["metric"] == "substitute-FD"


def test_draw_is_the_same_for_every_kind(networks):
    g, _ = load_network(networks["pt"])
    z = torch.randn(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(draw(g, z), networks["generator"](z, None))

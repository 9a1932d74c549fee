"""StyleGAN-XL network pickles (gan/stylegan_xl/pickle_*.py): read as data, never run.

Fixtures are written by mammoflow's writer in StyleGAN-XL's format (persistence records, EasyDict, the
unused class embedding, tensors as torch pickles them, numpy attributes) with random weights. With
MAMMOFLOW_STYLEGAN_XL pointing to a StyleGAN-XL checkout, the last test builds the paper's network with
StyleGAN-XL's own code and compares images (see its docstring)."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mammoflow.gan.stylegan_xl import StemConfig, build_stem, grow_generator
from mammoflow.gan.stylegan_xl.pickle_network import load_stylegan_xl_pickle
from mammoflow.gan.stylegan_xl.pickle_reader import UnsafePickleError, read_network_pickle
from mammoflow.gan.stylegan_xl.pickle_writer import GlobalName, _Pickler, snapshot_bytes, write_network_pickle

SMALL = dict(cbase=64, cmax=8, syn_layers=3, z_dim=64, w_dim=16)


def random_generator(channels: int, stages: tuple[int, ...], seed: int = 0):
    """A small generator with every weight and buffer away from its initial value (w_avg, magnitudes,
    the input's transform), so that a value read into the wrong place shows."""
    torch.manual_seed(seed)
    g = build_stem(StemConfig.configured(resolution=stages[0], img_channels=channels, **SMALL))
    for res in stages[1:]:
        g = grow_generator(g, res, head_layers=3)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        for name, b in g.named_buffers():
            if name.endswith(("magnitude_ema", "w_avg")):
                b.copy_(torch.rand_like(b) + 0.5)
    return g.eval()


@pytest.fixture(scope="module", params=[1, 3], ids=["gray", "rgb"])
def written(request, tmp_path_factory):
    g = random_generator(request.param, (16, 32, 64), seed=request.param)
    path = write_network_pickle(g, tmp_path_factory.mktemp("pkl") / f"network-snapshot-{request.param}.pkl")
    return g, path


def test_fixture_has_stylegan_xls_structure(written):
    _, path = written
    found = read_network_pickle(path)
    for name in (
        "torch_utils.persistence._reconstruct_persistent_obj",
        "dnnlib.util.EasyDict",
        "torch.nn.modules.sparse.Embedding",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch.storage._load_from_bytes",
        "collections.OrderedDict",
    ):
        assert name in found.globals_seen, name
    assert any("multiarray._reconstruct" in k for k in found.globals_seen)  # in_size / out_size arrays
    assert set(found.data) >= {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs", "progress"}
    g = found.g_ema
    assert g.class_name == "SuperresGenerator"
    assert g.module("mapping").module("embed").qualname == "torch.nn.modules.sparse.Embedding"


def test_round_trip_gives_the_same_generator(written):
    g, path = written
    h, info = load_stylegan_xl_pickle(path)
    assert (info.resolution, info.channels, info.class_name) == (64, g.img_channels, "SuperresGenerator")
    assert [s["resolution"] for s in info.stages] == [16, 32, 64] and info.kimg == 1.0
    mine, read = g.state_dict(), h.state_dict()
    assert mine.keys() == read.keys()
    for k in mine:
        assert torch.equal(mine[k], read[k]), k
    z = torch.randn(2, 64)
    with torch.no_grad():
        for psi in (1.0, 0.6):
            assert torch.equal(g(z, None, truncation_psi=psi), h(z, None, truncation_psi=psi))


def test_unused_class_embedding_is_ignored(written):
    """StyleGAN-XL puts a 1000-class embedding into every mapping network; an unconditional G never uses
    it, so it is read (as an inert record) and left out of the generator."""
    _, path = written
    h, _ = load_stylegan_xl_pickle(path)
    assert not any("embed" in k for k in h.state_dict())


def test_embedded_source_never_runs(tmp_path):
    """Persistence records carry their module's source; StyleGAN's own loader execs it. Here a source
    that would write two marker files is read and the markers do not appear."""
    markers = [tmp_path / "exec_ran", tmp_path / "system_ran"]
    source = textwrap.dedent(f"""
        open({str(markers[0])!r}, "w").write("ran")
        import os
        os.system("touch {markers[1]}")
    """)
    g = random_generator(1, (16,))
    path = write_network_pickle(g, tmp_path / "network-snapshot-000001.pkl", source=source)
    h, _ = load_stylegan_xl_pickle(path)
    assert h.img_resolution == 16
    assert not any(m.exists() for m in markers)
    record = read_network_pickle(path).g_ema
    assert record.source_chars == len(source)


class _Call:
    """An object that pickles as a call of ``func`` (what a hostile ``__reduce__`` does)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda m: _Call(os.system, f"touch {m}"), "system"),
        (lambda m: _Call(builtins.eval, f"open({str(m)!r}, 'w')"), "builtins.eval"),
        (lambda m: _Call(subprocess.check_call, ["touch", str(m)]), "subprocess.check_call"),
        (lambda m: _Call(builtins.exec, f"open({str(m)!r}, 'w')"), "builtins.exec"),
    ],
)
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, call, named):
    marker = tmp_path / "ran"
    g = random_generator(1, (16,))
    data = snapshot_bytes(g, extra={"augment_pipe": call(marker)})
    path = tmp_path / "network-snapshot-evil.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError) as caught:
        load_stylegan_xl_pickle(path)
    message = str(caught.value)
    assert str(path) in message and named in message and "\n" not in message
    assert not marker.exists()
    # The payload is live: unpickled the usual way, it creates the marker (so this test can fail).
    pickle.loads(pickle.dumps(call(marker)))
    assert marker.exists()


def test_discriminator_records_stay_inert(tmp_path):
    """A real snapshot's discriminator is pickled by reference to timm/torch classes, with dill-made code
    objects for its forward hooks and getattr/setattr calls: read as records, nothing built or called."""
    marker = tmp_path / "ran"
    code = GlobalName("dill._dill", "_create_code")
    function = GlobalName("dill._dill", "_create_function")
    hook = _Call(function, _Call(code, 0, 0, b"\x00", f"open({str(marker)!r}, 'w')"), {}, "hook")
    discriminator = _Call(
        GlobalName("pg_modules.discriminator", "ProjectedDiscriminator"),
        _Call(GlobalName("builtins", "getattr"), hook, "__call__"),
        _Call(GlobalName("timm.models.deit", "VisionTransformerDistilled")),
        _Call(GlobalName("dill._dill", "_load_type"), "set"),
    )
    g = random_generator(3, (16, 32))
    path = tmp_path / "network-snapshot-d.pkl"
    path.write_bytes(snapshot_bytes(g, extra={"D": discriminator}))
    h, info = load_stylegan_xl_pickle(path)
    assert info.discriminator == "pg_modules.discriminator.ProjectedDiscriminator"
    assert h.img_resolution == 32 and not marker.exists()
    d = read_network_pickle(path).data["D"]
    assert d.args[0].qualname == "builtins.getattr" and d.args[2] is set


def test_dill_array_records_are_rebuilt(tmp_path):
    """dill stores some numpy arrays as ``_create_array(reconstruct, args, state, None)``."""
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    reconstruct, args, state = array.__reduce__()
    reconstruct_name = GlobalName(reconstruct.__module__, reconstruct.__name__)
    record = _Call(GlobalName("dill._dill", "_create_array"), reconstruct_name, args, state, None)
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=4).dump({"G_ema": None, "x": record})
    path = tmp_path / "arrays.pkl"
    path.write_bytes(buffer.getvalue())
    np.testing.assert_array_equal(read_network_pickle(path).data["x"], array)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle at all", "not a readable network pickle"),
        (pickle.dumps([1, 2, 3]), "a pickle of list"),
        (pickle.dumps({"G_ema": {"weight": 1}}), "no StyleGAN generator under 'G_ema'"),
    ],
)
def test_other_files_get_one_clear_line(tmp_path, content, message):
    path = tmp_path / "network.pkl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as caught:
        load_stylegan_xl_pickle(path)
    assert str(path) in str(caught.value)


def test_truncated_file_is_refused(written, tmp_path):
    _, path = written
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable network pickle"):
        load_stylegan_xl_pickle(cut)


REFERENCE_SCRIPT = """
import copy, os, pickle, sys
import numpy as np, torch
checkout, out, channels = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.chdir(checkout); sys.path.insert(0, checkout)
import dnnlib, legacy
torch.manual_seed(channels)
common = dict(c_dim=0, img_channels=channels)
stem = dnnlib.EasyDict(class_name="training.networks_stylegan3_resetting.Generator", z_dim=64, w_dim=512,
    mapping_kwargs=dnnlib.EasyDict(rand_embedding=False, num_layers=2), channel_base=16384 * 2,
    channel_max=256 * 2, magnitude_ema_beta=0.5 ** (64 / 20e3), conv_kernel=3, use_radial_filters=False,
    num_layers=7)
heads = [(32, 2), (256, 8)]
path = None
for i, (res, up) in enumerate([(16, 1), *heads]):
    if i == 0:
        G = dnnlib.util.construct_class_by_name(**stem, **common, img_resolution=res)
    else:
        G = dnnlib.util.construct_class_by_name(
            class_name="training.networks_stylegan3_resetting.SuperresGenerator", path_stem=path,
            head_layers=4, up_factor=up, **common, img_resolution=res)
    G = G.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(i)
    with torch.no_grad():  # away from the initialisation, so that every tensor matters
        for p in G.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05 * (p.std() if p.numel() > 1 else 1))
        for name, b in G.named_buffers():
            if name.endswith(("magnitude_ema", "w_avg")):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
        G.synthesis.input.affine.weight.add_(torch.randn(G.synthesis.input.affine.weight.shape, generator=g))
    path = os.path.join(out, f"network-snapshot-{res}.pkl")
    with open(path, "wb") as f:
        pickle.dump(dict(G=G, D=None, G_ema=copy.deepcopy(G), augment_pipe=None, training_set_kwargs={}), f)
z = torch.from_numpy(np.load(os.path.join(out, "z.npy")))
with open(path, "rb") as f:
    G = legacy.load_network_pkl(f)["G_ema"]
with torch.no_grad():
    images = G(z, torch.zeros(len(z), 0), truncation_psi=1, noise_mode="const")
np.save(os.path.join(out, "images.npy"), images.numpy())
"""


@pytest.mark.parametrize("channels", [1, 3])
def test_stylegan_xls_own_pickle_gives_its_images(tmp_path, channels):
    """The delivery check, run where MAMMOFLOW_STYLEGAN_XL names a StyleGAN-XL checkout (its imports -
    dnnlib, legacy, click, dill for its class-embedding file - importable by this Python, with
    MAMMOFLOW_STYLEGAN_XL_PATH added to its path if needed): StyleGAN-XL's own code builds the paper's
    network (stem 16 px with 7 layers, heads to 32 (up 2) and 256 (up 8) with 4 layers, Table 1's
    widths doubled as its train.py does, z 64, w 512, 2 mapping layers, unconditional) with random
    weights, pickles it with its persistence code, and draws images for fixed z on the CPU (its reference
    ops); mammoflow reads the pickle and draws the same z: max |difference| <= 1e-4."""
    checkout = os.environ.get("MAMMOFLOW_STYLEGAN_XL")
    if not checkout:
        pytest.skip("MAMMOFLOW_STYLEGAN_XL (a StyleGAN-XL checkout) is not set")
    np.save(tmp_path / "z.npy", np.random.default_rng(5).standard_normal((3, 64)).astype(np.float32))
    script = tmp_path / "reference.py"
    script.write_text(REFERENCE_SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [checkout, os.environ.get("MAMMOFLOW_STYLEGAN_XL_PATH")])),
    }
    subprocess.run(
        [sys.executable, str(script), checkout, str(tmp_path), str(channels)],
        check=True,
        env=env,
        timeout=1200,
    )
    generator, info = load_stylegan_xl_pickle(tmp_path / "network-snapshot-256.pkl")
    assert [(s["resolution"], s["layers"], s["up_factor"]) for s in info.stages] == [
        (16, 7, 1),
        (32, 4, 2),
        (256, 4, 8),
    ]
    with torch.no_grad():
        mine = generator(torch.from_numpy(np.load(tmp_path / "z.npy")), None, truncation_psi=1).numpy()
    theirs = np.load(tmp_path / "images.npy")
    assert mine.shape == theirs.shape == (3, channels, 256, 256)
    assert np.abs(mine - theirs).max() <= 1e-4

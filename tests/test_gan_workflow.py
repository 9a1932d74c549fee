"""The GAN rules in the DAG (dry runs): which jobs each protocol adds, and configs that cannot work."""

import subprocess
import sys

from conftest import REPO, SNAKEMAKE_ENV


def dry_run(workdir, *overrides, printed=False):
    """(the dry run, jobs per rule); ``printed``: with each job's shell command in stdout."""
    files = [str(REPO / "tests/config/tiny.yaml")]
    for i, text in enumerate(overrides):
        path = workdir / f"override{i}.yaml"
        path.write_text(text)
        files.append(str(path))
    shown = ["-p"] if printed else ["--quiet", "rules"]
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "-n", *shown, "--configfile", *files]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=SNAKEMAKE_ENV)
    jobs = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return done, jobs


def test_gan_jobs_per_protocol(tmp_path):
    done, jobs = dry_run(tmp_path, "protocols: [clean, paper]\n")
    assert done.returncode == 0, done.stderr[-3000:]
    # clean: 2 folds x stages 16, 32, 64; paper: one GAN on all positives. FID: one job per GAN.
    assert jobs["gan_stage"] == 2 * 3 + 3
    assert jobs["gan_fid"] == 2 + 1
    assert jobs["synthesize"] == 2 * 2 + 2  # (2 folds + 1) x resolutions 32, 64
    done, jobs = dry_run(tmp_path, "datasets: [original, processed]\n")
    assert done.returncode == 0 and not {"gan_stage", "gan_fid", "synthesize"} & set(jobs)
    # Stages past the largest resolution's are not run.
    done, jobs = dry_run(tmp_path, "resolutions: [32]\n")
    assert done.returncode == 0 and jobs["gan_stage"] == 2 * 2 and jobs["synthesize"] == 2


def test_gan_configs_that_cannot_work_fail_at_start(tmp_path):
    done, _ = dry_run(tmp_path, "gan:\n  stages: [16, 32]\n  kimg: [1, 1]\n")
    assert done.returncode != 0 and "never reach 64 px" in done.stdout + done.stderr
    done, _ = dry_run(tmp_path, "gan:\n  stages: [16, 48, 64]\n")
    assert done.returncode != 0 and "powers of two" in done.stdout + done.stderr


def test_projected_stages_get_their_feature_network_files(tmp_path):
    """Each feature network's weights file is an input of every gan_stage job and reaches its command line;
    without the files the DAG does not build; random features need none (and pass none)."""
    import re

    names = ("deit_base_distilled_patch16_224", "tf_efficientnet_lite0")
    folder = tmp_path / "weights"
    projected = (
        f"gan:\n  discriminator: projected\n  feature_weights: pretrained\nweights:\n  folder: {folder}\n"
    )
    done, _ = dry_run(tmp_path, projected)
    output = done.stdout + done.stderr
    assert done.returncode != 0, "the DAG built without the feature networks' weights"
    files = {n: re.search(rf"(timm/{n}\.\S*/model\.safetensors)", output) for n in names}
    assert all(files.values()), output[-3000:]  # the error names each missing file
    for match in files.values():
        (folder / match.group(1)).parent.mkdir(parents=True, exist_ok=True)
        (folder / match.group(1)).write_bytes(b"")
    done, jobs = dry_run(tmp_path, projected, printed=True)
    assert done.returncode == 0, done.stderr[-3000:]
    stage_commands = [line for line in done.stdout.splitlines() if "gan-stage" in line]
    assert len(stage_commands) == jobs["gan_stage"] == 2 * 3
    for name, match in files.items():
        assert all(f"--feature-weights {name}={folder / match.group(1)}" in c for c in stage_commands)
    done, _ = dry_run(tmp_path, "gan:\n  discriminator: projected\n  feature_weights: random\n", printed=True)
    assert done.returncode == 0 and "--feature-weights" not in done.stdout


def test_a_published_network_replaces_the_stages(tmp_path):
    """gan.network: the synthetic stores are drawn from that file (no stage is trained), and its FID is
    computed once per resolution; a map must cover the run's resolutions, and the file must exist."""
    import torch

    from mammoflow.gan.stylegan_xl import StemConfig, build_stem, grow_generator
    from mammoflow.gan.stylegan_xl.pickle_writer import write_network_pickle

    torch.manual_seed(0)
    stem = build_stem(StemConfig.configured(resolution=16, cbase=64, cmax=8, syn_layers=3, w_dim=16))
    network = write_network_pickle(grow_generator(stem, 64, 3), tmp_path / "network-snapshot-000400.pkl")
    done, jobs = dry_run(tmp_path, "protocols: [clean, paper]\n", f"gan:\n  network: {network}\n")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not {"gan_stage", "gan_fid"} & set(jobs)
    assert jobs["gan_fid_published"] == 2 and jobs["synthesize"] == 2 * 2 + 2
    done, jobs = dry_run(tmp_path, f"gan:\n  network: {{32: {network}, 64: {network}}}\n")
    assert done.returncode == 0 and jobs["gan_fid_published"] == 2
    done, _ = dry_run(tmp_path, f"gan:\n  network: {{64: {network}}}\n")
    assert "gan.network names resolutions [64], the run has [32, 64]" in done.stdout + done.stderr
    done, _ = dry_run(tmp_path, f"gan:\n  network: {tmp_path / 'missing.pkl'}\n")
    assert done.returncode != 0 and "missing.pkl is not a file" in done.stdout + done.stderr

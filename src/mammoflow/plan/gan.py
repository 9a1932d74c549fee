"""The GAN stages a run needs, and what each stage job reads and may take (gan.smk's input functions and
resources).

The `augmented` data set is processed + synthetic positives from the GAN stages. `clean`: a GAN per fold,
trained only on that fold's training positives, its images used only in that fold's training set. `paper`:
one GAN on all positives, its images split into the folds (so they reach validation).

``gan.network``: a published StyleGAN-XL pickle (or a stage's network.pt), one path or a path per resolution,
that the synthetic positives are drawn from instead of trained stages (then no stage runs).
"""

from __future__ import annotations

from pathlib import Path

from mammoflow import paths
from mammoflow.gan.settings import needed_stages, source_resolution, synthesis_stage


class GanPlan:
    def __init__(self, config: dict):
        self.gan = config["gan"]
        self.resolutions = list(config["resolutions"])
        self.k = int(config["folds"]["k"])
        self.on = "augmented" in config["datasets"]
        # ValueError (stages that never reach a resolution, a published network that is not there) is the
        # config's problem: the driver says so.
        self.networks = self._published() if self.on else {}
        trained = self.on and not self.networks
        self.stages = needed_stages(self.resolutions, self.gan["stages"]) if trained else []
        self.fid_stages = self.stages or list(self.gan["stages"])

    def _published(self) -> dict[int, str]:
        given = self.gan.get("network") or {}
        if not given:
            return {}
        given = given if isinstance(given, dict) else dict.fromkeys(self.resolutions, given)
        networks = {int(res): str(path) for res, path in given.items()}
        if sorted(networks) != sorted(self.resolutions):
            named = sorted(networks)
            raise ValueError(f"gan.network names resolutions {named}, the run has {self.resolutions}")
        for path in sorted(set(networks.values())):
            if not Path(path).is_file():
                raise ValueError(f"gan.network: {path} is not a file")
        return networks

    def synthesis_network(self, w) -> str:
        """The network a synthetic store is drawn from: the published one, or the stage serving its size."""
        if self.networks:
            return self.networks[int(w.res)]
        stage = synthesis_stage(int(w.res), self.gan["stages"])
        return f"{paths.gan_stage_dir(w.protocol, w.part, stage)}/network.pt"

    @staticmethod
    def published_fid(res) -> str:
        """FID of the published network at one resolution (against every positive of its store)."""
        return f"{paths.gan_dir('published', f'{res}px')}/fid.json"

    def parts(self, protocol: str) -> list[str]:
        """The GANs of a protocol: one per fold (clean) or one on all positives (paper)."""
        return [paths.gan_part(protocol, k) for k in range(self.k)] if protocol == "clean" else ["all"]

    def source_store(self, stage) -> str:
        """The processed store a stage's real positives come from."""
        return paths.store_dir(source_resolution(int(stage), self.resolutions), "processed")

    def stage_index(self, stage: int) -> int:
        if stage not in self.gan["stages"]:
            raise ValueError(f"there is no GAN stage {stage}: gan.stages is {self.gan['stages']}")
        return self.gan["stages"].index(stage)

    def previous_network(self, w) -> list[str]:
        """Input function: the network of the stage before ``w.stage`` (none for the first)."""
        i = self.stage_index(int(w.stage))
        stages = self.gan["stages"]
        return [f"{paths.gan_stage_dir(w.protocol, w.part, stages[i - 1])}/network.pt"] if i else []

    def stage_minutes(self, w) -> int:
        """A generous SLURM limit; a stage that hits it resumes from its last checkpoint when re-run."""
        stage = int(w.stage)
        kimg = self.gan["kimg"][self.stage_index(stage)]
        return int(30 + kimg * max((stage / 256) ** 2, 1 / 16) * 10 / 60 * 3)

    def synthetic_store(self, protocol: str, res, fold) -> str:
        """The synthetic positives a cell of ``fold`` trains with (paper: the one GAN's)."""
        return paths.synthetic_dir(protocol, res, paths.gan_part(protocol, fold))

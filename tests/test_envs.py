"""envs/*.yaml (conda environments per stage) agree with pyproject.toml's dependencies.

Every package an environment names is a dependency of the project, with the same version bounds where
both give some; every dependency of the project is in at least one environment (Snakemake and its
executor plugins excepted: they run the workflow, not its jobs); Python agrees with requires-python.
"""

import tomllib

import pytest
import yaml
from conftest import REPO
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ENVS = sorted((REPO / "envs").glob("*.yaml"))
# conda-forge names of PyPI packages, where they differ.
CONDA_NAMES = {"pytorch": "torch", "py-opencv": "opencv-python-headless", "matplotlib-base": "matplotlib"}
# The conda environment's own tools, not the project's dependencies.
TOOLING = {"python", "pip"}
# Dependencies that run the workflow rather than its jobs.
RUNNER = ("snakemake",)


def _project():
    """pyproject's runtime dependencies (the main list and optional groups other than test/dev), by name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for group, extra in project.get("optional-dependencies", {}).items():
        if group not in ("test", "dev", "docs", "lint"):
            listed += extra
    requirements = [Requirement(line) for line in listed]
    return {canonicalize_name(r.name): r for r in requirements}, SpecifierSet(project["requires-python"])


def _env_requirements(path):
    """Conda and pip entries of one environment file as requirements (PEP 508 syntax in both lists)."""
    spec = yaml.safe_load(path.read_text())
    assert spec.get("channels"), f"{path.name}: no channels"
    entries = []
    for item in spec["dependencies"]:
        if isinstance(item, dict):
            assert set(item) == {"pip"}, f"{path.name}: unexpected {sorted(item)}"
            entries += [("pip", line) for line in item["pip"]]
        else:
            entries.append(("conda", item))
    requirements = []
    for source, line in entries:
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            pytest.fail(f"{path.name}: {line!r} is not NAME or NAME>=VERSION ({error})")
        name = canonicalize_name(requirement.name)
        if source == "conda":
            name = CONDA_NAMES.get(name, name)
        requirements.append((name, requirement))
    return requirements


def test_there_are_environments():
    assert {p.stem for p in ENVS} >= {"data", "train", "gan"}


@pytest.mark.parametrize("path", ENVS, ids=[p.name for p in ENVS])
def test_environment_names_only_project_dependencies(path):
    project, requires_python = _project()
    seen = set()
    for name, requirement in _env_requirements(path):
        assert name not in seen, f"{path.name}: {name} listed twice"
        seen.add(name)
        if name == "python":
            assert requirement.specifier == requires_python, (
                f"{path.name}: python{requirement.specifier}, pyproject requires-python {requires_python}"
            )
            continue
        if name in TOOLING:
            continue
        assert name in project, f"{path.name}: {name} is not a dependency in pyproject.toml"
        theirs = project[name].specifier
        if str(requirement.specifier) and str(theirs):
            assert requirement.specifier == theirs, (
                f"{path.name}: {name}{requirement.specifier}, pyproject.toml says {name}{theirs}"
            )
    assert "python" in seen and "pip" in seen, f"{path.name}: name python and pip"


def test_every_dependency_is_in_an_environment():
    project, _ = _project()
    covered = {name for path in ENVS for name, _ in _env_requirements(path)}
    missing = sorted(n for n in project if n not in covered and not n.startswith(RUNNER))
    assert not missing, f"in pyproject.toml but in no envs/*.yaml: {missing}"

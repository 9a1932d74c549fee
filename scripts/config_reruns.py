"""What changing one configuration key re-runs, found by asking Snakemake itself.

For each key, the DAG is built twice in an empty folder (every job to run): once with the configuration as
shipped, once with that key changed. A job re-runs when its parameters or its input files differ between
the two (Snakemake's `params` and `input` triggers; the code and software-environment triggers do not
depend on the configuration), or when it is new, and so does every job downstream of it. Threads,
`mem_mb` and runtimes are not triggers: changing them re-runs nothing.

The analysis runs on a smaller matrix than `config.yaml`'s (2 folds, 2 decode shards, 2 models) so that
the ~150 DAGs take a minute or two; which rules and which data sets, models or resolutions re-run does not
depend on the matrix's size. config_reference.py writes the result into docs/configuration.md.
"""

from __future__ import annotations

import copy
import logging
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALLER = {"folds": {"k": 2}, "decode": {"shards": 2}, "models": ["resnet18", "resnet34"]}
# The keys a generic change cannot make valid (or meaningful): the change each gets instead.
SPECIAL = {
    "rsna_dir": "RSNA",  # a sample sheet in the scratch folder (see _scratch)
    "resolutions": [256],
    "models": ["resnet18"],
    "gan.stages": [16, 64, 256, 512],
    "gan.kimg": [1000, 1000, 1000, 500],
    "gan.network": "published.pkl",
    "gan.inception": "none",
    "gan.feature_networks": ["tf_efficientnet_lite0"],
    "weights.folder": "WEIGHTS",  # another folder in the scratch folder (see analyse)
    "weights.timm": {"resnet18": "resnet18.a1_in1k"},  # timm's default tag today
    "cam.models": ["resnet18"],
    "model_settings": {"resnet18": {"lr": 2.0e-4}},
    "predict.data": {"unseen": "unseen", "other": "other"},
    "predict.protocol": "paper",
    "predict.resolution": 256,
    "predict.models": ["all"],
}
# Keys whose change the shipped configuration refuses by itself: both DAGs are built with this laid over
# it, and the reference says so.
CONTEXT = {
    "train.keep_weights": {
        "cam": {"models": ["resnet18"]},
        "model_settings": {"resnet18": {"keep_weights": True}},
    },
}
# Under predict: the base also names a folder to predict and asks for predict_all.
PREDICT_BASE = {"predict": {"data": {"unseen": "unseen"}}}


@dataclass(frozen=True)
class Job:
    rule: str
    wildcards: tuple[tuple[str, str], ...]


@dataclass
class Dag:
    jobs: dict[Job, tuple[str, frozenset[str]]]  # params (as text) and input files, per job
    downstream: dict[Job, set[Job]]  # the jobs that read each job's outputs
    order: list[str]  # rules, upstream first


def _scratch(folder: Path) -> None:
    """Files a DAG of the changed keys needs in the empty run folder: a published network, a folder to
    predict and a small RSNA sample sheet (the pretrained files: _stand_in_weights)."""
    (folder / "published.pkl").touch()
    for name in ("unseen", "other"):
        (folder / name).mkdir(exist_ok=True)
    sheet = folder / "RSNA" / "train.csv"
    sheet.parent.mkdir(exist_ok=True)
    rows = ["site_id,patient_id,image_id,laterality,view,age,cancer,biopsy,invasive,BIRADS,implant,density,"
            "machine_id,difficult_negative_case"]  # fmt: skip
    for patient in range(1, 9):
        for k, (side, view) in enumerate([("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]):
            cancer = int(patient <= 4 and side == "L")
            rows.append(f"1,{patient},{patient * 10 + k},{side},{view},60,{cancer},0,0,,0,B,49,False")
    sheet.write_text("\n".join(rows) + "\n")


def _stand_in_weights(overrides: dict) -> None:
    """An empty file for each pretrained file the configuration needs, in its weights folder (the DAG build
    checks that they exist; their content does not matter to it)."""
    sys.path.insert(0, str(REPO / "src"))
    from mammoflow.config import load_yaml
    from mammoflow.weights import catalog

    config = merged(load_yaml(REPO / "config.yaml"), overrides)
    for need in catalog.needed(config):
        if need.kind != "file":
            path = catalog.folder(config, REPO) / need.candidates[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


def build(folder: Path, overrides: dict, targets: list[str]) -> Dag:
    """The DAG of every job (as with --forceall) for config.yaml with ``overrides`` laid over it."""
    _stand_in_weights(overrides)
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
    )

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[REPO / "config.yaml"], config=overrides),
            snakefile=REPO / "Snakefile",
            workdir=folder,
        )
        workflow_api.dag(DAGSettings(forceall=True, targets=set(targets)))
        workflow = workflow_api._workflow  # the API builds a DAG only to run or print it
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        dag = workflow.dag
        jobs, downstream, edges = {}, defaultdict(set), defaultdict(set)
        for job in dag.jobs:
            key = Job(job.rule.name, tuple(sorted((k, str(v)) for k, v in job.wildcards_dict.items())))
            params = repr(sorted((k, str(v)) for k, v in job.params.items()))
            jobs[key] = (params, frozenset(str(f) for f in job.input))
            for dependency in dag.dependencies[job]:
                upstream = Job(
                    dependency.rule.name,
                    tuple(sorted((k, str(v)) for k, v in dependency.wildcards_dict.items())),
                )
                downstream[upstream].add(key)
                edges[dependency.rule.name].add(job.rule.name)
    return Dag(jobs, dict(downstream), _rule_order(edges, {j.rule for j in jobs}))


def _rule_order(edges: dict[str, set[str]], rules: set[str]) -> list[str]:
    order, placed = [], set()
    while len(placed) < len(rules):
        ready = sorted(r for r in rules - placed if not any(r in edges[u] for u in rules - placed if u != r))
        order.extend(ready or sorted(rules - placed))
        placed.update(ready or rules - placed)
    return order


def merged(base: dict, change: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def nested(dotted: str, value) -> dict:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def affected(base: Dag, changed: Dag) -> tuple[set[Job], set[Job]]:
    """The jobs that re-run (changed, new, or downstream of either) and the jobs that are gone."""
    direct = {j for j, info in changed.jobs.items() if base.jobs.get(j) != info}
    reruns, todo = set(direct), list(direct)
    while todo:
        for job in changed.downstream.get(todo.pop(), ()):
            if job not in reruns:
                reruns.add(job)
                todo.append(job)
    gone = set(base.jobs) - set(changed.jobs)
    ignored = {"all", "predict_all"}
    return {j for j in reruns if j.rule not in ignored}, {j for j in gone if j.rule not in ignored}


def describe(base: Dag, changed: Dag, reruns: set[Job], gone: set[Job]) -> str:
    """One line: the rules that re-run (restricted to the wildcard values concerned), upstream first."""
    if not reruns and not gone:
        return "nothing"
    every = defaultdict(set)
    for job in [*base.jobs, *changed.jobs]:
        every[job.rule].add(job)
    parts = []
    for rule in [*changed.order, *(r for r in base.order if r not in changed.order)]:
        mine = {j for j in reruns if j.rule == rule}
        if mine:
            parts.append(f"`{rule}`" + _restriction(mine, {j for j in every[rule] if j in changed.jobs}))
        if any(j.rule == rule for j in gone):
            left = any(j.rule == rule for j in changed.jobs)
            parts.append(f"fewer `{rule}` jobs" if left else f"no `{rule}` job")
    return ", ".join(parts)


def _restriction(mine: set[Job], rule_jobs: set[Job]) -> str:
    if mine >= rule_jobs:
        return ""
    values, own = defaultdict(set), defaultdict(set)
    for job in rule_jobs:
        for k, v in job.wildcards:
            values[k].add(v)
    for job in mine:
        for k, v in job.wildcards:
            own[k].add(v)
    narrower = [f"{k} {', '.join(sorted(own[k], key=_natural))}" for k in own if own[k] < values[k]]
    return f" ({'; '.join(narrower)})" if narrower else " (some)"


def _natural(value: str):
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def analyse(changes: dict[str, object]) -> dict[str, str]:
    """{dotted key: what changing it re-runs} for every key of ``changes`` (key -> its changed value)."""
    logging.getLogger("snakemake").setLevel(logging.ERROR)
    found, failed = {}, []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        _scratch(folder)
        bases: dict[str, Dag] = {}
        for key, value in changes.items():
            on_predict = key.startswith("predict.")
            start = merged(merged(SMALLER, PREDICT_BASE) if on_predict else SMALLER, CONTEXT.get(key, {}))
            start = merged(start, {"weights": {"folder": str(folder / "weights")}})  # not the checkout's
            targets = ["all", "predict_all"] if on_predict else ["all"]
            context = repr((on_predict, CONTEXT.get(key)))
            try:
                if context not in bases:
                    bases[context] = build(folder, start, targets)
                if key == "rsna_dir":
                    value = str(folder / "RSNA")
                if key == "weights.folder":
                    value = str(folder / "other-weights")
                changed = build(folder, merged(start, nested(key, value)), targets)
            except Exception as error:  # Snakemake's WorkflowError and the rest: each key's own line
                failed.append(f"{key} = {value!r}: {str(error).strip().splitlines()[-1]}")
                continue
            found[key] = describe(bases[context], changed, *affected(bases[context], changed))
            if key in CONTEXT:
                found[key] += f" (with {_flat(CONTEXT[key])})"
    if failed:
        raise SystemExit(
            "changes Snakemake refused (give the key a valid one in SPECIAL):\n" + "\n".join(failed)
        )
    return found


def _flat(overrides: dict, path: str = "") -> str:
    parts = []
    for key, value in overrides.items():
        name = f"{path}.{key}" if path else key
        parts.append(_flat(value, name) if isinstance(value, dict) else f"`{name}: {value}`")
    return ", ".join(parts)

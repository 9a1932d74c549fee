"""The configuration is checked once, before anything runs, with one line per problem naming the key."""

import copy

import pytest
import yaml
from conftest import REPO
from test_workflow import _dry_run_jobs, snakemake

from mammoflow.config import coerce, load_yaml, merge, problems

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
BASE = load_yaml(REPO / "config.yaml")


def _problems(over: dict) -> list[str]:
    return problems(merge(copy.deepcopy(BASE), over), SCHEMA)


def test_the_shipped_configs_are_valid():
    assert _problems({}) == []
    for preset in [*(REPO / "presets").glob("*.yaml"), REPO / "tests/config/tiny.yaml"]:
        assert _problems(load_yaml(preset)) == [], preset


def test_text_from_the_command_line_becomes_numbers_where_the_schema_says_so():
    # `--config decode='{shards: 4, strict: true}'` arrives as YAML base-loader text.
    config = {"decode": {"shards": "4", "strict": "true", "decoders": ["pydicom"]}, "rsna_dir": "123"}
    coerce(config, load_yaml(SCHEMA))
    assert config == {"decode": {"shards": 4, "strict": True, "decoders": ["pydicom"]}, "rsna_dir": "123"}
    assert _problems({"decode": {"shards": "four"}}) == ["decode.shards: 'four' is not of type 'integer'"]
    assert _problems({"cam": {"models": "null"}, "gan": {"r1_gamma": "0.5"}}) == []


def test_problems_the_schema_cannot_express():
    assert _problems({"preprocess": {"fallback_percentiles": [99, 1]}}) == [
        "preprocess.fallback_percentiles: [99, 1] must rise (low percentile first)"
    ]
    (problem,) = _problems({"decode": {"working_size": 400}})
    assert problem.startswith("decode.working_size: 400 is below the largest resolution 512")
    assert _problems({"models": ["resnet18", "resnet1B"]}) == [
        "models: 'resnet1B' is not a timm model (timm.list_models('*resn*') lists names)"
    ]
    assert _problems({"gan": {"kimg": [1, 2]}}) == ["gan.kimg: 2 lengths for 4 gan.stages (one each)"]
    assert _problems({"datasets": ["augmented"]}) == [
        "datasets: augmented is processed + synthetic images, so it needs processed as well"
    ]


def test_models_without_weights_cannot_be_explained_or_applied():
    drop = {"model_settings": {"resnet152": {"keep_weights": False}}}
    assert _problems({**drop, "cam": {"models": ["resnet18"]}}) == []
    assert _problems({**drop, "cam": {"models": None}}) == [
        "cam.models: ['resnet152'] keep no weights (keep_weights: false), so they cannot be explained; "
        "cam.models is null (every model): list the models to explain"
    ]
    assert _problems({**drop, "cam": {"models": ["resnet18"]}, "predict": {"models": ["resnet152"]}}) == [
        "predict.models: ['resnet152'] keep no weights (keep_weights: false), so they cannot be applied"
    ]


def test_how_cells_run_is_set_for_all_of_them_not_per_model():
    assert _problems({"model_settings": {"resnet18": {"threads": 2, "checkpoint_minutes": 5}}}) == [
        "model_settings.resnet18.threads: set in train only (it is how every cell runs, not a setting of a "
        "model)",
        "model_settings.resnet18.checkpoint_minutes: set in train only (it is how every cell runs, not a "
        "setting of a model)",
    ]


def test_non_finite_numbers_fail_at_the_config_check(tmp_path):
    """YAML's .nan and .inf are numbers to JSON Schema, and NaN passes every range: each is named once."""
    assert _problems(yaml.safe_load("train: {lr: .nan}\ngan: {kimg: [1, .inf, 1, 1]}")) == [
        "train.lr: nan is not a finite number",
        "gan.kimg.1: inf is not a finite number",
    ]
    assert _problems({"model_settings": {"resnet18": {"weight_decay": float("-inf")}}}) == [
        "model_settings.resnet18.weight_decay: -inf is not a finite number"
    ]
    # From the command line (text, turned into a number by the schema's type first), at `snakemake -n`.
    done = snakemake(tmp_path, "-n", "--config", "train={lr: .nan}", check=False)
    assert done.returncode != 0 and "train.lr: nan is not a finite number" in done.stdout + done.stderr


def test_the_old_data_section_says_where_the_key_went():
    found = problems({"data": {"rsna_dir": "/x"}}, SCHEMA)
    assert found == ["data.rsna_dir: moved to the top-level key rsna_dir (snakemake --config rsna_dir=DIR)"]


def test_defaults_live_in_config_yaml_alone():
    """The schema says what a key may be; config.yaml says what it is. Every key has a value there."""
    schema = yaml.safe_load(SCHEMA.read_text())
    assert "default:" not in SCHEMA.read_text()

    def keys(node, prefix=""):
        for name, sub in node.get("properties", {}).items():
            if "$ref" in sub:
                sub = schema["$defs"][sub["$ref"].split("/")[-1]]
            yield prefix + name
            yield from keys(sub, prefix + name + ".")

    def has(config, dotted):
        for part in dotted.split("."):
            if not isinstance(config, dict) or part not in config:
                return False
            config = config[part]
        return True

    assert [k for k in keys(schema) if not has(BASE, k)] == []


@pytest.mark.slow
def test_nested_numbers_on_the_command_line(tmp_path):
    jobs = _dry_run_jobs(tmp_path, "--config", "decode={shards: 3, working_size: 256}")
    assert jobs["decode"] == 3
    bad = snakemake(tmp_path, "-n", "--config", "preprocess={fallback_percentiles: [99, 1]}", check=False)
    assert bad.returncode != 0
    assert "preprocess.fallback_percentiles: [99, 1] must rise" in bad.stdout + bad.stderr

"""The configuration, checked once before anything runs: one line per problem, naming the key.

The values live in one place, the workflow's ``config.yaml`` (the paper's experiment); presets and a user's
files are laid over it by Snakemake (mappings merge, lists replace). The schema says what each key may be,
not what it is by default. Three kinds of problem are found here, before the DAG is built:

1. values that arrived as text from the command line: ``--config decode='{shards: 4}'`` reaches the
   workflow as ``{"shards": "4"}`` (Snakemake parses nested values with YAML's base loader); such text is
   turned into the number or boolean the schema asks for, and is an error only when it is not one;
2. what the schema says (types, ranges, unknown keys);
3. what it cannot say: percentile pairs that fall, a working size below the largest resolution, unknown
   model names, GAN stage lists that do not fit, the old ``data.rsna_dir`` form.

Standard library, PyYAML and jsonschema only (Snakemake's own dependencies), so a plain Snakemake without
mammoflow's other dependencies can run it.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jsonschema
import yaml

from mammoflow.matrix import RUN_ONLY_TRAIN_KEYS, keeps_weights

# The study's models; any other name is looked up in timm's registry (imported only then).
PAPER_MODELS = ("resnet18", "resnet34", "resnet152", "efficientnet_b0", "maxvit_nano_rw_256")


def load_yaml(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text()) or {}


def merge(base: dict, over: dict) -> dict:
    """Snakemake's rule for laying config files over each other: mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if both else value
    return out


def coerce(config: dict, schema: dict) -> None:
    """Turn text into the numbers and booleans the schema asks for, in place (command-line values)."""
    _coerce(config, schema, schema)


def _resolve(node: dict, root: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"].removeprefix("#/").split("/")
        target = root
        for part in ref:
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _coerce(value, node: dict, root: dict):
    node = _resolve(node, root)
    if isinstance(value, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key in list(value):
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = _coerce(value[key], sub, root)
        return value
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_coerce(v, node["items"], root) for v in value]
    if not isinstance(value, str):
        return value
    kinds = node.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    for option in node.get("anyOf", []) + node.get("oneOf", []):
        option = _resolve(option, root)
        kinds += [option["type"]] if isinstance(option.get("type"), str) else option.get("type", [])
    if "string" in kinds:
        return value
    parsed = yaml.safe_load(value) if value.strip() else None
    if "integer" in kinds and isinstance(parsed, int) and not isinstance(parsed, bool):
        return parsed
    if "number" in kinds and isinstance(parsed, int | float) and not isinstance(parsed, bool):
        return parsed
    if "boolean" in kinds and isinstance(parsed, bool):
        return parsed
    if "null" in kinds and parsed is None:
        return None
    return value  # left for the schema to report


def schema_problems(config: dict, schema: dict) -> list[str]:
    """Every schema violation as ``dotted.key: message``."""
    validator = jsonschema.Draft202012Validator(schema)
    found = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        found.append(f"{where}: {error.message}")
    return found


def problems(config: dict, schema_path: str | Path) -> list[str]:
    """Every problem of a merged configuration (coerced in place first); empty when it can run."""
    schema = load_yaml(schema_path)
    moved = []
    if isinstance(config.get("data"), dict) and "rsna_dir" in config["data"]:
        # The old form; Snakemake's --config cannot even express it (keys must be identifiers).
        moved.append("data.rsna_dir: moved to the top-level key rsna_dir (snakemake --config rsna_dir=DIR)")
        config.pop("data")
    coerce(config, schema)
    infinite = non_finite_problems(config)
    named = {p.split(":")[0] for p in infinite}
    found = moved + infinite + [p for p in schema_problems(config, schema) if p.split(":")[0] not in named]
    return found or semantic_problems(config)


def non_finite_problems(value, where: str = "") -> list[str]:
    """Every NaN and infinity in the config (YAML's ``.nan``, ``.inf``). JSON Schema's ``number`` admits them
    and no range excludes NaN (every comparison with it is false), so ``lr: .nan`` would reach a training
    cell, after Snakemake had removed the cell's old outputs."""
    if isinstance(value, dict):
        return [
            p for k, v in value.items() for p in non_finite_problems(v, f"{where}.{k}" if where else str(k))
        ]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in non_finite_problems(v, f"{where}.{i}")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where}: {value} is not a finite number"]
    return []


def semantic_problems(config: dict) -> list[str]:
    """What a schema cannot say. Runs on a config the schema accepted."""
    found = []
    sections = [("preprocess", ("fallback_percentiles", "normalize_percentiles"))]
    for section, keys in sections:
        for key in keys:
            pair = config.get(section, {}).get(key)
            if pair is not None and not pair[0] < pair[1]:
                found.append(f"{section}.{key}: {pair} must rise (low percentile first)")
    working = config.get("decode", {}).get("working_size")
    if working is not None and config.get("resolutions") and working < max(config["resolutions"]):
        found.append(
            f"decode.working_size: {working} is below the largest resolution {max(config['resolutions'])}: "
            "the stores would be upsampled from it (use at least that; 2x is the default's margin)"
        )
    not_timm = _not_timm_models(config)
    found += _model_problems(not_timm)
    gan = config.get("gan", {})
    if gan and len(gan.get("kimg", [])) != len(gan.get("stages", [])):
        found.append(f"gan.kimg: {len(gan['kimg'])} lengths for {len(gan['stages'])} gan.stages (one each)")
    if gan.get("stages") and gan["stages"] != sorted(set(gan["stages"])):
        found.append(f"gan.stages: {gan['stages']} must increase")
    not_powers = [s for s in gan.get("stages", []) if s & (s - 1)]
    if not_powers and "augmented" in config.get("datasets", []):
        found.append(f"gan.stages: {not_powers} are not powers of two")
    datasets = config.get("datasets", [])
    if "augmented" in datasets and "processed" not in datasets:
        found.append("datasets: augmented is processed + synthetic images, so it needs processed as well")
    for model, overrides in (config.get("model_settings") or {}).items():
        found += [
            f"model_settings.{model}.{key}: set in train only "
            "(it is how every cell runs, not a setting of a model)"
            for key in RUN_ONLY_TRAIN_KEYS
            if key in (overrides or {})
        ]
    cam_models = (config.get("cam") or {}).get("models")
    if cam_models:
        unknown = [m for m in cam_models if m not in config.get("models", [])]
        if unknown:
            found.append(f"cam.models: {unknown} are not in models {config.get('models')}")
    from mammoflow.weights.catalog import problems as weights_problems  # (standard library only)

    # A model timm does not know is reported once, above, not again for its missing weights tag.
    known = {**config, "models": [m for m in config.get("models", []) if m not in not_timm]}
    return found + _weightless_problems(config) + weights_problems(known)


def _weightless_problems(config: dict) -> list[str]:
    """Models whose cells keep no weights (train.keep_weights: false) cannot be explained or applied."""
    weightless = [m for m in config.get("models", []) if not keeps_weights(config, m)]
    if not weightless:
        return []
    found = []
    explained = (config.get("cam") or {}).get("models")
    chosen = [m for m in (config.get("models", []) if explained is None else explained) if m in weightless]
    if chosen:
        found.append(
            f"cam.models: {chosen} keep no weights (keep_weights: false), so they cannot be explained"
            + ("; cam.models is null (every model): list the models to explain" if explained is None else "")
        )
    applied = [m for m in (config.get("predict") or {}).get("models", []) if m in weightless]
    if applied:
        found.append(
            f"predict.models: {applied} keep no weights (keep_weights: false), so they cannot be applied"
        )
    return found


def _not_timm_models(config: dict) -> list[str]:
    names = [*config.get("models", []), *config.get("model_settings", {})]
    unknown = [m for m in dict.fromkeys(names) if m not in PAPER_MODELS]
    if not unknown:
        return []
    if importlib.util.find_spec("timm") is None:
        return []  # a driver without timm cannot tell; the cell says so when it builds the model
    import timm

    return [m for m in unknown if not timm.is_model(m)]


def _model_problems(missing: list[str]) -> list[str]:
    return [f"models: {m!r} is not a timm model (timm.list_models('*{m[:4]}*') lists names)" for m in missing]

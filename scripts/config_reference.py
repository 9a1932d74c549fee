"""The configuration reference of docs/configuration.md, written from the configuration itself.

Every key of `config.yaml`: its dotted name, its value there (the default), what it may be (the schema,
workflow/schemas/config.schema.yaml), what it means (the schema's description, else the comment beside the
key in config.yaml) and what a change re-runs (config_reruns.py: Snakemake's DAG built with and without the
change). Then the presets: every key `presets/demo.yaml`, `presets/rehearsal.yaml` and
`tests/config/tiny.yaml` set, with the comment that says why. The page holds them between
``<!-- config-reference:begin -->`` and ``<!-- config-reference:end -->``
(and ``<!-- config-presets:... -->``).

    python scripts/config_reference.py --write docs/configuration.md    # a minute or two (the re-runs)
    python scripts/config_reference.py --check docs/configuration.md    # the same, compared with the page
    python scripts/config_reference.py --check docs/configuration.md --skip-reruns   # seconds

--skip-reruns compares everything but the re-run column (tests/test_docs_reference.py runs it in the quick
loop, and the whole check among the slow tests). A key without a description in the schema or a comment
in config.yaml is an error: the reference would have nothing to say about it.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

import config_reruns

REPO = config_reruns.REPO
PRESETS = ["presets/demo.yaml", "presets/rehearsal.yaml", "tests/config/tiny.yaml"]
KEY_LINE = re.compile(r"^(\s*)([A-Za-z_]\w*):(.*)$")
COMMENT_LINE = re.compile(r"^(\s*)#\s?(.*)$")
ROOT = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
# Maps whose keys are the user's (a model's name, a folder's name): one row for all of them.
MAPS = {"model_settings": "<model>", "predict.data": "<name>"}


@dataclass
class Key:
    dotted: str
    value: object
    schema: dict
    comment: str


def comments(path: Path) -> dict[str, str]:
    """{dotted key: its comment}: the comment beside the key, the lines that continue it below (indented
    deeper than the key), and a comment block right above it."""
    found: dict[str, list[str]] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    last, last_indent = None, -1
    for line in path.read_text().splitlines():
        key, comment = KEY_LINE.match(line), COMMENT_LINE.match(line)
        if key:
            indent, name, rest = len(key.group(1)), key.group(2), key.group(3)
            stack = [(i, n) for i, n in stack if i < indent] + [(indent, name)]
            last, last_indent = ".".join(n for _, n in stack), indent
            beside = _trailing_comment(rest)
            found[last] = [*pending, *([beside] if beside else [])]
            pending = []
        elif comment and last and len(comment.group(1)) > last_indent and found.get(last):
            found[last].append(comment.group(2))  # continues the comment beside the key above
        elif comment:
            pending.append(comment.group(2))
            last = None
        elif not line.strip():
            pending, last = [], None
    joined = {k: " ".join(v).strip() for k, v in found.items()}
    return _continued(joined)


def _continued(notes: dict[str, str]) -> dict[str, str]:
    """A comment that ends in "..." goes on beside the next key ("... over 300 kimg"): both keys get the
    whole sentence."""
    names = list(notes)
    out = dict(notes)
    for first, second in itertools.pairwise(names):
        if notes[first].endswith("...") and notes[second].startswith("..."):
            whole = notes[first].removesuffix("...").strip() + " " + notes[second].removeprefix("...").strip()
            out[first] = out[second] = whole
    return out


def _trailing_comment(rest: str) -> str:
    quoted = False
    for i, char in enumerate(rest):
        quoted = not quoted if char in "\"'" else quoted
        if char == "#" and not quoted and (i == 0 or rest[i - 1] == " "):
            return rest[i + 1 :].strip()
    return ""


def _resolve(schema: dict, root: dict) -> dict:
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return {**_resolve(target, root), **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def keys() -> list[Key]:
    """Every leaf of config.yaml (a map of the user's names counts as one leaf), in the file's order."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    root = ROOT
    notes = comments(REPO / "config.yaml")
    out = []

    def walk(value, schema, path):
        schema = _resolve(schema, root)
        if isinstance(value, dict) and path not in MAPS and "properties" in schema:
            for name, item in value.items():
                walk(item, schema["properties"].get(name, {}), f"{path}.{name}" if path else name)
            return
        out.append(Key(path, value, schema, notes.get(path, "")))

    walk(config, root, "")
    return out


def allowed(schema: dict) -> str:
    """What the schema lets a key be, in a few words."""
    schema = _resolve(schema, ROOT)
    if schema.get("properties"):  # a map of known keys: model_settings' values are train sections
        return "a `train` section" if "epochs" in schema["properties"] else "settings"
    if "anyOf" in schema or "oneOf" in schema:
        return " or ".join(allowed(s) for s in schema.get("anyOf", schema.get("oneOf")))
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "")
    if kind == "array":
        items = allowed(schema.get("items", {})) or "values"
        size = schema.get("minItems"), schema.get("maxItems")
        count = f"{size[0]} " if size[0] and size[0] == size[1] else ""
        return f"list of {count}{items}".strip()
    if kind == "object":
        inner = schema.get("additionalProperties")
        return "map" + (f" of {allowed(inner)}" if isinstance(inner, dict) and inner else "")
    words = {"integer": "integer", "number": "number", "string": "text", "boolean": "`true` \\| `false`"}
    text = words.get(kind, str(kind))
    bounds = [
        f"≥ {schema['minimum']}" if "minimum" in schema else "",
        f"> {schema['exclusiveMinimum']}" if "exclusiveMinimum" in schema else "",
        f"≤ {schema['maximum']}" if "maximum" in schema else "",
        f"< {schema['exclusiveMaximum']}" if "exclusiveMaximum" in schema else "",
    ]
    return " ".join([text, ", ".join(b for b in bounds if b)]).strip()


def shown(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return f"`{text.removesuffix('...').strip()}`"


def meaning(key: Key) -> str:
    text = " ".join(str(key.schema.get("description", "")).split()) or key.comment
    if not text:
        raise SystemExit(
            f"config.yaml: {key.dotted} has no description in the schema and no comment: say what it is"
        )
    return text.replace("|", "\\|")


def change(key: Key):
    """A valid other value for the key, to see what it re-runs."""
    if key.dotted in config_reruns.SPECIAL:
        return config_reruns.SPECIAL[key.dotted]
    value, schema = key.value, _plain(key.schema)
    if isinstance(value, bool):
        return not value
    if "enum" in schema:
        return next(v for v in schema["enum"] if v != value)
    if isinstance(value, (int, float)):
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        bigger = value + 1 if isinstance(value, int) else (value * 2 if value else 0.5)
        return (
            bigger if high is None or bigger < high else (value - 1 if isinstance(value, int) else value / 2)
        )
    if isinstance(value, list):
        if isinstance(value[0], (int, float)):
            return [value[0] * 1.5 if value[0] else 1, *value[1:]]
        return value[:-1] if len(value) > schema.get("minItems", 1) else [*value, value[0]]
    if value is None:
        options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
        return 0.001 if options and options[0].get("type") == "number" else 1
    raise SystemExit(f"config_reference.py: no change known for {key.dotted} = {value!r}; add it to SPECIAL")


def _plain(schema: dict) -> dict:
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    return {**schema, **options[0]} if len(options) == 1 and "anyOf" in schema else schema


def reference(reruns: dict[str, str] | None) -> str:
    """The block: one table per section of config.yaml."""
    lines, section = [], None
    for key in keys():
        top = key.dotted.split(".")[0] if "." in key.dotted else ""
        if top != section:
            section = top
            lines += ["", f"### `{top}`" if top else "### Top level", ""]
            lines += ["| key | default | may be | what it is | a change re-runs |", "|---|---|---|---|---|"]
        name = key.dotted + ("." + MAPS[key.dotted] if key.dotted in MAPS else "")
        rerun = "(not computed)" if reruns is None else reruns[key.dotted]
        lines.append(f"| `{name}` | {shown(key.value)} | {allowed(key.schema)} | {meaning(key)} | {rerun} |")
    return "\n".join(lines).strip()


def presets() -> str:
    """Every key each preset sets, its value there and in config.yaml, and the preset's comment on it."""
    base = {k.dotted: k for k in keys()}
    lines = []
    for preset in PRESETS:
        path = REPO / preset
        notes = comments(path)
        lines += ["", f"#### `{preset}`", "", "| key | config.yaml | here | why |", "|---|---|---|---|"]
        for dotted, value in _leaves(yaml.safe_load(path.read_text())):
            default = base[dotted].value if dotted in base else _lookup(dotted)
            why = notes.get(dotted, "").replace("|", "\\|")
            lines.append(f"| `{dotted}` | {shown(default)} | {shown(value)} | {why} |")
    return "\n".join(lines).strip()


def _leaves(value, path=""):
    if isinstance(value, dict) and path not in MAPS:
        for name, item in value.items():
            yield from _leaves(item, f"{path}.{name}" if path else name)
    else:
        yield path, value


def _lookup(dotted: str):
    value = yaml.safe_load((REPO / "config.yaml").read_text())
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


BLOCKS = {"config-reference": None, "config-presets": presets}


def blocks(skip_reruns: bool) -> dict[str, str]:
    reruns = None
    if not skip_reruns:
        reruns = config_reruns.analyse({k.dotted: change(k) for k in keys()})
    return {"config-reference": reference(reruns), "config-presets": presets()}


def _rerun_column(text: str) -> str:
    """The block without its re-run column, for --skip-reruns."""
    return "\n".join(
        line.rsplit(" | ", 1)[0] if line.startswith("| `") else line for line in text.splitlines()
    )


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--check", type=Path, help="fail when the page's blocks differ from the config")
    parser.add_argument("--write", type=Path, help="rewrite the page's blocks")
    parser.add_argument("--skip-reruns", action="store_true", help="leave the re-run column out (fast)")
    args = parser.parse_args(argv)
    page = args.check or args.write
    wanted = blocks(args.skip_reruns and not args.write)
    if page is None:
        print("\n\n".join(wanted.values()))
        return 0
    text, stale = page.read_text(), []
    for name, body in wanted.items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(\n<!-- {name}:end -->)", re.S)
        found = pattern.search(text)
        if not found:
            raise SystemExit(f"{page}: no <!-- {name}:begin --> ... <!-- {name}:end --> block")
        current = text[found.end(1) : found.start(2)]
        if args.write:
            text = text[: found.end(1)] + body + text[found.start(2) :]
        elif (
            (current != body)
            if not args.skip_reruns or name != "config-reference"
            else (_rerun_column(current) != _rerun_column(body))
        ):
            stale.append(name)
            print(f"{page}: the {name} block differs from the configuration; now:\n{body}\n")
    if args.write:
        page.write_text(text)
        return 0
    if stale:
        print(f"rewrite with: python scripts/config_reference.py --write {page}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())

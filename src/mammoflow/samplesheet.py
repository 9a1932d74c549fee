"""The sample sheet: RSNA's train.csv (or test.csv), checked before anything is decoded.

Every problem is found in one pass and reported one line each, naming the file, the column, how many rows
and the first few of them, because the sheet decides every path and every label downstream: one blank id
makes pandas read the whole column as floats (``100.0``), every path ``.../100.0/...dcm`` and every file
"not found"; a duplicated image would sit in two folds.

The checks run when Snakemake builds the DAG (``snakemake -n`` fails with the list) and again in the
stages that read the sheet, so a sheet edited between the two is still caught.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# The columns every stage needs; RSNA's train.csv has more (age, density, BIRADS, machine_id, ...), which
# travel along untouched.
ID_COLUMNS = ("patient_id", "image_id")
REQUIRED = ("patient_id", "image_id", "laterality", "view")
LABEL = "cancer"
LATERALITIES = ("L", "R")
# Views in the RSNA data (CC and MLO dominate; the rest are rare supplementary views).
VIEWS = ("CC", "MLO", "ML", "LM", "AT", "LMO", "XCCL", "XCCM")
SHOWN = 5  # rows quoted per problem
ASCII_DIGITS = re.compile(r"[0-9]+")  # not \d, which matches every Unicode decimal digit
INT64_MAX = 2**63 - 1


class SheetError(ValueError):
    """A sample sheet that cannot be used; the message has one line per problem."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.path, self.problems = str(path), problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


def _first(values) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:SHOWN])
    return shown + (f", ... ({len(values)} in all)" if len(values) > SHOWN else "")


def _lines(rows: list[int]) -> str:
    """Spreadsheet line numbers (header = line 1) of data rows (0-based)."""
    return f"line{'s' if len(rows) > 1 else ''} {_first(r + 2 for r in rows)}"


def parse_id(text: str) -> int | None:
    """An id as the integer the stages use (int64), or None: ASCII digits only, so that neither a
    superscript two nor Arabic-Indic digits pass for an id (``str.isdigit`` accepts both, and ``int`` reads
    Arabic-Indic one-two-three as 123), and within int64, where every table keeps it."""
    if not ASCII_DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= INT64_MAX else None


def _id_problems(name: str, values: list[str]) -> list[str]:
    problems = []
    blank = [i for i, v in enumerate(values) if not v]
    if blank:
        problems.append(f"{name}: {len(blank)} blank cell(s), {_lines(blank)}")
    bad = [i for i, v in enumerate(values) if v and not ASCII_DIGITS.fullmatch(v)]
    if bad:
        shown = _first(repr(values[i]) if not values[i].isascii() else values[i] for i in bad)
        problems.append(
            f"{name}: {len(bad)} value(s) not a whole number in ASCII digits 0-9: {shown} ({_lines(bad)})"
        )
    large = [i for i, v in enumerate(values) if ASCII_DIGITS.fullmatch(v) and parse_id(v) is None]
    if large:
        shown = _first(values[i] for i in large)
        problems.append(
            f"{name}: {len(large)} value(s) above {INT64_MAX} (the largest 64-bit integer): {shown} "
            f"({_lines(large)})"
        )
    return problems


def _repeated_ids(values: list[str]) -> list[str]:
    """Image ids that occur more than once as numbers: ``01454993661`` and ``1454993661`` are one image."""
    seen: dict[int, list[int]] = {}
    for i, v in enumerate(values):
        number = parse_id(v)
        if number is not None:
            seen.setdefault(number, []).append(i)
    repeated = {n: rows for n, rows in seen.items() if len(rows) > 1}
    if not repeated:
        return []

    def shown(number: int) -> str:
        spellings = dict.fromkeys(values[i] for i in repeated[number])
        return str(number) if list(spellings) == [str(number)] else f"{number} (as {' and '.join(spellings)})"

    where = _lines(sorted(i for rows in repeated.values() for i in rows))
    return [f"image_id: {len(repeated)} id(s) occur more than once: {_first(map(shown, repeated))} ({where})"]


def sheet_problems(path: str | Path, labels: bool | None = True) -> list[str]:
    """Every problem of a sample sheet, one line each; empty when it can be used.

    Standard library only, so that Snakemake's driver can run it (``snakemake -n``) without pandas, as with
    ``--software-deployment-method conda``. ``labels``: True requires a ``cancer`` column of 0/1 (training),
    False ignores it (prediction), None checks it when present.
    """
    path = Path(path)
    if not path.is_file():
        return ["not found"]
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [c.strip() for c in next(reader, [])]
            rows = [r for r in reader if any(cell.strip() for cell in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return [f"cannot be read as CSV: {' '.join(str(exc).split())}"]
    if not header:
        return ["empty file (no header, no rows)"]
    wanted = [*REQUIRED, LABEL] if labels else list(REQUIRED)
    missing = [c for c in wanted if c not in header]
    if missing:
        return [f"missing column(s) {', '.join(missing)} (has: {', '.join(header)})"]
    if not rows:
        return ["has a header but no rows"]
    short = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if short:
        return [f"{len(short)} row(s) without {len(header)} cells ({_lines(short)})"]
    column = {name: [r[header.index(name)].strip() for r in rows] for name in header}
    problems = []
    for name in ID_COLUMNS:
        problems += _id_problems(name, column[name])
    problems += _repeated_ids(column["image_id"])
    checks = [("laterality", LATERALITIES), ("view", VIEWS)]
    if labels is not False and LABEL in header:
        checks.append((LABEL, ("0", "1")))
    for name, known in checks:
        bad = [i for i, v in enumerate(column[name]) if v not in known]
        if bad:
            values = _first(repr(v) for v in sorted({column[name][i] for i in bad}))
            what = "must be 0 or 1" if name == LABEL else f"unknown value(s); known: {', '.join(known)}"
            problems.append(f"{name}: {len(bad)} row(s) have {values}: {what} ({_lines(bad)})")
    return problems


def read_sheet(path: str | Path, labels: bool | None = True) -> pd.DataFrame:
    """The checked sheet with integer ids, sorted by patient and image; SheetError lists every problem."""
    import pandas as pd

    problems = sheet_problems(path, labels)
    if problems:
        raise SheetError(path, problems)
    sheet = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    sheet.columns = [c.strip() for c in sheet.columns]
    return _typed(sheet, with_label=labels is not False and LABEL in sheet.columns)


def _typed(sheet: pd.DataFrame, with_label: bool) -> pd.DataFrame:
    """Ids and labels as integers, the remaining columns as pandas would read them."""
    import pandas as pd

    text_columns = {*ID_COLUMNS, "laterality", "view", LABEL}
    out = sheet.copy()
    for column in ID_COLUMNS:
        out[column] = out[column].str.strip().astype("int64")
    for column in ("laterality", "view"):
        out[column] = out[column].str.strip()
    if with_label:
        out[LABEL] = out[LABEL].str.strip().astype("int64")
    elif LABEL in out.columns:
        out = out.drop(columns=LABEL)
    for column in out.columns:
        if column in text_columns:
            continue
        # The other columns (age, density, machine_id, ...) as numbers where they are numbers.
        values = out[column].replace("", None)
        numbers = pd.to_numeric(values, errors="coerce")
        out[column] = numbers if numbers.notna().sum() == values.notna().sum() else values
    return out.sort_values(["patient_id", "image_id"], kind="stable").reset_index(drop=True)

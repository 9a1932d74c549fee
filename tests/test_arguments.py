"""Every numeric option of every subcommand is checked by argparse: a bad value is one error line, exit 2.

The options are found by walking the parser, so a new option with a bare ``type=int`` fails here until it
takes one of mammoflow.arguments' checked types.
"""

import argparse

import pytest

from mammoflow.cli import build_parser, main


def _numeric_options() -> list[tuple[str, str, object]]:
    """(subcommand, option, type) for every option of every subcommand that converts its value."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    found = []
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            kind = action.type
            numeric = kind in (int, float) or hasattr(kind, "minimum") or hasattr(kind, "bounds")
            if action.option_strings and numeric:
                found.append((name, action.option_strings[-1], kind))
    return found


OPTIONS = _numeric_options()


def _error_lines(argv, capsys) -> list[str]:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if "error:" in line]


def test_no_numeric_option_is_left_unchecked():
    assert len(OPTIONS) >= 30  # every subcommand's counts, sizes, seeds, fractions
    bare = [(name, option) for name, option, kind in OPTIONS if kind in (int, float)]
    assert bare == []
    names = {name for name, _, _ in OPTIONS}
    assert {"phantom", "decode", "index", "preprocess", "folds", "train", "gan-stage", "gan-fid",
            "synthesize", "cam", "predict"} <= names  # fmt: skip


@pytest.mark.parametrize(("command", "option", "kind"), OPTIONS, ids=[f"{c} {o}" for c, o, _ in OPTIONS])
def test_bad_values_stop_at_parsing_with_one_line(command, option, kind, capsys):
    if hasattr(kind, "minimum"):
        bad = [str(kind.minimum - 1), "1.5", "x", "\u0661"]  # below the range, not whole, not a number
        assert kind(str(kind.minimum)) == kind.minimum
    else:
        low, high, _ = kind.bounds
        bad = ["nan", "inf", "x", *([str(low - 1)] if low is not None else [])]
        bad += [str(high + 1)] if high is not None else []
        kind("1.0")
    for value in bad:
        (line,) = _error_lines([command, option, value], capsys)
        assert line.startswith(f"mammoflow {command}: error: argument {option}: must be"), (value, line)


def test_the_issues_cases(capsys):
    (line,) = _error_lines(["predict", "--data", "d", "--out", "o", "--batch-size", "0"], capsys)
    assert line == "mammoflow predict: error: argument --batch-size: must be at least 1, not 0"
    (line,) = _error_lines(["predict", "--data", "d", "--out", "o", "--threads", "-5"], capsys)
    assert line == "mammoflow predict: error: argument --threads: must be at least 0, not -5"
    (line,) = _error_lines(
        ["index", "s", "--index", "i", "--errors", "e", "--max-failed-fraction", "nan"], capsys
    )
    assert (
        line == "mammoflow index: error: argument --max-failed-fraction: must be a finite number, not 'nan'"
    )

"""The sample sheet is checked before anything is decoded: one line per problem, naming column and rows."""

import pandas as pd
import pytest

from mammoflow.samplesheet import SheetError, read_sheet

HEADER = "patient_id,image_id,laterality,view,age,cancer\n"


def _sheet(tmp_path, body: str, header: str = HEADER):
    path = tmp_path / "train.csv"
    path.write_text(header + body)
    return path


def _problems(path, labels=True) -> list[str]:
    with pytest.raises(SheetError) as caught:
        read_sheet(path, labels=labels)
    assert str(caught.value).startswith(str(path))
    return caught.value.problems


def test_a_good_sheet_gives_integer_ids_sorted(tmp_path):
    path = _sheet(tmp_path, "20,7,R,MLO,61,1\n10,5,L,CC,,0\n10,4,L,MLO,55,0\n")
    sheet = read_sheet(path)
    assert sheet["image_id"].tolist() == [4, 5, 7]
    assert sheet["patient_id"].dtype == "int64" and sheet["cancer"].dtype == "int64"
    assert sheet["age"].isna().sum() == 1 and sheet["age"].max() == 61


def test_missing_file_empty_file_and_header_only(tmp_path):
    assert _problems(tmp_path / "train.csv") == ["not found"]
    (tmp_path / "train.csv").write_text("")
    assert _problems(tmp_path / "train.csv") == ["empty file (no header, no rows)"]
    assert _problems(_sheet(tmp_path, "")) == ["has a header but no rows"]


def test_missing_columns_named(tmp_path):
    path = _sheet(tmp_path, "1,2\n", header="patient_id,image_id\n")
    (problem,) = _problems(path)
    assert problem.startswith("missing column(s) laterality, view, cancer")


def test_blank_and_non_numeric_ids_are_reported_not_turned_into_floats(tmp_path):
    path = _sheet(tmp_path, "10,,L,CC,50,0\n10,6,L,CC,50,0\nx1,7,R,CC,50,0\n")
    problems = _problems(path)
    assert "image_id: 1 blank cell(s), line 2" in problems
    assert "patient_id: 1 value(s) not a whole number in ASCII digits 0-9: x1 (line 4)" in problems


def test_ids_are_parsed_as_the_int64_numbers_the_stages_use(tmp_path):
    """Duplicates are found after parsing (a leading zero is the same image); digits other than ASCII 0-9
    (a superscript two, Arabic-Indic digits, which int() reads as 123) and ids beyond int64 are refused."""
    body = (
        "10,01454993661,L,CC,50,0\n10,1454993661,L,MLO,50,0\n"
        "11,\u00b2,L,CC,50,0\n\u0661\u0662\u0663,5,R,CC,50,0\n"
        "12,9223372036854775808,R,MLO,50,0\n12,9223372036854775807,R,CC,50,0\n"
    )
    problems = _problems(_sheet(tmp_path, body))
    assert problems == [
        "patient_id: 1 value(s) not a whole number in ASCII digits 0-9: '\u0661\u0662\u0663' (line 5)",
        "image_id: 1 value(s) not a whole number in ASCII digits 0-9: '\u00b2' (line 4)",
        "image_id: 1 value(s) above 9223372036854775807 (the largest 64-bit integer): 9223372036854775808 "
        "(line 6)",
        "image_id: 1 id(s) occur more than once: 1454993661 (as 01454993661 and 1454993661) (lines 2, 3)",
    ]
    fine = _sheet(tmp_path, "007,0001,L,CC,50,0\n12,9223372036854775807,R,CC,50,0\n")
    assert read_sheet(fine)["image_id"].tolist() == [1, 2**63 - 1]
    assert read_sheet(fine)["patient_id"].tolist() == [7, 12]


def test_duplicates_counted_with_the_first_few(tmp_path):
    rows = "".join(f"1,{i % 7},L,CC,50,0\n" for i in range(20))
    (problem,) = _problems(_sheet(tmp_path, rows))
    assert problem.startswith("image_id: 7 id(s) occur more than once: 0, 1, 2, 3, 4, ... (7 in all)")


def test_labels_views_and_lateralities(tmp_path):
    path = _sheet(tmp_path, "1,1,L,CC,50,2\n1,2,B,CC,50,1\n1,3,R,AXIAL,50,\n")
    problems = _problems(path)
    assert "cancer: 2 row(s) have '', '2': must be 0 or 1 (lines 2, 4)" in problems
    assert any(p.startswith("laterality: 1 row(s) have 'B': unknown value(s); known: L, R") for p in problems)
    view = [p for p in problems if p.startswith("view: 1 row(s) have 'AXIAL': unknown")]
    assert view and view[0].endswith("(line 4)")


def test_test_layout_without_labels(tmp_path):
    path = _sheet(tmp_path, "1,1,L,CC,1_L\n", header="patient_id,image_id,laterality,view,prediction_id\n")
    assert _problems(path)[0].startswith("missing column(s) cancer")
    sheet = read_sheet(path, labels=None)
    assert "cancer" not in sheet.columns and sheet["prediction_id"].tolist() == ["1_L"]
    labelled = _sheet(tmp_path, "1,1,L,CC,50,1\n")
    assert "cancer" not in read_sheet(labelled, labels=False).columns
    pd.testing.assert_series_equal(read_sheet(labelled, labels=None)["cancer"], pd.Series([1], name="cancer"))


def test_snakemake_dry_run_fails_with_one_line_per_problem(tmp_path):
    from test_workflow import snakemake

    data = tmp_path / "rsna data"
    data.mkdir()
    _sheet(data, "10,,L,CC,50,0\n10,6,L,CC,50,0\n10,6,R,CC,50,1\n11,01454993661,L,CC,50,0\n"
                 "11,1454993661,L,MLO,50,0\n")  # fmt: skip
    done = snakemake(tmp_path, "-n", "--config", f"rsna_dir={data}", check=False)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert f"{data}/train.csv: image_id: 1 blank cell(s), line 2" in out
    assert (
        f"{data}/train.csv: image_id: 2 id(s) occur more than once: 6, 1454993661 (as 01454993661 and "
        "1454993661) (lines 3, 4, 5, 6)"
    ) in out
    assert "decode" not in out.split("WorkflowError")[0]  # no job was planned, let alone run

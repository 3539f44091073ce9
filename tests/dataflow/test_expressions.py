from __future__ import annotations

import pyarrow as pa
import pytest

from dataflow.errors import PlanError
from dataflow.expressions import check_columns, col, lit, parse

TABLE = pa.table(
    {
        "a": [1, -7, 3, None, 10],
        "b": [0.5, 2.0, -1.0, 4.0, None],
        "cat": ["x", "y", "z", "x", None],
    }
)


def rows_where(expr) -> list[int]:
    """Indices of TABLE rows kept by ``expr``."""
    indexed = TABLE.append_column("i", pa.array(range(TABLE.num_rows)))
    return indexed.filter(expr.to_arrow()).column("i").to_pylist()


def values(expr) -> list:
    return expr.eval(TABLE).to_pylist()


def test_arithmetic_follows_python_semantics():
    assert values(col("a") + 1) == [2, -6, 4, None, 11]
    assert values(2 - col("a")) == [1, 9, -1, None, -8]
    assert values(col("a") * col("b")) == [0.5, -14.0, -3.0, None, None]
    assert values(col("a") / 2) == [0.5, -3.5, 1.5, None, 5.0]
    # Floor division and modulo as in Python: ints stay ints, the remainder
    # takes the divisor's sign.
    assert values(col("a") // 2) == [0, -4, 1, None, 5]
    assert values(col("a") % 3) == [1, 2, 0, None, 1]
    assert values(col("a") % -3) == [-2, -1, 0, None, -2]
    assert values(col("a") // -3) == [-1, 2, -1, None, -4]
    assert (col("a") % 3).eval(TABLE).type == pa.int64()
    assert values(col("b") // 1.5) == [0.0, 1.0, -1.0, 2.0, None]
    assert values(col("b") % 1.5) == [0.5, 0.5, 0.5, 1.0, None]
    assert values(col("a") % 4.0) == [1.0, 1.0, 3.0, None, 2.0]
    assert values(-(col("a") ** 2)) == [-1, -49, -9, None, -100]
    assert values(2 ** col("a").cast("float64")) == [2.0, 2.0**-7, 8.0, None, 1024.0]


def test_comparisons_and_boolean_logic():
    assert rows_where(col("a") > 0) == [0, 2, 4]
    assert rows_where((col("a") > 0) & (col("b") < 1)) == [0, 2]
    assert rows_where((col("a") < 0) | col("b").is_null()) == [1, 4]
    assert rows_where(~(col("a") >= 3)) == [0, 1]
    assert rows_where(col("cat").is_in(["x", "z"])) == [0, 2, 3]
    assert rows_where(col("a").is_null()) == [3]
    assert rows_where(col("cat").is_not_null() & (col("cat") != "x")) == [1, 2]


def test_str_and_columns():
    e = (col("a") > 0) & col("cat").is_in(["x", "y"]) | col("b").is_null()
    assert str(e) == "(a > 0) & cat.is_in(['x', 'y']) | b.is_null()"
    assert e.columns() == {"a", "b", "cat"}
    assert str((col("a") + 1) * 2) == "(a + 1) * 2"
    assert str(col("a") - (col("b") - 1)) == "a - (b - 1)"
    assert str(col("weird name") + lit(1)) == "col('weird name') + 1"
    assert (lit(3) + 4).columns() == set()


def test_structural_equality_and_hash():
    assert (col("a") + 1).equals(col("a") + 1)
    assert not (col("a") + 1).equals(col("a") + 2)
    assert hash(col("a") > 1) == hash(col("a") > 1)
    assert bool(col("x") == col("x"))  # plans holding expressions compare
    with pytest.raises(TypeError, match="use & | ~|combine conditions"):
        bool(col("a") > 1)
    with pytest.raises(TypeError, match="ambiguous"):
        _ = (col("a") > 1) and (col("b") > 1)


@pytest.mark.parametrize(
    "text, expected_rows",
    [
        ("a > 0", [0, 2, 4]),
        ("a > 0 and cat in ('x', 'y')", [0]),
        ("a > 0 or b is None", [0, 2, 4]),
        ("not a > 0", [1]),
        ("0 < a <= 3", [0, 2]),
        ("cat not in ['x']", [1, 2, 4]),  # None not in [...] holds, as in Python
        ("a is not None and a % 2 == 1", [0, 1, 2]),
        ("b * 2 >= -a", [0, 2]),
        ("cat == 'x'", [0, 3]),
        ("-a > 0", [1]),
    ],
)
def test_parse_matches_python_meaning(text, expected_rows):
    assert rows_where(parse(text)) == expected_rows


def test_parse_round_trips_through_str():
    for text in ["a > 0 and b < 2 or a == 1", "0 < a <= 3 or not b < 1", "-(a + 1) ** 2 > 4"]:
        e = parse(text)
        assert parse(str(e)).equals(e)


@pytest.mark.parametrize(
    "text, part",
    [
        ("foo(a) > 1", "foo(a)"),
        ("a.b > 1", "a.b"),
        ("a[0] > 1", "a[0]"),
        ("a in b", "b"),
        ("a in (1, b)", "b"),
        ("a is 3", "3"),
        ("lambda: 1", "lambda: 1"),
    ],
)
def test_parse_rejects_anything_else_quoting_the_part(text, part):
    with pytest.raises(PlanError) as info:
        parse(text)
    assert repr(text) in str(info.value)
    assert repr(part) in str(info.value)


def test_parse_syntax_error_is_plan_error():
    with pytest.raises(PlanError, match=r"invalid expression 'a >'"):
        parse("a >")


def test_check_columns_names_missing_and_available():
    check_columns(col("a") + col("b"), TABLE.schema, "filter")
    check_columns(col("nope"), None, "filter")  # unknown schema: nothing to check
    with pytest.raises(PlanError) as info:
        check_columns(col("a") > col("nope"), TABLE.schema, "filter")
    msg = str(info.value)
    assert "filter: unknown column 'nope'" in msg and "available columns: a, b, cat" in msg


def test_bad_arguments():
    with pytest.raises(PlanError, match="col: expected a non-empty column name"):
        col("")
    with pytest.raises(PlanError, match="is_in: expected a list"):
        col("a").is_in("abc")
    with pytest.raises(PlanError, match="cast: unknown type 'int77'"):
        col("a").cast("int77")
    with pytest.raises(PlanError, match="cannot evaluate expression cat \\+ 1"):
        (col("cat") + 1).eval(TABLE)


def test_float_literals_keep_int64_columns_exact():
    # Arrow alone would cast the int64 column to float32 (and fail above 2**24).
    big = pa.table({"id": pa.array([2**24 + 1, 2**40 + 3], pa.int64())})
    assert (col("id") + 0.5).eval(big).to_pylist() == [2**24 + 1.5, 2**40 + 3.5]
    assert (col("id") % 4e6).eval(big).to_pylist() == [
        float((2**24 + 1) % 4_000_000),
        float((2**40 + 3) % 4_000_000),
    ]
    assert (col("id") * 2.0).eval(big).type == pa.float64()

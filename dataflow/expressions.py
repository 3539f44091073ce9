"""Column expressions: an immutable ``Expr`` tree that compiles to ``pyarrow.compute``.

Build expressions with ``col`` and ``lit`` and Python operators, or parse a
string with ``parse`` (``ast`` based: no ``eval``). Expressions print readably
(they name plan nodes), list the columns they read (projection pushdown) and
compile to a ``pyarrow.compute.Expression`` (predicate pushdown, Arrow filters).

>>> e = (col("a") > 0) & col("cat").is_in(["x", "y"])
>>> str(e)
"(a > 0) & cat.is_in(['x', 'y'])"
>>> str(parse("a > 0 and cat in ('x', 'y')")) == str(e)
True
>>> sorted(e.columns())
['a', 'cat']

Arithmetic follows Python: ``/`` is true division (float64), ``//`` floors it
and ``%`` takes the sign of the divisor, both as float64.
"""

from __future__ import annotations

import ast
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataflow.errors import PlanError, unknown_columns

# Python operator symbol -> precedence (higher binds tighter), used to print.
# Python's own order: comparisons bind looser than | and &.
_BINARY = {
    "==": 1,
    "!=": 1,
    "<": 1,
    "<=": 1,
    ">": 1,
    ">=": 1,
    "|": 2,
    "&": 3,
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
    "//": 6,
    "%": 6,
    "**": 8,
}


class Expr:
    """A node of an expression tree. Immutable; equal trees hash equally.

    Comparison operators build expressions, so ``bool(a == b)`` is defined only
    for ``==`` / ``!=`` (structural equality, which lets plans holding
    expressions compare); any other truth test raises: use ``&``, ``|``, ``~``.
    """

    __slots__ = ()

    def _key(self) -> tuple:
        raise NotImplementedError

    def to_arrow(self) -> pc.Expression:
        """The ``pyarrow.compute.Expression`` that evaluates this tree."""
        raise NotImplementedError

    def columns(self) -> set[str]:
        """Names of the columns this expression reads."""
        raise NotImplementedError

    def equals(self, other: object) -> bool:
        """Structural equality (``==`` builds an expression instead)."""
        return isinstance(other, Expr) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of expression {self} is ambiguous: combine conditions "
            "with & | ~ (not and/or/not), or pass a string to filter(expr=...)"
        )

    def __repr__(self) -> str:
        return f"Expr({self})"

    # -- operators -------------------------------------------------------------
    def _bin(self, op: str, other: Any, *, reflected: bool = False) -> Expr:
        other = _as_expr(other)
        return BinaryExpr(op, other, self) if reflected else BinaryExpr(op, self, other)

    def __add__(self, o: Any) -> Expr:
        return self._bin("+", o)

    def __radd__(self, o: Any) -> Expr:
        return self._bin("+", o, reflected=True)

    def __sub__(self, o: Any) -> Expr:
        return self._bin("-", o)

    def __rsub__(self, o: Any) -> Expr:
        return self._bin("-", o, reflected=True)

    def __mul__(self, o: Any) -> Expr:
        return self._bin("*", o)

    def __rmul__(self, o: Any) -> Expr:
        return self._bin("*", o, reflected=True)

    def __truediv__(self, o: Any) -> Expr:
        return self._bin("/", o)

    def __rtruediv__(self, o: Any) -> Expr:
        return self._bin("/", o, reflected=True)

    def __floordiv__(self, o: Any) -> Expr:
        return self._bin("//", o)

    def __rfloordiv__(self, o: Any) -> Expr:
        return self._bin("//", o, reflected=True)

    def __mod__(self, o: Any) -> Expr:
        return self._bin("%", o)

    def __rmod__(self, o: Any) -> Expr:
        return self._bin("%", o, reflected=True)

    def __pow__(self, o: Any) -> Expr:
        return self._bin("**", o)

    def __rpow__(self, o: Any) -> Expr:
        return self._bin("**", o, reflected=True)

    def __eq__(self, o: Any) -> Expr:
        return self._bin("==", o)  # type: ignore[override]

    def __ne__(self, o: Any) -> Expr:
        return self._bin("!=", o)  # type: ignore[override]

    def __lt__(self, o: Any) -> Expr:
        return self._bin("<", o)

    def __le__(self, o: Any) -> Expr:
        return self._bin("<=", o)

    def __gt__(self, o: Any) -> Expr:
        return self._bin(">", o)

    def __ge__(self, o: Any) -> Expr:
        return self._bin(">=", o)

    def __and__(self, o: Any) -> Expr:
        return self._bin("&", o)

    def __rand__(self, o: Any) -> Expr:
        return self._bin("&", o, reflected=True)

    def __or__(self, o: Any) -> Expr:
        return self._bin("|", o)

    def __ror__(self, o: Any) -> Expr:
        return self._bin("|", o, reflected=True)

    def __neg__(self) -> Expr:
        return UnaryExpr("-", self)

    def __invert__(self) -> Expr:
        return UnaryExpr("~", self)

    def is_null(self) -> Expr:
        """True where the value is null (or NaN for floats)."""
        return UnaryExpr("is_null", self)

    def is_not_null(self) -> Expr:
        return UnaryExpr("~", UnaryExpr("is_null", self))

    def is_in(self, values: Iterable[Any]) -> Expr:
        """True where the value is one of ``values`` (constants)."""
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise PlanError(f"is_in: expected a list of values, got {values!r}")
        return IsInExpr(self, tuple(values))

    def cast(self, type: pa.DataType | str) -> Expr:
        """Convert to an Arrow type (``pa.float32()`` or a name such as ``"float32"``)."""
        return CastExpr(self, _arrow_type(type))

    def eval(self, table: pa.Table) -> pa.ChunkedArray:
        """Evaluate over ``table`` (Arrow's engine, no Python per row)."""
        from dataflow.acero import project

        try:
            out = project(table, [self.to_arrow()], ["_"], use_threads=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise PlanError(f"cannot evaluate expression {self}: {e}") from e
        return out.column(0)


@dataclass(frozen=True, eq=False, slots=True)
class ColumnExpr(Expr):
    name: str

    def _key(self) -> tuple:
        return ("col", self.name)

    def to_arrow(self) -> pc.Expression:
        return pc.field(self.name)

    def columns(self) -> set[str]:
        return {self.name}

    def __str__(self) -> str:
        return self.name if self.name.isidentifier() else f"col({self.name!r})"


def _arrow_scalar(value: Any) -> Any:
    """``value`` as an Arrow scalar, built from buffers for ints, floats and
    strings: pyarrow's conversion of a Python value imports pandas first
    (~0.3 s of every process that evaluates a filter such as ``"d > 0"``)."""
    if type(value) is float:
        return pa.Array.from_buffers(
            pa.float64(), 1, [None, pa.py_buffer(struct.pack("<d", value))]
        )[0]
    if type(value) is int and -(2**63) <= value < 2**63:
        return pa.Array.from_buffers(pa.int64(), 1, [None, pa.py_buffer(struct.pack("<q", value))])[
            0
        ]
    if type(value) is str:
        from dataflow.block import binary_array

        return binary_array([value.encode()], pa.string())[0]
    return value


@dataclass(frozen=True, eq=False, slots=True)
class LiteralExpr(Expr):
    value: Any

    def _key(self) -> tuple:
        return ("lit", type(self.value).__name__, self.value)

    def to_arrow(self) -> pc.Expression:
        if isinstance(self.value, float):
            # A bare float literal lets Arrow narrow it to float32 and cast an
            # int64 column to float32 as well (failing above 2**24): the cast
            # keeps Python's int op float -> float64.
            return pc.scalar(_arrow_scalar(self.value)).cast(pa.float64())
        return pc.scalar(_arrow_scalar(self.value))

    def columns(self) -> set[str]:
        return set()

    def __str__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True, eq=False, slots=True)
class BinaryExpr(Expr):
    op: str
    left: Expr
    right: Expr

    def _key(self) -> tuple:
        return ("bin", self.op, self.left._key(), self.right._key())

    def __bool__(self) -> bool:
        # Lets `node_a == node_b` compare plans holding expressions (tuple
        # equality calls bool() on `expr_a == expr_b`).
        if self.op == "==":
            return self.left.equals(self.right)
        if self.op == "!=":
            return not self.left.equals(self.right)
        return Expr.__bool__(self)

    def to_arrow(self) -> pc.Expression:
        a, b = self.left.to_arrow(), self.right.to_arrow()
        op = self.op
        if op == "/":  # true division, as in Python: ints give floats
            return pc.divide(a.cast(pa.float64()), b)
        if op in ("//", "%"):
            return _floor_div_mod(a, b)[op == "%"]
        simple = {
            "+": pc.add,
            "-": pc.subtract,
            "*": pc.multiply,
            "**": pc.power,
            "==": pc.equal,
            "!=": pc.not_equal,
            "<": pc.less,
            "<=": pc.less_equal,
            ">": pc.greater,
            ">=": pc.greater_equal,
            "&": pc.and_kleene,
            "|": pc.or_kleene,
        }
        return simple[op](a, b)

    def columns(self) -> set[str]:
        return self.left.columns() | self.right.columns()

    def __str__(self) -> str:
        prec = _BINARY[self.op]
        # ** is right-associative, comparisons do not chain, the rest is left-associative.
        left = _paren(self.left, prec + (self.op == "**" or prec == 1))
        right = _paren(self.right, prec + (self.op != "**"))
        return f"{left} {self.op} {right}"


def _floor_div_mod(a: pc.Expression, b: pc.Expression) -> tuple[pc.Expression, pc.Expression]:
    """Python's ``a // b`` and ``a % b`` (the result takes the divisor's sign),
    keeping integers integers: ``divide`` truncates integers and is exact on
    floats, rounding down floors floats and leaves integers alone, and a
    remainder of the wrong sign moves the quotient down by one."""
    q = pc.round(pc.divide(a, b), 0, round_mode="down")
    r = pc.subtract(a, pc.multiply(b, q))
    zero, one = pc.scalar(_arrow_scalar(0)), pc.scalar(_arrow_scalar(1))
    wrong_sign = (r != zero) & ((r < zero) != (b < zero))
    return (
        pc.if_else(wrong_sign, pc.subtract(q, one), q),
        pc.if_else(wrong_sign, pc.add(r, b), r),
    )


@dataclass(frozen=True, eq=False, slots=True)
class UnaryExpr(Expr):
    op: str  # "-", "~" or "is_null"
    operand: Expr

    def _key(self) -> tuple:
        return ("unary", self.op, self.operand._key())

    def to_arrow(self) -> pc.Expression:
        a = self.operand.to_arrow()
        if self.op == "-":
            return pc.negate_checked(a)
        if self.op == "~":
            return pc.invert(a)
        return a.is_null(nan_is_null=True)

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __str__(self) -> str:
        if self.op == "is_null":
            return f"{_paren(self.operand, 10)}.is_null()"
        return f"{self.op}{_paren(self.operand, 7)}"


@dataclass(frozen=True, eq=False, slots=True)
class IsInExpr(Expr):
    operand: Expr
    values: tuple

    def _key(self) -> tuple:
        return ("is_in", self.operand._key(), self.values)

    def to_arrow(self) -> pc.Expression:
        return self.operand.to_arrow().isin(pa.array(self.values))

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __str__(self) -> str:
        return f"{_paren(self.operand, 10)}.is_in({list(self.values)!r})"


@dataclass(frozen=True, eq=False, slots=True)
class CastExpr(Expr):
    operand: Expr
    type: pa.DataType

    def _key(self) -> tuple:
        return ("cast", self.operand._key(), str(self.type))

    def to_arrow(self) -> pc.Expression:
        return self.operand.to_arrow().cast(self.type)

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __str__(self) -> str:
        return f"{_paren(self.operand, 10)}.cast({self.type})"


def _paren(e: Expr, min_prec: int) -> str:
    prec = _BINARY.get(e.op, 0) if isinstance(e, BinaryExpr) else 10
    if isinstance(e, UnaryExpr) and e.op != "is_null":
        prec = 7
    return f"({e})" if prec < min_prec else str(e)


def _as_expr(value: Any) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, (pc.Expression, pa.Array, pa.ChunkedArray)):
        raise PlanError(
            f"cannot combine a dataflow expression with {type(value).__name__}; "
            "use col()/lit() on both sides"
        )
    return LiteralExpr(value)


def _arrow_type(t: pa.DataType | str) -> pa.DataType:
    if isinstance(t, pa.DataType):
        return t
    try:
        return pa.type_for_alias(t)
    except (ValueError, TypeError, KeyError):
        raise PlanError(
            f"cast: unknown type {t!r}; pass a pyarrow type or a name such as 'int64', "
            "'float32', 'string'"
        ) from None


def col(name: str) -> Expr:
    """A reference to column ``name``.

    >>> str(col("a") * 2 + 1)
    'a * 2 + 1'
    """
    if not isinstance(name, str) or not name:
        raise PlanError(f"col: expected a non-empty column name, got {name!r}")
    return ColumnExpr(name)


def lit(value: Any) -> Expr:
    """A constant.

    >>> str(lit(3) + col("x"))
    '3 + x'
    """
    return _as_expr(value)


def check_columns(expr: Expr, schema: pa.Schema | None, where: str) -> None:
    """Raise ``PlanError`` if ``expr`` reads a column missing from ``schema``
    (nothing to check when the schema is not known yet)."""
    if schema is None:
        return
    missing = sorted(expr.columns() - set(schema.names))
    if missing:
        raise unknown_columns(where, missing, schema.names, f" in expression {expr}")


# -- string parser ----------------------------------------------------------------

_AST_BINOPS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.BitAnd: "&",
    ast.BitOr: "|",
}
_AST_CMPOPS = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}


def parse(text: str) -> Expr:
    """Parse a Python-syntax expression string into an ``Expr`` (without ``eval``).

    Supported: column names, constants, arithmetic, comparisons (chained too),
    ``and``/``or``/``not``, ``in``/``not in`` a tuple or list of constants and
    ``x is None`` / ``x is not None``. Anything else (calls, attributes,
    subscripts, ...) raises ``PlanError`` quoting the offending part.

    >>> str(parse("0 < a <= 5 or b is None"))
    '(0 < a) & (a <= 5) | b.is_null()'
    """
    if not isinstance(text, str):
        raise PlanError(f"expected an expression string, got {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise PlanError(f"invalid expression {text!r}: {e.msg}") from None
    return _Parser(text.strip()).visit(tree.body)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, node: ast.AST, why: str) -> PlanError:
        part = ast.get_source_segment(self.text, node) or type(node).__name__
        return PlanError(f"invalid expression {self.text!r}: {why} in {part!r}")

    def visit(self, node: ast.AST) -> Expr:
        if isinstance(node, ast.Name):
            return ColumnExpr(node.id)
        if isinstance(node, ast.Constant):
            return LiteralExpr(node.value)
        if isinstance(node, ast.BoolOp):
            parts = [self.visit(v) for v in node.values]
            op = "&" if isinstance(node.op, ast.And) else "|"
            out = parts[0]
            for p in parts[1:]:
                out = BinaryExpr(op, out, p)
            return out
        if isinstance(node, ast.UnaryOp):
            operand = self.visit(node.operand)
            if isinstance(node.op, (ast.Not, ast.Invert)):
                return UnaryExpr("~", operand)
            if isinstance(node.op, ast.USub):
                if isinstance(operand, LiteralExpr):
                    return LiteralExpr(-operand.value)
                return UnaryExpr("-", operand)
            if isinstance(node.op, ast.UAdd):
                return operand
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_BINOPS:
            return BinaryExpr(
                _AST_BINOPS[type(node.op)], self.visit(node.left), self.visit(node.right)
            )
        if isinstance(node, ast.Compare):
            return self.compare(node)
        raise self.fail(node, f"{type(node).__name__.lower()} is not supported")

    def compare(self, node: ast.Compare) -> Expr:
        out: Expr | None = None
        left_node = node.left
        for op, right_node in zip(node.ops, node.comparators):
            term = self.compare_one(left_node, op, right_node)
            out = term if out is None else BinaryExpr("&", out, term)
            left_node = right_node
        assert out is not None
        return out

    def compare_one(self, left_node: ast.expr, op: ast.cmpop, right_node: ast.expr) -> Expr:
        left = self.visit(left_node)
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right_node, (ast.Tuple, ast.List, ast.Set)):
                raise self.fail(right_node, "'in' needs a tuple or list of constants")
            values = []
            for elt in right_node.elts:
                v = self.visit(elt)
                if not isinstance(v, LiteralExpr):
                    raise self.fail(elt, "'in' accepts constants only")
                values.append(v.value)
            term: Expr = IsInExpr(left, tuple(values))
            return UnaryExpr("~", term) if isinstance(op, ast.NotIn) else term
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right_node, ast.Constant) and right_node.value is None):
                raise self.fail(right_node, "'is' compares with None only")
            term = UnaryExpr("is_null", left)
            return UnaryExpr("~", term) if isinstance(op, ast.IsNot) else term
        return BinaryExpr(_AST_CMPOPS[type(op)], left, self.visit(right_node))


__all__ = ["Expr", "check_columns", "col", "lit", "parse"]

"""Tiny symbolic arithmetic, so the cost formulas exist once and run in Python and in the page.

Every per-op quantity (FLOPs, elements read and written, shapes) is built from the config's
constants and three free variables:

    B  batch size
    T  new tokens per sequence in this pass (prefill/train: the sequence length; decode: 1)
    S  keys visible to the last query, i.e. the context length (prefill/train: S = T)

An expression is a plain Python number or an `Expr` tree over those names. `evaluate(e, env)`
gives its value; `to_json(e)` writes it as nested lists (["+", a, b], ["v", "B"], 3) that the
HTML page evaluates with the same rules (see `evalExpr` in page.html), so changing the sequence
length in the browser recomputes the figures from the very same formulas, not from a port.

Integer semantics: `//` is floor division and only used where the result is exact (e.g.
T (T + 1) // 2), so counts of parameters and FLOPs stay exact Python integers.
"""

from __future__ import annotations

import math
from typing import Any, Union

Number = Union[int, float]  # noqa: UP007 - used at runtime in isinstance checks
Value = Union[Number, "Expr"]


class Expr:
    """A node: op in {"v", "+", "-", "*", "//", "/", "min", "max", "pow", "if<"} and args."""

    __slots__ = ("args", "op")

    def __init__(self, op: str, *args: Any) -> None:
        self.op = op
        self.args = args

    # Arithmetic folds constants eagerly so the trees stay small.
    def __add__(self, other: Value) -> Value:
        return add(self, other)

    def __radd__(self, other: Value) -> Value:
        return add(other, self)

    def __sub__(self, other: Value) -> Value:
        return sub(self, other)

    def __rsub__(self, other: Value) -> Value:
        return sub(other, self)

    def __mul__(self, other: Value) -> Value:
        return mul(self, other)

    def __rmul__(self, other: Value) -> Value:
        return mul(other, self)

    def __floordiv__(self, other: Value) -> Value:
        return floordiv(self, other)

    def __truediv__(self, other: Value) -> Value:
        return truediv(self, other)

    def __rtruediv__(self, other: Value) -> Value:
        return truediv(other, self)

    def __repr__(self) -> str:
        return to_text(self)


def var(name: str) -> Expr:
    return Expr("v", name)


B, T, S = var("B"), var("T"), var("S")


def _num(x: Value) -> bool:
    return isinstance(x, int | float)


def add(a: Value, b: Value) -> Value:
    if _num(a) and _num(b):
        return a + b  # type: ignore[operator]
    if _num(a) and a == 0:
        return b
    if _num(b) and b == 0:
        return a
    return Expr("+", a, b)


def sub(a: Value, b: Value) -> Value:
    if _num(a) and _num(b):
        return a - b  # type: ignore[operator]
    if _num(b) and b == 0:
        return a
    return Expr("-", a, b)


def mul(a: Value, b: Value) -> Value:
    if _num(a) and _num(b):
        return a * b  # type: ignore[operator]
    if (_num(a) and a == 0) or (_num(b) and b == 0):
        return 0
    if _num(a) and a == 1:
        return b
    if _num(b) and b == 1:
        return a
    # Keep constants on the left and merge them: 2 * (3 * x) -> 6 * x.
    if _num(b):
        a, b = b, a
    if _num(a) and isinstance(b, Expr) and b.op == "*" and _num(b.args[0]):
        return mul(a * b.args[0], b.args[1])
    return Expr("*", a, b)


def floordiv(a: Value, b: Value) -> Value:
    if _num(a) and _num(b):
        return a // b  # type: ignore[operator]
    if _num(b) and b == 1:
        return a
    return Expr("//", a, b)


def truediv(a: Value, b: Value) -> Value:
    if _num(a) and _num(b):
        return a / b  # type: ignore[operator]
    if _num(b) and b == 1:
        return a
    return Expr("/", a, b)


def emin(a: Value, b: Value) -> Value:
    if _num(a) and _num(b):
        return min(a, b)  # type: ignore[type-var]
    return Expr("min", a, b)


def emax(a: Value, b: Value) -> Value:
    if _num(a) and _num(b):
        return max(a, b)  # type: ignore[type-var]
    return Expr("max", a, b)


def epow(a: Value, b: Value) -> Value:
    if _num(a) and _num(b):
        return a**b  # type: ignore[operator]
    return Expr("pow", a, b)


def if_less(a: Value, b: Value, then: Value, otherwise: Value) -> Value:
    """then if a < b else otherwise."""
    if _num(a) and _num(b):
        return then if a < b else otherwise  # type: ignore[operator]
    return Expr("if<", a, b, then, otherwise)


def total(*terms: Value) -> Value:
    out: Value = 0
    for term in terms:
        out = add(out, term)
    return out


def prod(*factors: Value) -> Value:
    out: Value = 1
    for factor in factors:
        out = mul(out, factor)
    return out


def causal_pairs(n: Value, window: int | None) -> Value:
    """Visible (query, key) pairs of one head over n tokens with a causal (window) mask:
    sum_{i=0}^{n-1} min(i + 1, W) = n (n + 1) / 2, or W (W + 1) / 2 + (n - W) W when n > W."""
    full = floordiv(mul(n, add(n, 1)), 2)
    if window is None:
        return full
    w = window
    return if_less(w, n, w * (w + 1) // 2 + mul(sub(n, w), w), full)


# --- evaluation --------------------------------------------------------------------------------
def evaluate(e: Value, env: dict[str, Number]) -> Number:
    if not isinstance(e, Expr):
        return e
    op, args = e.op, e.args
    if op == "v":
        return env[args[0]]
    if op == "if<":
        a, b = evaluate(args[0], env), evaluate(args[1], env)
        return evaluate(args[2] if a < b else args[3], env)
    x, y = evaluate(args[0], env), evaluate(args[1], env)
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "//":
        return x // y
    if op == "/":
        return x / y
    if op == "min":
        return min(x, y)
    if op == "max":
        return max(x, y)
    if op == "pow":
        return x**y
    raise ValueError(f"expr: unknown op {op!r}")


def to_json(e: Value) -> Any:
    """Nested lists: numbers stay numbers, variables are ["v", name]."""
    if not isinstance(e, Expr):
        if isinstance(e, float) and not math.isfinite(e):
            raise ValueError("expr: non-finite constant")
        return e
    if e.op == "v":
        return ["v", e.args[0]]
    return [e.op, *(to_json(a) for a in e.args)]


def to_text(e: Value) -> str:
    """Readable infix form (for docs and tooltips)."""
    if not isinstance(e, Expr):
        return f"{e:g}" if isinstance(e, float) else str(e)
    if e.op == "v":
        return str(e.args[0])
    if e.op in ("min", "max", "pow"):
        return f"{e.op}({to_text(e.args[0])}, {to_text(e.args[1])})"
    if e.op == "if<":
        a, b, x, y = (to_text(v) for v in e.args)
        return f"({x} if {a} < {b} else {y})"
    return f"({to_text(e.args[0])} {e.op} {to_text(e.args[1])})"

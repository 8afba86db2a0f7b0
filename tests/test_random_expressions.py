"""Random expression trees: each tree is written both as formula text and as a NumPy function,
built side by side by the same strategy, so the NumPy side is an independent reference."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ufuncgen as ug

X = np.linspace(-2.0, 2.0, 301)
Y = np.cos(np.arange(301.0))

LEAVES = st.sampled_from([
    ("x", lambda x, y: x),
    ("y", lambda x, y: y),
    ("0.5", lambda x, y: 0.5),
    ("3", lambda x, y: 3.0),
    ("pi", lambda x, y: np.pi),
])

UNARY = [
    ("sin({})", np.sin), ("cos({})", np.cos), ("tanh({})", np.tanh), ("abs({})", np.abs),
    ("exp(-abs({}))", lambda a: np.exp(-np.abs(a))), ("sqrt(abs({}))", lambda a: np.sqrt(np.abs(a))),
    ("-({})", np.negative), ("arctan({})", np.arctan), ("({})**2", np.square), ("({})**3", lambda a: a ** 3),
]
BINARY = [
    ("({}) + ({})", np.add), ("({}) - ({})", np.subtract), ("({}) * ({})", np.multiply),
    ("({}) / (1 + abs({}))", lambda a, b: a / (1 + np.abs(b))), ("hypot({}, {})", np.hypot),
    ("max({}, {})", np.maximum), ("min({}, {})", np.minimum), ("arctan2({}, {})", np.arctan2),
    ("where(({}) > ({}), 1.5, -1)", lambda a, b: np.where(a > b, 1.5, -1.0)),
]


def _extend(children):
    unary = st.tuples(st.sampled_from(UNARY), children).map(
        lambda t: (t[0][0].format(t[1][0]), lambda x, y, f=t[0][1], c=t[1][1]: f(c(x, y))))
    binary = st.tuples(st.sampled_from(BINARY), children, children).map(
        lambda t: (t[0][0].format(t[1][0], t[2][0]),
                   lambda x, y, f=t[0][1], a=t[1][1], b=t[2][1]: f(a(x, y), b(x, y))))
    return unary | binary


EXPRESSIONS = st.recursive(LEAVES, _extend, max_leaves=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS, st.sampled_from(["cpu", "parallel"]))
def test_random_expression_matches_numpy(expr, target):
    text, reference = expr
    f = ug.ufunc(text, args=("x", "y"), target=target)
    with np.errstate(all="ignore"):
        want = np.broadcast_to(np.asarray(reference(X, Y), dtype=float), X.shape)
        got = f(X, Y)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=text)

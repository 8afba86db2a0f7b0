"""The README's quick-start: compile a formula, call it like a NumPy ufunc."""
import numpy as np

import ufuncgen as ug

f = ug.ufunc("sin(x)**2 + a*exp(-y)")          # compiled on first call, per dtype
x = np.linspace(0.0, 3.0, 7)
y = np.linspace(1.0, 2.0, 7)
result = f(0.5, x, y)                          # args sorted by name: a, x, y
expected = np.sin(x) ** 2 + 0.5 * np.exp(-y)
assert np.allclose(result, expected)
print(f)
print(result)
print(f.source)

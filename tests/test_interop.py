"""Dask and xarray inputs go through NumPy's ``__array_ufunc__`` protocol and stay lazy/labelled."""
import numpy as np
import pytest

import ufuncgen as ug

da = pytest.importorskip("dask.array")
xr = pytest.importorskip("xarray")


@pytest.fixture(scope="module", params=["lazy", "signatures"])
def axpy(request):
    sigs = None if request.param == "lazy" else "float64(float64, float64, float64)"
    return ug.ufunc("a*x + y", signatures=sigs)


def test_dask_arrays_stay_dask_and_compute_right(axpy):
    x = np.linspace(0, 1, 1000)
    dx = da.from_array(x, chunks=128)
    result = axpy(2.0, dx, dx)
    assert isinstance(result, da.Array)
    np.testing.assert_allclose(result.compute(), 3 * x)


def test_xarray_keeps_coordinates(axpy):
    x = xr.DataArray(np.arange(5.0), dims="t", coords={"t": np.arange(5) * 10})
    result = axpy(2.0, x, x)
    assert isinstance(result, xr.DataArray)
    assert list(result.coords["t"].values) == [0, 10, 20, 30, 40]
    np.testing.assert_allclose(result.values, 3 * np.arange(5.0))

//! `SgdRegressor`: online linear regression on record batches, with
//! scikit-learn's defaults and attribute names.

use arrow_array::RecordBatch;
use arrow_pyarrow::FromPyArrow;
use pyo3::prelude::*;

use crate::errors;

/// Linear regression trained by stochastic gradient descent, one batch at a
/// time (scikit-learn's `SGDRegressor` defaults: squared loss, L2 penalty
/// `alpha=0.0001`, inverse-scaling learning rate from `eta0=0.01`).
#[pyclass(module = "quiver")]
#[derive(Default)]
pub(crate) struct SgdRegressor {
    inner: quiver::SgdRegressor,
}

#[pymethods]
impl SgdRegressor {
    #[new]
    fn new() -> Self {
        SgdRegressor::default()
    }

    /// Trains on every row of `batch` (a pyarrow RecordBatch): `features`
    /// name the input columns, `target` the column to predict (float64,
    /// without nulls). Returns the model, as scikit-learn does.
    fn partial_fit<'py>(
        mut slf: PyRefMut<'py, Self>,
        batch: &Bound<'py, PyAny>,
        features: Vec<String>,
        target: &str,
    ) -> PyResult<PyRefMut<'py, Self>> {
        let batch = RecordBatch::from_pyarrow_bound(batch)?;
        let names: Vec<&str> = features.iter().map(String::as_str).collect();
        slf.inner.partial_fit(&batch, &names, target).map_err(errors::train)?;
        Ok(slf)
    }

    /// Predictions for every row of `batch`.
    fn predict(&self, batch: &Bound<'_, PyAny>, features: Vec<String>) -> PyResult<Vec<f64>> {
        let batch = RecordBatch::from_pyarrow_bound(batch)?;
        let names: Vec<&str> = features.iter().map(String::as_str).collect();
        self.inner.predict(&batch, &names).map_err(errors::train)
    }

    /// The weights, one per feature.
    #[getter]
    fn coef_(&self) -> Vec<f64> {
        self.inner.coef().to_vec()
    }

    /// The intercept.
    #[getter]
    fn intercept_(&self) -> f64 {
        self.inner.intercept()
    }

    /// Rows trained on.
    #[getter]
    fn rows_seen(&self) -> u64 {
        self.inner.rows_seen()
    }

    fn __repr__(&self) -> String {
        format!("SgdRegressor(coef_={:?}, intercept_={})", self.inner.coef(), self.inner.intercept())
    }
}

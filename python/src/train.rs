//! `SgdRegressor`: online linear regression on record batches, with
//! scikit-learn's settings and attribute names; `SharedModel` and
//! `SharedTrainer`: one model in a store that worker processes train
//! together.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_pyarrow::FromPyArrow;
use pyo3::prelude::*;
use quiver_train::{LearningRate, Loss, SavedModel, SgdSettings};

use crate::errors;
use crate::store::Store;

/// Linear regression trained by stochastic gradient descent, one batch at a
/// time, with scikit-learn's `SGDRegressor` settings and defaults:
/// `loss` "squared_error" or "huber" (with `epsilon`), `learning_rate`
/// "constant", "invscaling" or "adaptive", `eta0`, `power_t`, `alpha` (L2),
/// `fit_intercept`, and for "adaptive" `n_iter_no_change`, `tol` and
/// `epoch_rows` (rows per epoch: a stream has no end to pass over).
#[pyclass(module = "quiver")]
#[derive(Default)]
pub(crate) struct SgdRegressor {
    inner: quiver_train::SgdRegressor,
    /// Set by `load` (and `save`): the columns the model was saved with.
    features: Option<Vec<String>>,
    target: Option<String>,
}

fn names(features: &[String]) -> Vec<&str> {
    features.iter().map(String::as_str).collect()
}

#[pymethods]
impl SgdRegressor {
    #[new]
    #[pyo3(signature = (*, loss = "squared_error", epsilon = 0.1, learning_rate = "invscaling", eta0 = 0.01,
        power_t = 0.25, alpha = 0.0001, fit_intercept = true, n_iter_no_change = 5, tol = 1e-3,
        epoch_rows = 10_000))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        loss: &str,
        epsilon: f64,
        learning_rate: &str,
        eta0: f64,
        power_t: f64,
        alpha: f64,
        fit_intercept: bool,
        n_iter_no_change: u32,
        tol: f64,
        epoch_rows: u64,
    ) -> PyResult<Self> {
        let loss = match loss {
            "squared_error" => Loss::SquaredError,
            "huber" => Loss::Huber { epsilon },
            other => return Err(errors::invalid(format!("loss {other:?}: squared_error or huber"))),
        };
        let learning_rate = match learning_rate {
            "constant" => LearningRate::Constant,
            "invscaling" => LearningRate::InvScaling,
            "adaptive" => LearningRate::Adaptive,
            other => return Err(errors::invalid(format!("learning_rate {other:?}: constant, invscaling or adaptive"))),
        };
        let settings =
            SgdSettings { loss, learning_rate, eta0, power_t, alpha, fit_intercept, n_iter_no_change, tol, epoch_rows };
        let inner = quiver_train::SgdRegressor::with_settings(settings).map_err(errors::train)?;
        Ok(SgdRegressor { inner, features: None, target: None })
    }

    /// Trains on every row of `batch` (a pyarrow RecordBatch): `features`
    /// name the input columns, `target` the column to predict (integers or
    /// floats, without nulls). Returns the model, as scikit-learn does.
    fn partial_fit<'py>(
        mut slf: PyRefMut<'py, Self>,
        batch: &Bound<'py, PyAny>,
        features: Vec<String>,
        target: &str,
    ) -> PyResult<PyRefMut<'py, Self>> {
        let batch = RecordBatch::from_pyarrow_bound(batch)?;
        slf.inner.partial_fit(&batch, &names(&features), target).map_err(errors::train)?;
        Ok(slf)
    }

    /// Predictions for every row of `batch`.
    fn predict(&self, batch: &Bound<'_, PyAny>, features: Vec<String>) -> PyResult<Vec<f64>> {
        let batch = RecordBatch::from_pyarrow_bound(batch)?;
        self.inner.predict(&batch, &names(&features)).map_err(errors::train)
    }

    /// The coefficient of determination R² of the predictions for a
    /// labelled batch (scikit-learn's `score`).
    fn score(&self, batch: &Bound<'_, PyAny>, features: Vec<String>, target: &str) -> PyResult<f64> {
        let batch = RecordBatch::from_pyarrow_bound(batch)?;
        Ok(self.inner.score(&batch, &names(&features), target).map_err(errors::train)?.r2)
    }

    /// Writes the model and the columns it reads to `path` (JSON, atomically:
    /// what `quiver train` writes and `quiver predict` reads).
    fn save(&mut self, path: std::path::PathBuf, features: Vec<String>, target: String) -> PyResult<()> {
        let saved = SavedModel::new(self.inner.clone(), features.clone(), target.clone());
        saved.save(&path).map_err(errors::train)?;
        (self.features, self.target) = (Some(features), Some(target));
        Ok(())
    }

    /// A model saved by `save` or `quiver train`, with its columns as
    /// `feature_names_in_` and `target_`.
    #[staticmethod]
    fn load(path: std::path::PathBuf) -> PyResult<Self> {
        let saved = SavedModel::load(&path).map_err(errors::train)?;
        Ok(SgdRegressor { inner: saved.model, features: Some(saved.features), target: Some(saved.target) })
    }

    /// The feature columns it was saved or loaded with (None before).
    #[getter]
    fn feature_names_in_(&self) -> Option<Vec<String>> {
        self.features.clone()
    }

    /// The target column it was saved or loaded with (None before).
    #[getter]
    fn target_(&self) -> Option<String> {
        self.target.clone()
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

    /// The learning rate the next row gets.
    #[getter]
    fn learning_rate_(&self) -> f64 {
        self.inner.learning_rate()
    }

    fn __repr__(&self) -> String {
        format!("SgdRegressor(coef_={:?}, intercept_={})", self.inner.coef(), self.inner.intercept())
    }
}

/// One model in a store that every worker process trains (Hogwild!-style:
/// each trainer adds what its batches changed to shared cells, lock-free).
/// `SharedModel.create(store, name, features, target, model=None)` makes it
/// (from `model`'s settings and weights, or scikit-learn's defaults);
/// `SharedModel.open(store, name)` joins it; `trainer()` trains it.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct SharedModel {
    inner: Arc<quiver_train::SharedModel>,
}

#[pymethods]
impl SharedModel {
    #[staticmethod]
    #[pyo3(signature = (store, name, features, target, model = None))]
    fn create(
        store: &Store,
        name: &str,
        features: Vec<String>,
        target: String,
        model: Option<PyRef<'_, SgdRegressor>>,
    ) -> PyResult<Self> {
        let start = model.map(|m| m.inner.clone()).unwrap_or_default();
        let saved = SavedModel::new(start, features, target);
        let inner = quiver_train::SharedModel::create(&store.handle()?, name, &saved).map_err(errors::train)?;
        Ok(SharedModel { inner: Arc::new(inner) })
    }

    /// Joins the shared model `name`, waiting up to `timeout` seconds for it
    /// (`None`: for ever; Ctrl-C interrupts the wait).
    #[staticmethod]
    #[pyo3(signature = (store, name, timeout = Some(10.0)))]
    fn open(py: Python<'_>, store: &Store, name: &str, timeout: Option<f64>) -> PyResult<Self> {
        let store = store.handle()?;
        let attempt = |slice: std::time::Duration| {
            let until = std::time::Instant::now() + slice;
            loop {
                if let Some(model) = quiver_train::SharedModel::try_open(&store, name)? {
                    return Ok(Some(model));
                }
                if std::time::Instant::now() >= until {
                    return Ok(None);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        };
        let timeout = crate::wait::timeout(timeout)?;
        match crate::wait::sliced(py, timeout, attempt, errors::train)? {
            Some(inner) => Ok(SharedModel { inner: Arc::new(inner) }),
            // `sliced` gives up only when there is a timeout.
            None => Err(errors::train(quiver_train::TrainError::SharedMissing {
                name: name.to_string(),
                timeout: timeout.unwrap_or_default(),
            })),
        }
    }

    /// Deletes the shared model `name` from the store.
    #[staticmethod]
    fn remove(store: &Store, name: &str) -> PyResult<()> {
        quiver_train::SharedModel::remove(&store.handle()?, name).map_err(errors::train)
    }

    /// A trainer for this process, adding its changes every `sync_every`
    /// batches.
    #[pyo3(signature = (sync_every = 1))]
    fn trainer(&self, sync_every: u32) -> SharedTrainer {
        SharedTrainer { inner: std::sync::Mutex::new(self.inner.trainer(sync_every)) }
    }

    /// The model as it is now, as an `SgdRegressor` (with its columns).
    fn snapshot(&self) -> SgdRegressor {
        let saved = self.inner.snapshot();
        SgdRegressor { inner: saved.model, features: Some(saved.features), target: Some(saved.target) }
    }

    /// Rows trained by every worker.
    #[getter]
    fn rows_seen(&self) -> u64 {
        self.inner.rows_seen()
    }

    fn __repr__(&self) -> String {
        format!("SharedModel({:?}, rows_seen={})", self.inner.name(), self.inner.rows_seen())
    }
}

/// One process's side of a `SharedModel`.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct SharedTrainer {
    inner: std::sync::Mutex<quiver_train::SharedTrainer>,
}

#[pymethods]
impl SharedTrainer {
    /// Trains the shared model on every row of `batch` (its feature and
    /// target columns). Returns the rows trained.
    fn partial_fit(&self, py: Python<'_>, batch: &Bound<'_, PyAny>) -> PyResult<usize> {
        let batch = RecordBatch::from_pyarrow_bound(batch)?;
        let fitted = py.detach(|| {
            let mut trainer = self.inner.lock().map_err(|_| errors::Error::new_err("poisoned"))?;
            trainer.partial_fit(&batch).map_err(errors::train)
        })?;
        Ok(fitted.rows)
    }

    /// Adds what was trained since the last exchange to the shared model.
    fn sync(&self) -> PyResult<()> {
        self.inner.lock().map_err(|_| errors::Error::new_err("poisoned"))?.sync();
        Ok(())
    }
}

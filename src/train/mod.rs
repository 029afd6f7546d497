//! Online learning, the worked example: linear regression by stochastic
//! gradient descent, trained batch by batch as record batches arrive.
//!
//! - [`SgdRegressor`]: scikit-learn's `SGDRegressor` with its defaults;
//! - `data`: the seeded synthetic data of the Plasma streaming example
//!   (`y = 4 + 3x + noise`) and an order-independent checksum of rows.

mod data;

pub use data::{row_checksum, LinearData};

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

/// Errors of training: the batch does not have the columns asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrainError {
    /// A feature or target column is missing.
    #[error("the batch has no column {0:?}")]
    NoColumn(String),
    /// A column is not `Float64`.
    #[error("column {column:?} is {found}, not Float64")]
    NotFloat64 {
        /// The column.
        column: String,
        /// Its type.
        found: String,
    },
    /// A column has nulls, which SGD cannot use.
    #[error("column {0:?} has nulls")]
    Nulls(String),
    /// A value is NaN or infinite (scikit-learn refuses these too).
    #[error("column {0:?} has a NaN or infinite value")]
    NotFinite(String),
    /// The weights became NaN or infinite: the learning rate is too large
    /// for the data's scale (scikit-learn raises the same).
    #[error("the model diverged (weights are no longer finite); scale the features or lower eta0")]
    Diverged,
    /// The batch has another number of features than the model.
    #[error("the model has {model} features; {given} were given")]
    Features {
        /// The model's.
        model: usize,
        /// The call's.
        given: usize,
    },
}

/// Online linear regression by plain stochastic gradient descent, with the
/// defaults and the meaning of scikit-learn's `SGDRegressor`: squared loss,
/// an L2 penalty with `alpha = 0.0001`, the `invscaling` learning rate
/// `eta = eta0 / t^power_t` with `eta0 = 0.01` and `power_t = 0.25`, and a
/// fitted intercept.
///
/// [`partial_fit`](Self::partial_fit) makes one pass over a batch's rows in
/// order; for each row, with `t` counting the rows seen from 1:
///
/// ```text
/// eta = eta0 / t^power_t
/// p   = w·x + b
/// g   = p - y                       (the derivative of ½(p - y)², clipped to ±1e12)
/// w   = w · max(0, 1 - eta·alpha)   (the L2 penalty, as scikit-learn applies it)
/// w   = w - eta·g·x
/// b   = b - eta·g
/// ```
///
/// Unlike scikit-learn's `partial_fit`, rows are not shuffled: a batch is
/// trained in the order the stream delivered it, so runs are reproducible.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdRegressor {
    coef: Vec<f64>,
    intercept: f64,
    /// Rows seen plus one (scikit-learn's `t_`).
    t: f64,
    /// Initial learning rate.
    pub eta0: f64,
    /// Exponent of the `invscaling` schedule.
    pub power_t: f64,
    /// L2 penalty strength.
    pub alpha: f64,
    /// Whether the intercept is fitted.
    pub fit_intercept: bool,
}

impl Default for SgdRegressor {
    fn default() -> Self {
        SgdRegressor::new()
    }
}

/// scikit-learn clips the loss's derivative to this, so one wild row cannot
/// blow the weights up.
const MAX_DLOSS: f64 = 1e12;

impl SgdRegressor {
    /// A model with scikit-learn's defaults; its features are fixed by the
    /// first batch it is trained on.
    pub fn new() -> Self {
        SgdRegressor {
            coef: Vec::new(),
            intercept: 0.0,
            t: 1.0,
            eta0: 0.01,
            power_t: 0.25,
            alpha: 0.0001,
            fit_intercept: true,
        }
    }

    /// The weights, one per feature (empty before the first batch).
    pub fn coef(&self) -> &[f64] {
        &self.coef
    }

    /// The intercept.
    pub fn intercept(&self) -> f64 {
        self.intercept
    }

    /// Rows trained on.
    pub fn rows_seen(&self) -> u64 {
        (self.t - 1.0) as u64
    }

    /// Trains on every row of `batch`: `features` name the input columns,
    /// `target` the column to predict (all `Float64`, without nulls).
    pub fn partial_fit(&mut self, batch: &RecordBatch, features: &[&str], target: &str) -> Result<(), TrainError> {
        let x = columns(batch, features)?;
        let y = columns(batch, &[target])?.remove(0);
        if self.coef.is_empty() && self.t == 1.0 {
            self.coef = vec![0.0; x.len()];
        }
        if self.coef.len() != x.len() {
            return Err(TrainError::Features { model: self.coef.len(), given: x.len() });
        }
        for (name, col) in features.iter().zip(&x).chain([(&target, &y)]) {
            if col.iter().any(|v| !v.is_finite()) {
                return Err(TrainError::NotFinite(name.to_string()));
            }
        }
        for row in 0..batch.num_rows() {
            let eta = self.eta0 / self.t.powf(self.power_t);
            let p = self.coef.iter().zip(&x).map(|(w, col)| w * col[row]).sum::<f64>() + self.intercept;
            let dloss = (p - y[row]).clamp(-MAX_DLOSS, MAX_DLOSS);
            let update = -eta * dloss;
            let decay = (1.0 - eta * self.alpha).max(0.0);
            for (w, col) in self.coef.iter_mut().zip(&x) {
                *w = *w * decay + update * col[row];
            }
            if self.fit_intercept {
                self.intercept += update;
            }
            self.t += 1.0;
        }
        if !self.intercept.is_finite() || self.coef.iter().any(|w| !w.is_finite()) {
            return Err(TrainError::Diverged);
        }
        Ok(())
    }

    /// Predictions for every row of `batch`.
    pub fn predict(&self, batch: &RecordBatch, features: &[&str]) -> Result<Vec<f64>, TrainError> {
        let x = columns(batch, features)?;
        if self.coef.len() != x.len() {
            return Err(TrainError::Features { model: self.coef.len(), given: x.len() });
        }
        Ok((0..batch.num_rows())
            .map(|row| self.coef.iter().zip(&x).map(|(w, col)| w * col[row]).sum::<f64>() + self.intercept)
            .collect())
    }
}

/// The values of the named `Float64` columns.
fn columns<'b>(batch: &'b RecordBatch, names: &[&str]) -> Result<Vec<&'b [f64]>, TrainError> {
    names
        .iter()
        .map(|&name| {
            let column = batch.column_by_name(name).ok_or_else(|| TrainError::NoColumn(name.to_string()))?;
            if column.data_type() != &DataType::Float64 {
                return Err(TrainError::NotFloat64 { column: name.to_string(), found: column.data_type().to_string() });
            }
            if column.null_count() > 0 {
                return Err(TrainError::Nulls(name.to_string()));
            }
            Ok(column.as_primitive::<Float64Type>().values().as_ref())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array};

    use super::*;

    fn batch(x: &[f64], y: &[f64]) -> RecordBatch {
        let x: ArrayRef = Arc::new(Float64Array::from(x.to_vec()));
        let y: ArrayRef = Arc::new(Float64Array::from(y.to_vec()));
        RecordBatch::try_from_iter([("x", x), ("y", y)]).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn two_rows_by_hand() {
        let mut m = SgdRegressor::new();
        m.partial_fit(&batch(&[2.0], &[10.0]), &["x"], "y").unwrap();
        // t = 1: eta = 0.01; p = 0; g = -10; update = 0.1.
        // w = 0 · (1 - 0.01 · 0.0001) + 0.1 · 2 = 0.2; b = 0.1.
        assert!(close(m.coef()[0], 0.2) && close(m.intercept(), 0.1), "{m:?}");
        m.partial_fit(&batch(&[1.0], &[5.0]), &["x"], "y").unwrap();
        // t = 2: eta = 0.01 / 2^0.25 = 0.008408964152537145; p = 0.2 + 0.1 = 0.3;
        // g = -4.7; update = 0.039522131516924580.
        // w = 0.2 · (1 - 0.008408964152537145e-4) + 0.03952213151692458 = 0.2395219633376415...
        // b = 0.1 + 0.03952213151692458 = 0.13952213151692458.
        let eta = 0.008408964152537145;
        let update = 4.7 * eta;
        assert!(close(m.coef()[0], 0.2 * (1.0 - eta * 1e-4) + update), "{m:?}");
        assert!(close(m.intercept(), 0.1 + update));
        assert!(close(m.coef()[0], 0.239_521_963_337_641_5), "{}", m.coef()[0]);
        assert_eq!(m.rows_seen(), 2);
        // One batch of both rows gives the same model as two batches.
        let mut once = SgdRegressor::new();
        once.partial_fit(&batch(&[2.0, 1.0], &[10.0, 5.0]), &["x"], "y").unwrap();
        assert_eq!(once, m);
    }

    #[test]
    fn several_features_and_predict() {
        let x1: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
        let x2: ArrayRef = Arc::new(Float64Array::from(vec![-2.0]));
        let y: ArrayRef = Arc::new(Float64Array::from(vec![3.0]));
        let b = RecordBatch::try_from_iter([("a", x1), ("b", x2), ("y", y)]).unwrap();
        let mut m = SgdRegressor::new();
        m.partial_fit(&b, &["a", "b"], "y").unwrap();
        // eta = 0.01, g = -3, update = 0.03: w = (0.03, -0.06), b = 0.03.
        assert!(close(m.coef()[0], 0.03) && close(m.coef()[1], -0.06) && close(m.intercept(), 0.03));
        let p = m.predict(&b, &["a", "b"]).unwrap();
        assert!(close(p[0], 0.03 + 0.12 + 0.03));
        assert_eq!(m.partial_fit(&b, &["a"], "y"), Err(TrainError::Features { model: 2, given: 1 }));
    }

    #[test]
    fn bad_columns_are_errors() {
        let mut m = SgdRegressor::new();
        let b = batch(&[1.0], &[1.0]);
        assert_eq!(m.partial_fit(&b, &["z"], "y"), Err(TrainError::NoColumn("z".into())));
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let b = RecordBatch::try_from_iter([("x", ints.clone()), ("y", ints)]).unwrap();
        assert!(matches!(m.partial_fit(&b, &["x"], "y"), Err(TrainError::NotFloat64 { .. })));
        let nan = batch(&[f64::NAN], &[1.0]);
        assert_eq!(m.partial_fit(&nan, &["x"], "y"), Err(TrainError::NotFinite("x".into())));
        let huge = batch(&[1e300, 1e300], &[1.0, 1.0]);
        assert_eq!(SgdRegressor::new().partial_fit(&huge, &["x"], "y"), Err(TrainError::Diverged));
        let nulls: ArrayRef = Arc::new(Float64Array::from(vec![None, Some(1.0)]));
        let b = RecordBatch::try_from_iter([("x", nulls.clone()), ("y", nulls)]).unwrap();
        assert!(matches!(m.partial_fit(&b, &["x"], "y"), Err(TrainError::Nulls(_))));
    }

    #[test]
    fn the_plasma_example_converges_in_one_pass() {
        let mut data = LinearData::new(42);
        let mut m = SgdRegressor::new();
        let mut rows = 0;
        while rows < 10_000 {
            let b = data.batch(40);
            rows += b.num_rows();
            m.partial_fit(&b, &["x"], "y").unwrap();
        }
        assert!((m.intercept() - 4.0).abs() < 0.3, "{m:?}");
        assert!((m.coef()[0] - 3.0).abs() < 0.3, "{m:?}");
    }
}

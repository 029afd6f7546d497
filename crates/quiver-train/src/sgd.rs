//! [`SgdRegressor`]: scikit-learn's `SGDRegressor`, trained batch by batch.

use std::borrow::Cow;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

use super::TrainError;

/// How the learning rate `eta` moves, with scikit-learn's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LearningRate {
    /// `eta = eta0` throughout.
    #[serde(rename = "constant")]
    Constant,
    /// `eta = eta0 / t^power_t`, `t` counting rows from 1 (the default).
    #[serde(rename = "invscaling")]
    InvScaling,
    /// `eta = eta0` while the loss improves; divided by 5 each time it has
    /// not improved by `tol` for `n_iter_no_change` epochs in a row (not
    /// below 1e-6). As in scikit-learn's `fit`, with one difference a
    /// stream forces: an epoch is `epoch_rows` rows (a stream has no end to
    /// pass over), whatever the batches, and its loss is its rows' mean
    /// loss (each before its row's update), compared with the best so far.
    /// (scikit-learn's `partial_fit` starts every call afresh, so there
    /// `adaptive` never divides: it is `constant`.)
    #[serde(rename = "adaptive")]
    Adaptive,
}

/// The loss minimised, with scikit-learn's names.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name")]
#[non_exhaustive]
pub enum Loss {
    /// `½(p − y)²` (the default).
    #[serde(rename = "squared_error")]
    SquaredError,
    /// Squared within `epsilon` of the target, linear past it: robust to
    /// outliers. `½r²` for `|r| ≤ ε`, else `ε|r| − ½ε²`, with `r = p − y`.
    #[serde(rename = "huber")]
    Huber {
        /// Where the loss turns linear (scikit-learn's default: 0.1).
        epsilon: f64,
    },
}

impl Loss {
    /// The loss and its derivative in the prediction `p`, for target `y`.
    fn of(self, p: f64, y: f64) -> (f64, f64) {
        let r = p - y;
        match self {
            Loss::SquaredError => (0.5 * r * r, r),
            Loss::Huber { epsilon } if r.abs() <= epsilon => (0.5 * r * r, r),
            Loss::Huber { epsilon } => (epsilon * r.abs() - 0.5 * epsilon * epsilon, epsilon * r.signum()),
        }
    }
}

/// The settings of an [`SgdRegressor`], scikit-learn's `SGDRegressor`
/// defaults unless changed: squared error, an L2 penalty of `alpha =
/// 0.0001`, `invscaling` from `eta0 = 0.01` with `power_t = 0.25`, a
/// fitted intercept; `adaptive` with `n_iter_no_change = 5`, `tol = 1e-3`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdSettings {
    /// The loss.
    pub loss: Loss,
    /// The learning-rate schedule.
    pub learning_rate: LearningRate,
    /// The initial learning rate.
    pub eta0: f64,
    /// The exponent of `invscaling`.
    pub power_t: f64,
    /// The L2 penalty's strength.
    pub alpha: f64,
    /// Whether the intercept is fitted.
    pub fit_intercept: bool,
    /// `adaptive`: epochs without improvement before `eta` is divided.
    pub n_iter_no_change: u32,
    /// `adaptive`: the improvement that counts.
    pub tol: f64,
    /// `adaptive`: rows per epoch.
    pub epoch_rows: u64,
}

impl Default for SgdSettings {
    fn default() -> Self {
        SgdSettings {
            loss: Loss::SquaredError,
            learning_rate: LearningRate::InvScaling,
            eta0: 0.01,
            power_t: 0.25,
            alpha: 0.0001,
            fit_intercept: true,
            n_iter_no_change: 5,
            tol: 1e-3,
            epoch_rows: 10_000,
        }
    }
}

impl SgdSettings {
    /// Refuses settings scikit-learn refuses (and non-finite numbers).
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |what: &str| Err(TrainError::Settings(what.to_string()));
        if !(self.eta0.is_finite() && self.eta0 > 0.0) {
            return bad("eta0 must be a finite number above 0");
        }
        if !self.power_t.is_finite() {
            return bad("power_t must be finite");
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad("alpha must be a finite number, 0 or above");
        }
        if let Loss::Huber { epsilon } = self.loss {
            if !(epsilon.is_finite() && epsilon >= 0.0) {
                return bad("epsilon must be a finite number, 0 or above");
            }
        }
        if self.n_iter_no_change == 0 {
            return bad("n_iter_no_change must be at least 1");
        }
        if !self.tol.is_finite() {
            return bad("tol must be finite");
        }
        if self.epoch_rows == 0 {
            return bad("epoch_rows must be at least 1");
        }
        Ok(())
    }
}

/// What one call of [`SgdRegressor::partial_fit`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fitted {
    /// Rows trained on.
    pub rows: usize,
    /// Their summed loss, each before its row's update (scikit-learn's
    /// `sumloss`).
    pub loss: f64,
}

/// The `adaptive` schedule's memory between epochs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Adaptive {
    /// The best epoch loss so far (`None`: no epoch yet).
    pub(crate) best: Option<f64>,
    /// Epochs in a row without an improvement of `tol`.
    pub(crate) stalled: u32,
    /// The epoch under way: its summed loss and its rows.
    pub(crate) loss: f64,
    pub(crate) rows: u64,
}

/// Online linear regression by plain stochastic gradient descent, with the
/// settings and the meaning of scikit-learn's `SGDRegressor`
/// ([`SgdSettings`]).
///
/// [`partial_fit`](Self::partial_fit) makes one pass over a batch's rows in
/// order; for each row, with `t` counting the rows seen from 1:
///
/// ```text
/// eta = the schedule's rate at t      (invscaling: eta0 / t^power_t)
/// p   = w·x + b
/// g   = dloss(p, y)                   (squared: p − y; Huber: clipped at ±ε), clipped to ±1e12
/// w   = w · max(0, 1 − eta·alpha)     (the L2 penalty, as scikit-learn applies it)
/// w   = w − eta·g·x
/// b   = b − eta·g
/// ```
///
/// Feature and target columns may be any integer or float type; they are
/// read as `f64` (integers past 2^53 round). Unlike scikit-learn's
/// `partial_fit`, rows are not shuffled: a batch is trained in the order
/// the stream delivered it, so runs are reproducible.
///
/// With serde a model is its settings, weights, intercept, `rows_seen`,
/// learning rate and adaptive state; what is read back is checked (finite
/// numbers, valid settings). [`super::SavedModel`] adds the column names
/// and writes files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelFields", into = "ModelFields")]
pub struct SgdRegressor {
    pub(crate) settings: SgdSettings,
    pub(crate) coef: Vec<f64>,
    pub(crate) intercept: f64,
    /// Rows seen plus one (scikit-learn's `t_`).
    pub(crate) t: f64,
    /// The learning rate of `constant` and `adaptive` (eta0 until
    /// `adaptive` divides it).
    pub(crate) eta: f64,
    pub(crate) adaptive: Adaptive,
}

impl Default for SgdRegressor {
    fn default() -> Self {
        SgdRegressor::new()
    }
}

/// An [`SgdRegressor`] as serde sees it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelFields {
    pub(crate) settings: SgdSettings,
    pub(crate) coef: Vec<f64>,
    pub(crate) intercept: f64,
    pub(crate) rows_seen: u64,
    pub(crate) eta: f64,
    pub(crate) adaptive: Adaptive,
}

impl From<SgdRegressor> for ModelFields {
    fn from(m: SgdRegressor) -> Self {
        let rows_seen = m.rows_seen();
        ModelFields {
            settings: m.settings,
            coef: m.coef,
            intercept: m.intercept,
            rows_seen,
            eta: m.eta,
            adaptive: m.adaptive,
        }
    }
}

impl TryFrom<ModelFields> for SgdRegressor {
    type Error = TrainError;

    /// Checks what was read: valid settings, finite numbers.
    fn try_from(f: ModelFields) -> Result<Self, TrainError> {
        let bad = |why: &str| Err(TrainError::Settings(why.to_string()));
        if !(f.intercept.is_finite() && f.eta.is_finite() && f.eta > 0.0 && f.coef.iter().all(|w| w.is_finite())) {
            return bad("the weights or the learning rate are not finite numbers");
        }
        if f.adaptive.best.is_some_and(|b| !b.is_finite()) || !(f.adaptive.loss.is_finite() && f.adaptive.loss >= 0.0) {
            return bad("the adaptive schedule's losses are not finite numbers, 0 or above");
        }
        if f.coef.is_empty() && f.rows_seen > 0 {
            return bad("a model that has seen rows has weights");
        }
        // The settings first: they say what the counts below may be.
        let mut model = SgdRegressor::with_settings(f.settings)?;
        if f.rows_seen > 1 << 53 || f.adaptive.rows >= model.settings.epoch_rows {
            return bad("the row counts are past what a model can have seen");
        }
        model.coef = f.coef;
        model.intercept = f.intercept;
        model.t = f.rows_seen as f64 + 1.0;
        model.eta = f.eta;
        model.adaptive = f.adaptive;
        Ok(model)
    }
}

/// scikit-learn clips the loss's derivative to this, so one wild row cannot
/// blow the weights up.
const MAX_DLOSS: f64 = 1e12;

impl SgdRegressor {
    /// A model with scikit-learn's defaults; its features are fixed by the
    /// first batch it is trained on.
    pub fn new() -> Self {
        SgdRegressor::with_settings(SgdSettings::default()).unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }

    /// A model with these settings (checked: see [`SgdSettings::validate`]).
    pub fn with_settings(settings: SgdSettings) -> Result<Self, TrainError> {
        settings.validate()?;
        Ok(SgdRegressor {
            settings,
            coef: Vec::new(),
            intercept: 0.0,
            t: 1.0,
            eta: settings.eta0,
            adaptive: Adaptive::default(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &SgdSettings {
        &self.settings
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

    /// The learning rate the next row gets.
    pub fn learning_rate(&self) -> f64 {
        match self.settings.learning_rate {
            LearningRate::InvScaling => self.settings.eta0 / self.t.powf(self.settings.power_t),
            LearningRate::Constant | LearningRate::Adaptive => self.eta,
        }
    }

    /// Trains on every row of `batch`: `features` name the input columns,
    /// `target` the column to predict (numbers, without nulls). A batch
    /// that is refused, or that makes the model diverge, changes nothing.
    pub fn partial_fit(&mut self, batch: &RecordBatch, features: &[&str], target: &str) -> Result<Fitted, TrainError> {
        let before = self.clone();
        let fitted = self.fit_rows(batch, features, target);
        if fitted.is_err() {
            *self = before;
        }
        fitted
    }

    fn fit_rows(&mut self, batch: &RecordBatch, features: &[&str], target: &str) -> Result<Fitted, TrainError> {
        let x = numeric_columns(batch, features)?;
        let y = numeric_columns(batch, &[target])?.remove(0);
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
        let s = self.settings;
        let mut sumloss = 0.0;
        for row in 0..batch.num_rows() {
            let eta = self.learning_rate();
            let p = self.coef.iter().zip(&x).map(|(w, col)| w * col[row]).sum::<f64>() + self.intercept;
            let (loss, dloss) = s.loss.of(p, y[row]);
            if !loss.is_finite() {
                return Err(TrainError::Diverged);
            }
            sumloss += loss;
            let update = -eta * dloss.clamp(-MAX_DLOSS, MAX_DLOSS);
            let decay = (1.0 - eta * s.alpha).max(0.0);
            for (w, col) in self.coef.iter_mut().zip(&x) {
                *w = *w * decay + update * col[row];
            }
            if s.fit_intercept {
                self.intercept += update;
            }
            self.t += 1.0;
            if s.learning_rate == LearningRate::Adaptive {
                self.adaptive.loss += loss;
                self.adaptive.rows = self.adaptive.rows.saturating_add(1);
                if self.adaptive.rows >= s.epoch_rows {
                    let mean = self.adaptive.loss / self.adaptive.rows as f64;
                    (self.adaptive.loss, self.adaptive.rows) = (0.0, 0);
                    self.end_epoch(mean);
                }
            }
        }
        if !self.intercept.is_finite() || self.coef.iter().any(|w| !w.is_finite()) {
            return Err(TrainError::Diverged);
        }
        Ok(Fitted { rows: batch.num_rows(), loss: sumloss })
    }

    /// `adaptive`: scikit-learn's end-of-epoch step, on an epoch's mean loss.
    fn end_epoch(&mut self, loss: f64) {
        let a = &mut self.adaptive;
        match a.best {
            Some(best) if loss > best - self.settings.tol => a.stalled = a.stalled.saturating_add(1),
            _ => a.stalled = 0,
        }
        if a.best.map_or(true, |best| loss < best) {
            a.best = Some(loss);
        }
        if a.stalled >= self.settings.n_iter_no_change && self.eta > 1e-6 {
            self.eta /= 5.0;
            a.stalled = 0;
        }
    }

    /// Predictions for every row of `batch`.
    pub fn predict(&self, batch: &RecordBatch, features: &[&str]) -> Result<Vec<f64>, TrainError> {
        let x = numeric_columns(batch, features)?;
        if self.coef.len() != x.len() {
            return Err(TrainError::Features { model: self.coef.len(), given: x.len() });
        }
        Ok((0..batch.num_rows())
            .map(|row| self.coef.iter().zip(&x).map(|(w, col)| w * col[row]).sum::<f64>() + self.intercept)
            .collect())
    }

    /// R² and mean squared error on a labelled batch (see [`Scorer`] for
    /// several).
    pub fn score(&self, batch: &RecordBatch, features: &[&str], target: &str) -> Result<Score, TrainError> {
        let mut scorer = Scorer::default();
        scorer.add(self, batch, features, target)?;
        Ok(scorer.score())
    }
}

/// How well a model predicts a labelled set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Score {
    /// The coefficient of determination, scikit-learn's `r2_score` (1 is
    /// perfect; a constant target gives 1 if predicted exactly, else 0).
    pub r2: f64,
    /// The mean squared error.
    pub mse: f64,
    /// Rows scored.
    pub rows: u64,
}

/// Scores a model over many batches in one pass (the target's mean and
/// variance by Welford's method).
#[derive(Clone, Debug, Default)]
pub struct Scorer {
    rows: u64,
    mean: f64,
    /// Sum of squared distances from the mean.
    m2: f64,
    /// Sum of squared residuals.
    residual: f64,
}

impl Scorer {
    /// Adds a labelled batch's rows.
    pub fn add(
        &mut self,
        model: &SgdRegressor,
        batch: &RecordBatch,
        features: &[&str],
        target: &str,
    ) -> Result<(), TrainError> {
        let predicted = model.predict(batch, features)?;
        let y = numeric_columns(batch, &[target])?.remove(0);
        for (&y, p) in y.iter().zip(predicted) {
            self.rows += 1;
            let delta = y - self.mean;
            self.mean += delta / self.rows as f64;
            self.m2 += delta * (y - self.mean);
            self.residual += (y - p) * (y - p);
        }
        Ok(())
    }

    /// The score of what was added (NaN with no rows).
    pub fn score(&self) -> Score {
        let n = self.rows as f64;
        let r2 = if self.rows == 0 {
            f64::NAN
        } else if self.m2 == 0.0 {
            // A constant target: perfect or nothing, as scikit-learn says.
            if self.residual == 0.0 {
                1.0
            } else {
                0.0
            }
        } else {
            1.0 - self.residual / self.m2
        };
        Score { r2, mse: if self.rows == 0 { f64::NAN } else { self.residual / n }, rows: self.rows }
    }
}

/// The values of the named numeric columns as `f64` (`Float64` borrowed,
/// the others converted).
pub(crate) fn numeric_columns<'b>(batch: &'b RecordBatch, names: &[&str]) -> Result<Vec<Cow<'b, [f64]>>, TrainError> {
    names
        .iter()
        .map(|&name| {
            let column = batch.column_by_name(name).ok_or_else(|| TrainError::NoColumn(name.to_string()))?;
            if column.null_count() > 0 {
                return Err(TrainError::Nulls(name.to_string()));
            }
            macro_rules! convert {
                ($t:ty) => {
                    Cow::Owned(column.as_primitive::<$t>().values().iter().map(|&v| v as f64).collect())
                };
            }
            Ok(match column.data_type() {
                DataType::Float64 => Cow::Borrowed(column.as_primitive::<Float64Type>().values().as_ref()),
                DataType::Float32 => convert!(Float32Type),
                DataType::Int8 => convert!(Int8Type),
                DataType::Int16 => convert!(Int16Type),
                DataType::Int32 => convert!(Int32Type),
                DataType::Int64 => convert!(Int64Type),
                DataType::UInt8 => convert!(UInt8Type),
                DataType::UInt16 => convert!(UInt16Type),
                DataType::UInt32 => convert!(UInt32Type),
                DataType::UInt64 => convert!(UInt64Type),
                other => return Err(TrainError::NotNumeric { column: name.to_string(), found: other.to_string() }),
            })
        })
        .collect()
}

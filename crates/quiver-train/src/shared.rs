//! [`SharedModel`]: one model that every worker process trains, in a store
//! object of shared cells (Hogwild!, Recht et al. 2011; what PyTorch's
//! `model.share_memory()` gives its workers).
//!
//! The cells hold the weights, the intercept, the row count `t` and the
//! learning rate, as `f64` bits in 64-bit atomics. A worker's
//! [`SharedTrainer`] copies them before a batch, trains its copy on the
//! batch (the same steps as [`SgdRegressor::partial_fit`], with the
//! schedule at the shared `t`), and adds what its batch changed to every
//! cell with a compare-and-swap loop, so no worker's update is lost and
//! no lock is taken; a worker reads weights the others may be changing,
//! which is the Hogwild! bargain. `sync_every` batches can be trained
//! between two exchanges (1 by default: every batch).
//!
//! Cells: 0 a magic word (written last, once the rest is set), 1 the
//! feature count, 2 the rows trained, 3 the intercept, 4 the learning rate
//! of `constant`/`adaptive`, 5 the summed loss, 6 the exchanges, 7 zero,
//! then one weight per feature. The object's metadata, fixed at creation,
//! names the model, its features, its target and its settings (JSON).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};

use super::file::SavedModel;
use super::sgd::{Fitted, SgdRegressor, SgdSettings};
use super::TrainError;
use quiver::{Cells, IdKind, ObjectId, Store, StoreError};

/// "QVSGD001": the model is initialised.
const MAGIC: u64 = u64::from_le_bytes(*b"QVSGD001");
const HEADER: usize = 8;
const FEATURES: usize = 1;
const ROWS: usize = 2;
const INTERCEPT: usize = 3;
const ETA: usize = 4;
const LOSS: usize = 5;
const EXCHANGES: usize = 6;

/// The metadata of the model's object.
#[derive(Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: String,
    name: String,
    features: Vec<String>,
    target: String,
    settings: SgdSettings,
}

const META_FORMAT: &str = "quiver-shared-sgd";

/// One model in the store, trained by every worker that opens it (see the
/// module docs).
pub struct SharedModel {
    cells: Cells,
    name: String,
    features: Vec<String>,
    target: String,
    settings: SgdSettings,
}

impl std::fmt::Debug for SharedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedModel").field("name", &self.name).field("features", &self.features).finish()
    }
}

/// The ID of the shared model `name`: kind `b'M'`, the name's hash.
fn model_id(name: &str) -> ObjectId {
    ObjectId::named(IdKind::SharedModel, name, 0, [0; 8])
}

/// The store's error about the shared model `name`, kept as the source.
fn store_error(name: &str) -> impl Fn(StoreError) -> TrainError + '_ {
    move |source| TrainError::SharedStore { name: name.to_string(), source }
}

fn load_f64(cell: &AtomicU64) -> f64 {
    f64::from_bits(cell.load(Relaxed))
}

/// Adds `delta` to the `f64` in `cell`, lock-free.
fn add_f64(cell: &AtomicU64, delta: f64) {
    if delta == 0.0 {
        return;
    }
    let _ = cell.fetch_update(Relaxed, Relaxed, |old| Some((f64::from_bits(old) + delta).to_bits()));
}

/// Lowers the `f64` in `cell` to `value` if that is lower.
fn min_f64(cell: &AtomicU64, value: f64) {
    let _ = cell.fetch_update(Relaxed, Relaxed, |old| (value < f64::from_bits(old)).then_some(value.to_bits()));
}

impl SharedModel {
    /// Makes the shared model `name` in `store`, starting from `start` (a
    /// new model, or one loaded to resume). Fails with
    /// [`TrainError::SharedStore`] if it exists.
    pub fn create(store: &Store, name: &str, start: &SavedModel) -> Result<Self, TrainError> {
        start.check().map_err(|why| TrainError::SharedMismatch {
            name: name.to_string(),
            why: format!("cannot start from this model: {why}"),
        })?;
        let n = start.features.len();
        let meta = Meta {
            format: META_FORMAT.into(),
            name: name.into(),
            features: start.features.clone(),
            target: start.target.clone(),
            settings: start.model.settings,
        };
        let meta_bytes = serde_json::to_vec(&meta)
            .map_err(|source| TrainError::SharedMetadata { name: name.to_string(), source })?;
        let cells = store.create_cells(model_id(name), HEADER + n, &meta_bytes).map_err(store_error(name))?;
        let c = cells.cells();
        let m = &start.model;
        c[FEATURES].store(n as u64, Relaxed);
        c[ROWS].store(m.rows_seen(), Relaxed);
        c[INTERCEPT].store(m.intercept.to_bits(), Relaxed);
        c[ETA].store(m.eta.to_bits(), Relaxed);
        for (cell, w) in c[HEADER..].iter().zip(m.coef.iter().chain(std::iter::repeat(&0.0))) {
            cell.store(w.to_bits(), Relaxed);
        }
        c[0].store(MAGIC, Release);
        Ok(SharedModel::with_meta(cells, meta))
    }

    fn with_meta(cells: Cells, meta: Meta) -> Self {
        SharedModel { cells, name: meta.name, features: meta.features, target: meta.target, settings: meta.settings }
    }

    /// Opens the shared model `name`, waiting up to `timeout` for it to
    /// exist and be initialised.
    pub fn open(store: &Store, name: &str, timeout: Duration) -> Result<Self, TrainError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(model) = Self::try_open(store, name)? {
                return Ok(model);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(TrainError::SharedMissing { name: name.to_string(), timeout });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The shared model `name`, or `None` while it does not exist or is
    /// being initialised.
    pub fn try_open(store: &Store, name: &str) -> Result<Option<Self>, TrainError> {
        match store.get_cells(model_id(name)).map_err(store_error(name))? {
            Some(cells) if cells.cells().first().is_some_and(|c| c.load(Acquire) == MAGIC) => {
                Self::checked(cells, name).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Opens the shared model `name`, making it from `start` if it does not
    /// exist; an existing one must have `start`'s features, target and
    /// settings.
    pub fn open_or_create(
        store: &Store,
        name: &str,
        start: &SavedModel,
        timeout: Duration,
    ) -> Result<Self, TrainError> {
        match Self::create(store, name, start) {
            Err(TrainError::SharedStore { .. }) if store.get_cells(model_id(name)).is_ok_and(|c| c.is_some()) => {}
            other => return other,
        }
        let model = Self::open(store, name, timeout)?;
        if model.features != start.features || model.target != start.target || model.settings != start.model.settings {
            return Err(TrainError::SharedMismatch {
                name: name.to_string(),
                why: format!(
                    "exists as a model of {:?} -> {:?} with {:?}, not {:?} -> {:?} with {:?} \
                     (remove it to start afresh)",
                    model.features, model.target, model.settings, start.features, start.target, start.model.settings
                ),
            });
        }
        Ok(model)
    }

    /// The model's object, checked against its metadata.
    fn checked(cells: Cells, name: &str) -> Result<Self, TrainError> {
        let bad = |why: String| TrainError::SharedMismatch {
            name: name.to_string(),
            why: format!("not a shared model: {why}"),
        };
        let meta: Meta = serde_json::from_slice(cells.metadata())
            .map_err(|source| TrainError::SharedMetadata { name: name.to_string(), source })?;
        if meta.format != META_FORMAT || meta.name != name {
            return Err(bad(format!("it says it is {:?} of format {:?}", meta.name, meta.format)));
        }
        meta.settings.validate()?;
        let n = meta.features.len();
        let c = cells.cells();
        if c.len() != HEADER + n || c[FEATURES].load(Relaxed) != n as u64 {
            return Err(bad(format!("{} cells for {n} features", c.len())));
        }
        Ok(SharedModel::with_meta(cells, meta))
    }

    /// Deletes the shared model `name` (at once, or when its last handle
    /// closes).
    pub fn remove(store: &Store, name: &str) -> Result<(), TrainError> {
        match store.delete(model_id(name)) {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(store_error(name)(e)),
        }
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Rows trained by every worker so far.
    pub fn rows_seen(&self) -> u64 {
        self.cells.cells()[ROWS].load(Relaxed)
    }

    /// Their summed loss (each row's before its update).
    pub fn loss_sum(&self) -> f64 {
        load_f64(&self.cells.cells()[LOSS])
    }

    /// The model as it is now (its weights may be changing meanwhile).
    pub fn snapshot(&self) -> SavedModel {
        let mut model = SgdRegressor::with_settings(self.settings).unwrap_or_default();
        self.copy_into(&mut model);
        SavedModel::new(model, self.features.clone(), self.target.clone())
    }

    /// Copies the weights, intercept, `t` and learning rate into `model`.
    fn copy_into(&self, model: &mut SgdRegressor) {
        let c = self.cells.cells();
        model.coef.clear();
        model.coef.extend(c[HEADER..].iter().map(load_f64));
        model.intercept = load_f64(&c[INTERCEPT]);
        model.t = c[ROWS].load(Relaxed) as f64 + 1.0;
        model.eta = load_f64(&c[ETA]);
    }

    /// A trainer for this process's batches, exchanging with the shared
    /// model every `sync_every` batches (at least 1).
    pub fn trainer(self: &Arc<Self>, sync_every: u32) -> SharedTrainer {
        SharedTrainer {
            shared: Arc::clone(self),
            local: SgdRegressor::with_settings(self.settings).unwrap_or_default(),
            base: Vec::new(),
            base_intercept: 0.0,
            pending: Fitted::default(),
            batches: 0,
            sync_every: sync_every.max(1),
        }
    }
}

/// One worker's side of a [`SharedModel`]: trains a copy and adds its
/// changes to the shared cells (see the module docs).
#[derive(Debug)]
pub struct SharedTrainer {
    shared: Arc<SharedModel>,
    local: SgdRegressor,
    /// The weights and intercept as copied at the last exchange.
    base: Vec<f64>,
    base_intercept: f64,
    /// What was trained since the last exchange.
    pending: Fitted,
    batches: u32,
    sync_every: u32,
}

impl SharedTrainer {
    /// Trains on every row of `batch` (the model's feature and target
    /// columns), exchanging with the shared model as configured.
    pub fn partial_fit(&mut self, batch: &RecordBatch) -> Result<Fitted, TrainError> {
        if self.batches == 0 {
            self.shared.copy_into(&mut self.local);
            self.base.clone_from(&self.local.coef);
            self.base_intercept = self.local.intercept;
        }
        let features: Vec<&str> = self.shared.features.iter().map(String::as_str).collect();
        // A refused batch changes nothing here (`partial_fit` rolls back);
        // what was trained before it is still exchanged.
        let fitted = self.local.partial_fit(batch, &features, &self.shared.target)?;
        self.pending.rows += fitted.rows;
        self.pending.loss += fitted.loss;
        self.batches += 1;
        if self.batches >= self.sync_every {
            self.sync();
        }
        Ok(fitted)
    }

    /// Adds what was trained since the last exchange to the shared model.
    pub fn sync(&mut self) {
        if self.batches == 0 {
            return;
        }
        let c = self.shared.cells.cells();
        let deltas: Vec<f64> = self.local.coef.iter().zip(&self.base).map(|(w, base)| w - base).collect();
        let intercept = self.local.intercept - self.base_intercept;
        // The local model never holds a diverged batch (it rolls back), but
        // the shared cells may have moved to where a difference overflows:
        // nothing that is not a finite number is ever added.
        if intercept.is_finite() && deltas.iter().all(|d| d.is_finite()) {
            for (cell, delta) in c[HEADER..].iter().zip(deltas) {
                add_f64(cell, delta);
            }
            add_f64(&c[INTERCEPT], intercept);
        }
        min_f64(&c[ETA], self.local.eta);
        add_f64(&c[LOSS], self.pending.loss);
        c[ROWS].fetch_add(self.pending.rows as u64, Relaxed);
        c[EXCHANGES].fetch_add(1, Relaxed);
        self.pending = Fitted::default();
        self.batches = 0;
    }
}

impl Drop for SharedTrainer {
    /// Nothing trained is kept back.
    fn drop(&mut self) {
        self.sync();
    }
}

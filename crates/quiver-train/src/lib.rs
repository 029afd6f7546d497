//! Online learning, the worked example: linear regression by stochastic
//! gradient descent, trained batch by batch as record batches arrive.
//!
//! - `sgd`: [`SgdRegressor`], scikit-learn's `SGDRegressor` (its
//!   schedules `constant`, `invscaling`, `adaptive`; squared error and
//!   Huber loss), with [`Scorer`] for R² and MSE;
//! - `file`: [`SavedModel`], a model with its feature names, saved as JSON
//!   atomically and loaded with every field checked;
//! - `shared`: [`SharedModel`], one model in a store object of shared
//!   cells that every worker process trains (Hogwild!-style, lock-free);
//! - `data`: the seeded synthetic data of the Plasma streaming example
//!   (`y = 4 + 3x + noise`) and an order-independent checksum of rows.

mod data;
mod file;
mod sgd;
mod shared;

pub use data::{row_checksum, LinearData};
pub use file::{ModelFileError, SavedModel};
pub use sgd::{Fitted, LearningRate, Loss, Score, Scorer, SgdRegressor, SgdSettings};
pub use shared::{SharedModel, SharedTrainer};

/// A column name as errors show it: quoted, and cut if it is long (a name
/// comes from a user's arguments or a file, and may be megabytes).
fn shown(name: &str) -> String {
    const MAX: usize = 64;
    if name.len() <= MAX {
        return format!("{name:?}");
    }
    let mut end = MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &name[..end], name.len())
}

/// Errors of training, of model files and of shared models. Each keeps
/// what caused it as its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A feature or target column is missing.
    #[error("the batch has no column {}", shown(.0))]
    NoColumn(String),
    /// A column is not a number (integers and floats are read as f64).
    #[error("column {} is {found}, not a number", shown(column))]
    NotNumeric {
        /// The column.
        column: String,
        /// Its type.
        found: String,
    },
    /// A column has nulls, which SGD cannot use.
    #[error("column {} has nulls", shown(.0))]
    Nulls(String),
    /// A value is NaN or infinite (scikit-learn refuses these too).
    #[error("column {} has a NaN or infinite value", shown(.0))]
    NotFinite(String),
    /// The weights became NaN or infinite: the learning rate is too large
    /// for the data's scale (scikit-learn raises the same).
    #[error("the model diverged (weights are no longer finite); scale the features or lower eta0")]
    Diverged,
    /// Settings that cannot work.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// A model file that cannot be written or read.
    #[error("model file {}", path.display())]
    ModelFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        #[source]
        source: ModelFileError,
    },
    /// The store refused an operation on a shared model's object.
    #[error("shared model {name:?}")]
    SharedStore {
        /// The model's name.
        name: String,
        /// What the store said.
        #[source]
        source: quiver::StoreError,
    },
    /// No shared model of this name appeared within the time given.
    #[error("no shared model {name:?} within {timeout:?}")]
    SharedMissing {
        /// The model's name.
        name: String,
        /// How long it was waited for.
        timeout: std::time::Duration,
    },
    /// The object of this name is not a shared model, or a model of other
    /// features or settings than the caller's.
    #[error("shared model {name:?}: {why}")]
    SharedMismatch {
        /// The model's name.
        name: String,
        /// What differs.
        why: String,
    },
    /// A shared model's metadata is not a shared model's JSON.
    #[error("shared model {name:?}: its metadata is not a shared model's")]
    SharedMetadata {
        /// The model's name.
        name: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The batch has another number of features than the model.
    #[error("the model has {model} features; {given} were given")]
    Features {
        /// The model's.
        model: usize,
        /// The call's.
        given: usize,
    },
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};

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
        assert!(matches!(m.partial_fit(&b, &["a"], "y"), Err(TrainError::Features { model: 2, given: 1 })));
    }

    #[test]
    fn bad_columns_are_errors() {
        let mut m = SgdRegressor::new();
        let b = batch(&[1.0], &[1.0]);
        assert!(matches!(m.partial_fit(&b, &["z"], "y"), Err(TrainError::NoColumn(c)) if c == "z"));
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let text: ArrayRef = Arc::new(arrow_array::StringArray::from(vec!["1"]));
        let b = RecordBatch::try_from_iter([("x", text), ("y", ints)]).unwrap();
        assert!(matches!(m.partial_fit(&b, &["x"], "y"), Err(TrainError::NotNumeric { .. })));
        let nan = batch(&[f64::NAN], &[1.0]);
        assert!(matches!(m.partial_fit(&nan, &["x"], "y"), Err(TrainError::NotFinite(c)) if c == "x"));
        let huge = batch(&[1e300, 1e300], &[1.0, 1.0]);
        let mut trained = SgdRegressor::new();
        trained.partial_fit(&batch(&[1.0], &[2.0]), &["x"], "y").unwrap();
        let before = trained.clone();
        assert!(matches!(trained.partial_fit(&huge, &["x"], "y"), Err(TrainError::Diverged)));
        assert_eq!(trained, before, "a batch that diverges changes nothing");
        // Nor can a model that is not finite, or whose weights do not match
        // its features, be saved.
        let dir = tempfile::tempdir().unwrap();
        let mut broken = before.clone();
        broken.coef[0] = f64::NAN;
        let path = dir.path().join("m.json");
        assert!(SavedModel::new(broken, vec!["x".into()], "y".into()).save(&path).is_err());
        assert!(SavedModel::new(before, vec!["x".into(), "z".into()], "y".into()).save(&path).is_err());
        assert!(!path.exists(), "nothing written");
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

    fn settings() -> SgdSettings {
        SgdSettings::default()
    }

    #[test]
    fn the_constant_schedule_by_hand() {
        let mut m =
            SgdRegressor::with_settings(SgdSettings { learning_rate: LearningRate::Constant, eta0: 0.1, ..settings() })
                .unwrap();
        m.partial_fit(&batch(&[2.0], &[10.0]), &["x"], "y").unwrap();
        // eta = 0.1; p = 0; g = -10; update = 1: w = 2, b = 1.
        assert!(close(m.coef()[0], 2.0) && close(m.intercept(), 1.0), "{m:?}");
        m.partial_fit(&batch(&[1.0], &[5.0]), &["x"], "y").unwrap();
        // eta = 0.1 still; p = 3; g = -2; update = 0.2; decay = 1 - 0.1 · 1e-4.
        assert!(close(m.coef()[0], 2.0 * 0.99999 + 0.2) && close(m.intercept(), 1.2), "{m:?}");
        assert!(close(m.learning_rate(), 0.1));
    }

    #[test]
    fn the_huber_loss_by_hand() {
        let mut m =
            SgdRegressor::with_settings(SgdSettings { loss: Loss::Huber { epsilon: 1.0 }, ..settings() }).unwrap();
        let fitted = m.partial_fit(&batch(&[2.0, 1.0], &[10.0, 0.5]), &["x"], "y").unwrap();
        // Row 1: eta 0.01, r = -10, past epsilon: g = -1, loss = 10 - 0.5;
        // update 0.01: w = 0.02, b = 0.01.
        // Row 2: eta = 0.01 / 2^0.25; p = 0.03, r = -0.47, within: g = -0.47,
        // loss = 0.5 · 0.47².
        let eta = 0.008408964152537145;
        let update = 0.47 * eta;
        assert!(close(m.coef()[0], 0.02 * (1.0 - eta * 1e-4) + update), "{m:?}");
        assert!(close(m.intercept(), 0.01 + update), "{m:?}");
        assert!(close(fitted.loss, 9.5 + 0.5 * 0.47 * 0.47), "{fitted:?}");
        assert_eq!(fitted.rows, 2);
        // Squared error on the same rows moves much further on the outlier.
        let mut sq = SgdRegressor::new();
        sq.partial_fit(&batch(&[2.0], &[10.0]), &["x"], "y").unwrap();
        assert!(close(sq.intercept(), 0.1));
    }

    #[test]
    fn the_adaptive_schedule_divides_eta_after_epochs_without_improvement() {
        let s = SgdSettings {
            learning_rate: LearningRate::Adaptive,
            eta0: 0.1,
            n_iter_no_change: 2,
            fit_intercept: false,
            epoch_rows: 1,
            ..settings()
        };
        let mut m = SgdRegressor::with_settings(s).unwrap();
        // x = 0, y = 0: the loss is 0 every epoch, never better by tol.
        let flat = batch(&[0.0], &[0.0]);
        let mut etas = Vec::new();
        for _ in 0..6 {
            m.partial_fit(&flat, &["x"], "y").unwrap();
            etas.push(m.learning_rate());
        }
        // An epoch is rows, not batches: the same six rows in one batch
        // end where the six batches did.
        let mut one = SgdRegressor::with_settings(s).unwrap();
        one.partial_fit(&batch(&[0.0; 6], &[0.0; 6]), &["x"], "y").unwrap();
        assert_eq!(one.learning_rate(), m.learning_rate());
        // Epoch 1 sets the best; 2 and 3 do not improve: divided after 3;
        // 4 and 5 do not: divided after 5.
        let want = [0.1, 0.1, 0.02, 0.02, 0.004, 0.004];
        assert!(etas.iter().zip(want).all(|(a, b)| close(*a, b)), "{etas:?}");
        // An epoch that improves by more than tol resets the count.
        let mut m = SgdRegressor::with_settings(s).unwrap();
        m.partial_fit(&batch(&[0.0], &[1.0]), &["x"], "y").unwrap(); // loss 0.5
        m.partial_fit(&flat, &["x"], "y").unwrap(); // 0: better
        m.partial_fit(&flat, &["x"], "y").unwrap(); // not: 1
        assert!(close(m.learning_rate(), 0.1));
        m.partial_fit(&flat, &["x"], "y").unwrap(); // not: 2, divided
        assert!(close(m.learning_rate(), 0.02));
    }

    #[test]
    fn integer_columns_train_as_floats() {
        let ints = |v: &[i64]| -> ArrayRef { Arc::new(Int64Array::from(v.to_vec())) };
        let b = RecordBatch::try_from_iter([("x", ints(&[2, 1])), ("y", ints(&[10, 5]))]).unwrap();
        let mut from_ints = SgdRegressor::new();
        from_ints.partial_fit(&b, &["x"], "y").unwrap();
        let mut from_floats = SgdRegressor::new();
        from_floats.partial_fit(&batch(&[2.0, 1.0], &[10.0, 5.0]), &["x"], "y").unwrap();
        assert_eq!(from_ints, from_floats);
    }

    #[test]
    fn score_by_hand() {
        let mut m = SgdRegressor::new();
        m.coef = vec![2.0];
        m.intercept = 1.0;
        let s = m.score(&batch(&[0.0, 1.0, 2.0], &[1.0, 3.0, 6.0]), &["x"], "y").unwrap();
        // Predictions 1, 3, 5: one squared residual of 1. The target's mean
        // is 10/3, its sum of squares about the mean 38/3.
        assert!(close(s.mse, 1.0 / 3.0) && close(s.r2, 1.0 - 3.0 / 38.0), "{s:?}");
        assert_eq!(s.rows, 3);
        let perfect = m.score(&batch(&[1.0, 1.0], &[3.0, 3.0]), &["x"], "y").unwrap();
        assert_eq!((perfect.r2, perfect.mse), (1.0, 0.0));
        let mut scorer = Scorer::default();
        scorer.add(&m, &batch(&[0.0], &[1.0]), &["x"], "y").unwrap();
        scorer.add(&m, &batch(&[1.0, 2.0], &[3.0, 6.0]), &["x"], "y").unwrap();
        assert!(close(scorer.score().r2, s.r2), "batches add up");
    }

    fn demo_batches(n: usize) -> Vec<RecordBatch> {
        let mut data = LinearData::new(7);
        (0..n).map(|i| data.batch(1 + i % 40)).collect()
    }

    #[test]
    fn save_load_round_trip_and_resume_equal_training_in_one_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let batches = demo_batches(200);
        for s in [
            settings(),
            SgdSettings { learning_rate: LearningRate::Adaptive, loss: Loss::Huber { epsilon: 0.5 }, ..settings() },
        ] {
            let mut whole = SgdRegressor::with_settings(s).unwrap();
            for b in &batches {
                whole.partial_fit(b, &["x"], "y").unwrap();
            }
            let mut first = SgdRegressor::with_settings(s).unwrap();
            for b in &batches[..120] {
                first.partial_fit(b, &["x"], "y").unwrap();
            }
            SavedModel::new(first, vec!["x".into()], "y".into()).save(&path).unwrap();
            let mut resumed = SavedModel::load(&path).unwrap();
            assert_eq!((resumed.features.as_slice(), resumed.target.as_str()), (&["x".to_string()][..], "y"));
            for b in &batches[120..] {
                resumed.model.partial_fit(b, &["x"], "y").unwrap();
            }
            assert_eq!(resumed.model, whole, "resumed equals uninterrupted ({s:?})");
            SavedModel::new(whole.clone(), vec!["x".into()], "y".into()).save(&path).unwrap();
            let loaded = SavedModel::load(&path).unwrap();
            assert_eq!(loaded.model, whole);
            assert_eq!(loaded.model.predict(&batches[0], &["x"]).unwrap(), whole.predict(&batches[0], &["x"]).unwrap());
        }
    }

    #[test]
    fn bad_model_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let mut m = SgdRegressor::new();
        m.partial_fit(&batch(&[1.0], &[2.0]), &["x"], "y").unwrap();
        SavedModel::new(m, vec!["x".into()], "y".into()).save(&path).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        let cases = [
            ("", "not JSON"),
            (&good[..good.len() / 2], "not JSON"),
            ("{\"format\": \"other\"}", "not a quiver model"),
            (&good.replace("\"version\": 1", "\"version\": 2"), "version"),
            (&good.replace("\"rows_seen\"", "\"extra\": 1, \"rows_seen\""), "damaged"),
            (&good.replace("\"eta0\": 0.01", "\"eta0\": -1.0"), "eta0"),
            (&good.replace("\"features\": [\n    \"x\"\n  ]", "\"features\": [\"x\", \"z\"]"), "weights for 2"),
            (&good.replace("\"epoch_rows\": 10000", "\"epoch_rows\": 0"), "epoch_rows must be at least 1"),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            // The error and its sources, as the CLI and Python show them.
            let err = SavedModel::load(&path).unwrap_err();
            let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source());
            let err = chain.map(|e| e.to_string()).collect::<Vec<_>>().join(": ");
            assert!(err.contains(want), "{want:?} not in {err:?} for {text:?}");
        }
        assert!(SavedModel::load(&dir.path().join("missing.json")).is_err());
        // A name from the command line is cut in messages, never echoed whole.
        let long = "f".repeat(50 << 20);
        let err = m_with_features(&long).to_string();
        assert!(err.len() < 200 && err.contains("52428800 bytes"), "{}", &err[..err.len().min(300)]);
    }

    /// The error of fitting a batch without a column named `name`.
    fn m_with_features(name: &str) -> TrainError {
        SgdRegressor::new().partial_fit(&batch(&[1.0], &[2.0]), &[name], "y").unwrap_err()
    }

    #[test]
    fn one_trainer_of_a_shared_model_trains_as_one_model_does() {
        let t = tempfile::Builder::new().prefix("quiver-test-shared-").tempfile_in("/dev/shm").unwrap();
        let name = t.path().file_name().unwrap().to_str().unwrap().trim_start_matches("quiver-").to_string();
        drop(t);
        let store = quiver::Store::create(quiver::StoreConfig::new(&name).capacity(8 << 20)).unwrap();
        let _remove = RemoveStore(name.clone());
        let start = SavedModel::new(SgdRegressor::new(), vec!["x".into()], "y".into());
        let shared = std::sync::Arc::new(SharedModel::create(&store, "m", &start).unwrap());
        assert!(SharedModel::create(&store, "m", &start).is_err(), "one model of a name");
        let batches = demo_batches(100);
        let mut alone = SgdRegressor::new();
        {
            let mut trainer = shared.trainer(1);
            for b in &batches {
                trainer.partial_fit(b).unwrap();
                alone.partial_fit(b, &["x"], "y").unwrap();
            }
        }
        let snap = shared.snapshot();
        assert_eq!(snap.model.rows_seen(), alone.rows_seen());
        assert!((snap.model.intercept() - alone.intercept()).abs() < 1e-9, "{snap:?} {alone:?}");
        assert!((snap.model.coef()[0] - alone.coef()[0]).abs() < 1e-9);
        // Another handle sees the same; other settings are refused.
        let again = SharedModel::open_or_create(&store, "m", &start, std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(again.rows_seen(), alone.rows_seen());
        let other = SavedModel::new(SgdRegressor::new(), vec!["z".into()], "y".into());
        assert!(SharedModel::open_or_create(&store, "m", &other, std::time::Duration::from_secs(1)).is_err());
        // A batch that diverges in one trainer leaves the shared model as it was.
        let trainer_before = shared.snapshot();
        let mut trainer = shared.trainer(4);
        let huge = batch(&[1e300, 1e300], &[1.0, 1.0]);
        assert!(matches!(trainer.partial_fit(&huge), Err(TrainError::Diverged)));
        drop(trainer);
        assert_eq!(shared.snapshot(), trainer_before);
        SharedModel::remove(&store, "m").unwrap();
    }

    #[test]
    fn a_model_goes_through_serde_and_what_comes_back_is_checked() {
        let mut m =
            SgdRegressor::with_settings(SgdSettings { learning_rate: LearningRate::Adaptive, ..settings() }).unwrap();
        for b in demo_batches(20) {
            m.partial_fit(&b, &["x"], "y").unwrap();
        }
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<SgdRegressor>(&text).unwrap(), m);
        let nonsense = text.replace("\"eta\":0.01", "\"eta\":-1.0");
        assert_ne!(nonsense, text);
        assert!(serde_json::from_str::<SgdRegressor>(&nonsense).is_err(), "{nonsense}");
    }

    struct RemoveStore(String);
    impl Drop for RemoveStore {
        fn drop(&mut self) {
            let _ = quiver::Store::remove(&self.0);
        }
    }
}

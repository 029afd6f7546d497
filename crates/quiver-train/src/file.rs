//! [`SavedModel`]: a trained model with the names of its columns, as a
//! JSON file.
//!
//! The file holds everything training needs to go on exactly where it
//! stopped: the settings, the weights, the row count `t` and the adaptive
//! schedule's state. It is written to a temporary file in the same
//! directory (made exclusive by `tempfile`), flushed to disk and renamed
//! over the target, so a reader sees the old model or the new, never half
//! of one. Reading checks every field: a file that is not a quiver model,
//! is of a later version, or holds numbers that cannot be a model is an
//! error that says so.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::sgd::{Adaptive, ModelFields, SgdRegressor, SgdSettings};
use super::TrainError;

/// What the file says it is.
const FORMAT: &str = "quiver-sgd-regressor";
/// The file layout's version.
const VERSION: u32 = 1;
/// No model file is larger (a million features fit in about 25 MiB).
const MAX_BYTES: u64 = 256 << 20;

/// A model and the columns it reads: what `quiver train` writes and
/// `quiver predict` reads.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedModel {
    /// The model.
    pub model: SgdRegressor,
    /// The feature columns, in the order of the weights.
    pub features: Vec<String>,
    /// The target column.
    pub target: String,
}

/// The file's fields.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u32,
    features: Vec<String>,
    target: String,
    settings: SgdSettings,
    coef: Vec<f64>,
    intercept: f64,
    rows_seen: u64,
    eta: f64,
    adaptive: Adaptive,
}

impl SavedModel {
    /// A model of `features` predicting `target`.
    pub fn new(model: SgdRegressor, features: Vec<String>, target: String) -> Self {
        SavedModel { model, features, target }
    }

    /// The feature names as `&str`, as training and prediction take them.
    pub fn feature_names(&self) -> Vec<&str> {
        self.features.iter().map(String::as_str).collect()
    }

    /// Checks that `schema` has the model's feature and target columns, as
    /// numbers: a stream or file that cannot train or score it is refused
    /// before any row is read. (Prediction needs the features only: give
    /// `target = false`.)
    pub fn check_schema(&self, schema: &arrow_schema::Schema, target: bool) -> Result<(), TrainError> {
        let names = self.features.iter().chain(target.then_some(&self.target));
        for name in names {
            let field = schema.field_with_name(name).map_err(|_| TrainError::NoColumn(name.clone()))?;
            use arrow_schema::DataType::*;
            let numeric = matches!(
                field.data_type(),
                Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float32 | Float64
            );
            if !numeric {
                return Err(TrainError::NotNumeric { column: name.clone(), found: field.data_type().to_string() });
            }
        }
        Ok(())
    }

    /// Checks what [`load`](Self::load) would: names, weights per feature,
    /// finite numbers.
    pub fn check(&self) -> Result<(), String> {
        if self.features.is_empty() || self.features.iter().chain([&self.target]).any(String::is_empty) {
            return Err("a model needs named features and a named target".into());
        }
        let m = &self.model;
        if m.coef.len() != self.features.len() && !(m.coef.is_empty() && m.rows_seen() == 0) {
            return Err(format!("{} weights for {} features", m.coef.len(), self.features.len()));
        }
        SgdRegressor::try_from(ModelFields::from(m.clone())).map(drop).map_err(|e| e.to_string())
    }

    /// Writes the model to `path` atomically (see the module docs),
    /// refusing one that [`load`](Self::load) would refuse.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let fail = |source: ModelFileError| TrainError::ModelFile { path: path.to_path_buf(), source };
        self.check().map_err(|why| fail(ModelFileError::Invalid(why)))?;
        let m = &self.model;
        let file = File {
            format: FORMAT.to_string(),
            version: VERSION,
            features: self.features.clone(),
            target: self.target.clone(),
            settings: m.settings,
            coef: m.coef.clone(),
            intercept: m.intercept,
            rows_seen: m.rows_seen(),
            eta: m.eta,
            adaptive: m.adaptive,
        };
        let mut text = serde_json::to_vec_pretty(&file).map_err(|e| fail(ModelFileError::Encode(e)))?;
        text.push(b'\n');
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        quiver::store::files::check_replaceable(path).map_err(|e| fail(ModelFileError::NotReplaceable(e)))?;
        let mut temp = tempfile::Builder::new()
            .prefix(".quiver-model-")
            .tempfile_in(dir)
            .map_err(|source| fail(ModelFileError::Temporary { dir: dir.to_path_buf(), source }))?;
        // The mode any file gets under the umask (the temporary is 0600).
        let mode = std::fs::Permissions::from_mode(quiver::store::files::output_mode());
        temp.write_all(&text)
            .and_then(|()| temp.as_file().set_permissions(mode))
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| fail(ModelFileError::Io(e)))?;
        temp.persist(path).map_err(|e| fail(ModelFileError::Io(e.error)))?;
        Ok(())
    }

    /// Reads a model written by [`save`](Self::save), checking every field.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let fail = |source: ModelFileError| TrainError::ModelFile { path: path.to_path_buf(), source };
        // Never blocks on a FIFO; anything but a regular file is refused.
        let file = quiver::store::files::open_input(path).map_err(|e| fail(ModelFileError::Io(e)))?;
        let kind = file.metadata().map_err(|e| fail(ModelFileError::Io(e)))?.file_type();
        if !kind.is_file() {
            let what = quiver::store::files::describe_kind(kind);
            return Err(fail(ModelFileError::Invalid(format!("{what}, not a regular file: not a model file"))));
        }
        let mut bytes = Vec::new();
        file.take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(|e| fail(ModelFileError::Io(e)))?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(fail(ModelFileError::Invalid(format!("larger than {MAX_BYTES} bytes: not a model"))));
        }
        Self::from_json(&bytes).map_err(fail)
    }

    /// The model in `bytes` (a file's contents), checked.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelFileError> {
        let invalid = |why: String| ModelFileError::Invalid(why);
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
            version: Option<u32>,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(ModelFileError::NotJson)?;
        if head.format.as_deref() != Some(FORMAT) {
            return Err(invalid(format!("not a quiver model (its format is {:?}, not {FORMAT:?})", head.format)));
        }
        if head.version != Some(VERSION) {
            return Err(invalid(format!("model file version {:?}; this build reads version {VERSION}", head.version)));
        }
        let f: File = serde_json::from_slice(bytes).map_err(ModelFileError::Damaged)?;
        if f.features.is_empty() || f.features.iter().chain([&f.target]).any(String::is_empty) {
            return Err(invalid("a model needs named features and a named target".into()));
        }
        if f.coef.len() != f.features.len() && !(f.coef.is_empty() && f.rows_seen == 0) {
            return Err(invalid(format!("{} weights for {} features", f.coef.len(), f.features.len())));
        }
        let fields = ModelFields {
            settings: f.settings,
            coef: f.coef,
            intercept: f.intercept,
            rows_seen: f.rows_seen,
            eta: f.eta,
            adaptive: f.adaptive,
        };
        let model = SgdRegressor::try_from(fields).map_err(|e| ModelFileError::Model(Box::new(e)))?;
        Ok(SavedModel { model, features: f.features, target: f.target })
    }
}

/// What is wrong with a model file (the source of
/// [`TrainError::ModelFile`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelFileError {
    /// Reading or writing it failed.
    #[error("cannot be read or written")]
    Io(#[source] std::io::Error),
    /// Something other than a regular file is there (a device, a FIFO, a
    /// symlink, a directory, a store), which saving would replace.
    #[error("not replaced")]
    NotReplaceable(#[source] std::io::Error),
    /// No temporary file could be made beside it.
    #[error("no temporary file in {}", dir.display())]
    Temporary {
        /// The directory.
        dir: std::path::PathBuf,
        /// The OS's reason.
        #[source]
        source: std::io::Error,
    },
    /// It is not JSON.
    #[error("not a quiver model (not JSON)")]
    NotJson(#[source] serde_json::Error),
    /// It is a quiver model's JSON with a field missing or of the wrong type.
    #[error("a damaged model")]
    Damaged(#[source] serde_json::Error),
    /// The model could not be encoded.
    #[error("the model cannot be encoded")]
    Encode(#[source] serde_json::Error),
    /// Its fields hold a model that cannot be (settings, weights).
    #[error("a model that cannot be")]
    Model(#[source] Box<TrainError>),
    /// A check of its contents failed.
    #[error("{0}")]
    Invalid(String),
}

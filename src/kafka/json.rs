//! JSON records as rows: one object per record, its members filling the
//! columns of a schema by name.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef};
use serde_json::Value;

use super::source::Record;
use super::{with_kafka_fields, KafkaError, Result};

/// The schema the records that are JSON objects imply, every column
/// nullable, members in the order they first appear: integers Int64 (Float64
/// if any record has a fraction there), booleans, strings Utf8, anything
/// else (or a mix) Utf8; then the Kafka columns and `_unparsed`.
pub(super) fn infer(records: &[Record]) -> SchemaRef {
    let mut columns: Vec<(String, Option<DataType>)> = Vec::new();
    for record in records {
        let Some(Ok(Value::Object(members))) = record.value.as_deref().map(serde_json::from_slice::<Value>) else {
            continue;
        };
        for (name, value) in members {
            let t = match value {
                Value::Null => None,
                Value::Bool(_) => Some(DataType::Boolean),
                Value::Number(n) if n.is_i64() => Some(DataType::Int64),
                Value::Number(_) => Some(DataType::Float64),
                _ => Some(DataType::Utf8),
            };
            let at = match columns.iter().position(|(n, _)| *n == name) {
                Some(at) => at,
                None => {
                    columns.push((name, None));
                    columns.len() - 1
                }
            };
            let merged = match (columns[at].1.take(), t) {
                (None, t) | (t, None) => t,
                (Some(a), Some(b)) if a == b => Some(a),
                (Some(DataType::Int64), Some(DataType::Float64)) | (Some(DataType::Float64), Some(DataType::Int64)) => {
                    Some(DataType::Float64)
                }
                _ => Some(DataType::Utf8),
            };
            columns[at].1 = merged;
        }
    }
    let fields = columns.into_iter().map(|(name, t)| Field::new(name, t.unwrap_or(DataType::Utf8), true));
    with_kafka_fields(fields, true)
}

/// One column being filled.
enum Column {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
}

impl Column {
    fn new(t: &DataType) -> Option<Column> {
        Some(match t {
            DataType::Int64 => Column::Int(Int64Builder::new()),
            DataType::Float64 => Column::Float(Float64Builder::new()),
            DataType::Boolean => Column::Bool(BooleanBuilder::new()),
            DataType::Utf8 => Column::Text(StringBuilder::new()),
            _ => return None,
        })
    }

    /// Appends `value`; `false` if it does not fit (a null is appended).
    fn push(&mut self, value: Option<&Value>) -> bool {
        match (self, value) {
            (Column::Int(b), None | Some(Value::Null)) => b.append_null(),
            (Column::Float(b), None | Some(Value::Null)) => b.append_null(),
            (Column::Bool(b), None | Some(Value::Null)) => b.append_null(),
            (Column::Text(b), None | Some(Value::Null)) => b.append_null(),
            (Column::Int(b), Some(Value::Number(n))) if n.is_i64() => b.append_option(n.as_i64()),
            (Column::Float(b), Some(Value::Number(n))) => b.append_option(n.as_f64()),
            (Column::Bool(b), Some(Value::Bool(v))) => b.append_value(*v),
            (Column::Text(b), Some(Value::String(s))) => b.append_value(s),
            (Column::Text(b), Some(other)) => b.append_value(other.to_string()),
            (column, Some(_)) => {
                column.push(None);
                return false;
            }
        }
        true
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::Int(mut b) => Arc::new(b.finish()),
            Column::Float(mut b) => Arc::new(b.finish()),
            Column::Bool(mut b) => Arc::new(b.finish()),
            Column::Text(mut b) => Arc::new(b.finish()),
        }
    }
}

/// The rows of `records` in `schema` (its own columns, then the Kafka
/// columns and `_unparsed`, which keeps the text of a record that is not an
/// object or has a member that does not fit its column).
pub(super) fn batch(schema: &SchemaRef, partition: i32, records: &[Record]) -> Result<RecordBatch> {
    let own = schema.fields().len().checked_sub(3).filter(|&n| {
        schema.fields()[n..].iter().map(|f| f.name().as_str()).eq(["kafka_partition", "kafka_offset", "_unparsed"])
    });
    let Some(own) = own else {
        return Err(KafkaError::InvalidConfig(format!("the stream's schema is not a JSON source's: {schema}")));
    };
    let mut columns = schema.fields()[..own]
        .iter()
        .map(|f| {
            Column::new(f.data_type()).ok_or_else(|| {
                KafkaError::InvalidConfig(format!(
                    "column {:?} of type {} (JSON fills Int64, Float64, Boolean, Utf8)",
                    f.name(),
                    f.data_type()
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut unparsed = StringBuilder::new();
    for record in records {
        let bytes = record.value.as_deref().unwrap_or_default();
        let fits = match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(members)) => {
                let mut fits = true;
                for (column, field) in columns.iter_mut().zip(schema.fields()) {
                    fits &= column.push(members.get(field.name()));
                }
                fits
            }
            _ => {
                for column in columns.iter_mut() {
                    column.push(None);
                }
                false
            }
        };
        if fits {
            unparsed.append_null();
        } else {
            unparsed.append_value(String::from_utf8_lossy(bytes));
        }
    }
    let mut arrays: Vec<ArrayRef> = columns.into_iter().map(Column::finish).collect();
    arrays.push(Arc::new(Int32Array::from(vec![partition; records.len()])));
    arrays.push(Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.offset))));
    arrays.push(Arc::new(unparsed.finish()));
    RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| KafkaError::InvalidConfig(format!("JSON rows do not fit the stream's schema: {e}")))
}

/// Each row of `batch` as a JSON object (integers, floats, booleans,
/// strings, binary as an array of byte values; nulls as null). Other column
/// types are refused: the Arrow format carries them.
pub(super) fn rows(batch: &RecordBatch) -> std::result::Result<Vec<Vec<u8>>, String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
        UInt8Type,
    };
    use arrow_array::Array;
    let schema = batch.schema();
    let mut objects: Vec<serde_json::Map<String, Value>> = vec![serde_json::Map::new(); batch.num_rows()];
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        macro_rules! values {
            ($f:expr) => {
                (0..column.len()).map(|i| if column.is_null(i) { Value::Null } else { $f(i) }).collect::<Vec<Value>>()
            };
        }
        macro_rules! number {
            ($t:ty) => {{
                let a = column.as_primitive::<$t>();
                values!(|i| Value::from(a.value(i)))
            }};
        }
        let values = match field.data_type() {
            DataType::Int8 => number!(Int8Type),
            DataType::Int16 => number!(Int16Type),
            DataType::Int32 => number!(Int32Type),
            DataType::Int64 => number!(Int64Type),
            DataType::UInt8 => number!(UInt8Type),
            DataType::UInt16 => number!(UInt16Type),
            DataType::UInt32 => number!(UInt32Type),
            DataType::UInt64 => number!(UInt64Type),
            DataType::Float32 => number!(Float32Type),
            DataType::Float64 => number!(Float64Type),
            DataType::Boolean => {
                let a = column.as_boolean();
                values!(|i| Value::Bool(a.value(i)))
            }
            DataType::Utf8 => {
                let a = column.as_string::<i32>();
                values!(|i| Value::from(a.value(i)))
            }
            DataType::LargeUtf8 => {
                let a = column.as_string::<i64>();
                values!(|i| Value::from(a.value(i)))
            }
            DataType::Binary => {
                let a = column.as_binary::<i32>();
                values!(|i| Value::from(a.value(i).to_vec()))
            }
            other => return Err(format!("column {:?} of type {other} has no JSON form here", field.name())),
        };
        for (object, value) in objects.iter_mut().zip(values) {
            object.insert(field.name().clone(), value);
        }
    }
    objects.into_iter().map(|o| serde_json::to_vec(&Value::Object(o)).map_err(|e| e.to_string())).collect()
}

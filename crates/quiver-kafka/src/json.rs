//! JSON records as rows: one object per record, its members filling the
//! columns of a schema by name.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef};
use serde_json::Value;

use crate::record::Record;
use crate::{with_kafka_fields, KafkaError, Result};

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

    /// Appends a cell that [`Cell::fits`] this column.
    fn push_cell(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Column::Int(b), Cell::Int(v)) => b.append_value(v),
            (Column::Float(b), Cell::Int(v)) => b.append_value(v as f64),
            (Column::Float(b), Cell::Float(v)) => b.append_value(v),
            (Column::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Column::Text(b), Cell::Text(v)) => b.append_value(v),
            (column, _) => {
                column.push(None);
            }
        }
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
    batch_with(schema, partition, records, true)
}

/// [`batch`], with or without the fast path (tests compare the two).
fn batch_with(schema: &SchemaRef, partition: i32, records: &[Record], fast: bool) -> Result<RecordBatch> {
    let own = schema.fields().len().checked_sub(3).filter(|&n| {
        schema.fields()[n..].iter().map(|f| f.name().as_str()).eq(["kafka_partition", "kafka_offset", "_unparsed"])
    });
    let Some(own) = own else {
        return Err(KafkaError::StreamSchema { format: "json", why: format!("{schema} lacks the Kafka columns") });
    };
    let mut columns = schema.fields()[..own]
        .iter()
        .map(|f| {
            Column::new(f.data_type()).ok_or_else(|| KafkaError::StreamSchema {
                format: "json",
                why: format!(
                    "column {:?} of type {} (JSON fills Int64, Float64, Boolean, Utf8)",
                    f.name(),
                    f.data_type()
                ),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut unparsed = StringBuilder::new();
    let names: Vec<&str> = schema.fields()[..own].iter().map(|f| f.name().as_str()).collect();
    if let Some(twice) = names.iter().enumerate().find_map(|(i, n)| names[..i].contains(n).then_some(*n)) {
        return Err(KafkaError::StreamSchema { format: "json", why: format!("two columns named {twice:?}") });
    }
    let mut cells: Vec<Cell<'_>> = Vec::with_capacity(own);
    for record in records {
        let bytes = record.value.as_deref().unwrap_or_default();
        if fast
            && fast_row(bytes, &names, &mut cells)
            && cells.iter().zip(&columns).all(|(cell, column)| cell.fits(column))
        {
            for (column, cell) in columns.iter_mut().zip(cells.drain(..)) {
                column.push_cell(cell);
            }
            unparsed.append_null();
            continue;
        }
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
        .map_err(|source| KafkaError::Arrow { what: "JSON rows do not fit the stream's schema", source })
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

/// A member's value as the fast path reads it: scalars only, strings
/// borrowed from the record where they need no unescaping.
#[derive(Debug, PartialEq)]
enum Cell<'de> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(std::borrow::Cow<'de, str>),
    /// A number outside i64 and f64 on the way, an array or an object: the
    /// record takes the slow path, which knows what to do with it.
    Other,
}

impl Cell<'_> {
    /// Whether [`Column::push_cell`] takes it as [`Column::push`] would the
    /// same value, with nothing to keep in `_unparsed`.
    fn fits(&self, column: &Column) -> bool {
        matches!(
            (self, column),
            (Cell::Null, _)
                | (Cell::Int(_), Column::Int(_) | Column::Float(_))
                | (Cell::Float(_), Column::Float(_))
                | (Cell::Bool(_), Column::Bool(_))
                | (Cell::Text(_), Column::Text(_))
        )
    }
}

impl<'de> serde::Deserialize<'de> for Cell<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Cell<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Null)
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Cell<'de>, E> {
                Ok(i64::try_from(v).map_or(Cell::Other, Cell::Int))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Text(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Cell<'de>, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Cell::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Cell<'de>, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Cell::Other)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// A value read and dropped, with the checks the slow path makes (numbers
/// in range, strings valid UTF-8 without lone surrogates): serde's
/// `IgnoredAny` skips without them, and a record the slow path refuses
/// whole must not be taken in part here.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Skip;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Skip, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// The fast path: reads `bytes` as one JSON object into `cells`, one per
/// column of `names` (missing members null, others skipped, the last of a
/// repeated member kept). `false` when the record is not a lone object:
/// the slow path then decides what to keep.
fn fast_row<'de>(bytes: &'de [u8], names: &[&str], cells: &mut Vec<Cell<'de>>) -> bool {
    struct Row<'a, 'b, 'de> {
        names: &'a [&'a str],
        cells: &'b mut Vec<Cell<'de>>,
    }
    impl<'de> serde::de::Visitor<'de> for Row<'_, '_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            // A Cell, not a Cow: serde's Cow<str> always copies.
            while let Some(key) = map.next_key::<Cell<'de>>()? {
                let Cell::Text(key) = key else { return Err(serde::de::Error::custom("a key that is not a string")) };
                match self.names.iter().position(|n| *n == key) {
                    Some(at) => self.cells[at] = map.next_value()?,
                    None => {
                        map.next_value::<Skip>()?;
                    }
                }
            }
            Ok(())
        }
    }
    cells.clear();
    cells.resize_with(names.len(), || Cell::Null);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let ok = serde::Deserializer::deserialize_map(&mut de, Row { names, cells }).is_ok() && de.end().is_ok();
    if !ok {
        cells.clear();
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str, offset: i64) -> Record {
        Record { key: None, value: Some(text.as_bytes().to_vec()), timestamp_ms: None, offset }
    }

    #[test]
    fn the_fast_path_fills_the_same_rows_as_the_slow_one() {
        let texts = [
            r#"{"i": 1, "f": 2.5, "b": true, "s": "x", "other": [1, {"a": 2}]}"#,
            r#"{"i": 1.5, "f": 2, "b": "no", "s": 3}"#,
            r#"{"i": 18446744073709551615, "f": 18446744073709551615}"#,
            r#"{"i": -9223372036854775808, "s": "esc\"aped \u00e9"}"#,
            r#"{"s": {"nested": true}, "i": null}"#,
            r#"{"i": 1, "i": 2, "s": "last wins", "s": "this"}"#,
            r#"[1, 2]"#,
            r#"{"i": 1} trailing"#,
            r#"not json"#,
            r#""#,
            r#"{}"#,
            r#"{"b": false, "f": -0.0, "s": ""}"#,
            // Members that fill no column but make the record invalid JSON
            // for the slow path: the whole record is refused by both.
            r#"{"i": 1, "x": 1e400}"#,
            r#"{"i": 1, "x": "\ud800"}"#,
            r#"{"i": 1, "x": [1e999]}"#,
            r#"{"i": 1, "x": {"y": "\udfff"}}"#,
        ];
        let mut records: Vec<Record> = texts.iter().enumerate().map(|(i, t)| record(t, i as i64)).collect();
        // Invalid UTF-8 in a member that fills no column.
        records.push(Record {
            key: None,
            value: Some(b"{\"i\": 1, \"x\": \"\xff\"}".to_vec()),
            timestamp_ms: None,
            offset: 99,
        });
        let inferred = infer(&records);
        let fixed = with_kafka_fields(
            [
                Field::new("i", DataType::Int64, true),
                Field::new("f", DataType::Float64, true),
                Field::new("b", DataType::Boolean, true),
                Field::new("s", DataType::Utf8, true),
            ],
            true,
        );
        for schema in [inferred, fixed.clone()] {
            let fast = batch_with(&schema, 3, &records, true).unwrap();
            let slow = batch_with(&schema, 3, &records, false).unwrap();
            assert_eq!(fast, slow, "schema {schema}");
        }
        // The invalid ones are kept whole in _unparsed, and their i is null.
        let rows = batch(&fixed, 3, &records).unwrap();
        let unparsed = rows.column_by_name("_unparsed").unwrap();
        let i = rows.column_by_name("i").unwrap();
        for row in texts.len() - 4..records.len() {
            assert!(unparsed.is_valid(row) && i.is_null(row), "row {row}");
        }
        // Two columns of one name are refused.
        let twice =
            with_kafka_fields([Field::new("i", DataType::Int64, true), Field::new("i", DataType::Int64, true)], true);
        assert!(batch(&twice, 3, &records).is_err());
    }
}

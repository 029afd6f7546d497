//! Record batches from files: Arrow IPC (file or stream format) and CSV.
//!
//! This is what `quiver produce --from FILE` reads, and it must refuse any
//! input with an error, never a panic: arrow-ipc's readers slice buffers at
//! the offsets a message gives without checking them against its body, so
//! the IPC bytes are walked here first, every length and offset checked
//! (the same checks as the store's decoder, `check_record_batch`), and
//! only checked messages are handed to arrow-ipc's decoder, which then
//! validates the arrays it builds.
//!
//! Dictionary-encoded columns and compressed bodies are refused with an
//! error that says so: a stream cannot carry them yet.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_buffer::{Buffer, MutableBuffer};
use arrow_ipc::reader::RecordBatchDecoder;
use arrow_ipc::{MessageHeader, MetadataVersion};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::{check_record_batch, check_supported, ImportError};

/// The largest file [`read_path`] reads (all of it is held in memory).
pub const MAX_FILE_BYTES: u64 = 16 << 30;

/// The IPC format asks for every buffer at a multiple of 8 bytes.
const IPC_BUFFER_ALIGN: i64 = 8;
const FILE_MAGIC: &[u8; 6] = b"ARROW1";
const CONTINUATION: [u8; 4] = [0xFF; 4];

/// What a file held: its schema and its batches, in order.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The schema of every batch (also of a file with no batch).
    pub schema: SchemaRef,
    /// The batches, in the file's order.
    pub batches: Vec<RecordBatch>,
}

/// Reads an Arrow IPC file (file or stream format) or a CSV file with a
/// header row (see [`read_csv`]), told apart by their first bytes. The path
/// must name a regular file of at most [`MAX_FILE_BYTES`] (a symlink to one
/// is followed: the caller chose the path).
pub fn read_path(path: &Path, batch_rows: usize) -> Result<Imported, ImportError> {
    let io = |source| ImportError::Io { path: path.to_path_buf(), source };
    let file = crate::store::files::open_input(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ImportError::NotRegular(path.to_path_buf()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ImportError::TooLarge { path: path.to_path_buf(), bytes: meta.len() });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    read_bytes(&bytes, batch_rows)
}

/// [`read_path`] on bytes already in memory.
pub fn read_bytes(bytes: &[u8], batch_rows: usize) -> Result<Imported, ImportError> {
    if bytes.starts_with(FILE_MAGIC) || bytes.starts_with(&CONTINUATION) {
        return read_ipc(bytes);
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| ImportError::Csv(format!("not Arrow IPC and not UTF-8 text: {e}")))?;
    read_csv(text, batch_rows)
}

/// Reads Arrow IPC bytes: the file format (`ARROW1`, the messages, a footer
/// that lists the batches) or the stream format (a schema message, then
/// record-batch messages, optionally an end-of-stream marker).
pub fn read_ipc(bytes: &[u8]) -> Result<Imported, ImportError> {
    if bytes.starts_with(FILE_MAGIC) {
        read_ipc_file(bytes)
    } else {
        read_ipc_stream(bytes)
    }
}

fn bad(at: usize, why: impl Into<String>) -> ImportError {
    ImportError::Ipc { at: at as u64, why: why.into() }
}

/// The file format: magic, padding, messages, the footer (a flatbuffer), its
/// i32 length and the magic again. The footer's blocks say where each
/// record-batch message is.
fn read_ipc_file(bytes: &[u8]) -> Result<Imported, ImportError> {
    let len = bytes.len();
    if len < 8 + 4 + 6 || !bytes.ends_with(FILE_MAGIC) {
        return Err(bad(len, "an Arrow file must end with its footer and \"ARROW1\" (truncated?)"));
    }
    let footer_len = i32::from_le_bytes(le4(bytes, len - 10));
    let footer_start = usize::try_from(footer_len).ok().and_then(|f| (len - 10).checked_sub(f)).filter(|&s| s >= 8);
    let Some(footer_start) = footer_start else {
        return Err(bad(len - 10, format!("footer length {footer_len} out of range")));
    };
    let footer = arrow_ipc::root_as_footer(&bytes[footer_start..len - 10])
        .map_err(|e| bad(footer_start, format!("invalid footer: {e}")))?;
    let fb_schema = footer.schema().ok_or_else(|| bad(footer_start, "the footer has no schema"))?;
    let schema =
        Arc::new(arrow_ipc::convert::try_fb_to_schema(fb_schema).map_err(|e| bad(footer_start, e.to_string()))?);
    check_supported(schema.fields()).map_err(|e| ImportError::Unsupported(e.to_string()))?;
    if footer.dictionaries().is_some_and(|d| !d.is_empty()) {
        return Err(ImportError::Unsupported("the file holds dictionary batches".into()));
    }
    // The blocks, checked to lie in the file and not to overlap (nor
    // repeat) before any is read: each body is copied out, so a footer
    // listing one big block a million times would otherwise ask for a
    // million copies of it.
    let mut blocks = Vec::new();
    for block in footer.recordBatches().into_iter().flatten() {
        let (offset, meta_len, body_len) = (block.offset(), block.metaDataLength(), block.bodyLength());
        let range =
            usize::try_from(offset).ok().zip(usize::try_from(meta_len).ok()).zip(usize::try_from(body_len).ok());
        let Some(((start, meta_len), body_len)) = range else {
            return Err(bad(footer_start, format!("a block [{offset}, +{meta_len}, +{body_len}) is out of range")));
        };
        match start.checked_add(meta_len).and_then(|m| m.checked_add(body_len)) {
            Some(end) if end <= footer_start && start >= 8 => blocks.push((start, meta_len, body_len, end)),
            _ => {
                let why = format!("a block [{offset}, +{meta_len}, +{body_len}) lies outside the file");
                return Err(bad(footer_start, why));
            }
        }
    }
    let mut sorted: Vec<(usize, usize)> = blocks.iter().map(|&(start, _, _, end)| (start, end)).collect();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[1].0 < pair[0].1) {
        return Err(bad(pair[1].0, "two of the footer's blocks overlap"));
    }
    let mut batches = Vec::with_capacity(blocks.len());
    for (start, meta_len, body_len, _) in blocks {
        let message =
            Message::frame(bytes, start)?.ok_or_else(|| bad(start, "a block points at an end-of-stream marker"))?;
        if message.next != start + meta_len {
            return Err(bad(start, "the block's metadata length is not its message's"));
        }
        if message.body_len != body_len {
            return Err(bad(start, "the block's body length is not its message's"));
        }
        batches.push(message.batch(bytes, &schema)?);
    }
    Ok(Imported { schema, batches })
}

/// The stream format: encapsulated messages one after another.
fn read_ipc_stream(bytes: &[u8]) -> Result<Imported, ImportError> {
    let first = Message::frame(bytes, 0)?.ok_or_else(|| bad(0, "the stream ends before its schema"))?;
    let message = first.header;
    let fb_schema = message.header_as_schema().ok_or_else(|| bad(0, "the first message is not a schema"))?;
    let schema = Arc::new(arrow_ipc::convert::try_fb_to_schema(fb_schema).map_err(|e| bad(0, e.to_string()))?);
    check_supported(schema.fields()).map_err(|e| ImportError::Unsupported(e.to_string()))?;
    let mut batches = Vec::new();
    let mut at = first.end();
    // A stream may stop without its end-of-stream marker (a writer that
    // never finished): the batches written whole are kept.
    while at < bytes.len() {
        let Some(message) = Message::frame(bytes, at)? else { break };
        at = message.end();
        batches.push(message.batch(bytes, &schema)?);
    }
    Ok(Imported { schema, batches })
}

/// An encapsulated IPC message: `0xFFFFFFFF`, the i32 length of the
/// flatbuffer header, the header, then the body the header declares.
struct Message<'a> {
    /// Where the message starts.
    start: usize,
    /// The flatbuffer header, verified once, here.
    header: arrow_ipc::Message<'a>,
    /// Where the body starts (the header's end).
    next: usize,
    body_len: usize,
}

impl<'a> Message<'a> {
    /// The message framed at `at`, its lengths checked against `bytes` and
    /// its header verified; `None` at an end-of-stream marker.
    fn frame(bytes: &'a [u8], at: usize) -> Result<Option<Message<'a>>, ImportError> {
        if bytes.len().saturating_sub(at) < 8 {
            return Err(bad(at, "truncated: no room for a message's length"));
        }
        if bytes[at..at + 4] != CONTINUATION {
            return Err(bad(at, "no IPC continuation marker (a truncated file, or the pre-1.0 format)"));
        }
        let len = i32::from_le_bytes(le4(bytes, at + 4));
        if len == 0 {
            return Ok(None);
        }
        let header_end = usize::try_from(len).ok().and_then(|len| (at + 8).checked_add(len));
        let Some(header_end) = header_end.filter(|&end| end <= bytes.len()) else {
            return Err(bad(at, format!("a message header of {len} bytes does not fit in the file")));
        };
        let header = arrow_ipc::root_as_message(&bytes[at + 8..header_end])
            .map_err(|e| bad(at, format!("invalid message header: {e}")))?;
        let body = header.bodyLength();
        let body_len = usize::try_from(body)
            .ok()
            .filter(|&b| b <= bytes.len() - header_end)
            .ok_or_else(|| bad(at, format!("a message body of {body} bytes does not fit in the file")))?;
        Ok(Some(Message { start: at, header, next: header_end, body_len }))
    }

    /// Where the next message starts.
    fn end(&self) -> usize {
        self.next + self.body_len
    }

    /// Decodes this message as a record batch of `schema`, after checking it.
    fn batch(&self, bytes: &[u8], schema: &SchemaRef) -> Result<RecordBatch, ImportError> {
        let message = self.header;
        let batch = match message.header_type() {
            MessageHeader::RecordBatch => message.header_as_record_batch(),
            MessageHeader::DictionaryBatch => {
                return Err(ImportError::Unsupported("the file holds dictionary batches".into()))
            }
            other => return Err(bad(self.start, format!("a {other:?} message where a record batch belongs"))),
        };
        let batch = batch.ok_or_else(|| bad(self.start, "a record-batch message without its header"))?;
        let version = message.version();
        if version < MetadataVersion::V4 || version > MetadataVersion::V5 {
            return Err(bad(self.start, format!("metadata version {version:?} (this build reads V4 and V5)")));
        }
        let v4 = version == MetadataVersion::V4;
        check_record_batch(schema, batch, self.body_len as u64, IPC_BUFFER_ALIGN, v4)
            .map_err(|why| bad(self.start, why))?;
        // Copied into an aligned buffer: the messages of a file are only as
        // aligned as the file, and arrow needs each type's alignment.
        let mut body = MutableBuffer::with_capacity(self.body_len);
        body.extend_from_slice(&bytes[self.next..self.end()]);
        let body = Buffer::from(body);
        let dictionaries: HashMap<i64, ArrayRef> = HashMap::new();
        let decode = || {
            RecordBatchDecoder::try_new(&body, batch, schema.clone(), &dictionaries, &version)?
                .with_require_alignment(false)
                .read_record_batch()
        };
        // Checked above; should arrow-ipc still panic on some other
        // inconsistency, the message is refused rather than the process
        // taken down (the fuzz target counts such a panic as a crash).
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
            .map_err(|_| bad(self.start, "arrow-ipc could not decode the record batch"))?
            .map_err(|e| bad(self.start, e.to_string()))
    }
}

fn le4(bytes: &[u8], at: usize) -> [u8; 4] {
    [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]
}

/// One CSV field, and whether it was quoted (a quoted field is text).
struct CsvField {
    text: String,
    quoted: bool,
}

impl CsvField {
    fn new() -> Self {
        CsvField { text: String::new(), quoted: false }
    }
}

/// Splits CSV text into records (RFC 4180: quoted fields may hold commas,
/// doubled quotes and line breaks; CRLF or LF line ends). An unclosed quote
/// is an error. Blank lines at the end are ignored; elsewhere a blank line is
/// a record of one empty field.
fn records(text: &str) -> Result<Vec<Vec<CsvField>>, ImportError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), CsvField::new());
    let (mut in_quotes, mut line) = (false, 1usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.text.push('"');
                    chars.next();
                }
                '"' => in_quotes = false,
                c => {
                    line += usize::from(c == '\n');
                    field.text.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.text.is_empty() && !field.quoted => {
                in_quotes = true;
                field.quoted = true;
            }
            '"' => return Err(ImportError::Csv(format!("line {line}: a quote inside an unquoted field"))),
            ',' => record.push(std::mem::replace(&mut field, CsvField::new())),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::replace(&mut field, CsvField::new()));
                records.push(std::mem::take(&mut record));
                line += 1;
            }
            c => field.text.push(c),
        }
    }
    if in_quotes {
        return Err(ImportError::Csv(format!("line {line}: a quoted field is never closed")));
    }
    if !field.text.is_empty() || field.quoted || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    // Trailing blank lines are not records.
    while records.last().is_some_and(|r| r.len() == 1 && r[0].text.is_empty() && !r[0].quoted) {
        records.pop();
    }
    Ok(records)
}

/// An optional sign, then only digits: the text of an integer. (`2024-01-31`
/// and `555-1234` are not: they are text.)
fn integer(v: &str) -> bool {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `v` is written as a number (digits, a sign, a point, an
/// exponent), not one of the words Rust's float parser also takes (`nan`, `inf`).
fn numeric(v: &str) -> bool {
    v.bytes().any(|b| b.is_ascii_digit()) && v.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
}

/// CSV with a header row, in batches of `batch_rows` rows (at least 1). A
/// column's type comes from all its values: Int64 if every value is an
/// integer (one out of the i64 range is an error, not a silent change to
/// floating point), Float64 if every value is a number, Boolean if every
/// value is `true` or `false`, and Utf8 otherwise (and for a column with a
/// quoted value, or with no value at all). An empty unquoted field is a null.
pub fn read_csv(text: &str, batch_rows: usize) -> Result<Imported, ImportError> {
    let csv = |why: String| ImportError::Csv(why);
    let mut all = records(text)?.into_iter();
    let header: Vec<String> =
        all.next().ok_or_else(|| csv("no header row".into()))?.into_iter().map(|f| f.text).collect();
    let rows: Vec<Vec<CsvField>> = all.collect();
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            return Err(csv(format!("record {} has {} fields; the header has {}", i + 1, row.len(), header.len())));
        }
    }
    let mut types = Vec::with_capacity(header.len());
    for (c, name) in header.iter().enumerate() {
        let values: Vec<&CsvField> = rows.iter().map(|r| &r[c]).filter(|f| f.quoted || !f.text.is_empty()).collect();
        let all = |ok: &dyn Fn(&str) -> bool| !values.is_empty() && values.iter().all(|f| !f.quoted && ok(&f.text));
        let t = if all(&integer) {
            if let Some(bad) = values.iter().find(|f| f.text.parse::<i64>().is_err()) {
                return Err(csv(format!("column {name:?}: {} is an integer outside the range of Int64", bad.text)));
            }
            DataType::Int64
        } else if all(&|v| numeric(v) && v.parse::<f64>().is_ok()) {
            DataType::Float64
        } else if all(&|v| v == "true" || v == "false") {
            DataType::Boolean
        } else {
            DataType::Utf8
        };
        types.push(t);
    }
    let schema = Arc::new(Schema::new(
        header.iter().zip(&types).map(|(name, t)| Field::new(name, t.clone(), true)).collect::<Vec<_>>(),
    ));
    let mut batches = Vec::new();
    for chunk in rows.chunks(batch_rows.max(1)) {
        let columns: Vec<ArrayRef> = types
            .iter()
            .enumerate()
            .map(|(c, t)| {
                let values = chunk.iter().map(|r| Some(r[c].text.as_str()).filter(|v| r[c].quoted || !v.is_empty()));
                match t {
                    DataType::Int64 => {
                        Arc::new(values.map(|v| v.and_then(|v| v.parse().ok())).collect::<Int64Array>()) as ArrayRef
                    }
                    DataType::Float64 => {
                        Arc::new(values.map(|v| v.and_then(|v| v.parse().ok())).collect::<Float64Array>())
                    }
                    DataType::Boolean => Arc::new(values.map(|v| v.map(|v| v == "true")).collect::<BooleanArray>()),
                    _ => Arc::new(values.collect::<StringArray>()),
                }
            })
            .collect();
        batches.push(RecordBatch::try_new(schema.clone(), columns).map_err(|e| csv(e.to_string()))?);
    }
    Ok(Imported { schema, batches })
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_array::Array;
    use arrow_schema::DataType;

    use super::read_csv;

    #[test]
    fn csv_quoting_types_and_errors() {
        let read = |text: &str| read_csv(text, 10).map(|i| i.batches);
        let b = &read("\u{feff}id,note,v\r\n007,\"a,\nb\",1e5\r\n-2,\"\",NaN\n").unwrap()[0];
        assert_eq!(b.schema().field(0).name(), "id", "the byte-order mark is dropped");
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values().to_vec(), [7, -2]);
        let notes = b.column(1).as_string::<i32>();
        assert_eq!((notes.value(0), notes.is_null(1), notes.value(1)), ("a,\nb", false, ""));
        assert_eq!(b.column(2).data_type(), &DataType::Utf8, "NaN is text, not a number");
        let b = &read("x\n1.5\n\n-0\n\n\n").unwrap()[0];
        assert_eq!(b.num_rows(), 3, "a blank line inside is a null row; trailing ones are not rows");
        assert_eq!(b.column(0).as_primitive::<Float64Type>().null_count(), 1);
        let b = &read("q\n\"007\"\n").unwrap()[0];
        assert_eq!(b.column(0).as_string::<i32>().value(0), "007", "a quoted value stays text");
        assert!(read("a\n9223372036854775808\n").is_err(), "out of the Int64 range");
        // Digits with dashes inside are text (dates, phone numbers), not
        // integers out of range.
        let b = &read("day,phone\n2024-01-31,555-1234\n2024-02-01,-7\n").unwrap()[0];
        assert_eq!(b.schema().field(0).data_type(), &DataType::Utf8);
        assert_eq!(b.schema().field(1).data_type(), &DataType::Utf8);
        assert_eq!(b.column(0).as_string::<i32>().value(0), "2024-01-31");
        assert_eq!(b.column(1).as_string::<i32>().value(1), "-7");
        assert!(read("a,b\n\"open,1\n").is_err(), "an unclosed quote");
        assert!(read("a,b\n1\n").is_err(), "a short record");
        assert!(read("a\nx\"y\n").is_err(), "a stray quote");
        let header_only = read_csv("a,b\n", 10).unwrap();
        assert_eq!((header_only.schema.fields().len(), header_only.batches.len()), (2, 0));
    }

    /// A footer that lists one block twice (or blocks that overlap) would
    /// have each copied out again: a small file could ask for terabytes.
    #[test]
    fn a_footer_listing_a_block_twice_is_refused_before_anything_is_copied() {
        use std::sync::Arc;

        use arrow_array::{ArrayRef, Int64Array, RecordBatch};

        let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef)]).unwrap();
        let mut writer = arrow_ipc::writer::FileWriter::try_new(Vec::new(), &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.write(&batch).unwrap();
        let mut bytes = writer.into_inner().unwrap();
        assert_eq!(super::read_ipc(&bytes).unwrap().batches.len(), 2);
        // The footer's blocks are 24-byte structs: copy the first over the second.
        let footer_len = i32::from_le_bytes(bytes[bytes.len() - 10..bytes.len() - 6].try_into().unwrap()) as usize;
        let footer_at = bytes.len() - 10 - footer_len;
        let blocks: Vec<[u8; 24]> = arrow_ipc::root_as_footer(&bytes[footer_at..bytes.len() - 10])
            .unwrap()
            .recordBatches()
            .unwrap()
            .iter()
            .map(|b| {
                let mut raw = [0u8; 24];
                raw[..8].copy_from_slice(&b.offset().to_le_bytes());
                raw[8..12].copy_from_slice(&b.metaDataLength().to_le_bytes());
                raw[16..].copy_from_slice(&b.bodyLength().to_le_bytes());
                raw
            })
            .collect();
        let second = bytes[footer_at..].windows(24).position(|w| w == blocks[1]).expect("the second block") + footer_at;
        bytes[second..second + 24].copy_from_slice(&blocks[0]);
        let e = super::read_ipc(&bytes).unwrap_err().to_string();
        assert!(e.contains("overlap"), "{e}");
    }
}

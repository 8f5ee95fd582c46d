//! The Arrow/Parquet schema of a block and the per-column encodings. `README.md` explains the
//! choices; the figures behind them come from `benches/block.rs`.

use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::SchemaDescriptor;

use crate::error::{Error, Result};
use crate::meta::{DedicatedColumn, FORMAT};

pub const TRACE_ID: &str = "trace_id";
pub const SPAN_ID: &str = "span_id";
pub const PARENT_SPAN_ID: &str = "parent_span_id";
pub const NESTED_LEFT: &str = "nested_left";
pub const NESTED_RIGHT: &str = "nested_right";
pub const NESTED_PARENT: &str = "nested_parent";
pub const START: &str = "start_unix_nano";
pub const DURATION: &str = "duration_nano";
pub const NAME: &str = "name";
pub const KIND: &str = "kind";
pub const TRACE_STATE: &str = "trace_state";
pub const FLAGS: &str = "flags";
pub const STATUS_CODE: &str = "status_code";
pub const STATUS_MESSAGE: &str = "status_message";
pub const DROPPED_ATTRIBUTES: &str = "dropped_attributes_count";
pub const DROPPED_EVENTS: &str = "dropped_events_count";
pub const DROPPED_LINKS: &str = "dropped_links_count";
pub const ATTRS: &str = "attrs";
pub const EVENTS: &str = "events";
pub const LINKS: &str = "links";
pub const SERVICE_NAME: &str = "service_name";
pub const RESOURCE_ATTRS: &str = "resource_attrs";
pub const RESOURCE_DROPPED: &str = "resource_dropped_attributes_count";
pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
pub const SCOPE_NAME: &str = "scope_name";
pub const SCOPE_VERSION: &str = "scope_version";
pub const SCOPE_ATTRS: &str = "scope_attrs";
pub const SCOPE_DROPPED: &str = "scope_dropped_attributes_count";
pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";

/// Fields of one attribute. Exactly one value column is set, or none for an attribute without
/// a value; arrays and key-value lists are kept as the protobuf encoding of their `AnyValue`.
pub const KEY: &str = "key";
pub const STR: &str = "str";
pub const INT: &str = "int";
pub const DOUBLE: &str = "double";
pub const BOOL: &str = "bool";
pub const BYTES: &str = "bytes";
pub const ANY: &str = "any";

/// Event and link fields besides their attributes.
pub const TIME_SINCE_START: &str = "time_since_start_nano";

/// Parquet key-value metadata: the format and the dedicated columns, so a data file can be read
/// without its `meta.json` (the compactor reads local files).
pub const KV_FORMAT: &str = "spoor.format";
pub const KV_DEDICATED: &str = "spoor.dedicated_columns";

/// Lists use the child name "element", as the Parquet LIST spec and pyarrow do.
pub fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Struct(fields), false)))
}

pub fn attr_fields() -> Fields {
    Fields::from(vec![
        Field::new(KEY, DataType::Utf8, false),
        Field::new(STR, DataType::Utf8, true),
        Field::new(INT, DataType::Int64, true),
        Field::new(DOUBLE, DataType::Float64, true),
        Field::new(BOOL, DataType::Boolean, true),
        Field::new(BYTES, DataType::Binary, true),
        Field::new(ANY, DataType::Binary, true),
    ])
}

pub fn attrs_type() -> DataType {
    list_of(attr_fields())
}

pub fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new(TIME_SINCE_START, DataType::Int64, false),
        Field::new(NAME, DataType::Utf8, false),
        Field::new(ATTRS, attrs_type(), false),
        Field::new(DROPPED_ATTRIBUTES, DataType::UInt32, false),
    ])
}

pub fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new(TRACE_ID, DataType::Binary, false),
        Field::new(SPAN_ID, DataType::Binary, false),
        Field::new(TRACE_STATE, DataType::Utf8, false),
        Field::new(FLAGS, DataType::UInt32, false),
        Field::new(ATTRS, attrs_type(), false),
        Field::new(DROPPED_ATTRIBUTES, DataType::UInt32, false),
    ])
}

/// Where an attribute lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttrScope {
    Span,
    Resource,
}

/// The value type a dedicated column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttrKind {
    String,
    Int,
}

impl AttrScope {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrScope::Span => "span",
            AttrScope::Resource => "resource",
        }
    }
}

impl AttrKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrKind::String => "string",
            AttrKind::Int => "int",
        }
    }
}

/// A dedicated column as the writer and reader use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dedicated {
    pub scope: AttrScope,
    pub key: String,
    pub kind: AttrKind,
    pub column: String,
}

impl Dedicated {
    pub fn new(scope: AttrScope, key: &str, kind: AttrKind) -> Dedicated {
        let column = if scope == AttrScope::Resource && key == "service.name" && kind == AttrKind::String {
            SERVICE_NAME.to_owned()
        } else {
            format!("{}.{key}", scope.as_str())
        };
        Dedicated { scope, key: key.to_owned(), kind, column }
    }

    pub fn to_meta(&self) -> DedicatedColumn {
        DedicatedColumn {
            scope: self.scope.as_str().into(),
            key: self.key.clone(),
            kind: self.kind.as_str().into(),
            column: self.column.clone(),
        }
    }

    pub fn from_meta(meta: &DedicatedColumn) -> Result<Dedicated> {
        let scope = match meta.scope.as_str() {
            "span" => AttrScope::Span,
            "resource" => AttrScope::Resource,
            other => return Err(Error::Format(format!("unknown dedicated column scope {other:?}"))),
        };
        let kind = match meta.kind.as_str() {
            "string" => AttrKind::String,
            "int" => AttrKind::Int,
            other => return Err(Error::Format(format!("unknown dedicated column kind {other:?}"))),
        };
        Ok(Dedicated { scope, key: meta.key.clone(), kind, column: meta.column.clone() })
    }

    fn field(&self) -> Field {
        let data_type = match self.kind {
            AttrKind::String => DataType::Utf8,
            AttrKind::Int => DataType::Int64,
        };
        Field::new(&self.column, data_type, true)
    }
}

/// The block schema for a set of dedicated columns (span ones first, then resource ones; the
/// resource `service.name` column is always among them).
pub fn block_schema(dedicated: &[Dedicated]) -> SchemaRef {
    let mut fields: Vec<FieldRef> = vec![
        Arc::new(Field::new(TRACE_ID, DataType::FixedSizeBinary(16), false)),
        Arc::new(Field::new(SPAN_ID, DataType::Binary, false)),
        Arc::new(Field::new(PARENT_SPAN_ID, DataType::Binary, true)),
        Arc::new(Field::new(NESTED_LEFT, DataType::Int32, false)),
        Arc::new(Field::new(NESTED_RIGHT, DataType::Int32, false)),
        Arc::new(Field::new(NESTED_PARENT, DataType::Int32, false)),
        Arc::new(Field::new(START, DataType::UInt64, false)),
        Arc::new(Field::new(DURATION, DataType::UInt64, false)),
        Arc::new(Field::new(NAME, DataType::Utf8, false)),
        Arc::new(Field::new(KIND, DataType::Int32, false)),
        Arc::new(Field::new(TRACE_STATE, DataType::Utf8, false)),
        Arc::new(Field::new(FLAGS, DataType::UInt32, false)),
        Arc::new(Field::new(STATUS_CODE, DataType::Int32, false)),
        Arc::new(Field::new(STATUS_MESSAGE, DataType::Utf8, false)),
        Arc::new(Field::new(DROPPED_ATTRIBUTES, DataType::UInt32, false)),
        Arc::new(Field::new(DROPPED_EVENTS, DataType::UInt32, false)),
        Arc::new(Field::new(DROPPED_LINKS, DataType::UInt32, false)),
    ];
    fields.extend(dedicated.iter().filter(|d| d.scope == AttrScope::Span).map(|d| Arc::new(d.field())));
    fields.extend([
        Arc::new(Field::new(ATTRS, attrs_type(), false)),
        Arc::new(Field::new(EVENTS, list_of(event_fields()), false)),
        Arc::new(Field::new(LINKS, list_of(link_fields()), false)),
    ]);
    fields.extend(dedicated.iter().filter(|d| d.scope == AttrScope::Resource).map(|d| Arc::new(d.field())));
    fields.extend([
        Arc::new(Field::new(RESOURCE_ATTRS, attrs_type(), false)),
        Arc::new(Field::new(RESOURCE_DROPPED, DataType::UInt32, false)),
        Arc::new(Field::new(RESOURCE_SCHEMA_URL, DataType::Utf8, false)),
        Arc::new(Field::new(SCOPE_NAME, DataType::Utf8, false)),
        Arc::new(Field::new(SCOPE_VERSION, DataType::Utf8, false)),
        Arc::new(Field::new(SCOPE_ATTRS, attrs_type(), false)),
        Arc::new(Field::new(SCOPE_DROPPED, DataType::UInt32, false)),
        Arc::new(Field::new(SCOPE_SCHEMA_URL, DataType::Utf8, false)),
    ]);
    Arc::new(Schema::new(fields))
}

/// Writer properties: encodings, statistics and page sizes per leaf column. The knobs come from
/// the writer's `WriteOptions` one by one, so this module needs nothing of the writer.
pub fn writer_properties(
    parquet: &SchemaDescriptor,
    dedicated: &[Dedicated],
    zstd_level: i32,
    page_rows: usize,
    encodings: &Encodings,
) -> Result<WriterProperties> {
    let dedicated_json = serde_json::to_string(&dedicated.iter().map(Dedicated::to_meta).collect::<Vec<_>>())
        .expect("plain structs serialize");
    let zstd = ZstdLevel::try_new(zstd_level)?;
    let mut props = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(zstd))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_data_page_row_count_limit(page_rows.max(1))
        .set_write_batch_size(page_rows.clamp(1, 1024))
        // Row groups are cut by the writer at trace boundaries.
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(None)
        .set_created_by(format!("spoor-block {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(KV_FORMAT.into(), FORMAT.to_owned()),
            KeyValue::new(KV_DEDICATED.into(), dedicated_json),
        ]));
    let mut sorting = Vec::new();
    for (i, col) in parquet.columns().iter().enumerate() {
        let path = col.path().clone();
        let parts = path.parts();
        let top = parts[0].as_str();
        let leaf = parts[parts.len() - 1].as_str();
        let nested = parts.len() > 1;
        // Random IDs without length prefixes and dictionary indices of small integers do not
        // compress; leaving them raw saves zstd frame overhead on disk and a zstd context per
        // column chunk on every lookup.
        let raw = !encodings.compress_all;
        match (top, leaf, nested) {
            (TRACE_ID, _, false) => {
                sorting.push(SortingColumn { column_idx: i as i32, descending: false, nulls_first: false });
                // Page statistics on trace_id are what lets find_trace skip pages.
                props = props
                    .set_column_statistics_enabled(path.clone(), EnabledStatistics::Page)
                    .set_column_dictionary_page_size_limit(path.clone(), 4 << 20);
                props = encodings.trace_id.apply(props, path.clone());
                // Dictionary pages of random IDs and run-length indices do not compress.
                if raw && encodings.trace_id == ColumnEncoding::Dictionary {
                    props = props.set_column_compression(path, Compression::UNCOMPRESSED);
                }
            }
            (START, _, false) => {
                sorting.push(SortingColumn { column_idx: i as i32, descending: false, nulls_first: false });
                props = encodings.times.apply(props, path);
            }
            (DURATION, _, false) => props = encodings.times.apply(props, path),
            (NESTED_LEFT | NESTED_RIGHT | NESTED_PARENT, _, false) => {
                props = encodings.nested.apply(props, path.clone());
                if raw && encodings.nested == ColumnEncoding::Dictionary {
                    props = props.set_column_compression(path, Compression::UNCOMPRESSED);
                }
            }
            (KIND | FLAGS | STATUS_CODE | DROPPED_ATTRIBUTES | DROPPED_EVENTS | DROPPED_LINKS, _, false)
            | (RESOURCE_DROPPED | SCOPE_DROPPED, _, false)
                if raw =>
            {
                props = props.set_column_compression(path, Compression::UNCOMPRESSED);
            }
            (SPAN_ID | PARENT_SPAN_ID, _, false) | (LINKS, TRACE_ID | SPAN_ID, true) => {
                props = encodings.ids.apply(props, path.clone());
                if raw && encodings.ids == ColumnEncoding::DeltaLengthByteArray {
                    props = props.set_column_compression(path, Compression::UNCOMPRESSED);
                }
            }
            (_, DOUBLE, true) => props = encodings.doubles.apply(props, path),
            (_, TIME_SINCE_START, true) => props = encodings.times.apply(props, path),
            _ => {}
        }
    }
    Ok(props.set_sorting_columns(Some(sorting)).build())
}

/// How a group of columns is encoded; benchmarks compare the alternatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnEncoding {
    /// Dictionary with a PLAIN fallback.
    Dictionary,
    Plain,
    DeltaBinaryPacked,
    DeltaLengthByteArray,
    ByteStreamSplit,
}

impl ColumnEncoding {
    fn apply(
        self,
        props: parquet::file::properties::WriterPropertiesBuilder,
        path: parquet::schema::types::ColumnPath,
    ) -> parquet::file::properties::WriterPropertiesBuilder {
        let props = props.set_column_dictionary_enabled(path.clone(), self == ColumnEncoding::Dictionary);
        match self {
            ColumnEncoding::Dictionary | ColumnEncoding::Plain => props.set_column_encoding(path, Encoding::PLAIN),
            ColumnEncoding::DeltaBinaryPacked => props.set_column_encoding(path, Encoding::DELTA_BINARY_PACKED),
            ColumnEncoding::DeltaLengthByteArray => props.set_column_encoding(path, Encoding::DELTA_LENGTH_BYTE_ARRAY),
            ColumnEncoding::ByteStreamSplit => props.set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT),
        }
    }
}

/// Encodings of the column groups that are worth tuning.
#[derive(Clone, Debug)]
pub struct Encodings {
    pub trace_id: ColumnEncoding,
    /// start_unix_nano, duration_nano, event times.
    pub times: ColumnEncoding,
    /// nested_left / nested_right / nested_parent.
    pub nested: ColumnEncoding,
    /// span_id, parent_span_id, link IDs.
    pub ids: ColumnEncoding,
    /// zstd on every column, including IDs and small-integer columns that do not compress.
    pub compress_all: bool,
    /// Double attribute values.
    pub doubles: ColumnEncoding,
}

impl Default for Encodings {
    fn default() -> Self {
        Encodings {
            trace_id: ColumnEncoding::Plain,
            compress_all: false,
            times: ColumnEncoding::ByteStreamSplit,
            nested: ColumnEncoding::Dictionary,
            ids: ColumnEncoding::DeltaLengthByteArray,
            doubles: ColumnEncoding::ByteStreamSplit,
        }
    }
}

//! Hand-written `prost` definitions of the TensorBoard protobuf messages this crate writes.
//!
//! Only the fields used here are declared; field numbers were checked against the descriptors
//! of the `tensorboard` Python package (`tensorboard/compat/proto/{event,summary,tensor,
//! tensor_shape,histogram}_pb2.py`, `tensorboard/plugins/hparams/{plugin_data,api}_pb2.py`, and
//! `google/protobuf/struct.proto`). Enums are stored as plain `i32` with the constants below.

use std::collections::HashMap;

/// `tensorboard.DataType.DT_FLOAT`.
pub const DT_FLOAT: i32 = 1;
/// `tensorboard.DataType.DT_STRING`.
pub const DT_STRING: i32 = 7;
/// `tensorboard.hparams.Status.STATUS_SUCCESS`.
pub const STATUS_SUCCESS: i32 = 1;
/// `tensorboard.SessionLog.SessionStatus.START`: a (re)start of training; TensorBoard discards the
/// records read before it whose step is at least this event's step.
pub const SESSION_START: i32 = 1;
/// `tensorboard.hparams.DataType.DATA_TYPE_STRING`.
pub const HPARAM_TYPE_STRING: i32 = 1;
/// `tensorboard.hparams.DataType.DATA_TYPE_BOOL`.
pub const HPARAM_TYPE_BOOL: i32 = 2;
/// `tensorboard.hparams.DataType.DATA_TYPE_FLOAT64`.
pub const HPARAM_TYPE_FLOAT64: i32 = 3;

/// `tensorboard.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// Set on the first record only: `"brain.Event:2"`.
    #[prost(string, tag = "3")]
    pub file_version: String,
    /// The summary values of this event.
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
    /// A session status change (e.g. [`SESSION_START`] after a restart).
    #[prost(message, optional, tag = "7")]
    pub session_log: Option<SessionLog>,
}

/// `tensorboard.SessionLog`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    /// [`SESSION_START`] etc.
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// Checkpoint path (for a checkpoint status).
    #[prost(string, tag = "2")]
    pub checkpoint_path: String,
    /// A message.
    #[prost(string, tag = "3")]
    pub msg: String,
}

/// `tensorboard.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorboard.Summary.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// Tag (name) of the value.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// Plugin metadata (text, hparams, ...).
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    /// The payload.
    #[prost(oneof = "SummaryValueKind", tags = "2, 4, 5, 8")]
    pub value: Option<SummaryValueKind>,
}

/// The `value` oneof of `tensorboard.Summary.Value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum SummaryValueKind {
    /// A scalar.
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    /// An encoded image.
    #[prost(message, tag = "4")]
    Image(SummaryImage),
    /// A histogram.
    #[prost(message, tag = "5")]
    Histo(HistogramProto),
    /// A tensor (text, hparams).
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `tensorboard.Summary.Image`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryImage {
    /// Height in pixels.
    #[prost(int32, tag = "1")]
    pub height: i32,
    /// Width in pixels.
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    /// The PNG file's bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `tensorboard.HistogramProto`.
///
/// Bucket `i` covers `(bucket_limit[i-1], bucket_limit[i]]` (the first starts at `min`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramProto {
    /// Smallest value.
    #[prost(double, tag = "1")]
    pub min: f64,
    /// Largest value.
    #[prost(double, tag = "2")]
    pub max: f64,
    /// Number of values.
    #[prost(double, tag = "3")]
    pub num: f64,
    /// Sum of the values.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// Sum of the squared values.
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// Right edges of the buckets (packed).
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    /// Counts of the buckets (packed).
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// `tensorboard.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    /// Which plugin owns the value.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
    /// Display name.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// Description (markdown).
    #[prost(string, tag = "3")]
    pub summary_description: String,
}

/// `tensorboard.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    /// Plugin name, e.g. `"text"` or `"hparams"`.
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// Plugin-specific serialized content.
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorboard.TensorProto` (only the fields used here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// Element type ([`DT_STRING`], [`DT_FLOAT`], ...).
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// Shape.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// Float elements.
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    /// String elements.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorboard.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// Dimensions, outermost first.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TensorShapeDim>,
}

/// `tensorboard.TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeDim {
    /// Size of the dimension.
    #[prost(int64, tag = "1")]
    pub size: i64,
    /// Optional name.
    #[prost(string, tag = "2")]
    pub name: String,
}

/// `tensorboard.hparams.HParamsPluginData`: the `content` of hparams summaries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    /// Always 0.
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// Which of the three hparams summaries this is.
    #[prost(oneof = "HParamsData", tags = "2, 3, 4")]
    pub data: Option<HParamsData>,
}

/// The `data` oneof of [`HParamsPluginData`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum HParamsData {
    /// Tag `_hparams_/experiment`.
    #[prost(message, tag = "2")]
    Experiment(Experiment),
    /// Tag `_hparams_/session_start_info`.
    #[prost(message, tag = "3")]
    SessionStartInfo(SessionStartInfo),
    /// Tag `_hparams_/session_end_info`.
    #[prost(message, tag = "4")]
    SessionEndInfo(SessionEndInfo),
}

/// `tensorboard.hparams.Experiment`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Experiment {
    /// Description.
    #[prost(string, tag = "1")]
    pub description: String,
    /// Creation time, seconds since the epoch.
    #[prost(double, tag = "3")]
    pub time_created_secs: f64,
    /// The hyperparameters.
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    /// The metrics.
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
}

/// `tensorboard.hparams.HParamInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamInfo {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Display name.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// [`HPARAM_TYPE_STRING`], [`HPARAM_TYPE_BOOL`] or [`HPARAM_TYPE_FLOAT64`].
    #[prost(int32, tag = "4")]
    pub r#type: i32,
}

/// `tensorboard.hparams.MetricInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricInfo {
    /// The metric's scalar tag.
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
    /// Display name.
    #[prost(string, tag = "3")]
    pub display_name: String,
    /// Description.
    #[prost(string, tag = "4")]
    pub description: String,
}

/// `tensorboard.hparams.MetricName`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricName {
    /// Sub-run ("" for the session's own folder).
    #[prost(string, tag = "1")]
    pub group: String,
    /// Scalar tag.
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// `tensorboard.hparams.SessionStartInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    /// Hyperparameter values by name.
    #[prost(map = "string, message", tag = "1")]
    pub hparams: HashMap<String, ProtoValue>,
    /// Session group ("" = the session's own name).
    #[prost(string, tag = "4")]
    pub group_name: String,
    /// Start time, seconds since the epoch.
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `tensorboard.hparams.SessionEndInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionEndInfo {
    /// [`STATUS_SUCCESS`] etc.
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// End time, seconds since the epoch.
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// `google.protobuf.Value` (scalar kinds only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoValue {
    /// The value.
    #[prost(oneof = "ProtoValueKind", tags = "1, 2, 3, 4")]
    pub kind: Option<ProtoValueKind>,
}

/// The `kind` oneof of `google.protobuf.Value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ProtoValueKind {
    /// `NULL_VALUE` (always 0).
    #[prost(int32, tag = "1")]
    NullValue(i32),
    /// A number.
    #[prost(double, tag = "2")]
    NumberValue(f64),
    /// A string.
    #[prost(string, tag = "3")]
    StringValue(String),
    /// A boolean.
    #[prost(bool, tag = "4")]
    BoolValue(bool),
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn event_encodes_with_expected_field_keys() {
        let ev =
            Event { wall_time: 1.5, step: 3, file_version: "brain.Event:2".into(), summary: None, session_log: None };
        let bytes = ev.encode_to_vec();
        // field 1, wire type 1 (64-bit) = 0x09; field 2 varint = 0x10; field 3 bytes = 0x1a.
        let mut expected = vec![0x09];
        expected.extend_from_slice(&1.5f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 3, 0x1a, 13]);
        expected.extend_from_slice(b"brain.Event:2");
        assert_eq!(bytes, expected);
        assert_eq!(Event::decode(bytes.as_slice()).unwrap(), ev);
    }

    #[test]
    fn session_log_is_field_7_of_the_event() {
        let ev = Event {
            session_log: Some(SessionLog { status: SESSION_START, ..Default::default() }),
            ..Default::default()
        };
        // field 7, wire type 2 = 0x3a, length 2: field 1 varint (0x08) = 1.
        assert_eq!(ev.encode_to_vec(), vec![0x3a, 2, 0x08, 1]);
    }

    #[test]
    fn histogram_repeated_doubles_are_packed() {
        let h = HistogramProto { bucket_limit: vec![1.0, 2.0], ..Default::default() };
        let bytes = h.encode_to_vec();
        // field 6, wire type 2 (length-delimited) = 0x32, length 16.
        assert_eq!(&bytes[..2], &[0x32, 16]);
        assert_eq!(bytes.len(), 18);
    }
}

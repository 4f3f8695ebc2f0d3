//! `alerts`: where the monitors' alerts go — the lake table `alerts` and a JSON-lines file.
//!
//! The coordinator raises alerts as epochs complete. The lake table is written
//! like the `metrics` table: a pending part of the epoch, published with the
//! epoch's checkpoint, so it is exactly-once. The JSON-lines file is appended
//! (and fsynced) just before the checkpoint: a crash in between repeats the
//! epoch's lines on replay, never loses them; every line carries an `id`
//! (`<rule>:<epoch>:<state>`, with `[group]` for grouped rules) to
//! deduplicate on. Webhook, email and Kafka channels are in `notify`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, StringBuilder, TimestampMillisecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_operators::monitor::Alert;
use millrace_operators::schema::Schema;
use millrace_operators::Epoch;

use crate::connectors::lake::Table;
use crate::connectors::lake::TableFormat;

/// The `alerts` table: one row per firing or resolved alert.
pub fn alerts_table() -> TableFormat<Alert> {
    TableFormat {
        table: Table::Alerts,
        arrow_schema: alerts_schema,
        partition_time: |a| a.window_start_ms,
        batch: alerts_batch,
    }
}

fn alerts_schema(_schema: &Schema) -> SchemaRef {
    let ts = |n: &str| {
        Field::new(
            n,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        )
    };
    Arc::new(ArrowSchema::new(vec![
        Field::new("rule_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("group", DataType::Utf8, true),
        Field::new("severity", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        ts("window_start"),
        ts("window_end"),
        Field::new("observed", DataType::Float64, true),
        Field::new("expected_low", DataType::Float64, true),
        Field::new("expected_high", DataType::Float64, true),
        Field::new("score", DataType::Float64, false),
        Field::new("message", DataType::Utf8, false),
        Field::new("epoch", DataType::UInt64, false),
    ]))
}

fn name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn alerts_batch(_schema: &Schema, arrow: SchemaRef, rows: &[&Alert], _epoch: Epoch) -> RecordBatch {
    let n = rows.len();
    let text = |f: &dyn Fn(&Alert) -> String| -> ArrayRef {
        let mut b = StringBuilder::new();
        rows.iter().for_each(|a| b.append_value(f(a)));
        Arc::new(b.finish())
    };
    let time = |f: &dyn Fn(&Alert) -> i64| -> ArrayRef {
        let mut b = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        rows.iter().for_each(|a| b.append_value(f(a)));
        Arc::new(b.finish())
    };
    let num = |f: &dyn Fn(&Alert) -> Option<f64>| -> ArrayRef {
        let mut b = Float64Builder::with_capacity(n);
        rows.iter()
            .for_each(|a| b.append_option(f(a).filter(|v| v.is_finite())));
        Arc::new(b.finish())
    };
    let mut epoch = UInt64Builder::with_capacity(n);
    rows.iter().for_each(|a| epoch.append_value(a.epoch));
    let cols: Vec<ArrayRef> = vec![
        text(&|a| a.rule_id.clone()),
        text(&|a| name(&a.kind)),
        {
            let mut b = StringBuilder::new();
            rows.iter()
                .for_each(|a| b.append_option(a.group.as_deref()));
            Arc::new(b.finish())
        },
        text(&|a| name(&a.severity)),
        text(&|a| name(&a.state)),
        time(&|a| a.window_start_ms),
        time(&|a| a.window_end_ms),
        num(&|a| Some(a.observed)),
        num(&|a| a.expected.map(|e| e.0)),
        num(&|a| a.expected.map(|e| e.1)),
        {
            let mut b = Float64Builder::with_capacity(n);
            rows.iter().for_each(|a| {
                b.append_value(if a.score.is_nan() {
                    1.0
                } else {
                    a.score.clamp(0.0, 1.0)
                })
            });
            Arc::new(b.finish()) as ArrayRef
        },
        text(&|a| a.message.clone()),
        Arc::new(epoch.finish()),
    ];
    RecordBatch::try_new(arrow, cols).expect("columns match the alerts schema")
}

/// Appends `alerts` to a JSON-lines file, one object per line with an `id` to deduplicate on.
pub fn append_jsonl(path: &Path, alerts: &[Alert]) -> std::io::Result<()> {
    if alerts.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for a in alerts {
        let mut v = serde_json::to_value(a).map_err(std::io::Error::other)?;
        v["id"] = serde_json::Value::String(match &a.group {
            Some(g) => format!("{}[{g}]:{}:{}", a.rule_id, a.epoch, name(&a.state)),
            None => format!("{}:{}:{}", a.rule_id, a.epoch, name(&a.state)),
        });
        text.push_str(&v.to_string());
        text.push('\n');
    }
    crate::core::storage::append_durable(path, &text)
}

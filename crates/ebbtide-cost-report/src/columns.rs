//! The report's columns, one table for both encodings.
//!
//! FOCUS 1.0 column names where a FOCUS column applies; Ebbtide's own
//! columns carry FOCUS's `x_` prefix for custom columns. Money is a decimal
//! with six places (exact micro-dollars: `DECIMAL(18,6)` in Parquet, a plain
//! decimal string in CSV), times are UTC.

use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::ReportError;
use crate::day::Day;
use crate::report::{Report, ReportRow};

/// The two encodings a report is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// Comma-separated, with a header row.
    Csv,
    /// Apache Parquet, Snappy-compressed.
    Parquet,
}

impl ReportFormat {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::Csv => "csv",
            ReportFormat::Parquet => "parquet",
        }
    }

    /// MIME type for an upload.
    pub fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Csv => "text/csv",
            ReportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// Encodes a report.
    pub fn encode(self, report: &Report) -> Result<Vec<u8>, ReportError> {
        match self {
            ReportFormat::Csv => to_csv(report),
            ReportFormat::Parquet => to_parquet(report),
        }
    }
}

/// How a column is typed.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    OptionalText,
    /// ms since the epoch, UTC.
    Timestamp,
    /// Fixed point with this many decimal places.
    Decimal(u32),
    Integer,
}

/// One cell.
enum Value {
    Text(String),
    Null,
    Int(i64),
}

struct Column {
    name: &'static str,
    kind: Kind,
    value: fn(&ReportRow) -> Value,
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn optional(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, text)
}

/// How FOCUS names a provider's bill: provider, service, resource type,
/// and whether the capacity is committed (owned hosts, paid for whether
/// used or not) rather than bought by the hour.
struct Billing {
    provider: &'static str,
    service: &'static str,
    resource_type: &'static str,
    committed: bool,
}

/// Ebbtide's provider names mapped to FOCUS's names; anything else runs
/// on the scheduler's own machine.
fn billing(row: &ReportRow) -> Billing {
    if row.provider == "baremetal" {
        return Billing {
            provider: "Owned hosts",
            service: "Ebbtide bare-metal workers",
            resource_type: "Bare-metal host slot",
            committed: true,
        };
    }
    let (provider, service, resource_type) = match row.provider.as_str() {
        "aws" => (
            "Amazon Web Services",
            "Amazon Elastic Compute Cloud",
            "Virtual Machine",
        ),
        "gce" => ("Google Cloud", "Compute Engine", "Virtual Machine"),
        "docker" => ("Docker", "Docker containers", "Container"),
        _ => ("Self-hosted", "Ebbtide workers", "Process"),
    };
    Billing {
        provider,
        service,
        resource_type,
        committed: false,
    }
}

/// FOCUS's pricing category: owned capacity is `Committed` (its
/// amortized price is paid whether a slot is used or not), spot
/// `Dynamic`, the rest `Standard`.
fn pricing_category(row: &ReportRow) -> Value {
    text(if billing(row).committed {
        "Committed"
    } else if row.spot {
        "Dynamic"
    } else {
        "Standard"
    })
}

fn tags(row: &ReportRow) -> Value {
    let mut tags = serde_json::Map::new();
    tags.insert("ebbtide:pool".into(), row.pool.clone().into());
    match &row.tenant {
        Some(t) => tags.insert("ebbtide:tenant".into(), t.clone().into()),
        None => tags.insert("ebbtide:idle".into(), "true".into()),
    };
    Value::Text(serde_json::Value::Object(tags).to_string())
}

fn description(row: &ReportRow) -> Value {
    let market = if row.spot {
        ebbtide_core::Market::Spot
    } else {
        ebbtide_core::Market::OnDemand
    }
    .name();
    Value::Text(match &row.tenant {
        Some(t) => format!("{} {market} instance time used by tenant {t}", row.shape),
        None => format!(
            "{} {market} instance time with free slots (idle)",
            row.shape
        ),
    })
}

const COLUMNS: &[Column] = &[
    Column {
        name: "BillingCurrency",
        kind: Kind::Text,
        value: |_| text("USD"),
    },
    Column {
        name: "BillingPeriodStart",
        kind: Kind::Timestamp,
        value: |r| Value::Int(r.day.month().0.start_millis()),
    },
    Column {
        name: "BillingPeriodEnd",
        kind: Kind::Timestamp,
        value: |r| Value::Int(r.day.month().1.start_millis()),
    },
    Column {
        name: "ChargePeriodStart",
        kind: Kind::Timestamp,
        value: |r| Value::Int(r.day.start_millis()),
    },
    Column {
        name: "ChargePeriodEnd",
        kind: Kind::Timestamp,
        value: |r| Value::Int(r.day.end_millis()),
    },
    Column {
        name: "ChargeCategory",
        kind: Kind::Text,
        value: |_| text("Usage"),
    },
    Column {
        name: "ChargeDescription",
        kind: Kind::Text,
        value: description,
    },
    Column {
        name: "BilledCost",
        kind: Kind::Decimal(6),
        value: |r| Value::Int(r.billed_micros),
    },
    Column {
        name: "EffectiveCost",
        kind: Kind::Decimal(6),
        value: |r| Value::Int(r.billed_micros),
    },
    Column {
        name: "ListCost",
        kind: Kind::Decimal(6),
        value: |r| Value::Int(r.list_micros),
    },
    Column {
        name: "ConsumedQuantity",
        kind: Kind::Decimal(6),
        value: |r| Value::Int(r.micro_hours),
    },
    Column {
        name: "ConsumedUnit",
        kind: Kind::Text,
        value: |_| text("Hours"),
    },
    Column {
        name: "PricingCategory",
        kind: Kind::Text,
        value: pricing_category,
    },
    Column {
        name: "ProviderName",
        kind: Kind::Text,
        value: |r| text(billing(r).provider),
    },
    Column {
        name: "PublisherName",
        kind: Kind::Text,
        value: |r| text(billing(r).provider),
    },
    Column {
        name: "RegionId",
        kind: Kind::OptionalText,
        value: |r| optional(&r.region),
    },
    Column {
        name: "AvailabilityZone",
        kind: Kind::OptionalText,
        value: |r| optional(&r.zone),
    },
    Column {
        name: "ResourceId",
        kind: Kind::Text,
        value: |r| text(&r.resource_id),
    },
    Column {
        name: "ResourceName",
        kind: Kind::Text,
        value: |r| text(&r.resource_name),
    },
    Column {
        name: "ResourceType",
        kind: Kind::Text,
        value: |r| text(billing(r).resource_type),
    },
    Column {
        name: "ServiceCategory",
        kind: Kind::Text,
        value: |_| text("Compute"),
    },
    Column {
        name: "ServiceName",
        kind: Kind::Text,
        value: |r| text(billing(r).service),
    },
    Column {
        name: "SkuId",
        kind: Kind::Text,
        value: |r| text(&r.shape),
    },
    Column {
        name: "Tags",
        kind: Kind::Text,
        value: tags,
    },
    Column {
        name: "x_Tenant",
        kind: Kind::OptionalText,
        value: |r| optional(&r.tenant),
    },
    Column {
        name: "x_Pool",
        kind: Kind::Text,
        value: |r| text(&r.pool),
    },
    Column {
        name: "x_JobsServed",
        kind: Kind::Integer,
        value: |r| Value::Int(i64::from(r.jobs_served)),
    },
    Column {
        name: "x_IdleSeconds",
        kind: Kind::Decimal(3),
        value: |r| Value::Int(i64::try_from(r.idle_millis).unwrap_or(i64::MAX)),
    },
    Column {
        name: "x_SavingsVsOnDemand",
        kind: Kind::Decimal(6),
        value: |r| Value::Int(r.savings_micros()),
    },
];

/// `value / 10^scale` as a decimal string, exactly.
fn decimal(value: i64, scale: u32) -> String {
    let unit = 10u64.pow(scale);
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / unit,
        abs % unit,
        width = scale as usize
    )
}

fn rfc3339(millis: i64) -> String {
    let day = Day(u64::try_from(millis.div_euclid(86_400_000)).unwrap_or(0));
    let secs = millis.rem_euclid(86_400_000) / 1000;
    format!(
        "{day}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The report as CSV with a header row.
pub fn to_csv(report: &Report) -> Result<Vec<u8>, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS.iter().map(|c| c.name))?;
    for row in &report.rows {
        w.write_record(COLUMNS.iter().map(|c| match ((c.value)(row), c.kind) {
            (Value::Text(s), _) => s,
            (Value::Null, _) => String::new(),
            (Value::Int(ms), Kind::Timestamp) => rfc3339(ms),
            (Value::Int(v), Kind::Decimal(scale)) => decimal(v, scale),
            (Value::Int(v), _) => v.to_string(),
        }))?;
    }
    w.into_inner()
        .map_err(|e| ReportError::Csv(e.into_error().into()))
}

fn schema() -> String {
    let fields: String = COLUMNS
        .iter()
        .map(|c| match c.kind {
            Kind::Text => format!("REQUIRED BYTE_ARRAY {} (STRING);", c.name),
            Kind::OptionalText => format!("OPTIONAL BYTE_ARRAY {} (STRING);", c.name),
            Kind::Timestamp => format!("REQUIRED INT64 {} (TIMESTAMP(MILLIS,true));", c.name),
            Kind::Decimal(scale) => format!("REQUIRED INT64 {} (DECIMAL(18,{scale}));", c.name),
            Kind::Integer => format!("REQUIRED INT64 {};", c.name),
        })
        .collect();
    format!("message focus_cost_report {{ {fields} }}")
}

/// The report as one Parquet row group, Snappy-compressed.
pub fn to_parquet(report: &Report) -> Result<Vec<u8>, ReportError> {
    let schema = Arc::new(parse_message_type(&schema())?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("ebbtide {}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, props)?;
    let mut group = writer.next_row_group()?;
    for column in COLUMNS {
        let Some(mut col) = group.next_column()? else {
            break;
        };
        let values: Vec<Value> = report.rows.iter().map(column.value).collect();
        match column.kind {
            Kind::Text | Kind::OptionalText => {
                let defined: Vec<i16> = values
                    .iter()
                    .map(|v| i16::from(!matches!(v, Value::Null)))
                    .collect();
                let strings: Vec<ByteArray> = values
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Text(s) => Some(ByteArray::from(s.into_bytes())),
                        _ => None,
                    })
                    .collect();
                let levels =
                    matches!(column.kind, Kind::OptionalText).then_some(defined.as_slice());
                col.typed::<ByteArrayType>()
                    .write_batch(&strings, levels, None)?;
            }
            Kind::Timestamp | Kind::Decimal(_) | Kind::Integer => {
                let ints: Vec<i64> = values
                    .into_iter()
                    .map(|v| match v {
                        Value::Int(i) => i,
                        _ => 0,
                    })
                    .collect();
                col.typed::<Int64Type>().write_batch(&ints, None, None)?;
            }
        }
        col.close()?;
    }
    group.close()?;
    writer.close()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_and_times_are_written_exactly() {
        assert_eq!(decimal(1_234_567, 6), "1.234567");
        assert_eq!(decimal(-5, 6), "-0.000005");
        assert_eq!(decimal(61_005, 3), "61.005");
        assert_eq!(rfc3339(1_795_824_000_000), "2026-11-28T00:00:00Z");
        assert_eq!(
            rfc3339(1_795_824_000_000 + 3_723_000),
            "2026-11-28T01:02:03Z"
        );
    }

    #[test]
    fn owned_hosts_are_committed_capacity_apart_from_rented_instances() {
        let row = |provider: &str, spot: bool| ReportRow {
            day: Day::of_millis(1_795_824_000_000),
            tenant: None,
            pool: "p".into(),
            provider: provider.into(),
            region: None,
            zone: None,
            resource_id: "i".into(),
            resource_name: "w1".into(),
            shape: "s".into(),
            spot,
            billed_micros: 1,
            list_micros: 1,
            micro_hours: 1,
            idle_millis: 0,
            jobs_served: 0,
        };
        let category = |r: &ReportRow| match pricing_category(r) {
            Value::Text(t) => t,
            _ => String::new(),
        };
        assert_eq!(category(&row("baremetal", false)), "Committed");
        assert_eq!(billing(&row("baremetal", false)).provider, "Owned hosts");
        assert_eq!(category(&row("aws", true)), "Dynamic");
        assert_eq!(category(&row("gce", false)), "Standard");
        assert_eq!(category(&row("local", false)), "Standard");
    }

    #[test]
    fn the_parquet_schema_parses_and_names_every_column() {
        let schema = parse_message_type(&schema()).expect("valid schema");
        assert_eq!(schema.get_fields().len(), COLUMNS.len());
    }
}

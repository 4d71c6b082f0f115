//! Reading a published report back: its money columns summed, exactly.
//!
//! What a published report claims must be checked against the ledger it
//! came from — by the tests that read reports back from S3, and by an
//! operator who wants to audit a file. Both encodings are read
//! independently of the writer's column table, by column name.

use std::collections::BTreeMap;

use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::record::Field;

/// The money columns of a report, summed in micro-dollars, and its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// Rows read.
    pub rows: usize,
    /// Sum of each decimal column, in its smallest unit (micro-dollars for
    /// money), by column name.
    pub sums: BTreeMap<String, i64>,
    /// The distinct values of each text column named in `keep`.
    pub values: BTreeMap<String, Vec<String>>,
}

/// A report that does not read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// Not valid CSV.
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Not valid Parquet.
    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A decimal cell does not parse.
    #[error("column {column}, row {row}: {value:?} is not a decimal with {scale} places")]
    Decimal {
        /// Column.
        column: String,
        /// 1-based data row.
        row: usize,
        /// The cell.
        value: String,
        /// Places expected.
        scale: u32,
    },
}

/// Columns read as decimals, and their places.
const DECIMALS: &[(&str, u32)] = &[
    ("BilledCost", 6),
    ("EffectiveCost", 6),
    ("ListCost", 6),
    ("ConsumedQuantity", 6),
    ("x_IdleSeconds", 3),
    ("x_SavingsVsOnDemand", 6),
];

fn note(out: &mut ReadBack, keep: &[&str], column: &str, value: String) {
    if keep.contains(&column) {
        let seen = out.values.entry(column.to_string()).or_default();
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
}

/// Reads a CSV report: sums its decimal columns, notes the values of `keep`.
pub fn read_csv(bytes: &[u8], keep: &[&str]) -> Result<ReadBack, ReadBackError> {
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = reader.headers()?.clone();
    let mut out = ReadBack::default();
    for (i, record) in reader.records().enumerate() {
        let record = record?;
        out.rows += 1;
        for (column, cell) in headers.iter().zip(record.iter()) {
            if let Some(&(_, scale)) = DECIMALS.iter().find(|(c, _)| *c == column) {
                let fail = || ReadBackError::Decimal {
                    column: column.to_string(),
                    row: i + 1,
                    value: cell.to_string(),
                    scale,
                };
                let value = parse_decimal(cell, scale).ok_or_else(fail)?;
                *out.sums.entry(column.to_string()).or_default() += value;
            } else {
                note(&mut out, keep, column, cell.to_string());
            }
        }
    }
    Ok(out)
}

/// `"-12.345678"` with `scale` 6 → `-12_345_678`; exactly `scale` places.
fn parse_decimal(cell: &str, scale: u32) -> Option<i64> {
    let (negative, digits) = cell.strip_prefix('-').map_or((false, cell), |d| (true, d));
    let (whole, fraction) = digits.split_once('.')?;
    if fraction.len() != scale as usize {
        return None;
    }
    let value = whole.parse::<i64>().ok()? * 10i64.pow(scale) + fraction.parse::<i64>().ok()?;
    Some(if negative { -value } else { value })
}

/// Reads a Parquet report: sums its decimal columns, notes the values of
/// `keep`.
pub fn read_parquet(bytes: Vec<u8>, keep: &[&str]) -> Result<ReadBack, ReadBackError> {
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))?;
    let mut out = ReadBack::default();
    for row in reader.get_row_iter(None)? {
        let row = row?;
        out.rows += 1;
        for (column, field) in row.get_column_iter() {
            match field {
                Field::Decimal(d) => {
                    let mut be = [0u8; 8];
                    let data = d.data();
                    let n = data.len().min(8);
                    be[8 - n..].copy_from_slice(&data[data.len() - n..]);
                    *out.sums.entry(column.clone()).or_default() += i64::from_be_bytes(be);
                }
                Field::Str(s) => note(&mut out, keep, column, s.clone()),
                Field::Null => note(&mut out, keep, column, String::new()),
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly_or_not_at_all() {
        assert_eq!(parse_decimal("12.345678", 6), Some(12_345_678));
        assert_eq!(parse_decimal("-0.000005", 6), Some(-5));
        assert_eq!(parse_decimal("1.5", 6), None, "wrong number of places");
        assert_eq!(parse_decimal("12", 6), None);
    }
}

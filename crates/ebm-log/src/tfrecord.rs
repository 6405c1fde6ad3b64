//! TFRecord framing, the container format of TensorBoard event files.
//!
//! Each record is
//!
//! ```text
//! u64 little-endian  length of data
//! u32 little-endian  masked CRC32C of the 8 length bytes
//! [u8; length]       data (a serialized `Event` protobuf)
//! u32 little-endian  masked CRC32C of data
//! ```
//!
//! with `mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping, on `u32`).

use std::io::Write;
use std::path::Path;

use prost::Message;

use crate::error::{LogError, Result};
use crate::proto::Event;

const MASK_DELTA: u32 = 0xa282_ead8;

/// The masked CRC32C (Castagnoli) of `data`, as TFRecord stores it.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    // ((crc >> 15) | (crc << 17)) is a right rotation by 15.
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Appends one framed record holding `data` to `out`.
pub fn encode_record(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.reserve(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// Writes one framed record holding `data` to `w`.
pub fn write_record<W: Write>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(data.len() + 16);
    encode_record(data, &mut buf);
    w.write_all(&buf)
}

/// Splits a buffer of framed records into the records' data, checking both CRCs of each.
///
/// `source` only names the buffer in error messages (use the file's path). A truncated final
/// record or a CRC mismatch is an error naming the byte offset of the record.
pub fn parse_records(bytes: &[u8], source: &Path) -> Result<Vec<Vec<u8>>> {
    let corrupt =
        |offset: usize, msg: String| LogError::Corrupt { path: source.to_path_buf(), offset: offset as u64, msg };
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let start = pos;
        let header = bytes.get(pos..pos + 12).ok_or_else(|| corrupt(start, "truncated record header".into()))?;
        let len_bytes = &header[..8];
        let len_crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if masked_crc32c(len_bytes) != len_crc {
            return Err(corrupt(start, "length CRC mismatch".into()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= bytes.len())
            .ok_or_else(|| corrupt(start, format!("record length {len} exceeds the buffer")))?;
        pos += 12;
        let data = bytes.get(pos..pos + len).ok_or_else(|| corrupt(start, "truncated record data".into()))?;
        pos += len;
        let crc_bytes = bytes.get(pos..pos + 4).ok_or_else(|| corrupt(start, "truncated data CRC".into()))?;
        let data_crc = u32::from_le_bytes(crc_bytes.try_into().expect("4 bytes"));
        if masked_crc32c(data) != data_crc {
            return Err(corrupt(start, "data CRC mismatch".into()));
        }
        pos += 4;
        records.push(data.to_vec());
    }
    Ok(records)
}

/// Reads a whole event file and decodes every record as an [`Event`].
pub fn read_event_file(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).map_err(|e| LogError::io("read", path, e))?;
    parse_records(&bytes, path)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Event::decode(r.as_slice()).map_err(|e| LogError::Corrupt {
                path: path.to_path_buf(),
                offset: i as u64,
                msg: format!("record {i} is not an Event protobuf: {e}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_of_known_inputs() {
        // crc32c("123456789") = 0xe3069283 (the standard CRC-32C check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // Masked values as TensorFlow's/TensorBoard's masked_crc32c computes them.
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
        assert_eq!(masked_crc32c(&5u64.to_le_bytes()), 0x3e04_b2ea);
        // By hand: (0xe3069283 >> 15) | (0xe3069283 << 17) = 0x2507c60d (mod 2^32), and
        // 0x2507c60d + 0xa282ead8 = 0xc78ab0e5 (mod 2^32).
        assert_eq!(0x2507_c60du32.wrapping_add(0xa282_ead8), 0xc78a_b0e5);
    }

    #[test]
    fn record_layout_is_exact() {
        let mut buf = Vec::new();
        encode_record(b"hello", &mut buf);
        assert_eq!(buf.len(), 8 + 4 + 5 + 4);
        assert_eq!(&buf[..8], &5u64.to_le_bytes());
        assert_eq!(&buf[8..12], &0x3e04_b2eau32.to_le_bytes());
        assert_eq!(&buf[12..17], b"hello");
        assert_eq!(&buf[17..], &masked_crc32c(b"hello").to_le_bytes());
    }

    #[test]
    fn records_round_trip_and_corruption_is_detected() {
        let payloads: Vec<Vec<u8>> = vec![vec![], b"a".to_vec(), (0..=255u8).collect()];
        let mut buf = Vec::new();
        for p in &payloads {
            write_record(&mut buf, p).unwrap();
        }
        let src = Path::new("<memory>");
        assert_eq!(parse_records(&buf, src).unwrap(), payloads);

        // Flip one data byte of the last record: its data CRC no longer matches.
        let mut bad = buf.clone();
        let last = bad.len() - 5;
        bad[last] ^= 1;
        let err = parse_records(&bad, src).unwrap_err().to_string();
        assert!(err.contains("data CRC mismatch"), "{err}");
        // The last record starts after the first two (16 + 17 bytes).
        assert!(err.contains("at byte 33"), "{err}");

        // Truncation is reported, not a panic.
        let err = parse_records(&buf[..buf.len() - 2], src).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

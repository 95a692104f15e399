//! The on-disk format of a log segment, and its recovery scan.
//!
//! ```text
//! segment file <first index, 20 digits>.wal
//! +--------------------------------------------------------------------+
//! | header, 32 bytes                                                   |
//! |   magic "RKWALSEG" | version u32 | reserved u32 | first index u64  |
//! |   CRC32C of the 24 bytes before it u32 | reserved u32              |
//! +--------------------------------------------------------------------+
//! | record: len u32 | payload CRC32C u32 | CRC32C of the 8 before u32  |
//! |         payload: `raftkit::wire::encode_entry`, `len` bytes        |
//! | record ...                                                         |
//! +--------------------------------------------------------------------+
//! ```
//!
//! All integers are little-endian. The record header has a CRC of its own so
//! that a damaged length is told apart from a record cut short by a crash.

use std::path::Path;

use raftkit::wire::{decode_entry, encode_entry};
use raftkit::{Entry, StorageError, StorageResult};

/// The segment header's length.
pub(crate) const HEADER_LEN: u64 = 32;
/// A record header's length.
pub(crate) const RECORD_HEADER_LEN: usize = 12;
/// The format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// The largest encoded entry a record may hold (1 GiB).
pub(crate) const MAX_RECORD_LEN: usize = 1 << 30;

const MAGIC: [u8; 8] = *b"RKWALSEG";

/// The header of a segment whose first entry is `first_index`.
pub(crate) fn encode_header(first_index: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header and returns its first index.
pub(crate) fn decode_header(path: &Path, h: &[u8]) -> StorageResult<u64> {
    let bad =
        |what: String| StorageError::Corrupt(format!("{}: segment header: {what}", path.display()));
    if h.len() < HEADER_LEN as usize {
        return Err(bad(format!("{} bytes, need {HEADER_LEN}", h.len())));
    }
    if h[..8] != MAGIC {
        return Err(bad(format!("magic {:02x?} is not {:02x?}", &h[..8], MAGIC)));
    }
    let stored = u32_at(h, 24);
    let actual = crc32c::crc32c(&h[..24]);
    if stored != actual {
        return Err(bad(format!(
            "CRC32C {actual:08x} does not match the stored {stored:08x}"
        )));
    }
    let version = u32_at(h, 8);
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}; this build reads version {FORMAT_VERSION}"
        )));
    }
    Ok(u64_at(h, 16))
}

/// Appends the record for `entry` to `out`.
pub(crate) fn encode_record(entry: &Entry, out: &mut Vec<u8>) -> StorageResult<()> {
    let payload = encode_entry(entry);
    if payload.len() > MAX_RECORD_LEN {
        return Err(StorageError::Invalid(format!(
            "entry {} encodes to {} bytes; a log record holds at most {MAX_RECORD_LEN}",
            entry.index,
            payload.len()
        )));
    }
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&out[start..start + 8]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// What is wrong with the record at some offset.
#[derive(Debug)]
pub(crate) enum RecordFault {
    /// Fewer bytes remain than a record header.
    ShortHeader,
    /// The header fails its CRC or names an impossible length.
    BadHeader,
    /// The header is good but the payload is cut short.
    ShortPayload {
        /// The length the header claims.
        len: usize,
    },
    /// The payload fails its CRC.
    BadPayloadCrc {
        /// The offset just past the record.
        end: usize,
    },
    /// The payload passes its CRC but is not the expected entry.
    BadEntry(String),
}

impl RecordFault {
    fn describe(&self) -> String {
        match self {
            RecordFault::ShortHeader => "partial record header".into(),
            RecordFault::BadHeader => "record header fails its CRC32C".into(),
            RecordFault::ShortPayload { len } => format!("record of {len} bytes is cut short"),
            RecordFault::BadPayloadCrc { .. } => "record payload fails its CRC32C".into(),
            RecordFault::BadEntry(why) => why.clone(),
        }
    }
}

/// Decodes the record at the start of `buf`, which must hold the entry with
/// index `index`; returns it and the record's length.
pub(crate) fn decode_record(buf: &[u8], index: u64) -> Result<(Entry, usize), RecordFault> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(RecordFault::ShortHeader);
    }
    let len = u32_at(buf, 0) as usize;
    if crc32c::crc32c(&buf[..8]) != u32_at(buf, 8) || len == 0 || len > MAX_RECORD_LEN {
        return Err(RecordFault::BadHeader);
    }
    let end = RECORD_HEADER_LEN + len;
    if buf.len() < end {
        return Err(RecordFault::ShortPayload { len });
    }
    let payload = &buf[RECORD_HEADER_LEN..end];
    if crc32c::crc32c(payload) != u32_at(buf, 4) {
        return Err(RecordFault::BadPayloadCrc { end });
    }
    let entry = decode_entry(payload).map_err(|e| {
        RecordFault::BadEntry(format!("record passes its CRC32C but does not decode: {e}"))
    })?;
    if entry.index.0 != index {
        return Err(RecordFault::BadEntry(format!(
            "record holds entry {} where entry {index} belongs",
            entry.index
        )));
    }
    Ok((entry, end))
}

/// The error for a bad record: names the file, the offset and the index.
pub(crate) fn corrupt_record(
    path: &Path,
    offset: u64,
    index: u64,
    fault: &RecordFault,
) -> StorageError {
    StorageError::Corrupt(format!(
        "{}: offset {offset}: entry index {index}: {}",
        path.display(),
        fault.describe()
    ))
}

/// What a recovery scan found in a segment's bytes.
#[derive(Debug)]
pub(crate) struct Scan {
    /// The offset of each record, in index order.
    pub(crate) offsets: Vec<u64>,
    /// Where the valid records end.
    pub(crate) end: u64,
    /// Set when a torn tail must be cut off at `end`: what was wrong.
    pub(crate) torn: Option<String>,
}

/// Scans a whole segment, `data`, whose header says `first_index`.
///
/// A fault at the tail of the last segment (`is_last`) is a torn write from a
/// crash: a partial header or payload, a final record whose CRC fails, or a
/// zero-filled remainder. It is reported in `Scan::torn` for the caller to cut
/// off. Any other fault is `StorageError::Corrupt`.
pub(crate) fn scan(
    path: &Path,
    data: &[u8],
    first_index: u64,
    is_last: bool,
) -> StorageResult<Scan> {
    let mut offsets = Vec::new();
    let mut off = HEADER_LEN as usize;
    while off < data.len() {
        let index = first_index + offsets.len() as u64;
        let rest = &data[off..];
        match decode_record(rest, index) {
            Ok((_, len)) => {
                offsets.push(off as u64);
                off += len;
            }
            Err(fault) => {
                let torn_tail = match &fault {
                    RecordFault::ShortHeader | RecordFault::ShortPayload { .. } => true,
                    RecordFault::BadPayloadCrc { end } => *end == rest.len(),
                    RecordFault::BadHeader => rest.iter().all(|b| *b == 0),
                    RecordFault::BadEntry(_) => false,
                };
                if !(torn_tail && is_last) {
                    return Err(corrupt_record(path, off as u64, index, &fault));
                }
                let why = format!(
                    "offset {off}: entry index {index}: {} ({} bytes cut off)",
                    fault.describe(),
                    rest.len()
                );
                return Ok(Scan {
                    offsets,
                    end: off as u64,
                    torn: Some(why),
                });
            }
        }
    }
    Ok(Scan {
        offsets,
        end: off as u64,
        torn: None,
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkit::{LogIndex, Term};

    fn record(index: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let e = Entry::command(LogIndex(index), Term(1), vec![index as u8; 40].into());
        encode_record(&e, &mut out).expect("encoding a small entry");
        out
    }

    fn segment(records: u64) -> Vec<u8> {
        let mut data = encode_header(1).to_vec();
        for i in 1..=records {
            data.extend(record(i));
        }
        data
    }

    #[test]
    fn header_round_trips_and_rejects_a_flipped_byte() {
        let h = encode_header(77);
        assert_eq!(
            decode_header(Path::new("x"), &h).expect("a good header"),
            77
        );
        for i in 0..28 {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert!(
                decode_header(Path::new("x"), &bad).is_err(),
                "flipping header byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_cut_of_the_last_record_is_a_torn_tail() {
        let whole = segment(3);
        let third = whole.len() - record(3).len();
        for cut in third + 1..whole.len() {
            let s = scan(Path::new("seg"), &whole[..cut], 1, true)
                .expect("a cut tail is not corruption");
            assert_eq!((s.offsets.len(), s.end), (2, third as u64), "cut at {cut}");
            assert!(s.torn.is_some(), "cut at {cut} should be reported as torn");
        }
    }

    #[test]
    fn a_cut_in_a_segment_that_is_not_the_last_is_corrupt() {
        let whole = segment(3);
        let err = scan(Path::new("seg"), &whole[..whole.len() - 3], 1, false).expect_err("cut");
        assert!(err.to_string().contains("entry index 3"), "{err}");
    }

    #[test]
    fn every_flipped_byte_before_the_last_record_is_corrupt() {
        let whole = segment(3);
        let third = whole.len() - record(3).len();
        for at in HEADER_LEN as usize..third {
            let mut bad = whole.clone();
            bad[at] ^= 0x01;
            match scan(Path::new("seg"), &bad, 1, true) {
                Err(StorageError::Corrupt(msg)) => assert!(msg.contains("seg: offset"), "{msg}"),
                other => panic!("flipping byte {at} should be Corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_zero_filled_tail_is_torn() {
        let mut data = segment(2);
        let end = data.len();
        data.extend([0u8; 100]);
        let s = scan(Path::new("seg"), &data, 1, true).expect("zero tail");
        assert_eq!((s.offsets.len(), s.end), (2, end as u64));
    }
}

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
//!
//! A segment may be preallocated: created at its full size, zero-filled, and
//! then written in place (see `FileLogOptions::preallocate`). A record never
//! has a zero length, so the records of a segment end at the first zero
//! length field, or at the end of the file. The rules of a recovery scan,
//! where "the end" is the offset the next record would start at:
//!
//! - A zero length field (or fewer than four bytes left, all zero) followed
//!   by nothing but zeros up to the end of the file: the end of the log.
//! - A zero length field followed by any non-zero byte: `Corrupt`, naming the
//!   first non-zero byte's offset. Zeros are never skipped to look for more.
//! - A record failing its checks (header CRC, length, payload CRC, cut short
//!   by the end of the file) in the last segment, with nothing but zeros
//!   after it: a torn tail, a crash in the middle of writing the last batch.
//!   "After it" is after its header if the header fails, else after the
//!   length the header claims. The caller cuts it off (overwrites it with
//!   zeros, or shortens the file) and logs it.
//! - A failing record with any non-zero byte after it, or in any segment but
//!   the last, or one that passes its CRCs but holds the wrong entry:
//!   `Corrupt`, naming the file, the offset and the entry index.
//!
//! A crash leaves at most one bad record before the zeros, because the last
//! batch is one positional write over zeros: a SIGKILL stops it part-way, in
//! order. A power failure may persist the pages of an unsynced batch out of
//! order; when a later page of it survived an earlier one, open refuses with
//! `Corrupt` rather than guess which bytes were acknowledged (none were: the
//! batch was never synced, so deleting the segment's tail by hand from the
//! reported offset loses nothing that was promised).

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
        /// The length the header claims.
        len: usize,
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
        return Err(RecordFault::BadPayloadCrc { len });
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
    /// Where the valid records end: the offset of the next record.
    pub(crate) end: u64,
    /// Where the bytes to cut off end: past the last non-zero byte of the
    /// file when there is a torn tail (or a stop) to cut, else `end`.
    pub(crate) dirty_end: u64,
    /// Set when a torn tail must be cut off at `end`: what was wrong.
    pub(crate) torn: Option<String>,
}

/// Scans a whole segment, `data`, whose header says `first_index`, by the
/// rules in the module documentation.
///
/// `is_last` says whether this is the last segment (the only one that may
/// hold a torn tail). `stop_at` is the first index of an interrupted
/// truncation: the scan ends where that entry's record starts, whatever
/// follows it, and reports everything after as bytes to cut off.
pub(crate) fn scan(
    path: &Path,
    data: &[u8],
    first_index: u64,
    is_last: bool,
    stop_at: Option<u64>,
) -> StorageResult<Scan> {
    let mut offsets = Vec::new();
    let mut off = HEADER_LEN as usize;
    // Past the last non-zero byte: what a cut at some offset has to zero.
    let written_end = |from: usize| {
        data.iter()
            .rposition(|&b| b != 0)
            .map_or(from, |p| (p + 1).max(from)) as u64
    };
    loop {
        let index = first_index + offsets.len() as u64;
        if stop_at == Some(index) {
            return Ok(Scan {
                offsets,
                end: off as u64,
                dirty_end: written_end(off),
                torn: None,
            });
        }
        if off >= data.len() {
            break;
        }
        let rest = &data[off..];
        if rest[..rest.len().min(4)].iter().all(|&b| b == 0) {
            // A zero length: the end of the records, if only zeros follow.
            if let Some(p) = rest.iter().position(|&b| b != 0) {
                return Err(StorageError::Corrupt(format!(
                    "{}: offset {}: non-zero bytes after the end of the log (the zero record \
                     length at offset {off}, where entry index {index} would start, ends it)",
                    path.display(),
                    off + p
                )));
            }
            break;
        }
        match decode_record(rest, index) {
            Ok((_, len)) => {
                offsets.push(off as u64);
                off += len;
            }
            Err(fault) => {
                // How far the bad record reaches; a crash leaves only zeros past it.
                let reach = match &fault {
                    RecordFault::ShortHeader | RecordFault::ShortPayload { .. } => rest.len(),
                    RecordFault::BadHeader => RECORD_HEADER_LEN,
                    RecordFault::BadPayloadCrc { len } => RECORD_HEADER_LEN + len,
                    RecordFault::BadEntry(_) => {
                        return Err(corrupt_record(path, off as u64, index, &fault));
                    }
                };
                let after = (off + reach).min(data.len());
                let garbage = data[after..].iter().position(|&b| b != 0);
                match garbage {
                    None if is_last => {}
                    None => return Err(corrupt_record(path, off as u64, index, &fault)),
                    Some(p) => {
                        return Err(StorageError::Corrupt(format!(
                            "{}: offset {off}: entry index {index}: {}; non-zero bytes follow it \
                             at offset {}, so it is not a torn tail",
                            path.display(),
                            fault.describe(),
                            after + p
                        )))
                    }
                }
                let dirty_end = written_end(off);
                let why = format!(
                    "offset {off}: entry index {index}: {} ({} bytes cut off)",
                    fault.describe(),
                    dirty_end - off as u64
                );
                return Ok(Scan {
                    offsets,
                    end: off as u64,
                    dirty_end,
                    torn: Some(why),
                });
            }
        }
    }
    Ok(Scan {
        offsets,
        end: off as u64,
        dirty_end: off as u64,
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
            let s = scan(Path::new("seg"), &whole[..cut], 1, true, None)
                .expect("a cut tail is not corruption");
            assert_eq!((s.offsets.len(), s.end), (2, third as u64), "cut at {cut}");
            assert!(s.torn.is_some(), "cut at {cut} should be reported as torn");
        }
    }

    #[test]
    fn a_cut_in_a_segment_that_is_not_the_last_is_corrupt() {
        let whole = segment(3);
        let err =
            scan(Path::new("seg"), &whole[..whole.len() - 3], 1, false, None).expect_err("cut");
        assert!(err.to_string().contains("entry index 3"), "{err}");
    }

    #[test]
    fn every_flipped_byte_before_the_last_record_is_corrupt() {
        let whole = segment(3);
        let third = whole.len() - record(3).len();
        for at in HEADER_LEN as usize..third {
            let mut bad = whole.clone();
            bad[at] ^= 0x01;
            match scan(Path::new("seg"), &bad, 1, true, None) {
                Err(StorageError::Corrupt(msg)) => assert!(msg.contains("seg: offset"), "{msg}"),
                other => panic!("flipping byte {at} should be Corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_garbled_tail_batch_is_corrupt_not_torn() {
        let mut data = segment(5);
        let third = HEADER_LEN as usize + 2 * record(1).len();
        // The last batch (records 3..=5) reached the disk as garbage: a bad
        // record followed by non-zero bytes is not what a crash leaves over
        // zeros, so it is refused rather than cut.
        for (k, b) in data[third..].iter_mut().enumerate() {
            *b = (k as u8).wrapping_mul(31) ^ 0xa7;
        }
        match scan(Path::new("seg"), &data, 1, true, None) {
            Err(StorageError::Corrupt(msg)) => {
                assert!(
                    msg.contains(&format!("seg: offset {third}: entry index 3")),
                    "{msg}"
                );
                assert!(msg.contains("not a torn tail"), "{msg}");
            }
            other => panic!("a garbled tail should be Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn damage_followed_by_an_intact_record_in_the_last_segment_is_corrupt() {
        let mut data = segment(5);
        let third = HEADER_LEN as usize + 2 * record(1).len();
        let fifth = data.len() - record(5).len();
        for b in &mut data[third..fifth] {
            *b = 0;
        }
        match scan(Path::new("seg"), &data, 1, true, None) {
            Err(StorageError::Corrupt(msg)) => {
                assert!(
                    msg.contains(&format!("offset {fifth}: non-zero bytes")),
                    "{msg}"
                );
                assert!(msg.contains(&format!("offset {third}")), "{msg}")
            }
            other => panic!("damage before an intact record should be Corrupt, got {other:?}"),
        }
    }

    /// A segment of `records` records, zero-filled to `size` bytes.
    fn preallocated(records: u64, size: usize) -> Vec<u8> {
        let mut data = segment(records);
        assert!(data.len() <= size, "the records fit");
        data.resize(size, 0);
        data
    }

    #[test]
    fn a_zero_tail_ends_the_log_and_is_not_torn() {
        for is_last in [true, false] {
            let end = segment(2).len();
            let s = scan(Path::new("seg"), &preallocated(2, 4096), 1, is_last, None)
                .expect("a zero tail");
            assert_eq!(
                (s.offsets.len(), s.end, s.dirty_end),
                (2, end as u64, end as u64)
            );
            assert!(s.torn.is_none(), "a zero tail is the end, not a torn tail");
        }
        // Fewer than four bytes left, all zero.
        let mut data = segment(2);
        data.extend([0u8; 3]);
        let s = scan(Path::new("seg"), &data, 1, true, None).expect("three zero bytes");
        assert_eq!((s.offsets.len(), s.torn.is_none()), (2, true));
        // A segment with a header and nothing else.
        let s = scan(Path::new("seg"), &preallocated(0, 4096), 1, true, None).expect("empty");
        assert_eq!((s.offsets.len(), s.end), (0, HEADER_LEN));
    }

    #[test]
    fn every_partial_write_of_the_last_record_over_zeros_is_a_torn_tail() {
        let whole = preallocated(3, 4096);
        let third = segment(2).len();
        let third_end = segment(3).len();
        for cut in third + 1..third_end {
            // The record's bytes up to `cut` reached the disk, the zeros after it stayed.
            let mut data = whole.clone();
            for b in &mut data[cut..third_end] {
                *b = 0;
            }
            let s = scan(Path::new("seg"), &data, 1, true, None)
                .unwrap_or_else(|e| panic!("cut at {cut}: a partial record is torn: {e}"));
            assert_eq!((s.offsets.len(), s.end), (2, third as u64), "cut at {cut}");
            assert!(s.torn.is_some(), "cut at {cut} should be reported as torn");
            assert!(
                s.dirty_end <= cut as u64 && data[s.dirty_end as usize..].iter().all(|&b| b == 0),
                "cut at {cut}: dirty_end {} should cover every non-zero byte",
                s.dirty_end
            );
            // The same in any segment but the last is corruption.
            match scan(Path::new("seg"), &data, 1, false, None) {
                Err(StorageError::Corrupt(msg)) => {
                    assert!(
                        msg.contains(&format!("offset {third}: entry index 3")),
                        "{msg}"
                    )
                }
                other => {
                    panic!("cut at {cut} in a middle segment: expected Corrupt, got {other:?}")
                }
            }
        }
    }

    #[test]
    fn a_non_zero_byte_in_the_zero_tail_is_corrupt_naming_its_offset() {
        let end = segment(2).len();
        // Past the length field of the next record: the length is zero, the log
        // ends there, and the byte after it is refused.
        for at in [end + 4, end + 11, end + 12, end + 500, 4095] {
            let mut data = preallocated(2, 4096);
            data[at] = 0x5a;
            for is_last in [true, false] {
                match scan(Path::new("seg"), &data, 1, is_last, None) {
                    Err(StorageError::Corrupt(msg)) => assert!(
                        msg.contains(&format!("seg: offset {at}: non-zero bytes after the end")),
                        "byte {at}: {msg}"
                    ),
                    other => {
                        panic!("a byte at {at} after the end: expected Corrupt, got {other:?}")
                    }
                }
            }
        }
        // In the length field itself it is a record header that fails its CRC
        // with zeros after it: in the last segment, a torn header (a crash
        // after its first bytes); in any other, corruption.
        for at in end..end + 4 {
            let mut data = preallocated(2, 4096);
            data[at] = 0x5a;
            let s = scan(Path::new("seg"), &data, 1, true, None).expect("a torn header");
            assert_eq!(
                (s.offsets.len(), s.end, s.dirty_end),
                (2, end as u64, at as u64 + 1)
            );
            assert!(s.torn.is_some(), "byte {at}");
            match scan(Path::new("seg"), &data, 1, false, None) {
                Err(StorageError::Corrupt(msg)) => assert!(
                    msg.contains(&format!("seg: offset {end}: entry index 3")),
                    "byte {at}: {msg}"
                ),
                other => panic!("byte {at} in a middle segment: expected Corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_bad_record_followed_by_non_zero_bytes_is_corrupt() {
        let mut data = preallocated(3, 4096);
        let third = segment(2).len();
        let third_end = segment(3).len();
        // Record 3's payload is damaged; a stray byte lies in the zeros after it.
        data[third + RECORD_HEADER_LEN + 5] ^= 0x01;
        data[third_end + 100] = 1;
        match scan(Path::new("seg"), &data, 1, true, None) {
            Err(StorageError::Corrupt(msg)) => {
                assert!(
                    msg.contains(&format!("offset {third}: entry index 3")),
                    "{msg}"
                );
                assert!(
                    msg.contains(&format!("at offset {}", third_end + 100)),
                    "{msg}"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Without the stray byte it is a torn tail.
        data[third_end + 100] = 0;
        let s = scan(Path::new("seg"), &data, 1, true, None).expect("torn");
        assert_eq!((s.offsets.len(), s.dirty_end), (2, third_end as u64));
    }

    #[test]
    fn a_stop_index_ends_the_scan_whatever_follows() {
        let mut data = preallocated(5, 4096);
        let third = segment(2).len();
        let fifth_end = segment(5).len();
        // What lies past the stop is not looked at: half of it is zeroed.
        for b in &mut data[third + 3..third + 40] {
            *b = 0;
        }
        let s = scan(Path::new("seg"), &data, 1, true, Some(3)).expect("stopped");
        assert_eq!(
            (s.offsets.len(), s.end, s.dirty_end, s.torn.is_none()),
            (2, third as u64, fifth_end as u64, true)
        );
    }
}

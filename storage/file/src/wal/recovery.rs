//! Opening the log: from the files on disk back to the in-memory index.
//!
//! ```text
//!  list *.wal (remove *.wal.tmp: spare and half-made segments)
//!    ──▶ finish an interrupted truncation (wal.truncate)
//!    ──▶ per segment: header, records, CRCs, zero tail (rules in segment.rs);
//!        cut a torn tail of the last one
//!    ──▶ check that segments are contiguous
//! ```
//!
//! Cutting bytes off a segment (a torn tail, or the rest of an interrupted
//! truncation) overwrites them with zeros and syncs when the log
//! preallocates, and shortens the file otherwise. Zeroing runs under a
//! truncation intent, so a crash in the middle of it is finished on the next
//! open instead of leaving half-zeroed bytes that would read as corruption.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raftkit::{StorageError, StorageResult};

use super::{Segment, Wal, SEGMENT_SUFFIX, TRUNCATE_INTENT};
use crate::fsutil;
use crate::segment::{self, HEADER_LEN};

pub(super) fn open_segment_file(path: &Path) -> StorageResult<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("opening segment", path.display(), e))
}

/// Lists segment files by first index, removing leftover temporary ones.
pub(super) fn list_segments(dir: &Path) -> StorageResult<Vec<(u64, PathBuf)>> {
    let read = fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir.display(), e))?;
    let mut found = Vec::new();
    for item in read {
        let item = item.map_err(|e| StorageError::io("listing", dir.display(), e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".wal.tmp") {
            fsutil::remove_file_if_exists(&item.path())?;
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(first) if stem.len() == 20 => found.push((first, item.path())),
            _ => {
                return Err(StorageError::Corrupt(format!(
                    "{}: a .wal file whose name is not a 20-digit first index",
                    item.path().display()
                )))
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Rebuilds the index from the files: finishes an interrupted truncation,
/// cuts a torn tail, checks that segments are contiguous.
pub(super) fn recover(dir: &Path, preallocate: bool) -> StorageResult<Wal> {
    let intent = read_truncate_intent(dir)?;
    let mut files = list_segments(dir)?;
    if let Some(from) = intent {
        for (first, path) in files.iter().filter(|(first, _)| *first >= from) {
            tracing::warn!(segment = %path.display(), first, "finishing an interrupted truncate_suffix({from})");
            fsutil::remove_file_if_exists(path)?;
        }
        files.retain(|(first, _)| *first < from);
        fsutil::sync_dir(dir)?;
    }
    let mut wal = Wal::default();
    let count = files.len();
    for (k, (name_first, path)) in files.into_iter().enumerate() {
        if let Some(seg) = load_segment(dir, name_first, path, k + 1 == count, intent, preallocate)?
        {
            if let Some(prev) = wal.segments.last() {
                if seg.first != prev.last() + 1 {
                    return Err(StorageError::Corrupt(format!(
                        "{} starts at index {} but {} ends at {}: the log has a hole",
                        seg.path.display(),
                        seg.first,
                        prev.path.display(),
                        prev.last()
                    )));
                }
            }
            wal.segments.push(seg);
        }
    }
    if let Some(from) = intent {
        truncate_segments(dir, &mut wal, from, preallocate)?;
        fsutil::remove_file_if_exists(&dir.join(TRUNCATE_INTENT))?;
        fsutil::sync_dir(dir)?;
    }
    Ok(wal)
}

/// Loads one segment; `None` when it holds no record (and is then removed).
/// `intent` is the first index of an interrupted truncation: records from it
/// on are not read but cut off.
pub(super) fn load_segment(
    dir: &Path,
    name_first: u64,
    path: PathBuf,
    is_last: bool,
    intent: Option<u64>,
    preallocate: bool,
) -> StorageResult<Option<Segment>> {
    let data =
        fs::read(&path).map_err(|e| StorageError::io("reading segment", path.display(), e))?;
    if data.len() < HEADER_LEN as usize && is_last {
        // A crash while a new segment was being filled; it never held a durable record.
        tracing::warn!(segment = %path.display(), "removing a last segment with a partial header");
        fsutil::remove_file_if_exists(&path)?;
        fsutil::sync_dir(dir)?;
        return Ok(None);
    }
    let first = segment::decode_header(&path, &data)?;
    if first != name_first {
        return Err(StorageError::Corrupt(format!(
            "{}: header says first index {first}, the file name says {name_first}",
            path.display()
        )));
    }
    let scan = segment::scan(&path, &data, first, is_last, intent)?;
    drop(data);
    if scan.offsets.is_empty() {
        if !is_last {
            return Err(StorageError::Corrupt(format!(
                "{}: a segment with no record before the last segment",
                path.display()
            )));
        }
        if let Some(why) = &scan.torn {
            tracing::warn!(segment = %path.display(), "removing a last segment whose only record is torn: {why}");
        }
        // No durable record: a crash after the segment was made, or during its first append.
        fsutil::remove_file_if_exists(&path)?;
        fsutil::sync_dir(dir)?;
        return Ok(None);
    }
    let file = open_segment_file(&path)?;
    if scan.dirty_end > scan.end {
        let cut_index = first + scan.offsets.len() as u64;
        if let Some(why) = &scan.torn {
            tracing::warn!(segment = %path.display(), "cutting off a torn tail: {why}");
            if preallocate {
                // Zeroing is not atomic: a crash part-way finishes it on the next open.
                write_truncate_intent(dir, cut_index)?;
            }
        }
        cut(&file, scan.end, scan.dirty_end, preallocate)
            .map_err(|e| StorageError::io("cutting off the tail of", path.display(), e))?;
        if scan.torn.is_some() && preallocate {
            fsutil::remove_file_if_exists(&dir.join(TRUNCATE_INTENT))?;
            fsutil::sync_dir(dir)?;
        }
    }
    let file = Arc::new(file);
    Ok(Some(Segment {
        first,
        path,
        file,
        offsets: scan.offsets,
        end: scan.end,
    }))
}

pub(super) fn read_truncate_intent(dir: &Path) -> StorageResult<Option<u64>> {
    let path = dir.join(TRUNCATE_INTENT);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("reading", path.display(), e)),
    };
    if bytes.len() != 12 || crc32c::crc32c(&bytes[..8]).to_le_bytes() != bytes[8..] {
        return Err(StorageError::Corrupt(format!(
            "{}: {} bytes that are not a truncation intent (8-byte index + CRC32C)",
            path.display(),
            bytes.len()
        )));
    }
    let mut from = [0u8; 8];
    from.copy_from_slice(&bytes[..8]);
    Ok(Some(u64::from_le_bytes(from)))
}

pub(super) fn write_truncate_intent(dir: &Path, from: u64) -> StorageResult<()> {
    let mut bytes = from.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&from.to_le_bytes()).to_le_bytes());
    fsutil::write_atomic(&dir.join(TRUNCATE_INTENT), &bytes)
}

/// Removes the bytes `from..to` of a segment for good: overwrites them with
/// zeros and syncs (`preallocate`), or shortens the file to `from` and syncs.
pub(super) fn cut(file: &File, from: u64, to: u64, preallocate: bool) -> std::io::Result<()> {
    if !preallocate {
        return file.set_len(from).and_then(|()| file.sync_all());
    }
    fsutil::write_zeros(file, from, to, || false)?;
    file.sync_data()
}

/// Removes every entry with index >= `from`: whole segments from the newest
/// back, synced, then the segment holding `from` is cut at that record (its
/// records from there on zeroed or cut off, see [`cut`]), so that no stale
/// record can be read back after the end, even by a later open.
pub(super) fn truncate_segments(
    dir: &Path,
    wal: &mut Wal,
    from: u64,
    preallocate: bool,
) -> StorageResult<()> {
    let mut removed = false;
    while let Some(seg) = wal.segments.last() {
        if seg.first < from {
            break;
        }
        fsutil::remove_file_if_exists(&seg.path)?;
        wal.segments.pop();
        removed = true;
    }
    if removed {
        fsutil::sync_dir(dir)?;
    }
    if let Some(seg) = wal.segments.last_mut() {
        if seg.last() >= from {
            let at = seg.offset_of(from);
            cut(&seg.file, at, seg.end, preallocate)
                .map_err(|e| StorageError::io("truncating segment", seg.path.display(), e))?;
            seg.offsets.truncate((from - seg.first) as usize);
            seg.end = at;
        }
    }
    Ok(())
}

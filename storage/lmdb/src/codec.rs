//! Keys and values as stored: big-endian indexes, CRC32C-framed values.

use raftkit::wire::{decode_entry, encode_entry};
use raftkit::{Entry, StorageError, StorageResult};

/// The bytes of a CRC32C prefix.
const CRC_LEN: usize = 4;

/// The key of log index `index`: big-endian, so LMDB's byte order is log order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index a log key names.
pub(crate) fn key_index(key: &[u8]) -> StorageResult<u64> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StorageError::Corrupt(format!(
            "log key of {} bytes; every key is an 8-byte index",
            key.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// `payload` with its CRC32C in front.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRC_LEN + payload.len());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a framed value, if its CRC32C matches; `what` names the
/// value in the error.
pub(crate) fn unframe<'a>(value: &'a [u8], what: &dyn Fn() -> String) -> StorageResult<&'a [u8]> {
    if value.len() < CRC_LEN {
        return Err(StorageError::Corrupt(format!(
            "{}: {} bytes, shorter than its CRC32C",
            what(),
            value.len()
        )));
    }
    let (crc, payload) = value.split_at(CRC_LEN);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32c::crc32c(payload);
    if stored != actual {
        return Err(StorageError::Corrupt(format!(
            "{}: CRC32C {actual:08x} does not match the stored {stored:08x}",
            what()
        )));
    }
    Ok(payload)
}

/// The stored value of `entry`.
pub(crate) fn encode_log_value(entry: &Entry) -> Vec<u8> {
    frame(&encode_entry(entry))
}

/// The entry stored under `index`, checked against its key.
pub(crate) fn decode_log_value(index: u64, value: &[u8], file: &str) -> StorageResult<Entry> {
    let what = || format!("{file}: log entry {index}");
    let payload = unframe(value, &what)?;
    let entry = decode_entry(payload).map_err(|e| {
        StorageError::Corrupt(format!(
            "{}: passes its CRC32C but does not decode: {e}",
            what()
        ))
    })?;
    if entry.index.0 != index {
        return Err(StorageError::Corrupt(format!(
            "{}: stored under index {index} but holds index {}",
            what(),
            entry.index
        )));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkit::{LogIndex, Term};

    #[test]
    fn a_value_round_trips_and_any_flipped_byte_is_corrupt() {
        let entry = Entry::command(LogIndex(9), Term(2), vec![1u8, 2, 3, 4, 5].into());
        let value = encode_log_value(&entry);
        assert_eq!(decode_log_value(9, &value, "f").expect("decode"), entry);
        for at in 0..value.len() {
            let mut bad = value.clone();
            bad[at] ^= 0x10;
            assert!(
                matches!(
                    decode_log_value(9, &bad, "f"),
                    Err(StorageError::Corrupt(_))
                ),
                "flipping byte {at} should be detected"
            );
        }
    }

    #[test]
    fn a_value_under_the_wrong_key_is_corrupt() {
        let value = encode_log_value(&Entry::command(LogIndex(9), Term(2), "x".into()));
        assert!(matches!(
            decode_log_value(10, &value, "f"),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn keys_sort_in_index_order() {
        assert!(index_key(255) < index_key(256));
        assert!(index_key(1 << 40) < index_key(u64::MAX));
        assert_eq!(key_index(&index_key(12345)).expect("key"), 12345);
        assert!(key_index(&[1, 2, 3]).is_err());
    }
}

//! `LmdbConfig`: the map size and the sync policy.

use raftkit::{StorageError, StorageResult};

/// The smallest `map_size` accepted, and the unit it must be a multiple of.
pub const MIN_MAP_SIZE_BYTES: u64 = 1 << 20;

/// Settings of an [`LmdbStore`](crate::LmdbStore).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmdbConfig {
    /// The size of LMDB's memory map in bytes when the store opens: the most
    /// the data file may grow to before the store has to grow the map.
    ///
    /// Reserving it costs address space only, not memory or disk (the file
    /// grows as pages are used). When a write finds the map full, the store
    /// grows the map (to at least twice its size, and by at least twice the
    /// batch) and retries once; only if that fails does the write return
    /// `StorageError::Full`. A data file already larger than this is opened
    /// at its own size. Default 4 GiB; at least 1 MiB, in whole MiB.
    pub map_size: u64,
    /// When a committed transaction reaches the disk. Default
    /// [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
}

impl Default for LmdbConfig {
    fn default() -> Self {
        LmdbConfig {
            // Room for millions of small entries before the first resize, at
            // no cost but address space on 64-bit machines.
            map_size: 4 << 30,
            sync: SyncPolicy::Always,
        }
    }
}

impl LmdbConfig {
    /// Checks the settings, as `open` does.
    ///
    /// ```
    /// use raftkit_lmdb::LmdbConfig;
    /// assert!(LmdbConfig::default().validate().is_ok());
    /// assert!(LmdbConfig { map_size: 1000, ..Default::default() }.validate().is_err());
    /// ```
    ///
    /// # Errors
    /// `StorageError::Invalid` naming the field, its value and the bound.
    pub fn validate(&self) -> StorageResult<()> {
        if self.map_size < MIN_MAP_SIZE_BYTES || !self.map_size.is_multiple_of(MIN_MAP_SIZE_BYTES) {
            return Err(StorageError::Invalid(format!(
                "map_size is {} bytes; it must be at least {MIN_MAP_SIZE_BYTES} and a multiple of it",
                self.map_size
            )));
        }
        if usize::try_from(self.map_size).is_err() {
            return Err(StorageError::Invalid(format!(
                "map_size is {} bytes, more than this machine can address",
                self.map_size
            )));
        }
        Ok(())
    }
}

/// Whether a committed write transaction is flushed to disk before it returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every commit is durable on return (LMDB's default: `fdatasync` of the
    /// data pages, then of the meta page). What the trait contracts require.
    #[default]
    Always,
    /// Commits return without flushing (`MDB_NOSYNC`); the OS writes them back
    /// later. **Breaks "durable on return"**: a power loss or kernel crash can
    /// lose acknowledged writes, and Raft's safety with them. For benchmarks
    /// only; opening a store with it logs a warning.
    None,
}

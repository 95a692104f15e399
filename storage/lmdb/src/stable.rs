//! `LmdbStableStore`: the stable database.

use raftkit::{StableStore, StorageError, StorageResult};

use crate::codec::{frame, unframe};
use crate::store::LmdbStore;

/// The stable store of an [`LmdbStore`]: term, vote and small keyed values,
/// each value with a CRC32C. A `set` is one LMDB transaction, atomic and
/// durable on return under [`SyncPolicy::Always`](crate::SyncPolicy::Always).
/// Keys take at most 510 bytes (LMDB's key limit, less a prefix byte).
///
/// ```
/// use raftkit::{HardState, StableStore, Term};
/// let dir = tempfile::tempdir().unwrap();
/// let stable = raftkit_lmdb::LmdbStore::open(dir.path(), Default::default())?.stable();
/// stable.save_hard_state(&HardState { term: Term(3), vote: None })?;
/// assert_eq!(stable.load_hard_state()?.term, Term(3));
/// # Ok::<(), raftkit::StorageError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LmdbStableStore {
    pub(crate) store: LmdbStore,
}

impl LmdbStableStore {
    /// The store this stable store belongs to.
    pub fn store(&self) -> &LmdbStore {
        &self.store
    }
}

impl StableStore for LmdbStableStore {
    fn set(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        let stored = stable_key(key);
        let max = self.store.inner.env.max_key_size();
        if stored.len() > max {
            return Err(StorageError::Invalid(format!(
                "stable store key of {} bytes; LMDB takes at most {} here",
                key.len(),
                max - 1
            )));
        }
        let framed = frame(value);
        self.store.write(
            "setting a stable value",
            framed.len() + stored.len(),
            |inner, txn| {
                inner
                    .stable
                    .put(txn, &stored, &framed)
                    .map_err(|e| inner.err("setting a stable value", e))
            },
        )
    }

    fn get(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        let stored = stable_key(key);
        if stored.len() > self.store.inner.env.max_key_size() {
            // Never stored: `set` refuses such keys.
            return Ok(None);
        }
        let inner = &*self.store.inner;
        self.store.read(|txn| {
            let Some(value) = inner
                .stable
                .get(txn, &stored)
                .map_err(|e| inner.err("reading a stable value", e))?
            else {
                return Ok(None);
            };
            let what = || format!("{}: stable key {key:?}", inner.file);
            unframe(value, &what).map(|v| Some(v.to_vec()))
        })
    }
}

/// The LMDB key of stable-store key `key`: a prefix byte, so that the empty
/// key (which LMDB cannot store) is an ordinary one.
fn stable_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(b'k');
    out.extend_from_slice(key.as_bytes());
    out
}

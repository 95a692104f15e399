//! `MemStableStore`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use raftkit::{StableStore, StorageResult};

use crate::poisoned;

/// Keyed values held in memory. Clones share the same values.
///
/// ```
/// use raftkit::{HardState, StableStore, Term};
/// let stable = raftkit_memory::MemStableStore::new();
/// stable.save_hard_state(&HardState { term: Term(3), vote: None })?;
/// assert_eq!(stable.clone().load_hard_state()?.term, Term(3));
/// # Ok::<(), raftkit::StorageError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemStableStore {
    inner: Arc<RwLock<HashMap<String, Vec<u8>>>>,
}

const NAME: &str = "memory stable store";

impl MemStableStore {
    /// An empty store.
    pub fn new() -> MemStableStore {
        MemStableStore::default()
    }
}

impl StableStore for MemStableStore {
    fn is_in_memory(&self) -> bool {
        true
    }

    fn set(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        let mut map = self.inner.write().map_err(|_| poisoned(NAME))?;
        map.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn get(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        let map = self.inner.read().map_err(|_| poisoned(NAME))?;
        Ok(map.get(key).cloned())
    }
}

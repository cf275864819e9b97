//! A map of the most recent entries, in memory and bounded: the oldest are forgotten first.
//! What the shard keeps only to answer faster or to link spans, never what it must not lose.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

/// How many entries are kept unless a map says otherwise.
pub const KEPT: usize = 65_536;

/// Key → value for the latest `N` keys inserted.
pub struct Recent<K, V, const N: usize = KEPT> {
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    values: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K, V, const N: usize> Default for Recent<K, V, N> {
    fn default() -> Self {
        Recent { inner: Mutex::new(Inner { values: HashMap::new(), order: VecDeque::new() }) }
    }
}

impl<K: Hash + Eq + Clone, V: Clone, const N: usize> Recent<K, V, N> {
    /// Remembers `value` under `key` (replacing what was there, which does not count twice).
    pub fn insert(&self, key: K, value: V) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.values.insert(key.clone(), value).is_none() {
            inner.order.push_back(key);
        }
        while inner.order.len() > N {
            if let Some(old) = inner.order.pop_front() {
                inner.values.remove(&old);
            }
        }
    }

    /// The value under `key`, if still kept.
    pub fn get(&self, key: &K) -> Option<V> {
        self.inner.lock().ok()?.values.get(key).cloned()
    }

    /// The value under `key`, or the one `build` makes (outside the lock), remembered unless
    /// it is `None`.
    pub fn get_or_build<E>(
        &self,
        key: K,
        build: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E> {
        if let Some(kept) = self.get(&key) {
            return Ok(Some(kept));
        }
        let Some(built) = build()? else { return Ok(None) };
        self.insert(key, built.clone());
        Ok(Some(built))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_are_forgotten_first_and_the_rest_kept() {
        let recent = Recent::<(u32, u64), String>::default();
        for s in 0..(KEPT as u64 + 10) {
            recent.insert((7, s), format!("tp-{s}"));
        }
        assert_eq!(recent.get(&(7, 9)), None);
        assert_eq!(recent.get(&(7, 10)).as_deref(), Some("tp-10"));
        assert_eq!(
            recent.get(&(7, KEPT as u64 + 9)).as_deref(),
            Some(&*format!("tp-{}", KEPT + 9))
        );
        assert_eq!(recent.get(&(8, 10)), None);
        // Replacing a value does not make it count twice.
        recent.insert((7, 10), "again".into());
        assert_eq!(recent.get(&(7, 10)).as_deref(), Some("again"));
        assert_eq!(recent.inner.lock().unwrap().order.len(), KEPT);
    }

    /// A value is built once for its key while it is kept, a key not built yet (`None`) or
    /// whose build failed is built again, and the oldest of more than the kept keys is built
    /// again when asked.
    #[test]
    fn recent_blocks_are_built_once_while_kept() {
        const N: usize = 32;
        let recent: Recent<(u32, u64), u64, N> = Recent::default();
        let builds = std::cell::Cell::new(0);
        let get = |key: (u32, u64), value: Option<u64>| {
            recent
                .get_or_build(key, || {
                    builds.set(builds.get() + 1);
                    Ok::<_, ()>(value)
                })
                .unwrap()
        };
        assert_eq!(get((1, 7), None), None, "not final yet");
        assert_eq!(get((1, 7), Some(70)), Some(70));
        assert_eq!(get((1, 7), Some(99)), Some(70), "kept");
        assert_eq!(get((2, 7), Some(27)), Some(27), "another destination");
        assert_eq!(builds.get(), 3);
        assert_eq!(recent.get_or_build((3, 1), || Err("unreadable")), Err("unreadable"));
        assert_eq!(get((3, 1), Some(31)), Some(31), "a failed build is not kept");
        for height in 100..100 + N as u64 {
            get((1, height), Some(height));
        }
        let before = builds.get();
        assert_eq!(get((1, 7), Some(71)), Some(71), "the oldest was let go");
        assert_eq!(get((1, 100 + N as u64 - 1), Some(0)), Some(100 + N as u64 - 1));
        assert_eq!(builds.get(), before + 1);
    }
}

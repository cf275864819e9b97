//! A map of the most recent entries, in memory and bounded: the oldest are forgotten first.
//! What the shard keeps only to answer faster or to link spans, never what it must not lose.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

/// How many entries are kept.
const KEPT: usize = 65_536;

/// Key → value for the latest [`KEPT`] keys inserted.
pub struct Recent<K, V> {
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    values: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Recent { inner: Mutex::new(Inner { values: HashMap::new(), order: VecDeque::new() }) }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Recent<K, V> {
    /// Remembers `value` under `key` (replacing what was there, which does not count twice).
    pub fn insert(&self, key: K, value: V) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.values.insert(key.clone(), value).is_none() {
            inner.order.push_back(key);
        }
        while inner.order.len() > KEPT {
            if let Some(old) = inner.order.pop_front() {
                inner.values.remove(&old);
            }
        }
    }

    /// The value under `key`, if still kept.
    pub fn get(&self, key: &K) -> Option<V> {
        self.inner.lock().ok()?.values.get(key).cloned()
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
}

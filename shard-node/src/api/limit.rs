//! Per-caller rate limits (token buckets) and the table of submissions answered later
//! (`?wait=false`). Both are pure: time comes in as an argument.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// A token bucket per key: `burst` requests at once, refilled at `per_second`.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    /// Keys idle long enough to be full again are dropped once the table grows past this.
    keys_max: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

impl RateLimiter {
    /// `per_second` requests per second per key, bursts of up to `burst`. A rate of 0 turns the
    /// limit off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            keys_max: 10_000,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at monotonic time `now`; `Err(wait)` when the bucket is empty,
    /// with how long until a token is back.
    pub fn check(&self, key: &str, now: Duration) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        if buckets.len() >= self.keys_max && !buckets.contains_key(key) {
            let full_after = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, b| now.saturating_sub(b.at) < full_after);
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket { tokens: self.burst, at: now });
        let elapsed = now.saturating_sub(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }
}

/// What became of a submission accepted with `?wait=false`.
#[derive(Clone, Debug, PartialEq)]
pub enum Pending {
    /// Queued; not yet durable.
    Waiting,
    /// Done: the HTTP status and JSON body a waiting request would have got.
    Done(u16, serde_json::Value),
}

/// Submission id → (submitting service, state), and the ids in arrival order.
type PendingEntries = (HashMap<String, (String, Pending)>, VecDeque<String>);

/// Submissions answered later, by id, for the service that made them. Bounded: the oldest
/// entries are forgotten first (a forgotten id answers 404; the records can still be looked up
/// by id).
pub struct PendingTable {
    max: usize,
    inner: Mutex<PendingEntries>,
}

impl PendingTable {
    /// Remembers at most `max` submissions.
    pub fn new(max: usize) -> Self {
        PendingTable { max: max.max(1), inner: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    /// Adds a waiting submission of `service`.
    pub fn insert(&self, id: &str, service: &str) {
        let Ok(mut t) = self.inner.lock() else { return };
        while t.1.len() >= self.max {
            match t.1.pop_front() {
                Some(old) => {
                    t.0.remove(&old);
                }
                None => break,
            }
        }
        t.0.insert(id.to_string(), (service.to_string(), Pending::Waiting));
        t.1.push_back(id.to_string());
    }

    /// Records the outcome of `id`.
    pub fn finish(&self, id: &str, status: u16, body: serde_json::Value) {
        if let Ok(mut t) = self.inner.lock()
            && let Some(entry) = t.0.get_mut(id)
        {
            entry.1 = Pending::Done(status, body);
        }
    }

    /// The state of `id`, if `service` made it and it is still remembered.
    pub fn get(&self, id: &str, service: &str) -> Option<Pending> {
        let t = self.inner.lock().ok()?;
        t.0.get(id).filter(|(s, _)| s == service).map(|(_, p)| p.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let l = RateLimiter::new(10, 3);
        let t0 = Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(l.check("a", t0), Ok(()));
        }
        let wait = l.check("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        // Another key has its own bucket.
        assert_eq!(l.check("b", t0), Ok(()));
        // 100 ms later one token is back, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.check("a", t1), Ok(()));
        assert!(l.check("a", t1).is_err());
        // Off when the rate is zero.
        let off = RateLimiter::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(off.check("a", t0), Ok(()));
        }
    }

    #[test]
    fn idle_keys_are_dropped_when_the_table_is_full() {
        let mut l = RateLimiter::new(1000, 1);
        l.keys_max = 2;
        let t0 = Duration::from_secs(1);
        l.check("a", t0).unwrap();
        l.check("b", t0).unwrap();
        l.check("c", t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(l.buckets.lock().unwrap().len(), 1, "a and b were full again and dropped");
    }

    #[test]
    fn pending_entries_belong_to_their_service_and_the_oldest_go_first() {
        let t = PendingTable::new(2);
        t.insert("1", "tax");
        assert_eq!(t.get("1", "tax"), Some(Pending::Waiting));
        assert_eq!(t.get("1", "other"), None);
        t.finish("1", 200, serde_json::json!({"ok": true}));
        assert_eq!(t.get("1", "tax"), Some(Pending::Done(200, serde_json::json!({"ok": true}))));
        t.insert("2", "tax");
        t.insert("3", "tax");
        assert_eq!(t.get("1", "tax"), None, "forgotten");
        assert_eq!(t.get("3", "tax"), Some(Pending::Waiting));
    }
}

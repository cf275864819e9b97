//! The trace context of each outbound packet, so that its trace runs on through the bridges:
//! recorded when the submission that made the packet is sealed, served beside the packet on
//! the outbound page. Kept in memory only and bounded (the oldest are forgotten first): a
//! packet whose context was lost, or that outlived a restart, starts a trace of its own at the
//! bridge. Trace context is never part of a proof and never checked by anyone.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How many packets' contexts are kept.
const KEPT: usize = 65_536;

/// (destination city, sequence) → W3C `traceparent`.
#[derive(Default)]
pub struct PacketTraces {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    contexts: HashMap<(u32, u64), String>,
    order: VecDeque<(u32, u64)>,
}

impl PacketTraces {
    /// Remembers a packet's trace context.
    pub fn insert(&self, destination: u32, sequence: u64, traceparent: String) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.contexts.insert((destination, sequence), traceparent).is_none() {
            inner.order.push_back((destination, sequence));
        }
        while inner.order.len() > KEPT {
            if let Some(old) = inner.order.pop_front() {
                inner.contexts.remove(&old);
            }
        }
    }

    /// A packet's trace context, if still kept.
    pub fn get(&self, destination: u32, sequence: u64) -> Option<String> {
        self.inner.lock().ok()?.contexts.get(&(destination, sequence)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_contexts_are_forgotten_first_and_the_rest_kept() {
        let traces = PacketTraces::default();
        for s in 0..(KEPT as u64 + 10) {
            traces.insert(7, s, format!("tp-{s}"));
        }
        assert_eq!(traces.get(7, 9), None);
        assert_eq!(traces.get(7, 10).as_deref(), Some("tp-10"));
        assert_eq!(traces.get(7, KEPT as u64 + 9).as_deref(), Some(&*format!("tp-{}", KEPT + 9)));
        assert_eq!(traces.get(8, 10), None);
        // Replacing a context does not make it count twice.
        traces.insert(7, 10, "again".into());
        assert_eq!(traces.get(7, 10).as_deref(), Some("again"));
        assert_eq!(traces.inner.lock().unwrap().order.len(), KEPT);
    }
}

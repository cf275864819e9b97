//! The height of the block that received each recent packet, remembered when the shard
//! answers its delivery. A relay asks for the acknowledgements of the same packets round after
//! round until their block is final; this answers whether a receipt is final without a store
//! lookup. Kept in memory only and bounded (the oldest are forgotten first): a packet not
//! remembered (received before a restart, or long ago) is looked up in the store. Never
//! wrong: a receipt is written once, by the block at that height, and never changed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use urbis_core::packet::PacketId;

/// How many packets' heights are kept.
const KEPT: usize = 65_536;

/// Packet → height of the block that wrote its receipt.
#[derive(Default)]
pub struct ReceiptHeights {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    heights: HashMap<PacketId, u64>,
    order: VecDeque<PacketId>,
}

impl ReceiptHeights {
    /// Remembers that the block at `height` wrote the receipt of `id`.
    pub fn insert(&self, id: PacketId, height: u64) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.heights.insert(id, height).is_none() {
            inner.order.push_back(id);
        }
        while inner.order.len() > KEPT {
            if let Some(old) = inner.order.pop_front() {
                inner.heights.remove(&old);
            }
        }
    }

    /// The height that wrote the receipt of `id`, if still kept.
    pub fn get(&self, id: &PacketId) -> Option<u64> {
        self.inner.lock().ok()?.heights.get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urbis_core::record::CityId;

    #[test]
    fn the_oldest_heights_are_forgotten_first_and_the_rest_kept() {
        let id = |sequence: u64| PacketId { source: CityId(0), destination: CityId(1), sequence };
        let heights = ReceiptHeights::default();
        for s in 0..(KEPT as u64 + 10) {
            heights.insert(id(s), s / 100);
        }
        assert_eq!(heights.get(&id(9)), None);
        assert_eq!(heights.get(&id(10)), Some(0));
        assert_eq!(heights.get(&id(KEPT as u64 + 9)), Some((KEPT as u64 + 9) / 100));
        assert_eq!(heights.get(&PacketId { source: CityId(2), ..id(10) }), None);
        // Remembering a packet again does not make it count twice.
        heights.insert(id(10), 0);
        assert_eq!(heights.inner.lock().unwrap().order.len(), KEPT);
    }
}

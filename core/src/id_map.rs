//! Maps keyed by the ids the host hands out: context ids and call tokens. Envoy numbers
//! both in sequence, and no client chooses them, so they need no keyed, collision-proof
//! hash (std's SipHash costs more than the rest of a map lookup): one multiplication
//! spreads them over the table.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from a host id to `V`.
pub type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Hashes a `u32` id by multiplying it with an odd constant (2^64 / φ): a bijection,
/// so distinct ids never collide in the hash, with the high bits, which the table reads
/// first, depending on every bit of the id.
#[derive(Default)]
pub struct IdHasher(u64);

const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u32 ids are hashed here; any other key still hashes, byte by byte.
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(SPREAD);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(SPREAD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_and_never_collide() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: std::collections::HashSet<u64> =
            (0..10_000u32).map(|id| build.hash_one(id)).collect();
        assert_eq!(hashes.len(), 10_000);
        // The top 7 bits (hashbrown's control byte) take many values over a short run.
        let tops: std::collections::HashSet<u64> =
            (1..200u32).map(|id| build.hash_one(id) >> 57).collect();
        assert!(tops.len() > 64, "{}", tops.len());
    }

    #[test]
    fn a_map_keeps_what_it_is_given() {
        let mut map: IdMap<&str> = IdMap::default();
        for id in 0..1000 {
            map.insert(id, "v");
        }
        for id in (0..1000).step_by(2) {
            map.remove(&id);
        }
        assert_eq!(map.len(), 500);
        assert!(map.contains_key(&999) && !map.contains_key(&998));
    }
}

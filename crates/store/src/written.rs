//! The keys a store was given since it was created empty, as Bloom filters: for a state
//! whose every seen id, payment and account went through this process's batches (`loyalty replay`
//! into a new directory), a lookup of an id never written is answered from memory instead
//! of probing each of RocksDB's table files.
//!
//! A filter answers "maybe" for every key added to it and, for a few keys in a thousand of
//! the others, too; "maybe" sends the lookup on to RocksDB, so the answers are RocksDB's.
//! The filters are blocked (each key's bits lie in one 64-byte block: one cache line a
//! probe) and grow as a chain: when one is full, the next, twice as large, takes the new
//! keys, and a lookup probes each (about 15 for a billion keys). Memory: 2 bytes a key in a
//! full chain, 4 just after it grew.

/// Bits a key in a filter: a few false "maybe"s in a thousand with [`PROBES`] bits set a
/// key, so that a chain of filters, whose rates add up, stays under one in a hundred.
const BITS_A_KEY: usize = 16;
/// Bits set (and tested) a key, in its block.
const PROBES: u32 = 7;
/// Keys the first filter of a chain holds.
const FIRST: usize = 1 << 16;

/// One filter: blocks of 512 bits.
struct Filter {
    blocks: Vec<[u64; 8]>,
    /// Keys it holds, and may hold.
    keys: usize,
    room: usize,
}

impl Filter {
    fn new(room: usize) -> Filter {
        let blocks = (room * BITS_A_KEY).div_ceil(512).max(1);
        Filter {
            blocks: vec![[0; 8]; blocks],
            keys: 0,
            room,
        }
    }

    /// The block of a hash, and its bits there (double hashing on the hash's high half).
    fn bits(&self, h: u64) -> (usize, impl Iterator<Item = usize>) {
        // The low half of the hash, scaled to the blocks (no power of two needed).
        let block = ((u64::from(h as u32) * self.blocks.len() as u64) >> 32) as usize;
        let (mut at, step) = ((h >> 32) as u32, ((h >> 47) as u32) | 1);
        let bits = (0..PROBES).map(move |_| {
            at = at.wrapping_add(step);
            (at & 511) as usize
        });
        (block, bits)
    }

    fn add(&mut self, h: u64) {
        let (block, bits) = self.bits(h);
        let b = &mut self.blocks[block];
        for bit in bits {
            b[bit / 64] |= 1 << (bit % 64);
        }
        self.keys += 1;
    }

    fn may_hold(&self, h: u64) -> bool {
        let (block, mut bits) = self.bits(h);
        let b = &self.blocks[block];
        bits.all(|bit| b[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

/// A key's 64-bit hash: its bytes folded eight at a time (FxHash's step), then every bit
/// mixed (splitmix64's finalizer), since a filter takes its block and its bits from
/// different bits of the hash. Not keyed: an id chosen to collide costs only a lookup in
/// RocksDB.
fn hash(prefix: &[u8], id: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut h = 0;
    for part in [prefix, id.as_bytes()] {
        let mut words = part.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = step(h, u64::from_le_bytes(b));
        }
        let mut last = [0u8; 8];
        last[..words.remainder().len()].copy_from_slice(words.remainder());
        h = step(h, u64::from_le_bytes(last) ^ ((part.len() as u64) << 56));
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The keys written, by prefix and id.
pub(crate) struct Written {
    chain: Vec<Filter>,
}

impl Written {
    /// No key written yet.
    pub(crate) fn new() -> Written {
        Written {
            chain: vec![Filter::new(FIRST)],
        }
    }

    fn hash(&self, prefix: &[u8], id: &str) -> u64 {
        hash(prefix, id)
    }

    /// Notes that `prefix` + `id` is written.
    pub(crate) fn add(&mut self, prefix: &[u8], id: &str) {
        let h = self.hash(prefix, id);
        let last = self.chain.last().map_or(0, |f| f.room);
        if self.chain.last().is_none_or(|f| f.keys >= f.room) {
            self.chain.push(Filter::new((last * 2).max(FIRST)));
        }
        if let Some(f) = self.chain.last_mut() {
            f.add(h);
        }
    }

    /// False when `prefix` + `id` was never written; true when it was, and for about one
    /// in a hundred of the others.
    pub(crate) fn may_hold(&self, prefix: &[u8], id: &str) -> bool {
        let h = self.hash(prefix, id);
        self.chain.iter().any(|f| f.may_hold(h))
    }

    /// Keys written.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.chain.iter().map(|f| f.keys).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key added is held, through several growths of the chain; of as many keys
    /// never added (other ids, and the same ids under the other prefix), fewer than one in
    /// a hundred are said to maybe be held.
    #[test]
    fn holds_every_key_written_and_few_others() {
        let mut w = Written::new();
        let n = FIRST * 5;
        for i in 0..n {
            w.add(b"s/", &format!("evt_{i}"));
        }
        assert_eq!(w.len(), n);
        assert!(w.chain.len() >= 3, "{} filters", w.chain.len());
        for i in 0..n {
            assert!(w.may_hold(b"s/", &format!("evt_{i}")), "evt_{i}");
        }
        let mut false_maybes = 0;
        for i in 0..n {
            false_maybes += usize::from(w.may_hold(b"s/", &format!("evt_{}", n + i)));
            false_maybes += usize::from(w.may_hold(b"p/", &format!("evt_{i}")));
        }
        assert!(false_maybes * 100 < 2 * n, "{false_maybes} of {}", 2 * n);
    }

    /// Keys that differ only in where the prefix ends, or by trailing zero bytes, hash
    /// apart.
    #[test]
    fn the_hash_tells_apart_keys_of_the_same_bytes() {
        assert_ne!(hash(b"s/", "ab"), hash(b"s/a", "b"));
        assert_ne!(hash(b"s/", "a"), hash(b"s/", "a\0"));
        assert_ne!(hash(b"s/", "evt_1"), hash(b"p/", "evt_1"));
    }

    /// An empty filter holds nothing.
    #[test]
    fn an_empty_filter_holds_nothing() {
        let w = Written::new();
        assert!((0..10_000).all(|i| !w.may_hold(b"p/", &i.to_string())));
    }
}

//! A small ordered map kept as a sorted vector.
//!
//! Every account has a few small maps (rule usage, its awards by time, stamps). A
//! `BTreeMap` allocates a whole node for its first entry (11 slots, up to 800 bytes here)
//! and fills nodes about half when entries come in order; with 200,000 accounts that was
//! a third of a fold's memory. A sorted vector holds what it holds, iterates in the same
//! order, and is stored as the same JSON object.
//!
//! Owns: a sorted-vector map. Must not: know what it holds.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ordered map as a sorted vector of pairs, one per key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> VecMap<K, V> {
        VecMap(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// An empty map.
    pub fn new() -> VecMap<K, V> {
        VecMap(Vec::new())
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        // The last key first: most maps grow at the end (times), and a hit there saves
        // the search.
        let n = self.0.len();
        match self.0.last().map(|(k, _)| k.borrow().cmp(key)) {
            None | Some(std::cmp::Ordering::Less) => Err(n),
            Some(std::cmp::Ordering::Equal) => Ok(n - 1),
            Some(std::cmp::Ordering::Greater) => {
                self.0[..n - 1].binary_search_by(|(k, _)| k.borrow().cmp(key))
            }
        }
    }

    /// The value of `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &mut self.0[i].1)
    }

    /// The value of `key`, inserted with `make` (given the key) first if missing.
    pub fn get_or_insert_with<Q: Ord + ?Sized>(
        &mut self,
        key: &Q,
        make: impl FnOnce(&Q) -> (K, V),
    ) -> &mut V
    where
        K: Borrow<Q>,
    {
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, make(key));
                i
            }
        };
        &mut self.0[i].1
    }

    /// Sets `key` to `value`, returning the value it had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The entries with keys in `[from, to)`, in key order.
    pub fn range(&self, from: &K, to: &K) -> impl Iterator<Item = (&K, &V)> {
        let a = self.0.partition_point(|(k, _)| k < from);
        let b = self.0.partition_point(|(k, _)| k < to).max(a);
        self.0[a..b].iter().map(|(k, v)| (k, v))
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> VecMap<K, V> {
        let mut m = VecMap::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m.0.shrink_to_fit();
        m
    }
}

impl<K: Serialize, V: Serialize> Serialize for VecMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for VecMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<VecMap<K, V>, D::Error> {
        struct V2<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for V2<K, V> {
            type Value = VecMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<VecMap<K, V>, A::Error> {
                let mut m = VecMap::new();
                while let Some((k, v)) = a.next_entry()? {
                    m.insert(k, v);
                }
                m.0.shrink_to_fit();
                Ok(m)
            }
        }
        d.deserialize_map(V2(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Behaves as a `BTreeMap` and is stored as one.
    #[test]
    fn behaves_and_serialises_as_an_ordered_map() {
        let mut x: u64 = 3;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((x >> 33) % n) as i64
        };
        let mut v: VecMap<i64, i64> = VecMap::new();
        let mut b: BTreeMap<i64, i64> = BTreeMap::new();
        for _ in 0..1000 {
            let (k, val) = (next(100) - 50, next(1000));
            assert_eq!(v.insert(k, val), b.insert(k, val));
            *v.get_or_insert_with(&(k + 1), |k| (*k, 0)) += 1;
            *b.entry(k + 1).or_insert(0) += 1;
            let (lo, hi) = (next(120) - 60, next(120) - 60);
            let got: Vec<_> = v.range(&lo, &hi).map(|(k, v)| (*k, *v)).collect();
            let want: Vec<_> = if lo < hi {
                b.range(lo..hi).map(|(k, v)| (*k, *v)).collect()
            } else {
                vec![]
            };
            assert_eq!(got, want);
            assert_eq!(v.get(&lo), b.get(&lo));
            assert_eq!(v.contains_key(&hi), b.contains_key(&hi));
        }
        assert_eq!(v.len(), b.len());
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, serde_json::to_string(&b).unwrap());
        assert_eq!(serde_json::from_str::<VecMap<i64, i64>>(&json).unwrap(), v);
        let s: VecMap<String, u32> = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"a":1,"b":2}"#);
    }
}

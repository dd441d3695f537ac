//! A growable bitset over message sequence numbers: which messages a sender had
//! confirmed, and which a receiver has seen.

/// A set of small non-negative integers, one bit each, growing as needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bits {
    words: Vec<u64>,
    len: u64,
}

impl Bits {
    /// An empty set.
    pub fn new() -> Bits {
        Bits::default()
    }

    /// Adds `n`; returns `false` when it was in the set already.
    pub fn insert(&mut self, n: u64) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        let fresh = self.words[word] & mask == 0;
        self.words[word] |= mask;
        if fresh {
            self.len += 1;
        }
        fresh
    }

    /// Whether `n` is in the set.
    pub fn contains(&self, n: u64) -> bool {
        let word = (n / 64) as usize;
        self.words
            .get(word)
            .is_some_and(|w| w & (1u64 << (n % 64)) != 0)
    }

    /// How many numbers are in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds every number of `other`.
    pub fn union_with(&mut self, other: &Bits) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
        self.len = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
    }

    /// How many numbers of `self` are not in `other`.
    pub fn count_missing_from(&self, other: &Bits) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let o = other.words.get(i).copied().unwrap_or(0);
                u64::from((w & !o).count_ones())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_counts_and_compares() {
        let mut a = Bits::new();
        assert!(a.insert(3));
        assert!(!a.insert(3));
        assert!(a.insert(200));
        assert_eq!(a.len(), 2);
        assert!(a.contains(200) && !a.contains(199) && !a.contains(100_000));
        let mut b = Bits::new();
        b.insert(3);
        assert_eq!(a.count_missing_from(&b), 1);
        assert_eq!(b.count_missing_from(&a), 0);
    }
}

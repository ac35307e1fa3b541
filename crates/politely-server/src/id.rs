//! Peer ids: ULIDs (48-bit millisecond time, 80 random bits, Crockford base32), made monotonic
//! so that ids sort in the order the server gave them out, even within one millisecond or if the
//! clock steps back. Sorting ids is how roles are assigned (the lower id is polite), so "first to
//! join is polite" holds exactly, and ids are never reused.

use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Hands out ids; one per server.
pub(crate) struct IdGenerator {
    last: u128,
}

impl IdGenerator {
    pub(crate) fn new() -> Self {
        IdGenerator { last: 0 }
    }

    /// The next id: greater than every id this generator gave before.
    pub(crate) fn next(&mut self) -> String {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            & ((1 << 48) - 1);
        let mut random = [0u8; 16];
        fill_random(&mut random[6..]);
        let candidate = (u128::from(millis) << 80) | u128::from_be_bytes(random);
        // Same millisecond (or a clock that stepped back): count up from the last id instead.
        let value = if candidate > self.last {
            candidate
        } else {
            self.last + 1
        };
        self.last = value;
        encode(value)
    }
}

/// The 26 characters of a 128-bit id.
pub(crate) fn encode(value: u128) -> String {
    (0..26)
        .rev()
        .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// Whether `id` could be one this server gives: 26 characters of its alphabet.
pub(crate) fn is_valid(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|b| ALPHABET.contains(&b))
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn fill_random(buf: &mut [u8]) {
    // The OS random source failing is not recoverable; ids and resume secrets depend on it.
    getrandom::fill(buf).expect("the operating system's random source works");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_26_characters_and_strictly_increasing() {
        let mut ids = IdGenerator::new();
        let mut last = String::new();
        for _ in 0..10_000 {
            let id = ids.next();
            assert_eq!(id.len(), 26);
            assert!(id > last, "{id} after {last}");
            last = id;
        }
    }

    #[test]
    fn a_clock_that_steps_back_still_gives_larger_ids() {
        let mut ids = IdGenerator::new();
        ids.last = u128::MAX >> 2;
        let before = encode(ids.last);
        assert!(ids.next() > before);
    }
}

//! Shared by the fuzz targets: a deterministic chunking of the input.

/// A small deterministic generator (xorshift), seeded from the input so that a raw transcript
/// used as a seed is a meaningful input as it is.
pub struct Rng(u64);

impl Rng {
    pub fn new(data: &[u8], salt: u64) -> Rng {
        let mut seed = 0x9E37_79B9_7F4A_7C15 ^ salt ^ data.len() as u64;
        for (i, &b) in data.iter().enumerate().step_by(7) {
            seed = seed.rotate_left(5) ^ u64::from(b) ^ i as u64;
        }
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `1..=max`.
    pub fn size(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }
}

/// Splits `data` into pieces of random sizes up to `max`.
pub fn chunks<'a>(data: &'a [u8], rng: &mut Rng, max: usize) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.size(max).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

//! CPython's `random.Random`, bit for bit: MT19937 seeded with
//! `init_by_array`, `random()`, `getrandbits`, `_randbelow` and the 3.11
//! Box–Muller `gauss` with its cached second value — so the generator's rows
//! are the reference script's.

pub(super) const MT_N: usize = 624;
pub(super) const MT_M: usize = 397;
pub(super) const MATRIX_A: u32 = 0x9908_b0df;
pub(super) const UPPER_MASK: u32 = 0x8000_0000;
pub(super) const LOWER_MASK: u32 = 0x7fff_ffff;
pub(super) const TWOPI: f64 = 2.0 * std::f64::consts::PI;

/// A bit-exact re-implementation of CPython's `random.Random` for the
/// methods the generator uses.
pub(super) struct PyRandom {
    pub(super) mt: [u32; MT_N],
    pub(super) index: usize,
    pub(super) gauss_next: Option<f64>,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed: the seed's
    /// 32-bit little-endian words feed `init_by_array` (seed 0 gives `[0]`).
    pub(super) fn new(seed: u64) -> Self {
        let lo = seed as u32;
        let hi = (seed >> 32) as u32;
        let mut r = PyRandom {
            mt: [0; MT_N],
            index: MT_N,
            gauss_next: None,
        };
        if hi == 0 {
            r.init_by_array(&[lo]);
        } else {
            r.init_by_array(&[lo, hi]);
        }
        r
    }

    pub(super) fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..MT_N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = MT_N;
    }

    pub(super) fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let mt = &mut self.mt;
        let mut i = 1usize;
        let mut j = 0usize;
        let mut k = MT_N.max(key.len());
        while k > 0 {
            let prev = mt[i - 1];
            mt[i] = (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= MT_N {
                mt[0] = mt[MT_N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
            k -= 1;
        }
        k = MT_N - 1;
        while k > 0 {
            let prev = mt[i - 1];
            mt[i] =
                (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= MT_N {
                mt[0] = mt[MT_N - 1];
                i = 1;
            }
            k -= 1;
        }
        mt[0] = 0x8000_0000;
    }

    #[inline(never)]
    pub(super) fn twist(&mut self) {
        let mt = &mut self.mt;
        #[inline(always)]
        fn mag(y: u32) -> u32 {
            if y & 1 != 0 {
                MATRIX_A
            } else {
                0
            }
        }
        for kk in 0..MT_N - MT_M {
            let y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
            mt[kk] = mt[kk + MT_M] ^ (y >> 1) ^ mag(y);
        }
        for kk in MT_N - MT_M..MT_N - 1 {
            let y = (mt[kk] & UPPER_MASK) | (mt[kk + 1] & LOWER_MASK);
            mt[kk] = mt[kk + MT_M - MT_N] ^ (y >> 1) ^ mag(y);
        }
        let y = (mt[MT_N - 1] & UPPER_MASK) | (mt[0] & LOWER_MASK);
        mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ mag(y);
        self.index = 0;
    }

    /// `genrand_uint32`: the next tempered 32-bit output.
    #[inline]
    pub(super) fn next_u32(&mut self) -> u32 {
        if self.index >= MT_N {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `random()`: a 53-bit float in [0, 1).
    #[inline]
    pub(super) fn random(&mut self) -> f64 {
        let a = self.next_u32() >> 5;
        let b = self.next_u32() >> 6;
        (a as f64 * 67_108_864.0 + b as f64) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `getrandbits(k)` for `k <= 64` (words are consumed low word first).
    #[inline]
    pub(super) fn getrandbits(&mut self, k: u32) -> u64 {
        debug_assert!(k <= 64);
        if k == 0 {
            0
        } else if k <= 32 {
            (self.next_u32() >> (32 - k)) as u64
        } else {
            let lo = self.next_u32() as u64;
            let hi = (self.next_u32() >> (64 - k)) as u64;
            lo | (hi << 32)
        }
    }

    /// `_randbelow(n)` (= `randrange(n)`) for `n > 0`: rejection sampling with
    /// `k = n.bit_length()` bits.
    #[inline]
    pub(super) fn randbelow(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let k = 64 - n.leading_zeros();
        let mut r = self.getrandbits(k);
        while r >= n {
            r = self.getrandbits(k);
        }
        r
    }

    /// `choice(seq)`.
    #[cfg(test)]
    pub(super) fn choice<T: Copy>(&mut self, seq: &[T]) -> T {
        seq[self.randbelow(seq.len() as u64) as usize]
    }

    /// `gauss(mu, sigma)` exactly as CPython 3.11 (Box–Muller, caching the
    /// second value in `gauss_next`).
    #[inline]
    pub(super) fn gauss(&mut self, mu: f64, sigma: f64) -> f64 {
        let z = match self.gauss_next.take() {
            Some(z) => z,
            None => {
                let x2pi = self.random() * TWOPI;
                let g2rad = (-2.0 * (1.0 - self.random()).ln()).sqrt();
                self.gauss_next = Some(x2pi.sin() * g2rad);
                x2pi.cos() * g2rad
            }
        };
        mu + z * sigma
    }
}

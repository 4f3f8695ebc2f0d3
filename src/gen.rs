//! Synthetic card-transaction stream generator (`millrace gen`).
//!
//! Every record is one card transaction with a fraud label:
//! `event_time,account,category,amount,f0..f5,label`. The stream carries the
//! faults a real upstream feed has, so cleaning, drift and anomaly handling
//! can be checked against known ground truth ([`Truth`]):
//!
//! * missing values (empty fields) in the amount and feature columns,
//! * malformed rows (wrong field count, non-numeric text),
//! * invalid values (negative amounts, label not 0/1),
//! * exact duplicate rows,
//! * bounded out-of-order event times (up to `max_lateness_ms`),
//! * concept drift: the true fraud model changes at `drift_at` (fraction of rows),
//! * a volume/amount spike and a silent gap (no records) in event time.
//!
//! The output reproduces the Python reference generator
//! `shared/data/gen_transactions.py` byte for byte for the same arguments (same
//! rows, same CSV / JSON-lines text, same ground truth). To get there this
//! module re-implements CPython's `random.Random` (MT19937 seeded with
//! `init_by_array`, `random()`, `getrandbits`, `_randbelow`, and the 3.11
//! Box–Muller `gauss` with its cached second value), Python's `f"{v:.Nf}"`
//! formatting, Python's `repr(float)` and the exact text `json.dumps` writes.
//! Transcendental functions (`exp`, `ln`, `sin`, `cos`) go through the
//! platform libm just as CPython's `math` module does, so identical output is
//! expected on the same platform C library. The reference was checked against
//! CPython 3.11 (3.12 changed `sum()` of floats to compensated summation,
//! which can change rare labels).

use std::fmt::Write as _;
use std::io::{self, Write};

/// Number of numeric feature columns (`f0`..`f5`).
const FEATURES: usize = 6;

/// Merchant categories, in the reference generator's order.
pub const CATEGORIES: [&str; 10] = [
    "grocery",
    "fuel",
    "travel",
    "online",
    "dining",
    "electronics",
    "pharmacy",
    "utilities",
    "fashion",
    "gaming",
];

/// Column names, in output order.
const NAMES: [&str; 11] = [
    "event_time",
    "account",
    "category",
    "amount",
    "f0",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "label",
];

/// CSV header line (with its newline).
const CSV_HEADER: &[u8] = b"event_time,account,category,amount,f0,f1,f2,f3,f4,f5,label\n";

/// Output is flushed to the writer in blocks of about this size.
const FLUSH_BYTES: usize = 1 << 20;

/// Output encoding of the generated stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line (no header).
    Jsonl,
}

/// Parameters of the generated stream; the defaults equal those of
/// `gen_transactions.py`.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// Number of generated records (duplicates come on top of this).
    pub rows: u64,
    /// Seed of the CPython-compatible Mersenne Twister.
    pub seed: u64,
    /// Output encoding.
    pub format: GenFormat,
    /// Number of distinct accounts (must be at least 1).
    pub accounts: u32,
    /// Event time of the stream start, in Unix milliseconds.
    pub start_ms: i64,
    /// Records per second of event time.
    pub rate: f64,
    /// Fraction of the rows after which the fraud model drifts.
    pub drift_at: f64,
    /// Probability that a row has one empty amount/feature field.
    pub missing: f64,
    /// Probability that a row is malformed.
    pub malformed: f64,
    /// Probability that a row carries an invalid value.
    pub invalid: f64,
    /// Probability that a row is followed by an exact duplicate.
    pub duplicates: f64,
    /// Upper bound (exclusive) of event-time lateness in milliseconds. A value of
    /// 0 disables lateness (the Python script would fail with it instead).
    pub max_lateness_ms: u64,
    /// A clean stream: no missing, malformed, invalid or duplicate rows, no
    /// spike and no gap (overrides the four fault rates with 0).
    pub no_faults: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            rows: 100_000,
            seed: 7,
            format: GenFormat::Csv,
            accounts: 10_000,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            rate: 1000.0,
            drift_at: 0.6,
            missing: 0.01,
            malformed: 0.002,
            invalid: 0.002,
            duplicates: 0.001,
            max_lateness_ms: 2000,
            no_faults: false,
        }
    }
}

/// Ground truth of one generated stream: counts of each injected fault, the
/// drift position and the spike and gap windows in event time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Truth {
    /// Lines written (records plus duplicates, header excluded).
    pub rows_emitted: u64,
    /// Rows with one empty amount/feature field.
    pub missing_rows: u64,
    /// Malformed rows (cut short, `n/a` amount, or `yesterday` event time).
    pub malformed: u64,
    /// Rows with an invalid value (negative amount or label 7).
    pub invalid: u64,
    /// Exact duplicate lines.
    pub duplicates: u64,
    /// Record index (0-based, duplicates not counted) where the fraud model
    /// changes (clamped at 0 for a negative `drift_at`).
    pub drift_at_row: u64,
    /// Event time (ms, before lateness) of the drift row, if reached.
    pub drift_at_ms: Option<i64>,
    /// First and last event time (ms) of the volume/amount spike.
    pub spike_ms: [Option<i64>; 2],
    /// Start and end event time (ms) of the silent gap.
    pub gap_ms: [Option<i64>; 2],
    /// Records whose true label is 1 (before any invalid-label fault).
    pub labels_positive: u64,
}

impl Truth {
    /// The ground truth as JSON, byte-identical to the reference script's
    /// `json.dump(truth, f, indent=2)` (no trailing newline).
    pub fn to_json(&self) -> String {
        fn opt(v: Option<i64>) -> String {
            match v {
                Some(x) => x.to_string(),
                None => "null".to_string(),
            }
        }
        let mut s = String::with_capacity(400);
        s.push_str("{\n");
        let _ = writeln!(s, "  \"rows_emitted\": {},", self.rows_emitted);
        let _ = writeln!(s, "  \"missing_rows\": {},", self.missing_rows);
        let _ = writeln!(s, "  \"malformed\": {},", self.malformed);
        let _ = writeln!(s, "  \"invalid\": {},", self.invalid);
        let _ = writeln!(s, "  \"duplicates\": {},", self.duplicates);
        let _ = writeln!(s, "  \"drift_at_row\": {},", self.drift_at_row);
        let _ = writeln!(s, "  \"drift_at_ms\": {},", opt(self.drift_at_ms));
        let _ = writeln!(
            s,
            "  \"spike_ms\": [\n    {},\n    {}\n  ],",
            opt(self.spike_ms[0]),
            opt(self.spike_ms[1])
        );
        let _ = writeln!(
            s,
            "  \"gap_ms\": [\n    {},\n    {}\n  ],",
            opt(self.gap_ms[0]),
            opt(self.gap_ms[1])
        );
        let _ = write!(s, "  \"labels_positive\": {}\n}}", self.labels_positive);
        s
    }
}

// ---------------------------------------------------------------------------
// CPython-compatible random numbers
// ---------------------------------------------------------------------------

const MT_N: usize = 624;
const MT_M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;
const TWOPI: f64 = 2.0 * std::f64::consts::PI;

/// A bit-exact re-implementation of CPython's `random.Random` for the
/// methods the generator uses.
struct PyRandom {
    mt: [u32; MT_N],
    index: usize,
    gauss_next: Option<f64>,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed: the seed's
    /// 32-bit little-endian words feed `init_by_array` (seed 0 gives `[0]`).
    fn new(seed: u64) -> Self {
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

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..MT_N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = MT_N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
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
    fn twist(&mut self) {
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
    fn next_u32(&mut self) -> u32 {
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
    fn random(&mut self) -> f64 {
        let a = self.next_u32() >> 5;
        let b = self.next_u32() >> 6;
        (a as f64 * 67_108_864.0 + b as f64) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `getrandbits(k)` for `k <= 64` (words are consumed low word first).
    #[inline]
    fn getrandbits(&mut self, k: u32) -> u64 {
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
    fn randbelow(&mut self, n: u64) -> u64 {
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
    fn choice<T: Copy>(&mut self, seq: &[T]) -> T {
        seq[self.randbelow(seq.len() as u64) as usize]
    }

    /// `gauss(mu, sigma)` exactly as CPython 3.11 (Box–Muller, caching the
    /// second value in `gauss_next`).
    #[inline]
    fn gauss(&mut self, mu: f64, sigma: f64) -> f64 {
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

// ---------------------------------------------------------------------------
// Python-compatible number formatting
// ---------------------------------------------------------------------------

/// A byte sink for the formatting helpers: a growable `Vec<u8>` or the
/// generator's pre-sized output [`Block`].
trait Sink {
    /// Appends one byte.
    fn put(&mut self, c: u8);
    /// Appends a byte slice.
    fn put_slice(&mut self, s: &[u8]);
    /// Appends the decimal text of `v` (Python `str(int)`).
    #[inline]
    fn put_u64(&mut self, v: u64) {
        let mut tmp = [0u8; 20];
        let n = ndigits(v);
        write_digits(&mut tmp[..n], v);
        self.put_slice(&tmp[..n]);
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, c: u8) {
        self.push(c);
    }
    #[inline]
    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s);
    }
}

/// The generator's output block: a fixed-size buffer written by index, with
/// enough slack past the flush threshold for any single line (and its
/// duplicate), so rows are formatted without growth checks or per-row
/// allocation.
struct Block {
    buf: Vec<u8>,
    pos: usize,
}

/// Room kept free beyond [`FLUSH_BYTES`]; a line is at most ~1.5 KB.
const BLOCK_SLACK: usize = 64 * 1024;

impl Block {
    fn new() -> Self {
        Block {
            buf: vec![0; FLUSH_BYTES + BLOCK_SLACK],
            pos: 0,
        }
    }
}

impl Sink for Block {
    #[inline]
    fn put(&mut self, c: u8) {
        self.buf[self.pos] = c;
        self.pos += 1;
    }
    #[inline]
    fn put_slice(&mut self, s: &[u8]) {
        self.buf[self.pos..self.pos + s.len()].copy_from_slice(s);
        self.pos += s.len();
    }
    #[inline]
    fn put_u64(&mut self, v: u64) {
        let n = ndigits(v);
        write_digits(&mut self.buf[self.pos..self.pos + n], v);
        self.pos += n;
    }
}

/// Number of decimal digits of `v` (1 for 0).
#[inline]
fn ndigits(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Writes the decimal digits of `v` right-aligned into `dst` (whose length is
/// the digit count).
#[inline]
fn write_digits(dst: &mut [u8], mut v: u64) {
    let mut i = dst.len();
    while i >= 2 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        dst[i - 2..i].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
        i -= 2;
    }
    if i == 1 {
        dst[0] = b'0' + (v % 10) as u8;
    }
}

/// "00".."99" (two ASCII digits per entry).
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `v` zero-padded to at least `width` digits (Python `f"{v:0{width}d}"`).
#[inline]
fn put_u64_padded<S: Sink>(out: &mut S, v: u64, width: usize) {
    for _ in ndigits(v)..width {
        out.put(b'0');
    }
    out.put_u64(v);
}

/// Appends the decimal text of `v` (Python `str(int)`).
#[inline]
fn put_i64<S: Sink>(out: &mut S, v: i64) {
    if v < 0 {
        out.put(b'-');
    }
    out.put_u64(v.unsigned_abs());
}

const POW10: [u64; 7] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];

/// Rounds `|v| * 10^prec` to an integer half to even, as Python's
/// `f"{v:.{prec}f}"` does on the exact binary value, when that can be decided
/// from the double product; returns the sign bit and the scaled integer.
/// `None` (non-finite, >= 1e9, or too close to a tie) means: use the exact
/// slow path. `prec` must be at most 6.
#[inline]
fn fixed_scaled(v: f64, prec: u32) -> Option<(bool, u64)> {
    let a = v.abs();
    if a.is_nan() || a >= 1e9 {
        return None;
    }
    // y < 1e15 < 2^52, so truncation and y - trunc(y) are exact, and
    // |y - a*10^prec| <= y * 2^-53. Round-to-nearest of the exact product
    // equals that of y unless a half-integer lies within that error of y.
    let y = a * POW10[prec as usize] as f64;
    let t = y as u64;
    let frac = y - t as f64;
    if (frac - 0.5).abs() > y * 1e-15 + 1e-300 {
        Some((v.is_sign_negative(), t + (frac > 0.5) as u64))
    } else {
        None
    }
}

/// Appends the fixed-point text of the decimal `±n * 10^-prec`.
#[inline]
fn put_fixed_scaled<S: Sink>(out: &mut S, neg: bool, n: u64, prec: u32) {
    if neg {
        out.put(b'-');
    }
    let scale = POW10[prec as usize];
    out.put_u64(n / scale);
    if prec > 0 {
        out.put(b'.');
        put_u64_padded(out, n % scale, prec as usize);
    }
}

/// Appends Python's `f"{v:.{prec}f}"` (exact decimal value of `v`, rounded
/// half to even; a `-` sign for every negative value including `-0.0` and
/// values that round to zero; `inf`, `-inf`, `nan`). `prec` must be at most 6.
#[inline]
fn put_fixed<S: Sink>(out: &mut S, v: f64, prec: u32) {
    match fixed_scaled(v, prec) {
        Some((neg, n)) => put_fixed_scaled(out, neg, n, prec),
        None => put_fixed_slow(out, v, prec),
    }
}

/// Exact fallback of [`put_fixed`] using Rust's exact formatting, which (like
/// Python) rounds the exact binary value half to even.
#[cold]
fn put_fixed_slow<S: Sink>(out: &mut S, v: f64, prec: u32) {
    if v.is_nan() {
        out.put_slice(b"nan");
        return;
    }
    out.put_slice(format!("{:.*}", prec as usize, v).as_bytes());
}

/// Writes a Python `repr` given the sign, the significant decimal digits
/// (no leading/trailing zeros, non-empty) and `decpt` such that the value is
/// `0.d1d2... * 10^decpt` (CPython `format_float_short`, mode 'r':
/// exponent notation when `decpt <= -4 || decpt > 16`).
fn put_py_digits<S: Sink>(out: &mut S, neg: bool, digits: &[u8], decpt: i32) {
    if neg {
        out.put(b'-');
    }
    let n = digits.len() as i32;
    if decpt <= -4 || decpt > 16 {
        out.put(digits[0]);
        if n > 1 {
            out.put(b'.');
            out.put_slice(&digits[1..]);
        }
        let e = decpt - 1;
        out.put(b'e');
        out.put(if e < 0 { b'-' } else { b'+' });
        let ea = e.unsigned_abs();
        if ea < 10 {
            out.put(b'0');
        }
        out.put_u64(ea as u64);
    } else if decpt <= 0 {
        out.put_slice(b"0.");
        for _ in 0..(-decpt) {
            out.put(b'0');
        }
        out.put_slice(digits);
    } else if decpt >= n {
        out.put_slice(digits);
        for _ in 0..(decpt - n) {
            out.put(b'0');
        }
        out.put_slice(b".0");
    } else {
        out.put_slice(&digits[..decpt as usize]);
        out.put(b'.');
        out.put_slice(&digits[decpt as usize..]);
    }
}

/// Appends Python's `repr(v)` for a float: the shortest digits that round-trip,
/// in positional notation for decimal exponents -4..=15 (with `.0` for
/// integral values) and `1e-05` / `1.5e+16` style otherwise; `nan`, `inf`,
/// `-inf`.
fn python_repr_f64<S: Sink>(out: &mut S, v: f64) {
    if v.is_nan() {
        out.put_slice(b"nan");
        return;
    }
    if v.is_infinite() {
        out.put_slice(if v < 0.0 { b"-inf" } else { b"inf" });
        return;
    }
    if v == 0.0 {
        out.put_slice(if v.is_sign_negative() {
            b"-0.0"
        } else {
            b"0.0"
        });
        return;
    }
    // Rust's `{:e}` prints the shortest round-trip digits as `d.ddde-5`.
    let mut sb = StackBuf::new();
    let _ = write!(sb, "{:e}", v.abs());
    let s = sb.as_bytes();
    let epos = s.iter().position(|&c| c == b'e').unwrap_or(s.len());
    let mut digits = [0u8; 24];
    let mut nd = 0;
    for &c in &s[..epos] {
        if c.is_ascii_digit() && nd < digits.len() {
            digits[nd] = c;
            nd += 1;
        }
    }
    while nd > 1 && digits[nd - 1] == b'0' {
        nd -= 1;
    }
    let exp: i32 = std::str::from_utf8(&s[(epos + 1).min(s.len())..])
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    put_py_digits(out, v.is_sign_negative(), &digits[..nd], exp + 1);
}

/// A small stack buffer implementing `fmt::Write` (to get Rust's shortest
/// round-trip digits without allocating).
struct StackBuf {
    buf: [u8; 64],
    len: usize,
}

impl StackBuf {
    fn new() -> Self {
        StackBuf {
            buf: [0; 64],
            len: 0,
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let b = s.as_bytes();
        if self.len + b.len() > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        Ok(())
    }
}

/// Appends `repr(float(s))` for the decimal text `s = ±n * 10^-prec` with
/// `n < 10^15`. Such a decimal has at most 15 significant digits, so it is
/// itself the shortest round-trip representation of the double it parses to:
/// the repr is just its normalised digits.
#[inline]
fn put_py_repr_scaled<S: Sink>(out: &mut S, neg: bool, n: u64, prec: u32) {
    if n == 0 {
        out.put_slice(if neg { b"-0.0" } else { b"0.0" });
        return;
    }
    let total = ndigits(n);
    let mut digits = [0u8; 20];
    write_digits(&mut digits[..total], n);
    let mut nd = total;
    while digits[nd - 1] == b'0' {
        nd -= 1;
    }
    put_py_digits(out, neg, &digits[..nd], total as i32 - prec as i32);
}

/// Appends the `json.dumps` text of `float(s)` (`Infinity`/`NaN` for the
/// non-finite values), or returns false if Python's `float()` would reject
/// `s` (forms with `_` or surrounding whitespace, which never occur here, are
/// treated as rejected).
fn push_json_float_of_str<S: Sink>(out: &mut S, s: &[u8]) -> bool {
    if fast_decimal_repr(out, s).is_some() {
        return true;
    }
    let text = match std::str::from_utf8(s) {
        Ok(t) => t,
        Err(_) => return false,
    };
    if text.is_empty() || text.bytes().any(|c| c == b'_' || c.is_ascii_whitespace()) {
        return false;
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_nan() => out.put_slice(b"NaN"),
        Ok(v) if v.is_infinite() => out.put_slice(if v < 0.0 { b"-Infinity" } else { b"Infinity" }),
        Ok(v) => python_repr_f64(out, v),
        Err(_) => return false,
    }
    true
}

/// Textual fast path of [`push_json_float_of_str`] for `-?digits.digits` with
/// at most 15 significant digits (see [`put_py_repr_scaled`]).
fn fast_decimal_repr<S: Sink>(out: &mut S, s: &[u8]) -> Option<()> {
    let (neg, body) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let dot = body.iter().position(|&c| c == b'.')?;
    let (ip, fp) = (&body[..dot], &body[dot + 1..]);
    if ip.is_empty() || fp.is_empty() || ip.len() + fp.len() > 40 {
        return None;
    }
    if !ip.iter().all(u8::is_ascii_digit) || !fp.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut digits = [0u8; 40];
    let mut nd = 0usize;
    let mut decpt = ip.len() as i32;
    for &c in ip.iter().chain(fp.iter()) {
        if nd == 0 && c == b'0' {
            decpt -= 1;
            continue;
        }
        digits[nd] = c;
        nd += 1;
    }
    while nd > 0 && digits[nd - 1] == b'0' {
        nd -= 1;
    }
    if nd == 0 {
        out.put_slice(if neg { b"-0.0" } else { b"0.0" });
        return Some(());
    }
    if nd > 15 {
        return None;
    }
    put_py_digits(out, neg, &digits[..nd], decpt);
    Some(())
}

/// Appends `s` as a JSON string the way `json.dumps` (ensure_ascii) does.
fn push_json_str<S: Sink>(out: &mut S, s: &[u8]) {
    out.put(b'"');
    let text = String::from_utf8_lossy(s);
    for ch in text.chars() {
        match ch {
            '"' => out.put_slice(b"\\\""),
            '\\' => out.put_slice(b"\\\\"),
            '\n' => out.put_slice(b"\\n"),
            '\r' => out.put_slice(b"\\r"),
            '\t' => out.put_slice(b"\\t"),
            '\u{08}' => out.put_slice(b"\\b"),
            '\u{0c}' => out.put_slice(b"\\f"),
            c if (c as u32) >= 0x20 && (c as u32) <= 0x7f => out.put(c as u8),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.put_slice(format!("\\u{:04x}", u).as_bytes());
                }
            }
        }
    }
    out.put(b'"');
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

/// The fault injected into one record (at most one per record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// No fault.
    Clean,
    /// Field `j` (3 = amount, 4..=9 = f0..f5) is empty.
    Missing(usize),
    /// Malformed: the last two fields (f5, label) are dropped.
    CutShort,
    /// Malformed: the amount reads `n/a`.
    AmountNa,
    /// Malformed: the event time reads `yesterday`.
    EventYesterday,
    /// Invalid: the amount text gets a leading `-`.
    NegativeAmount,
    /// Invalid: the label reads `7`.
    Label7,
}

/// One generated record, before rendering.
struct Record {
    ev: i64,
    acct: u64,
    cat: usize,
    amount: f64,
    x: [f64; FEATURES],
    label: u64,
    fault: Fault,
}

/// Appends the record as a CSV line (the script's `",".join(fields) + "\n"`).
#[inline]
fn write_csv<S: Sink>(out: &mut S, rec: &Record) {
    if rec.fault == Fault::EventYesterday {
        out.put_slice(b"yesterday");
    } else {
        put_i64(out, rec.ev);
    }
    out.put_slice(b",acct-");
    put_u64_padded(out, rec.acct, 6);
    out.put(b',');
    out.put_slice(CATEGORIES[rec.cat].as_bytes());
    out.put(b',');
    match rec.fault {
        Fault::Missing(3) => {}
        Fault::AmountNa => out.put_slice(b"n/a"),
        Fault::NegativeAmount => {
            out.put(b'-');
            put_fixed(out, rec.amount, 2);
        }
        _ => put_fixed(out, rec.amount, 2),
    }
    let nfeat = if rec.fault == Fault::CutShort {
        FEATURES - 1
    } else {
        FEATURES
    };
    for k in 0..nfeat {
        out.put(b',');
        if rec.fault != Fault::Missing(4 + k) {
            put_fixed(out, rec.x[k], 5);
        }
    }
    if rec.fault != Fault::CutShort {
        out.put(b',');
        if rec.fault == Fault::Label7 {
            out.put(b'7');
        } else {
            out.put_u64(rec.label);
        }
    }
    out.put(b'\n');
}

/// `,"f0":` .. `,"f5":` key prefixes.
const FEATURE_KEYS: [&[u8]; FEATURES] = [
    b",\"f0\":",
    b",\"f1\":",
    b",\"f2\":",
    b",\"f3\":",
    b",\"f4\":",
    b",\"f5\":",
];

/// Appends the JSON value the script writes for a `f"{v:.{prec}f}"` field,
/// optionally with a `-` put in front of the text: `float(text)` printed
/// with `repr`, or the text as a JSON string if `float()` rejects it.
#[inline]
fn put_json_fixed<S: Sink>(out: &mut S, v: f64, prec: u32, minus_prefix: bool) {
    match fixed_scaled(v, prec) {
        Some((neg, n)) if !(minus_prefix && neg) => {
            put_py_repr_scaled(out, neg || minus_prefix, n, prec)
        }
        _ => {
            let mut text = Vec::new();
            if minus_prefix {
                text.push(b'-');
            }
            put_fixed(&mut text, v, prec);
            if !push_json_float_of_str(out, &text) {
                push_json_str(out, &text);
            }
        }
    }
}

/// Appends the record as the script's JSON line: `json.dumps(obj,
/// separators=(",", ":"))` with empty fields as `null`, event time and label
/// as ints and the other numeric fields as floats where they parse.
#[inline]
fn write_jsonl(out: &mut Block, rec: &Record) {
    if rec.fault == Fault::CutShort {
        write_jsonl_cut_off(out, rec);
        return;
    }
    out.put_slice(b"{\"event_time\":");
    if rec.fault == Fault::EventYesterday {
        out.put_slice(b"\"yesterday\"");
    } else {
        put_i64(out, rec.ev);
    }
    out.put_slice(b",\"account\":\"acct-");
    put_u64_padded(out, rec.acct, 6);
    out.put_slice(b"\",\"category\":\"");
    out.put_slice(CATEGORIES[rec.cat].as_bytes());
    out.put_slice(b"\",\"amount\":");
    match rec.fault {
        Fault::Missing(3) => out.put_slice(b"null"),
        Fault::AmountNa => out.put_slice(b"\"n/a\""),
        Fault::NegativeAmount => put_json_fixed(out, rec.amount, 2, true),
        _ => put_json_fixed(out, rec.amount, 2, false),
    }
    for (k, key) in FEATURE_KEYS.iter().enumerate() {
        out.put_slice(key);
        if rec.fault == Fault::Missing(4 + k) {
            out.put_slice(b"null");
        } else {
            put_json_fixed(out, rec.x[k], 5, false);
        }
    }
    out.put_slice(b",\"label\":");
    if rec.fault == Fault::Label7 {
        out.put(b'7');
    } else {
        out.put_u64(rec.label);
    }
    out.put_slice(b"}\n");
}

/// The deliberately broken JSON line of a record with the wrong field count:
/// `json.dumps(dict(zip(names, fields)))[:-7]` — default separators, every
/// value a string, the last 7 characters cut off.
#[cold]
fn write_jsonl_cut_off(out: &mut Block, rec: &Record) {
    let mut csv = Vec::new();
    write_csv(&mut csv, rec);
    csv.pop(); // '\n'; no field contains a comma
    let mut js = Vec::new();
    js.push(b'{');
    for (k, (name, f)) in NAMES.iter().zip(csv.split(|&c| c == b',')).enumerate() {
        if k > 0 {
            js.extend_from_slice(b", ");
        }
        push_json_str(&mut js, name.as_bytes());
        js.extend_from_slice(b": ");
        push_json_str(&mut js, f);
    }
    js.push(b'}');
    js.truncate(js.len().saturating_sub(7));
    out.put_slice(&js);
    out.put(b'\n');
}

/// Python's `int(x)` of a float for the ranges used here (truncation toward
/// zero, saturating at the `i64` range).
#[inline]
fn py_int(x: f64) -> i64 {
    x as i64
}

/// Generates the stream described by `opts` into `out` (a CSV header first for
/// [`GenFormat::Csv`]) and returns its ground truth.
///
/// The rows, their text and the truth equal those of `gen_transactions.py`
/// with the same arguments. Output is buffered internally and written in
/// blocks of about 1 MiB; `out` is flushed at the end. Fails with
/// `InvalidInput` if `accounts` is 0 and `rows` is not (the script fails too).
pub fn generate<W: Write>(opts: &GenOptions, mut out: W) -> io::Result<Truth> {
    if opts.accounts == 0 && opts.rows > 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "gen: accounts must be at least 1",
        ));
    }
    let no_faults = opts.no_faults;
    let (missing, malformed, invalid, duplicates) = if no_faults {
        (0.0, 0.0, 0.0, 0.0)
    } else {
        (opts.missing, opts.malformed, opts.invalid, opts.duplicates)
    };
    let missing_malformed = missing + malformed;
    let missing_malformed_invalid = missing + malformed + invalid;

    // Model parameters, drawn in the script's order.
    let mut rng = PyRandom::new(opts.seed);
    let mut w_before = [0.0f64; FEATURES];
    for w in w_before.iter_mut() {
        *w = rng.gauss(0.0, 1.2);
    }
    let mut w_after = [0.0f64; FEATURES];
    for (i, wa) in w_after.iter_mut().enumerate() {
        let w = w_before[i];
        let base = if i % 2 == 0 { -w } else { w * 0.5 };
        *wa = base + rng.gauss(0.0, 0.3);
    }
    let mut cat_risk = [0.0f64; CATEGORIES.len()];
    for c in cat_risk.iter_mut() {
        *c = rng.gauss(0.0, 0.8);
    }
    let acct_base: Vec<f64> = (0..opts.accounts)
        .map(|_| rng.gauss(3.5, 0.8).exp())
        .collect();

    let rows = opts.rows;
    let drift_row = py_int(rows as f64 * opts.drift_at);
    let spike0 = py_int(rows as f64 * 0.30) as u64;
    let spike1 = spike0 + (rows / 200).max(1);
    let gap_row = py_int(rows as f64 * 0.45) as u64;
    let gap_ms = 60_000.0f64;
    let step_ms = 1000.0 / opts.rate;

    let mut truth = Truth {
        drift_at_row: drift_row.max(0) as u64,
        ..Truth::default()
    };

    let mut block = Block::new();
    if opts.format == GenFormat::Csv {
        block.put_slice(CSV_HEADER);
    }

    let mut t = opts.start_ms as f64;
    for i in 0..rows {
        if !no_faults && i == gap_row {
            truth.gap_ms = [Some(py_int(t)), Some(py_int(t + gap_ms))];
            t += gap_ms;
        }
        t += step_ms;
        let in_spike = !no_faults && spike0 <= i && i < spike1;
        if in_spike {
            t -= step_ms * 0.8; // five times the usual volume
            if i == spike0 {
                truth.spike_ms[0] = Some(py_int(t));
            }
            truth.spike_ms[1] = Some(py_int(t));
        }
        let ii = i as i64;
        if ii == drift_row {
            truth.drift_at_ms = Some(py_int(t));
        }
        let late = if rng.random() < 0.05 && opts.max_lateness_ms > 0 {
            rng.randbelow(opts.max_lateness_ms)
        } else {
            0
        };
        let ev = py_int(t).saturating_sub(late.min(i64::MAX as u64) as i64);
        let acct = rng.randbelow(opts.accounts as u64);
        let cat = rng.randbelow(CATEGORIES.len() as u64) as usize;
        let mut x = [0.0f64; FEATURES];
        for v in x.iter_mut() {
            *v = rng.gauss(0.0, 1.0);
        }
        let base = acct_base[acct as usize];
        let mut amount = base * rng.gauss(0.0, 0.5).exp();
        if in_spike {
            amount *= 20.0;
        }
        let w = if ii >= drift_row { &w_after } else { &w_before };
        // sum() of floats in CPython 3.11: plain left-to-right addition from 0
        let mut s = 0.0f64;
        for k in 0..FEATURES {
            s += w[k] * x[k];
        }
        let z = -3.0 + s + cat_risk[cat] + 0.8 * (amount / base + 1e-9).ln();
        let label: u64 = if rng.random() < 1.0 / (1.0 + (-z).exp()) {
            1
        } else {
            0
        };
        truth.labels_positive += label;

        // Faults: the same draws in the same order as the script (rendering
        // consumes no randomness, so it can come after).
        let r = rng.random();
        let fault = if r < missing {
            const MISSING_COLS: [usize; 7] = [3, 4, 5, 6, 7, 8, 9];
            truth.missing_rows += 1;
            Fault::Missing(MISSING_COLS[rng.randbelow(MISSING_COLS.len() as u64) as usize])
        } else if r < missing_malformed {
            truth.malformed += 1;
            match rng.randbelow(3) {
                0 => Fault::CutShort,
                1 => Fault::AmountNa,
                _ => Fault::EventYesterday,
            }
        } else if r < missing_malformed_invalid {
            truth.invalid += 1;
            if rng.random() < 0.5 {
                Fault::NegativeAmount
            } else {
                Fault::Label7
            }
        } else {
            Fault::Clean
        };

        let rec = Record {
            ev,
            acct,
            cat,
            amount,
            x,
            label,
            fault,
        };
        let start = block.pos;
        match opts.format {
            GenFormat::Csv => write_csv(&mut block, &rec),
            GenFormat::Jsonl => write_jsonl(&mut block, &rec),
        }
        truth.rows_emitted += 1;
        if i > 0 && rng.random() < duplicates {
            let end = block.pos;
            block.buf.copy_within(start..end, end);
            block.pos = end + (end - start);
            truth.rows_emitted += 1;
            truth.duplicates += 1;
        }
        if block.pos >= FLUSH_BYTES {
            out.write_all(&block.buf[..block.pos])?;
            block.pos = 0;
        }
    }
    out.write_all(&block.buf[..block.pos])?;
    out.flush()?;
    Ok(truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv1a(data: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    fn gen(rows: u64, seed: u64, format: GenFormat, no_faults: bool) -> (Vec<u8>, Truth) {
        let opts = GenOptions {
            rows,
            seed,
            format,
            no_faults,
            ..GenOptions::default()
        };
        let mut out = Vec::new();
        let truth = generate(&opts, &mut out).unwrap();
        (out, truth)
    }

    fn py_repr(v: f64) -> String {
        let mut out = Vec::new();
        python_repr_f64(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    fn line(data: &[u8], n: usize) -> &str {
        std::str::from_utf8(data)
            .unwrap()
            .lines()
            .nth(n - 1)
            .unwrap()
    }

    #[test]
    fn mt_matches_cpython() {
        // random.Random(seed).getrandbits(32), CPython 3.11
        let mut r = PyRandom::new(7);
        let got: Vec<u32> = (0..5).map(|_| r.next_u32()).collect();
        assert_eq!(
            got,
            [1390851128, 4071050724, 647892279, 1695753998, 2795742288]
        );
        let mut r = PyRandom::new((1 << 40) + 5);
        let got: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(got, [2166296868, 2220160828, 1153647273]);
        let mut r = PyRandom::new(0);
        let got: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(got, [3626764237, 1654615998, 3255389356]);
        let mut r = PyRandom::new(u64::MAX);
        let got: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(got, [93740670, 1068495656, 1452108352]);
        // the state survives many twists
        let mut r = PyRandom::new(7);
        for _ in 0..10_000 {
            r.next_u32();
        }
        assert_eq!(r.next_u32(), 4_122_213_605);
    }

    #[test]
    fn random_matches_cpython() {
        let mut r = PyRandom::new(7);
        let got: Vec<f64> = (0..4).map(|_| r.random()).collect();
        assert_eq!(
            got,
            [
                0.32383276483316237,
                0.15084917392450192,
                0.6509344730398537,
                0.07243628666754276
            ]
        );
    }

    #[test]
    fn randrange_matches_cpython() {
        // r = Random(7); [r.randrange(10000) for _ in range(5)], r.getrandbits(40),
        // r.randrange(2**40+3), r.getrandbits(64), r.choice([3..9]), r.randrange(1), r.getrandbits(1)
        let mut r = PyRandom::new(7);
        let got: Vec<u64> = (0..5).map(|_| r.randbelow(10_000)).collect();
        assert_eq!(got, [5305, 2471, 6468, 791, 1186]);
        assert_eq!(r.getrandbits(40), 591937865764);
        assert_eq!(r.randbelow((1 << 40) + 3), 803563169809);
        assert_eq!(r.getrandbits(64), 1069891289537943645);
        assert_eq!(r.choice(&[3, 4, 5, 6, 7, 8, 9]), 7);
        assert_eq!(r.randbelow(1), 0);
        assert_eq!(r.getrandbits(1), 0);
    }

    #[test]
    fn gauss_matches_cpython() {
        let mut r = PyRandom::new(7);
        let got: Vec<f64> = (0..5).map(|_| r.gauss(0.0, 1.0)).collect();
        assert_eq!(
            got,
            [
                -0.2558802884476004,
                0.511431512516514,
                -0.2260961647831047,
                -0.3150684223311854,
                -0.9300181903227674
            ]
        );
        let mut r = PyRandom::new(7);
        let got: Vec<f64> = (0..3).map(|_| r.gauss(3.5, 0.8)).collect();
        assert_eq!(
            got,
            [3.29529576924192, 3.9091452100132114, 3.319123068173516]
        );
    }

    #[test]
    fn repr_matches_python() {
        let cases: [(f64, &str); 24] = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (-96.0, "-96.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (-3.2e-5, "-3.2e-05"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e16, "1.5e+16"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (0.1 + 0.2, "0.30000000000000004"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (1e100, "1e+100"),
            (2.5e-10, "2.5e-10"),
            (12.34, "12.34"),
            (-0.0364, "-0.0364"),
            (9999999999999998.0, "9999999999999998.0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (v, want) in cases {
            assert_eq!(py_repr(v), want, "repr({v:e})");
        }
        assert_eq!(py_repr(f64::NAN), "nan");
    }

    #[test]
    #[allow(clippy::excessive_precision)]
    fn fixed_matches_python() {
        let cases: [(f64, u32, &str); 12] = [
            (0.125, 2, "0.12"),
            (0.375, 2, "0.38"),
            (2.675, 2, "2.67"),
            (-0.000001, 5, "-0.00000"),
            (-0.0, 5, "-0.00000"),
            (0.0, 2, "0.00"),
            (0.015625, 5, "0.01562"),
            (1.0000050000000001, 5, "1.00001"),
            (80.33, 2, "80.33"),
            (-1.700004, 5, "-1.70000"),
            (123456789012.345, 2, "123456789012.35"),
            (f64::INFINITY, 2, "inf"),
        ];
        for (v, p, want) in cases {
            let mut out = Vec::new();
            put_fixed(&mut out, v, p);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{v:e} .{p}f");
        }
        // the fast path agrees with exact formatting on many values
        let mut r = PyRandom::new(99);
        for _ in 0..200_000 {
            let v = r.gauss(0.0, 1.0) * [1.0, 10.0, 1e3, 1e-4][r.randbelow(4) as usize];
            for p in [2, 5] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                put_fixed(&mut a, v, p);
                put_fixed_slow(&mut b, v, p);
                assert_eq!(a, b, "{v:e}");
            }
        }
    }

    #[test]
    fn json_float_text_matches_python() {
        let cases: [(&str, &str); 10] = [
            ("80.33", "80.33"),
            ("19.50", "19.5"),
            ("-96.00", "-96.0"),
            ("-0.00000", "-0.0"),
            ("0.00000", "0.0"),
            ("0.00001", "1e-05"),
            ("-0.00032", "-0.00032"),
            ("-0.00003", "-3e-05"),
            ("12345678901234567.89", "1.2345678901234568e+16"),
            ("inf", "Infinity"),
        ];
        for (s, want) in cases {
            let mut out = Vec::new();
            assert!(push_json_float_of_str(&mut out, s.as_bytes()));
            assert_eq!(String::from_utf8(out).unwrap(), want, "{s}");
        }
        assert!(!push_json_float_of_str(&mut Vec::new(), b"n/a"));
        // the textual fast path agrees with parse + repr
        let mut r = PyRandom::new(5);
        for _ in 0..100_000 {
            let v = r.gauss(0.0, 1.0) * [1.0, 1e-3, 1e4][r.randbelow(3) as usize];
            let mut s = Vec::new();
            put_fixed(&mut s, v, 5);
            let mut a = Vec::new();
            fast_decimal_repr(&mut a, &s).unwrap();
            let parsed: f64 = std::str::from_utf8(&s).unwrap().parse().unwrap();
            let mut b = Vec::new();
            python_repr_f64(&mut b, parsed);
            assert_eq!(a, b, "{}", String::from_utf8_lossy(&s));
        }
    }

    #[test]
    fn json_fixed_fast_path_matches_text_route() {
        // repr(float(f"{v:.Nf}")) computed from the scaled integer equals the
        // route through the formatted text, with and without a '-' prefix.
        let mut r = PyRandom::new(11);
        for _ in 0..100_000 {
            let v = r.gauss(0.0, 1.0) * [1.0, 1e-4, 1e3, 1e8][r.randbelow(4) as usize];
            for (p, minus) in [(2, false), (2, true), (5, false)] {
                let mut a = Vec::new();
                put_json_fixed(&mut a, v, p, minus);
                let mut text = Vec::new();
                if minus {
                    text.push(b'-');
                }
                put_fixed(&mut text, v, p);
                let mut b = Vec::new();
                if !push_json_float_of_str(&mut b, &text) {
                    push_json_str(&mut b, &text);
                }
                assert_eq!(a, b, "{v:e} {p} {minus}");
            }
        }
        let mut out = Vec::new();
        put_json_fixed(&mut out, -1.5, 2, true);
        assert_eq!(out, b"\"--1.50\"");
    }

    #[test]
    fn json_string_escapes() {
        let mut out = Vec::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é€😀".as_bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""a\"b\\c\nd\u0001\u00e9\u20ac\ud83d\ude00""#
        );
    }

    const TRUTH_FAULTS: &str = "{\n  \"rows_emitted\": 5007,\n  \"missing_rows\": 45,\n  \"malformed\": 10,\n  \"invalid\": 6,\n  \"duplicates\": 7,\n  \"drift_at_row\": 3000,\n  \"drift_at_ms\": 1767225662980,\n  \"spike_ms\": [\n    1767225601500,\n    1767225601504\n  ],\n  \"gap_ms\": [\n    1767225602229,\n    1767225662229\n  ],\n  \"labels_positive\": 509\n}";
    const TRUTH_CLEAN: &str = "{\n  \"rows_emitted\": 5000,\n  \"missing_rows\": 0,\n  \"malformed\": 0,\n  \"invalid\": 0,\n  \"duplicates\": 0,\n  \"drift_at_row\": 3000,\n  \"drift_at_ms\": 1767225603001,\n  \"spike_ms\": [\n    null,\n    null\n  ],\n  \"gap_ms\": [\n    null,\n    null\n  ],\n  \"labels_positive\": 505\n}";

    // Expected values below were captured from
    // `gen_transactions.py --rows 5000 --seed 3 [--format jsonl] [--no-faults]`
    // (CPython 3.11.7): FNV-1a 64 hash and length of stdout, sample lines, truth.

    #[test]
    fn csv_matches_reference() {
        let (out, truth) = gen(5000, 3, GenFormat::Csv, false);
        assert_eq!(
            line(&out, 1),
            "event_time,account,category,amount,f0,f1,f2,f3,f4,f5,label"
        );
        assert_eq!(
            line(&out, 2),
            "1767225600001,acct-006125,electronics,80.33,0.89527,-0.64339,-0.35705,-0.43531,0.09078,0.84009,0"
        );
        assert_eq!(
            line(&out, 26),
            "yesterday,acct-005311,grocery,32.62,0.21419,0.45404,-0.49783,-1.39369,1.60902,-0.59745,0"
        );
        assert_eq!(
            line(&out, 4278),
            "1767225664249,acct-008116,electronics,n/a,-0.34952,-0.60754,-0.17567,-0.20500,0.27611,1.12121,0"
        );
        assert_eq!(
            line(&out, 4272),
            "1767225664243,acct-003431,fuel,-96.00,-0.23811,-0.89533,-0.27400,-0.12663,-0.09312,1.00554,0"
        );
        assert_eq!(
            line(&out, 778),
            "1767225600776,acct-007959,dining,36.58,0.26862,-0.36166,0.28632,0.46637,0.86066,2.49898,7"
        );
        assert_eq!(
            line(&out, 496),
            "1767225600495,acct-005779,online,,0.06024,-0.09632,-1.00347,-0.03640,-0.08955,-0.08356,0"
        );
        assert_eq!(out.len(), 465513);
        assert_eq!(fnv1a(&out), 0x1b057f6fc2bc3ad7);
        assert_eq!(truth.to_json(), TRUTH_FAULTS);
    }

    #[test]
    fn jsonl_matches_reference() {
        let (out, truth) = gen(5000, 3, GenFormat::Jsonl, false);
        assert_eq!(
            line(&out, 2),
            r#"{"event_time":1767225600002,"account":"acct-007456","category":"online","amount":69.38,"f0":-0.85985,"f1":0.7132,"f2":-1.70321,"f3":0.84859,"f4":-0.87067,"f5":2.68615,"label":1}"#
        );
        assert_eq!(
            line(&out, 4856),
            r#"{"event_time": "1767225664828", "account": "acct-004928", "category": "grocery", "amount": "10.01", "f0": "0.85952", "f1": "1.06745", "f2": "-0.48404", "f3": "0.63056", "f4": "0."#
        );
        assert_eq!(
            line(&out, 25),
            r#"{"event_time":"yesterday","account":"acct-005311","category":"grocery","amount":32.62,"f0":0.21419,"f1":0.45404,"f2":-0.49783,"f3":-1.39369,"f4":1.60902,"f5":-0.59745,"label":0}"#
        );
        assert_eq!(
            line(&out, 4271),
            r#"{"event_time":1767225664243,"account":"acct-003431","category":"fuel","amount":-96.0,"f0":-0.23811,"f1":-0.89533,"f2":-0.274,"f3":-0.12663,"f4":-0.09312,"f5":1.00554,"label":0}"#
        );
        assert_eq!(
            line(&out, 495),
            r#"{"event_time":1767225600495,"account":"acct-005779","category":"online","amount":null,"f0":0.06024,"f1":-0.09632,"f2":-1.00347,"f3":-0.0364,"f4":-0.08955,"f5":-0.08356,"label":0}"#
        );
        assert_eq!(out.len(), 897332);
        assert_eq!(fnv1a(&out), 0xbf932398600d89f8);
        assert_eq!(truth.to_json(), TRUTH_FAULTS);
    }

    #[test]
    fn no_faults_matches_reference() {
        let (out, truth) = gen(5000, 3, GenFormat::Csv, true);
        assert_eq!(out.len(), 465225);
        assert_eq!(fnv1a(&out), 0x0521484e250c2a64);
        assert_eq!(truth.to_json(), TRUTH_CLEAN);
        let (out, truth) = gen(5000, 3, GenFormat::Jsonl, true);
        assert_eq!(out.len(), 896254);
        assert_eq!(fnv1a(&out), 0xd3f8c6970988e59a);
        assert_eq!(truth.to_json(), TRUTH_CLEAN);
    }

    #[test]
    fn defaults_match_script() {
        let o = GenOptions::default();
        assert_eq!(
            (o.rows, o.seed, o.format, o.accounts),
            (100_000, 7, GenFormat::Csv, 10_000)
        );
        assert_eq!(
            (o.start_ms, o.rate, o.drift_at),
            (1_767_225_600_000, 1000.0, 0.6)
        );
        assert_eq!(
            (o.missing, o.malformed, o.invalid, o.duplicates),
            (0.01, 0.002, 0.002, 0.001)
        );
        assert_eq!((o.max_lateness_ms, o.no_faults), (2000, false));
    }

    #[test]
    fn zero_accounts_is_an_error() {
        let opts = GenOptions {
            accounts: 0,
            rows: 10,
            ..GenOptions::default()
        };
        assert!(generate(&opts, Vec::new()).is_err());
    }
}

/// What [`split_labels`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSplit {
    /// Label lines written.
    pub labels: u64,
    /// Labels left out (`missing`): their predictions can only expire.
    pub dropped: u64,
    /// Ids of the labels left out.
    pub dropped_ids: Vec<String>,
}

/// Turns a generated CSV stream with inline labels into the delayed-label
/// layout: the records get a `tx_id` column (a hash of the original line, so
/// exact duplicates keep sharing it) and lose their label; the labels go to
/// their own CSV, `tx_id,label` in record order, with — for `delay` > 0 —
/// `labelled_at`, the event time of the record `delay` rows later (never
/// before the record's own), so the label becomes known `delay` records
/// late; for the last `delay` records that is after the stream's end (the
/// mean gap between rows, past the last one), so they stay unlearned. A line with the wrong number of fields keeps its shape (it is
/// rejected as before) and has no label line. A fraction `missing` of the
/// labels, chosen by the hash of the id, is left out.
pub fn split_labels(csv: &[u8], delay: u64, missing: f64) -> (Vec<u8>, Vec<u8>, LabelSplit) {
    let text = String::from_utf8_lossy(csv);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let label_col = header.iter().position(|h| *h == "label");
    let time_col = header.iter().position(|h| *h == "event_time");
    let rows: Vec<&str> = lines.collect();
    // The event time at or before each row (rows whose time does not parse take the previous one).
    let mut times = Vec::with_capacity(rows.len());
    let mut last = i64::MIN;
    for row in &rows {
        if let Some(t) = time_col.and_then(|c| row.split(',').nth(c)?.parse::<i64>().ok()) {
            last = t;
        }
        times.push(last);
    }
    let mut records = Vec::with_capacity(csv.len() + rows.len() * 20);
    let mut labels = Vec::new();
    let keep: Vec<&str> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != label_col)
        .map(|(_, h)| *h)
        .collect();
    records.extend_from_slice(format!("tx_id,{}\n", keep.join(",")).as_bytes());
    labels.extend_from_slice(if delay > 0 {
        b"tx_id,label,labelled_at\n".as_slice()
    } else {
        b"tx_id,label\n".as_slice()
    });
    let mut out = LabelSplit::default();
    let mut seen = std::collections::HashSet::new();
    for (i, row) in rows.iter().enumerate() {
        let h = xxhash_rust::xxh3::xxh3_64(row.as_bytes());
        let id = format!("tx-{h:016x}");
        let fields: Vec<&str> = row.split(',').collect();
        let Some(lc) = label_col.filter(|_| fields.len() == header.len()) else {
            records.extend_from_slice(format!("{id},{row}\n").as_bytes());
            continue;
        };
        let rest: Vec<&str> = fields
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != lc)
            .map(|(_, f)| *f)
            .collect();
        records.extend_from_slice(format!("{id},{}\n", rest.join(",")).as_bytes());
        if !seen.insert(h) {
            continue; // An exact duplicate: one label per id.
        }
        if (h % 1_000_000) as f64 / 1e6 < missing {
            out.dropped += 1;
            out.dropped_ids.push(id);
            continue;
        }
        let label = fields[lc];
        if delay > 0 {
            let own = time_col
                .and_then(|c| fields[c].parse::<i64>().ok())
                .unwrap_or(i64::MIN);
            let j = i + delay as usize;
            let later = match times.get(j) {
                Some(t) => *t,
                None => {
                    let (first, end) = (times[0], times[rows.len() - 1]);
                    let gap = ((end - first) / rows.len().max(1) as i64).max(1);
                    end + gap * (j + 1 - rows.len()) as i64
                }
            };
            let known = own.max(later);
            let known = if known == i64::MIN {
                String::new()
            } else {
                known.to_string()
            };
            labels.extend_from_slice(format!("{id},{label},{known}\n").as_bytes());
        } else {
            labels.extend_from_slice(format!("{id},{label}\n").as_bytes());
        }
        out.labels += 1;
    }
    (records, labels, out)
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn labels_move_to_their_own_file_and_duplicates_share_an_id() {
        let csv = b"event_time,account,amount,label\n1000,a,1.0,1\n2000,b,2.0,0\n2000,b,2.0,0\n3000,c,oops\n4000,d,4.0,1\n";
        let (records, labels, split) = split_labels(csv, 2, 0.0);
        let records = String::from_utf8(records).unwrap();
        let labels = String::from_utf8(labels).unwrap();
        let r: Vec<&str> = records.lines().collect();
        assert_eq!(r[0], "tx_id,event_time,account,amount");
        assert!(r[1].ends_with(",1000,a,1.0"));
        assert_eq!(r[2], r[3], "an exact duplicate stays one");
        assert!(
            r[4].ends_with(",3000,c,oops"),
            "a short line keeps its shape"
        );
        let l: Vec<&str> = labels.lines().collect();
        assert_eq!(l[0], "tx_id,label,labelled_at");
        // Known two rows later: row 0 at row 2's time, row 1 at row 3's; row 4
        // two mean gaps (600 ms) after the end.
        assert!(l[1].ends_with(",1,2000"), "{}", l[1]);
        assert!(l[2].ends_with(",0,3000"), "{}", l[2]);
        assert!(l[3].ends_with(",1,5200"), "{}", l[3]);
        assert_eq!((split.labels, split.dropped), (3, 0));
        let (_, all_gone, split) = split_labels(csv, 0, 1.0);
        assert_eq!(String::from_utf8(all_gone).unwrap(), "tx_id,label\n");
        assert_eq!(split.dropped, 3);
    }
}

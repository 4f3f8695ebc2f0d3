//! Python's number text, byte for byte: `f"{v:.Nf}"`, `repr(float)` and
//! what `json.dumps` writes, into the generator's pre-sized output blocks.

use std::fmt::Write as _;

use super::FLUSH_BYTES;

/// A byte sink for the formatting helpers: a growable `Vec<u8>` or the
/// generator's pre-sized output [`Block`].
pub(super) trait Sink {
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
pub(super) struct Block {
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
}

/// Room kept free beyond [`FLUSH_BYTES`]; a line is at most ~1.5 KB.
pub(super) const BLOCK_SLACK: usize = 64 * 1024;

impl Block {
    pub(super) fn new() -> Self {
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
pub(super) fn ndigits(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Writes the decimal digits of `v` right-aligned into `dst` (whose length is
/// the digit count).
#[inline]
pub(super) fn write_digits(dst: &mut [u8], mut v: u64) {
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
pub(super) const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `v` zero-padded to at least `width` digits (Python `f"{v:0{width}d}"`).
#[inline]
pub(super) fn put_u64_padded<S: Sink>(out: &mut S, v: u64, width: usize) {
    for _ in ndigits(v)..width {
        out.put(b'0');
    }
    out.put_u64(v);
}

/// Appends the decimal text of `v` (Python `str(int)`).
#[inline]
pub(super) fn put_i64<S: Sink>(out: &mut S, v: i64) {
    if v < 0 {
        out.put(b'-');
    }
    out.put_u64(v.unsigned_abs());
}

pub(super) const POW10: [u64; 7] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];

/// Rounds `|v| * 10^prec` to an integer half to even, as Python's
/// `f"{v:.{prec}f}"` does on the exact binary value, when that can be decided
/// from the double product; returns the sign bit and the scaled integer.
/// `None` (non-finite, >= 1e9, or too close to a tie) means: use the exact
/// slow path. `prec` must be at most 6.
#[inline]
pub(super) fn fixed_scaled(v: f64, prec: u32) -> Option<(bool, u64)> {
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
pub(super) fn put_fixed_scaled<S: Sink>(out: &mut S, neg: bool, n: u64, prec: u32) {
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
pub(super) fn put_fixed<S: Sink>(out: &mut S, v: f64, prec: u32) {
    match fixed_scaled(v, prec) {
        Some((neg, n)) => put_fixed_scaled(out, neg, n, prec),
        None => put_fixed_slow(out, v, prec),
    }
}

/// Exact fallback of [`put_fixed`] using Rust's exact formatting, which (like
/// Python) rounds the exact binary value half to even.
#[cold]
pub(super) fn put_fixed_slow<S: Sink>(out: &mut S, v: f64, prec: u32) {
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
pub(super) fn put_py_digits<S: Sink>(out: &mut S, neg: bool, digits: &[u8], decpt: i32) {
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
pub(super) fn python_repr_f64<S: Sink>(out: &mut S, v: f64) {
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
pub(super) struct StackBuf {
    pub(super) buf: [u8; 64],
    pub(super) len: usize,
}

impl StackBuf {
    pub(super) fn new() -> Self {
        StackBuf {
            buf: [0; 64],
            len: 0,
        }
    }
    pub(super) fn as_bytes(&self) -> &[u8] {
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
pub(super) fn put_py_repr_scaled<S: Sink>(out: &mut S, neg: bool, n: u64, prec: u32) {
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
pub(super) fn push_json_float_of_str<S: Sink>(out: &mut S, s: &[u8]) -> bool {
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
pub(super) fn fast_decimal_repr<S: Sink>(out: &mut S, s: &[u8]) -> Option<()> {
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
pub(super) fn push_json_str<S: Sink>(out: &mut S, s: &[u8]) {
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

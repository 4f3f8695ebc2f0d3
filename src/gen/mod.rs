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
pub(super) const FLUSH_BYTES: usize = 1 << 20;

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

mod format;
mod labels;
mod pyrandom;

use format::*;
pub use labels::{split_labels, LabelSplit};
use pyrandom::*;

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
    let rates = Rates::of(opts);
    let mut rng = PyRandom::new(opts.seed);
    let model = Model::draw(&mut rng, opts.accounts);

    let rows = opts.rows;
    let drift_row = py_int(rows as f64 * opts.drift_at);
    let spike0 = py_int(rows as f64 * 0.30) as u64;
    let spike1 = spike0 + (rows / 200).max(1);
    let gap_row = py_int(rows as f64 * 0.45) as u64;
    let gap_ms = 60_000.0f64;
    let step_ms = 1000.0 / opts.rate;
    let faults = !opts.no_faults;

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
        if faults && i == gap_row {
            truth.gap_ms = [Some(py_int(t)), Some(py_int(t + gap_ms))];
            t += gap_ms;
        }
        t += step_ms;
        let in_spike = faults && spike0 <= i && i < spike1;
        if in_spike {
            t -= step_ms * 0.8; // five times the usual volume
            if i == spike0 {
                truth.spike_ms[0] = Some(py_int(t));
            }
            truth.spike_ms[1] = Some(py_int(t));
        }
        let drifted = i as i64 >= drift_row;
        if i as i64 == drift_row {
            truth.drift_at_ms = Some(py_int(t));
        }
        let mut rec = model.draw_record(&mut rng, opts, t, in_spike, drifted);
        truth.labels_positive += rec.label;
        // Faults: the same draws in the same order as the script (rendering
        // consumes no randomness, so it can come after).
        rec.fault = rates.draw_fault(&mut rng, &mut truth);
        let start = block.pos;
        match opts.format {
            GenFormat::Csv => write_csv(&mut block, &rec),
            GenFormat::Jsonl => write_jsonl(&mut block, &rec),
        }
        truth.rows_emitted += 1;
        if i > 0 && rng.random() < rates.duplicates {
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

/// The label model, drawn in the script's order: the weights before and
/// after the concept drift, each category's risk, each account's typical amount.
struct Model {
    w_before: [f64; FEATURES],
    w_after: [f64; FEATURES],
    cat_risk: [f64; CATEGORIES.len()],
    acct_base: Vec<f64>,
}

impl Model {
    fn draw(rng: &mut PyRandom, accounts: u32) -> Model {
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
        let acct_base: Vec<f64> = (0..accounts).map(|_| rng.gauss(3.5, 0.8).exp()).collect();
        Model {
            w_before,
            w_after,
            cat_risk,
            acct_base,
        }
    }

    /// Row `i` at time `t` (ms): its lateness, account, category, features,
    /// amount and label, drawn in the script's order (the fault comes after).
    fn draw_record(
        &self,
        rng: &mut PyRandom,
        opts: &GenOptions,
        t: f64,
        in_spike: bool,
        drifted: bool,
    ) -> Record {
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
        let base = self.acct_base[acct as usize];
        let mut amount = base * rng.gauss(0.0, 0.5).exp();
        if in_spike {
            amount *= 20.0;
        }
        let w = if drifted {
            &self.w_after
        } else {
            &self.w_before
        };
        // sum() of floats in CPython 3.11: plain left-to-right addition from 0
        let mut s = 0.0f64;
        for k in 0..FEATURES {
            s += w[k] * x[k];
        }
        let z = -3.0 + s + self.cat_risk[cat] + 0.8 * (amount / base + 1e-9).ln();
        let label = u64::from(rng.random() < 1.0 / (1.0 + (-z).exp()));
        Record {
            ev,
            acct,
            cat,
            amount,
            x,
            label,
            fault: Fault::Clean,
        }
    }
}

/// How often each fault is injected (none with `--no-faults`), as the
/// cumulative thresholds one uniform draw is compared with.
struct Rates {
    missing: f64,
    missing_malformed: f64,
    missing_malformed_invalid: f64,
    duplicates: f64,
}

impl Rates {
    fn of(opts: &GenOptions) -> Rates {
        let (missing, malformed, invalid, duplicates) = if opts.no_faults {
            (0.0, 0.0, 0.0, 0.0)
        } else {
            (opts.missing, opts.malformed, opts.invalid, opts.duplicates)
        };
        Rates {
            missing,
            missing_malformed: missing + malformed,
            missing_malformed_invalid: missing + malformed + invalid,
            duplicates,
        }
    }

    /// The row's fault, counted in `truth`.
    fn draw_fault(&self, rng: &mut PyRandom, truth: &mut Truth) -> Fault {
        let r = rng.random();
        if r < self.missing {
            const MISSING_COLS: [usize; 7] = [3, 4, 5, 6, 7, 8, 9];
            truth.missing_rows += 1;
            Fault::Missing(MISSING_COLS[rng.randbelow(MISSING_COLS.len() as u64) as usize])
        } else if r < self.missing_malformed {
            truth.malformed += 1;
            match rng.randbelow(3) {
                0 => Fault::CutShort,
                1 => Fault::AmountNa,
                _ => Fault::EventYesterday,
            }
        } else if r < self.missing_malformed_invalid {
            truth.invalid += 1;
            if rng.random() < 0.5 {
                Fault::NegativeAmount
            } else {
                Fault::Label7
            }
        } else {
            Fault::Clean
        }
    }
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

//! `tap`: sampled records flowing out of a step of a running job.
//!
//! With the live view on (`--http-addr`), the dataflow samples the records
//! leaving `parse`/`clean` (clean records), `rejected` (rejected lines with
//! their reason) and `score` (scored records): one in `every` per worker (by
//! count: deterministic, and cheap — a counter per record, a JSON rendering
//! per sample), into a bounded ring per step (the newest 1,000). `GET
//! /tap/<step>?after=N` returns the samples numbered above `N` as JSON lines;
//! `millrace tap TOPOLOGY STEP` polls it and prints them, like `vector tap`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// The steps that can be tapped.
pub const STEPS: [&str; 3] = ["clean", "rejected", "score"];

/// Samples kept per step.
const RING: usize = 1_000;

#[derive(Debug, Default)]
struct Ring {
    next: u64,
    lines: VecDeque<(u64, String)>,
}

/// Every step's ring of samples.
#[derive(Debug)]
pub struct Taps {
    every: u64,
    rings: Mutex<BTreeMap<&'static str, Ring>>,
}

impl Taps {
    /// Samples one record in `every`.
    pub fn new(every: u64) -> Taps {
        Taps {
            every: every.max(1),
            rings: Mutex::new(STEPS.iter().map(|s| (*s, Ring::default())).collect()),
        }
    }

    /// Whether the `n`-th record (counted by the caller) is a sample.
    #[inline]
    pub fn sampled(&self, n: u64) -> bool {
        n.is_multiple_of(self.every)
    }

    /// Keeps `json` as the newest sample of `step`.
    pub fn push(&self, step: &'static str, json: String) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let r = rings.entry(step).or_default();
        r.next += 1;
        let n = r.next;
        r.lines.push_back((n, json));
        if r.lines.len() > RING {
            r.lines.pop_front();
        }
    }

    /// Samples of `step` numbered above `after` (at most `limit`), as `(number, json)`.
    pub fn since(&self, step: &str, after: u64, limit: usize) -> Option<Vec<(u64, String)>> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let r = rings.get(step)?;
        Some(
            r.lines
                .iter()
                .filter(|(n, _)| *n > after)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_bounded_and_numbered() {
        let t = Taps::new(10);
        assert!(t.sampled(0) && !t.sampled(3) && t.sampled(20));
        for i in 0..1500 {
            t.push("score", format!("{{\"i\":{i}}}"));
        }
        let all = t.since("score", 0, 5000).unwrap();
        assert_eq!(all.len(), RING);
        assert_eq!(all[0].0, 501);
        assert_eq!(t.since("score", 1499, 10).unwrap().len(), 1);
        assert!(t.since("nope", 0, 1).is_none());
    }
}

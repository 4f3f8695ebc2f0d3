//! The ledger: where every input record ended up (records, not physical
//! lines: a CSV record whose quoted field holds newlines counts once).
//!
//! Every input line ends in exactly one of `clean`, `rejected` (by reason),
//! `duplicate` or — a line of the delayed-label source — `labels`. `parse` counts the lines it read and `clean` counts where they
//! went, each as a [`Tally`] at the line's epoch; the runtime sums tallies per
//! epoch across workers and checks [`LedgerCounts::balanced`] when the epoch
//! completes.

use serde::{Deserialize, Serialize};

use crate::record::Reason;

/// Counts of lines by outcome, for one epoch or a whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCounts {
    /// Lines read from the inputs.
    pub input: u64,
    /// Lines that became clean records.
    pub clean: u64,
    /// Lines dropped as exact duplicates of a recent line.
    pub duplicate: u64,
    /// Rejected lines, indexed like [`Reason::ALL`].
    pub rejected: [u64; Reason::ALL.len()],
    /// Lines of the label source that became labels (their fate: [`crate::labels::LabelCounts`]).
    #[serde(default)]
    pub labels: u64,
}

/// A partial ledger sent by one operator on one worker for one epoch.
pub type Tally = LedgerCounts;

impl LedgerCounts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &LedgerCounts) {
        self.input += other.input;
        self.clean += other.clean;
        self.duplicate += other.duplicate;
        self.labels += other.labels;
        for (a, b) in self.rejected.iter_mut().zip(other.rejected) {
            *a += b;
        }
    }

    /// Counts one rejected line.
    pub fn reject(&mut self, reason: Reason) {
        self.rejected[reason.index()] += 1;
    }

    /// All rejected lines.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Rejected because they could not be read.
    pub fn malformed(&self) -> u64 {
        Reason::ALL
            .iter()
            .filter(|r| r.is_malformed())
            .map(|r| self.rejected[r.index()])
            .sum()
    }

    /// Rejected because they broke a declared rule (range, vocabulary, label, lateness).
    pub fn invalid(&self) -> u64 {
        self.rejected_total() - self.malformed()
    }

    /// Whether every input line is accounted for: `input = clean + rejected + duplicate + labels`.
    pub fn balanced(&self) -> bool {
        self.input == self.clean + self.rejected_total() + self.duplicate + self.labels
    }

    /// Non-zero rejection counts by reason code.
    pub fn reasons(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reason::ALL
            .iter()
            .map(|r| (r.code(), self.rejected[r.index()]))
            .filter(|(_, n)| *n > 0)
    }
}

impl std::fmt::Display for LedgerCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "in {} = clean {} + rejected {} + duplicate {}",
            self.input,
            self.clean,
            self.rejected_total(),
            self.duplicate
        )?;
        if self.labels > 0 {
            write!(f, " + labels {}", self.labels)?;
        }
        if !self.balanced() {
            write!(f, " (UNBALANCED)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_and_split() {
        let mut a = LedgerCounts {
            input: 10,
            clean: 6,
            duplicate: 1,
            ..Default::default()
        };
        a.reject(Reason::BadNumber);
        a.reject(Reason::OutOfRange);
        assert!(!a.balanced());
        a.reject(Reason::Late);
        assert!(a.balanced());
        assert_eq!((a.malformed(), a.invalid()), (1, 2));
        let mut b = LedgerCounts::default();
        b.add(&a);
        b.add(&a);
        assert_eq!(b.input, 20);
        assert_eq!(
            b.reasons().collect::<Vec<_>>(),
            [("bad_number", 2), ("out_of_range", 2), ("late", 2)]
        );
        assert_eq!(b.to_string(), "in 20 = clean 12 + rejected 6 + duplicate 2");
    }
}

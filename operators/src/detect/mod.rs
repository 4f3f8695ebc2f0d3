//! Anomaly detectors: the algorithms behind the monitoring operators.
//!
//! Each detector is a small online state machine over one series of numbers
//! (a field, an aggregate per window, a model error): it takes one value at a
//! time, in order, and answers with an [`Assessment`] computed only from the
//! values up to and including that one — no look-ahead. They are plain data
//! (serializable for checkpoints) and free of timely, so the windowed
//! operators of the monitoring issue wrap them and tests can drive them alone.
//!
//! | detector | question | method |
//! |---|---|---|
//! | [`spike::SpikeDip`] | is this value far from the recent ones? | robust z-score against the median and MAD of a sliding window |
//! | [`change_point::PageHinkley`] | has the level shifted? | two-sided Page–Hinkley test (CUSUM of deviations from the running mean) |
//! | [`adwin::Adwin`] | has the mean of a stream (e.g. model error) changed? | ADWIN: adaptive window cut where two sub-windows' means differ beyond a Hoeffding bound |
//! | [`quality::QualityDrift`] | has the model stopped telling the labels apart (concept drift)? | exact ROC AUC per block of labelled records, robust z against earlier blocks, one-sided CUSUM |
//! | [`drift`] | has a distribution shifted from its reference? | population stability index and the two-sample Kolmogorov–Smirnov statistic |
//! | [`gaussian::WindowedGaussian`] | is this value improbable under the recent mean and spread? | normal tail probability over a sliding window (the classic baseline) |
//! | [`seasonal::Seasonal`] | what should this value be at this time of day and week? | robust additive level + seasonal profiles learned online, the season found by their errors |
//! | [`series::SeriesDetector`] | is this value of a series anomalous? | level, change, variance and flat-line questions on the seasonal residual, calibrated per series, weighted to onsets |
//! | [`likelihood::Likelihood`] | how unusual is this raw score, given the recent ones? | anomaly likelihood: tail of the short average of scores under their long-run distribution |
//! | [`hst::HalfSpaceTrees`] | is this vector in a region of space where few have been? | half-space trees (mass of the region in the previous window) |
//!
//! Scores are in `[0, 1]` so detectors can be combined and thresholded the
//! same way; each detector also says whether its own threshold fired.

pub mod adwin;
pub mod change_point;
pub mod corpus;
pub mod drift;
pub mod gaussian;
pub mod hst;
pub mod likelihood;
pub mod quality;
pub mod scoring;
pub mod seasonal;
pub mod series;
pub mod spike;

use serde::{Deserialize, Serialize};

/// A detector's answer for one value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// How anomalous the value is, in `[0, 1]` (0 while warming up).
    pub score: f64,
    /// Whether the detector's threshold fired on this value.
    pub anomalous: bool,
}

impl Assessment {
    /// Nothing to say (warming up).
    pub const QUIET: Assessment = Assessment {
        score: 0.0,
        anomalous: false,
    };
}

/// Maps a non-negative statistic to `[0, 1)`: half at `threshold`, approaching 1 beyond it.
// `!(threshold > 0.0)` on purpose: a NaN threshold counts as zero.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub fn squash(statistic: f64, threshold: f64) -> f64 {
    if !statistic.is_finite() || statistic <= 0.0 {
        return if statistic.is_infinite() { 1.0 } else { 0.0 };
    }
    if !(threshold > 0.0) {
        return 1.0; // Any positive value is past a zero threshold.
    }
    let x = statistic / threshold;
    x * x / (1.0 + x * x)
}

#[cfg(test)]
pub(crate) mod testing {
    /// A deterministic normal-ish noise source (sum of uniforms), for textbook series.
    pub struct Noise(u64);

    impl Noise {
        pub fn new(seed: u64) -> Self {
            Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }

        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Approximately standard normal (Irwin–Hall with 12 terms).
        pub fn normal(&mut self) -> f64 {
            (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
        }
    }
}

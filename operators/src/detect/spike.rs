//! Spike and dip detection: a robust z-score against a sliding window.
//!
//! The value is compared with the median of the previous `window` values,
//! scaled by their median absolute deviation (×1.4826, so it estimates a
//! standard deviation under normal noise). Median and MAD are not moved by
//! the spikes they are looking for, unlike mean and standard deviation. A
//! value fires when `|z| > threshold` (in the direction asked for), the
//! spirit of Azure Stream Analytics' `AnomalyDetection_SpikeAndDip`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{squash, Assessment};

/// Which excursions count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Spikes and dips.
    #[default]
    Both,
    /// Only values far above.
    Spikes,
    /// Only values far below.
    Dips,
}

/// Robust z-score spike/dip detector over a sliding window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpikeDip {
    window: usize,
    threshold: f64,
    direction: Direction,
    history: VecDeque<f64>,
}

impl SpikeDip {
    /// A detector over the last `window` values, firing beyond `threshold` robust standard deviations.
    pub fn new(window: usize, threshold: f64, direction: Direction) -> Self {
        SpikeDip {
            window: window.max(3),
            threshold,
            direction,
            history: VecDeque::new(),
        }
    }

    /// The robust z-score of `x` against the window, if the window is warm.
    pub fn z(&self, x: f64) -> Option<f64> {
        if self.history.len() < self.window.clamp(3, 10) {
            return None;
        }
        let mut v: Vec<f64> = self.history.iter().copied().collect();
        let median = median(&mut v);
        let mut dev: Vec<f64> = v.iter().map(|y| (y - median).abs()).collect();
        let mad = median_of(&mut dev) * 1.4826;
        // A nearly flat window (a steady record rate, say) would make any
        // wobble look infinite: the scale is at least 1% of the level.
        let scale = mad.max(median.abs() * 0.01).max(1e-12);
        Some((x - median) / scale)
    }

    /// Scores `x`, then adds it to the window.
    pub fn update(&mut self, x: f64) -> Assessment {
        let out = match self.z(x) {
            None => Assessment::QUIET,
            Some(z) => {
                let signed = match self.direction {
                    Direction::Both => z.abs(),
                    Direction::Spikes => z.max(0.0),
                    Direction::Dips => (-z).max(0.0),
                };
                Assessment {
                    score: squash(signed, self.threshold),
                    anomalous: signed > self.threshold,
                }
            }
        };
        self.history.push_back(x);
        if self.history.len() > self.window {
            self.history.pop_front();
        }
        out
    }
}

fn median(v: &mut [f64]) -> f64 {
    median_of(v)
}

fn median_of(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    #[test]
    fn a_single_spike_fires_once_and_noise_does_not() {
        let mut d = SpikeDip::new(60, 5.0, Direction::Both);
        let mut noise = Noise::new(1);
        let mut fired = Vec::new();
        for i in 0..500 {
            let x = 10.0 + noise.normal() + if i == 300 { 12.0 } else { 0.0 };
            if d.update(x).anomalous {
                fired.push(i);
            }
        }
        assert_eq!(fired, [300]);
    }

    #[test]
    fn white_noise_stays_quiet() {
        let mut d = SpikeDip::new(100, 5.0, Direction::Both);
        let mut noise = Noise::new(2);
        let alarms = (0..20_000)
            .filter(|_| d.update(noise.normal()).anomalous)
            .count();
        assert!(alarms <= 2, "{alarms} false alarms in 20,000 normal values");
    }

    #[test]
    fn direction_selects_spikes_or_dips() {
        let mut spikes = SpikeDip::new(30, 4.0, Direction::Spikes);
        let mut dips = SpikeDip::new(30, 4.0, Direction::Dips);
        let mut noise = Noise::new(3);
        for _ in 0..100 {
            let x = noise.normal();
            spikes.update(x);
            dips.update(x);
        }
        assert!(!spikes.update(-20.0).anomalous && dips.update(-20.0).anomalous);
    }

    #[test]
    fn a_step_fires_at_the_step_then_becomes_the_new_normal() {
        let mut d = SpikeDip::new(40, 5.0, Direction::Both);
        let mut noise = Noise::new(4);
        let fired: Vec<usize> = (0..400)
            .filter(|&i| {
                d.update(noise.normal() + if i >= 200 { 15.0 } else { 0.0 })
                    .anomalous
            })
            .collect();
        assert!(fired.first() == Some(&200), "{fired:?}");
        assert!(
            fired.iter().all(|&i| i < 200 + 25),
            "once half the window is past the step it is normal again: {fired:?}"
        );
    }
}

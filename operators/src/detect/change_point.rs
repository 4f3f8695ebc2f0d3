//! Change-point detection: the two-sided Page–Hinkley test.
//!
//! It accumulates deviations of each value from the running mean, less a
//! tolerance `delta`; a level shift makes the cumulative sum drift away from
//! its running minimum (up-shift) or maximum (down-shift), and the test fires
//! when that distance exceeds `lambda`. After firing it restarts, so the new
//! level becomes the reference: the spirit of Azure Stream Analytics'
//! `AnomalyDetection_ChangePoint`, with the classic, well-understood
//! statistic. To be scale-free, deviations are measured in units of the
//! running standard deviation during warm-up.

use serde::{Deserialize, Serialize};

use super::{squash, Assessment};

/// Two-sided Page–Hinkley change detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    delta: f64,
    lambda: f64,
    warmup: u64,
    n: u64,
    mean: f64,
    m2: f64,
    up: f64,
    up_min: f64,
    down: f64,
    down_max: f64,
}

impl PageHinkley {
    /// `delta`: tolerated drift per value and `lambda`: alarm threshold, both in
    /// standard deviations of the series (estimated over the first `warmup` values).
    pub fn new(delta: f64, lambda: f64, warmup: u64) -> Self {
        PageHinkley {
            delta,
            lambda,
            warmup: warmup.max(5),
            n: 0,
            mean: 0.0,
            m2: 0.0,
            up: 0.0,
            up_min: 0.0,
            down: 0.0,
            down_max: 0.0,
        }
    }

    fn reset(&mut self) {
        *self = PageHinkley::new(self.delta, self.lambda, self.warmup);
    }

    /// Takes `x`; says whether a change point is detected at it.
    pub fn update(&mut self, x: f64) -> Assessment {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        if self.n <= self.warmup {
            return Assessment::QUIET;
        }
        let sd = (self.m2 / (self.n - 1) as f64).sqrt().max(1e-12);
        let z = (x - self.mean) / sd;
        self.up += z - self.delta;
        self.up_min = self.up_min.min(self.up);
        self.down += z + self.delta;
        self.down_max = self.down_max.max(self.down);
        let stat = (self.up - self.up_min).max(self.down_max - self.down);
        let fired = stat > self.lambda;
        let out = Assessment {
            score: squash(stat, self.lambda),
            anomalous: fired,
        };
        if fired {
            self.reset();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    fn run(series: impl Iterator<Item = f64>) -> Vec<usize> {
        let mut d = PageHinkley::new(0.5, 25.0, 50);
        series
            .enumerate()
            .filter(|(_, x)| d.update(*x).anomalous)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_step_change_is_found_soon_after_it_happens() {
        let mut noise = Noise::new(5);
        let fired = run((0..2000).map(|i| noise.normal() + if i >= 1000 { 2.0 } else { 0.0 }));
        let first = *fired.first().expect("the step is detected");
        assert!(
            (1000..1040).contains(&first),
            "detected at {first}: {fired:?}"
        );
        let mut noise = Noise::new(6);
        let fired = run((0..2000).map(|i| noise.normal() - if i >= 1000 { 2.0 } else { 0.0 }));
        assert!(
            fired.first().is_some_and(|f| (1000..1040).contains(f)),
            "down-steps too: {fired:?}"
        );
    }

    #[test]
    fn white_noise_and_a_single_spike_do_not_fire() {
        let mut noise = Noise::new(7);
        assert!(run((0..20_000).map(|_| noise.normal())).is_empty());
        let mut noise = Noise::new(8);
        assert!(
            run((0..2000).map(|i| noise.normal() + if i == 900 { 8.0 } else { 0.0 })).is_empty()
        );
    }

    #[test]
    fn a_slow_ramp_is_found_eventually() {
        let mut noise = Noise::new(9);
        let fired = run((0..4000).map(|i| {
            noise.normal()
                + if i > 1000 {
                    (i - 1000) as f64 * 0.002
                } else {
                    0.0
                }
        }));
        assert!(
            fired.first().is_some_and(|f| (1000..3000).contains(f)),
            "{fired:?}"
        );
    }
}

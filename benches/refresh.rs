//! The cost of a model refresh as the model grows: FTRL-Proximal over 10
//! dense features and a hashed categorical of 1k to 1M buckets, two workers.
//!
//! `cargo bench --bench refresh` — for each size, two `Scorer`s (the state of
//! `score` on two workers) each learn 5,000 records whose hashed slot is drawn
//! from the whole space, then run one refresh as the dataflow does: both
//! publish their update, both merge both updates. It prints the time of the
//! refresh per worker (publish + merge), the bytes of the updates exchanged
//! (bincode, as timely sends them between processes), the learning time of
//! the same records for comparison (a refresh every 5,000 records costs
//! refresh / (learn + refresh) of a worker's time), and the model's size.

use std::sync::Arc;
use std::time::Instant;

use millrace_operators::featurize::{FeatureSpec, Features};
use millrace_operators::learn::logistic::{ModelKind, ModelSpec};
use millrace_operators::learn::EvalPartial;
use millrace_operators::record::{Example, Pos, Record};
use millrace_operators::schema::{Schema, SchemaSpec};
use millrace_operators::score::Scorer;

fn features(buckets: u32) -> Features {
    let spec: SchemaSpec = serde_json::from_value(serde_json::json!({
        "key": "k", "event_time": {"field": "t"}, "label": {"field": "y"},
        "numeric": [{"names": ["x0","x1","x2","x3","x4","x5","x6","x7","x8","x9"]}],
        "categorical": [{"name": "item", "hash_buckets": buckets}]
    }))
    .unwrap();
    let schema = Arc::new(Schema::new(&spec).unwrap());
    let mut f: Vec<FeatureSpec> = (0..10)
        .map(|i| {
            serde_json::from_value(serde_json::json!({"kind": "value", "field": format!("x{i}")}))
                .unwrap()
        })
        .collect();
    f.push(serde_json::from_value(serde_json::json!({"kind": "hashed", "field": "item"})).unwrap());
    Features::new(schema, &f).unwrap()
}

fn example(rng: &mut u64, buckets: u32) -> Example {
    let mut u = || {
        *rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let dense: Vec<f64> = (0..10).map(|_| u() * 2.0 - 1.0).collect();
    let slot = (u() * f64::from(buckets)) as u32;
    let y = f64::from(dense[0] + dense[1] > 0.0);
    let record = Record {
        pos: Pos { input: 0, line: 0 },
        source: "s".into(),
        line_hash: 0,
        key: "k".into(),
        key_hash: 0,
        id: None,
        event_time: 0,
        label: Some(y),
        nums: dense.clone(),
        missing: 0,
        cats: vec![String::new()],
        arrived_ms: 0,
    };
    Example {
        record,
        dense,
        sparse: vec![slot],
    }
}

fn main() {
    let spec = ModelSpec {
        kind: ModelKind::Ftrl,
        l1: 0.1,
        refresh_records: Some(1),
        ..Default::default()
    };
    println!("refresh bench: FTRL-Proximal, 2 workers, 5,000 records per worker between refreshes");
    println!(
        "{:>10} {:>14} {:>14} {:>16} {:>14} {:>10}",
        "weights", "learn ms", "refresh ms", "update bytes", "cost share", "nonzero"
    );
    for buckets in [1_000u32, 10_000, 100_000, 1_000_000] {
        let f = features(buckets);
        let mut workers: Vec<Scorer> = (0..2).map(|_| Scorer::new(&spec, &f)).collect();
        for w in &mut workers {
            w.enable_refresh(&spec, false);
        }
        let mut rng = 42u64;
        let mut eval = EvalPartial::default();
        let t = Instant::now();
        for w in &mut workers {
            for _ in 0..5_000 {
                w.apply(example(&mut rng, buckets), &mut eval);
            }
        }
        let learn = t.elapsed().as_secs_f64() / 2.0;
        let t = Instant::now();
        let deltas: Vec<_> = workers
            .iter_mut()
            .enumerate()
            .map(|(i, w)| w.publish(i, 0, 2).expect("due"))
            .collect();
        for (i, w) in workers.iter_mut().enumerate() {
            w.merge(i, &deltas);
        }
        let refresh = t.elapsed().as_secs_f64() / 2.0;
        let bytes: usize = deltas
            .iter()
            .map(|d| bincode::serialize(d).unwrap().len())
            .sum();
        let nonzero = match &workers[0].model {
            millrace_operators::learn::Learner::Ftrl(m) => m.nonzero(),
            _ => 0,
        };
        println!(
            "{:>10} {:>14.2} {:>14.2} {:>16} {:>13.1}% {:>10}",
            buckets as usize + 11,
            learn * 1e3,
            refresh * 1e3,
            bytes,
            100.0 * refresh / (learn + refresh),
            nonzero
        );
        assert_eq!(
            workers[0].model, workers[1].model,
            "both workers hold the same model"
        );
    }
}

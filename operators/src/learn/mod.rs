//! Online learning: the algorithms behind `score`.
//!
//! Everything here is plain data plus arithmetic, serializable so a
//! checkpoint can carry it, and free of timely so it can be tested alone.

pub mod eval;
pub mod logistic;
pub mod scaler;

pub use eval::EvalPartial;
pub use logistic::LogisticRegression;
pub use scaler::StandardScaler;

//! Faults, and the named points where tests crash or hold a run.
//!
//! A [`Fault`] is the run's one stop signal: any operator on any worker
//! raises it with a sentence, every worker stops when it sees one, and the
//! first message is what the run reports. The macros mark places where the
//! recovery tests inject a crash (`crash_point!`) or hold the run in a known
//! state (`wait_point!`); both compile to nothing without the `failpoints`
//! feature.

use std::sync::{Arc, Mutex};
#[cfg(feature = "failpoints")]
use std::time::Duration;

use tracing::error;

/// A named point where the recovery tests inject a crash (`return`: the process
/// aborts on the spot, like `kill -9`) or a delay (`sleep(ms)`). Compiled only
/// with `--features failpoints`; configured with `FAILPOINTS=name=action;...`.
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        {
            let _: Option<()> = fail::eval($name, |_| {
                eprintln!("millrace: crash point `{}` hit, aborting", $name);
                std::process::abort()
            });
        }
    }};
}

/// A named point where a test holds the run (`FAILPOINTS=name=return(PATH)`):
/// the process writes its pid to `PATH.reached`, then waits until `PATH`
/// exists. Lets a test act while a job is provably mid-run (holding the lake,
/// an epoch committed) without guessing at timing. Compiled only with
/// `--features failpoints`.
#[macro_export]
macro_rules! wait_point {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        {
            let _: Option<()> = fail::eval($name, |gate| {
                if let Some(gate) = gate {
                    $crate::core::fault::wait_at_gate($name, std::path::Path::new(&gate));
                }
            });
        }
    }};
}

/// Announces `PATH.reached` and blocks until `gate` exists (see [`wait_point!`]).
#[cfg(feature = "failpoints")]
pub fn wait_at_gate(name: &str, gate: &std::path::Path) {
    if gate.exists() {
        return;
    }
    let reached = gate.with_extension("reached");
    eprintln!(
        "millrace: wait point `{name}` reached, waiting for {}",
        gate.display()
    );
    let _ = std::fs::write(&reached, std::process::id().to_string());
    while !gate.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fault raised by any operator on any worker; every worker stops when it sees one.
#[derive(Clone, Debug, Default)]
pub struct Fault(Arc<Mutex<Option<String>>>);

impl Fault {
    /// Records the first fault (later ones are logged only).
    pub fn raise(&self, message: String) {
        error!(%message, "Stopping the run.");
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(message);
        }
    }

    /// Whether a fault has been raised.
    pub fn is_raised(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The first fault's message.
    pub fn message(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

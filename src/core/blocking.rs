//! Async calls from blocking threads: one small tokio runtime for the engine.
//!
//! The engine's threads are timely workers, not async tasks, but some clients
//! are async (`object_store`, Kafka's admin calls). [`block`] spawns a future
//! on this runtime and waits on a channel for its output, which works from
//! any thread — also from inside another runtime, where `Runtime::block_on`
//! would panic.

use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("millrace-io")
            .enable_all()
            .build()
            .expect("the I/O runtime starts")
    })
}

/// Runs `f` on the engine's runtime and waits for its output.
pub fn block<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("the I/O runtime completes its tasks")
}

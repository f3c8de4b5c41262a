//! The session workers: N threads, each running its own single-threaded
//! tokio runtime (its own epoll instance and timer wheel).
//!
//! The accept loops hand each accepted connection to the next worker in
//! turn ([`Workers::next`]); from then on the session's sockets, timers and
//! wake-ups stay on that one thread. Compared with one work-stealing
//! runtime this removes the cross-thread wake-ups (futex calls and context
//! switches) that a request/response relay otherwise pays on almost every
//! packet, the same thread-per-core shape HAProxy and pingora use.
//!
//! Dropping [`Workers`] stops every runtime (tasks still running on them
//! are dropped) and joins the threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A fixed pool of single-threaded runtimes.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` worker threads (at least one), named `carbide-worker-i`.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let t = std::thread::Builder::new()
                .name(format!("carbide-worker-{i}"))
                .spawn(move || {
                    let _ = rt.block_on(stop_rx);
                })?;
            threads.push((stop_tx, t));
        }
        Ok(Workers {
            handles,
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: a pool has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtime the next session goes to (round robin).
    pub fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let threads: Vec<JoinHandle<()>> = self
            .threads
            .drain(..)
            .map(|(stop, t)| {
                let _ = stop.send(());
                t
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// The default worker count: one per CPU the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_spread_round_robin_and_run_on_worker_threads() {
        let w = Workers::start(2).expect("workers");
        assert_eq!(w.len(), 2);
        let mut names = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = std::sync::mpsc::channel();
            w.next().spawn(async move {
                let name = std::thread::current().name().map(str::to_string);
                let _ = tx.send(name);
            });
            names.push(rx.recv().expect("task ran"));
        }
        let names: Vec<String> = names.into_iter().map(Option::unwrap_or_default).collect();
        assert_eq!(
            names,
            [
                "carbide-worker-0",
                "carbide-worker-1",
                "carbide-worker-0",
                "carbide-worker-1"
            ]
        );
        drop(w); // joins the threads
    }
}

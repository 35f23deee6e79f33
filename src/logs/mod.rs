//! Log lines: how they look ([`LineFormat`]), and where they go. They go to stderr, written
//! by a thread of its own so that no request waits on a write(2). Lines are appended to a
//! shared buffer; the log thread, woken by the first line since its last write, lets lines
//! gather for [`PERIOD`] (less when the buffer passes [`HIGH_WATER`]) and writes them in one
//! write. An idle server's log thread sleeps.
//!
//! Why not `tracing_appender::non_blocking`: it hands each line over a channel and wakes the
//! writer thread for it when the thread is idle, which it mostly is between two lines: a
//! futex wake per request on the request path (half of the request workers' wake-ups in a
//! profile of the mint path, BENCHMARKS.md), and a write(2) per line on the log thread. Here
//! a request only takes an uncontended lock and copies its line.
//!
//! Like the appender's default, it drops lines rather than grow without bound when stderr
//! stops taking them (a full pipe nobody reads): past [`MAX_BUFFERED`] bytes waiting, lines
//! are counted, and the count is written once stderr moves again.

mod line;

pub use line::LineFormat;

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line waits at most before it is written.
pub const PERIOD: Duration = Duration::from_millis(5);
/// Buffered bytes that wake the log thread before its period is up.
const HIGH_WATER: usize = 64 * 1024;
/// Buffered bytes past which new lines are dropped (and counted).
const MAX_BUFFERED: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    dropped: u64,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` handed to `tracing_subscriber`: each event's line is one `write`.
#[derive(Clone)]
pub struct LogWriter(Arc<Shared>);

/// Writes what is buffered and stops the log thread when dropped (at the end of `main`).
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the log thread writing to `out`.
pub fn spawn(out: impl Write + Send + 'static) -> (LogWriter, FlushOnDrop) {
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || run(&shared, out))
            .expect("the log thread starts")
    };
    (
        LogWriter(shared.clone()),
        FlushOnDrop {
            shared,
            thread: Some(thread),
        },
    )
}

fn run(shared: &Shared, mut out: impl Write) {
    let mut writing = Vec::new();
    loop {
        let (dropped, closing) = {
            let mut pending = shared.lock();
            // Idle: sleep until a line comes (its writer wakes this thread) or the end.
            while pending.lines.is_empty() && !pending.closing {
                pending = shared.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            // Then let the lines of the next few milliseconds gather.
            if pending.lines.len() < HIGH_WATER && !pending.closing {
                pending = shared
                    .wake
                    .wait_timeout(pending, PERIOD)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut pending.lines, &mut writing);
            (std::mem::take(&mut pending.dropped), pending.closing)
        };
        if !writing.is_empty() {
            // Nowhere to report a failed write of the logs themselves.
            let _ = out.write_all(&writing);
            writing.clear();
            // A burst's buffer is not kept for good.
            writing.shrink_to(HIGH_WATER);
        }
        if dropped > 0 {
            let _ = writeln!(
                out,
                "{dropped} log lines dropped: stderr was not taking them"
            );
        }
        let _ = out.flush();
        if closing {
            return;
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.0.lock();
        if pending.lines.len() + line.len() > MAX_BUFFERED {
            pending.dropped += 1;
        } else {
            // The first line since the last write wakes an idle log thread (at most one
            // wake-up per period under load); a full buffer cuts its gathering short.
            let first = pending.lines.is_empty();
            pending.lines.extend_from_slice(line);
            if first || pending.lines.len() >= HIGH_WATER {
                self.0.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back (also the formatter's tests').
    #[derive(Clone, Default)]
    pub(super) struct Sink(pub(super) Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_within_the_period_and_all_at_exit() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone());
        let mut w = writer.clone();
        w.write_all(b"one\n").unwrap();
        w.write_all(b"two\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while sink.0.lock().unwrap().as_slice() != b"one\ntwo\n" {
            assert!(std::time::Instant::now() < deadline, "not written in time");
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 0..1000 {
            writeln!(w, "line {i}").unwrap();
        }
        drop(guard);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 1002);
        assert_eq!(lines[1001], "line 999");
    }

    #[test]
    fn a_stalled_output_drops_lines_and_says_how_many() {
        // An output that blocks until released, like a full pipe.
        struct Stalled(Arc<(Mutex<bool>, Condvar)>, Sink);
        impl Write for Stalled {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                self.1.write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let (writer, guard) = spawn(Stalled(gate.clone(), sink.clone()));
        let mut w = writer.clone();
        let line = vec![b'x'; 1023];
        // More than the buffer and the chunk the thread took can hold while it is stalled.
        for _ in 0..(3 * MAX_BUFFERED / 1024) {
            w.write_all(&line).unwrap();
            w.write_all(b"\n").unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(written.len() <= 2 * MAX_BUFFERED + 100, "{}", written.len());
        assert!(written.contains("log lines dropped: stderr was not taking them"));
    }
}

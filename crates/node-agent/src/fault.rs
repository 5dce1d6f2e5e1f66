//! Crash points for the crash-safety tests: every file write, removal and containerd restart
//! of a run passes one. In a build with the `fault-injection` feature (test builds only; the
//! product and its images never enable it), a point can end the process on the spot
//! (`SANDBOX_FAULT_CRASH_AT=<n>`: the n-th point aborts, no destructor runs, as under
//! SIGKILL), the process can be sent SIGTERM at the first point named
//! `SANDBOX_FAULT_TERM_AT` (as a kubelet stops a pod at any moment), and every point is
//! appended to `SANDBOX_FAULT_LOG`. Unit tests of this crate can
//! also run a closure at each point on their own thread ([`set_hook`]), e.g. to change a file
//! between our read and our write. Without the feature a point compiles to nothing.

/// Passes the crash point `what` (e.g. `rename /host/etc/containerd/config.toml`).
#[cfg(any(test, feature = "fault-injection"))]
pub fn point(what: &str, path: &std::path::Path) {
    enabled::point(what, path);
}

/// Passes the crash point `what` (nothing to do without the `fault-injection` feature).
#[cfg(not(any(test, feature = "fault-injection")))]
#[inline(always)]
pub fn point(_what: &str, _path: &std::path::Path) {}

#[cfg(any(test, feature = "fault-injection"))]
pub use enabled::set_hook;

#[cfg(any(test, feature = "fault-injection"))]
mod enabled {
    use std::cell::RefCell;
    use std::io::Write;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// Points passed so far by this process.
    static PASSED: AtomicU32 = AtomicU32::new(0);
    /// Whether `SANDBOX_FAULT_TERM_AT` has fired.
    static TERMED: AtomicBool = AtomicBool::new(false);

    type Hook = Box<dyn FnMut(&str, &Path)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Runs `hook` at every point this thread passes (None removes it).
    pub fn set_hook(hook: Option<Hook>) {
        HOOK.with(|h| *h.borrow_mut() = hook);
    }

    pub fn point(what: &str, path: &Path) {
        let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
        HOOK.with(|h| {
            if let Some(hook) = h.borrow_mut().as_mut() {
                hook(what, path);
            }
        });
        let line = format!("{n} {what} {}\n", path.display());
        if let Some(log) = std::env::var_os("SANDBOX_FAULT_LOG")
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
        {
            let _ = file.write_all(line.as_bytes());
            let _ = file.sync_all();
        }
        let crash_at = std::env::var("SANDBOX_FAULT_CRASH_AT")
            .ok()
            .and_then(|v| v.parse::<u32>().ok());
        if crash_at == Some(n) {
            eprintln!("fault injection: crashing at point {line}");
            std::process::abort();
        }
        if std::env::var("SANDBOX_FAULT_TERM_AT").is_ok_and(|at| at == what)
            && !TERMED.swap(true, Ordering::SeqCst)
        {
            eprintln!("fault injection: SIGTERM at point {line}");
            // Delivered as from outside; the signal handler runs while this run goes on.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status();
        }
    }
}

//! The host lock: two agents (an old and a new pod during a rollout, or an installer and a
//! cleanup pod) never edit containerd's configuration at the same time.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the host lock {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another agent holds the host lock {path} for more than {seconds} s")]
    Timeout { path: PathBuf, seconds: u64 },
}

/// A held lock; released on drop (and by the kernel if the agent dies).
#[derive(Debug)]
pub struct HostLock {
    _file: File,
}

impl HostLock {
    /// Takes the exclusive lock at `path`, creating the file and its folder, waiting at most
    /// `timeout` for another holder.
    pub async fn acquire(path: &Path, timeout: Duration) -> Result<Self, LockError> {
        let open_err = |source| LockError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(open_err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(open_err)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(HostLock { _file: file }),
                Err(TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Timeout {
                        path: path.to_path_buf(),
                        seconds: timeout.as_secs(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(open_err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_and_times_out_then_gets_it_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/lock");
        let first = HostLock::acquire(&path, Duration::from_secs(1))
            .await
            .unwrap();
        let err = HostLock::acquire(&path, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        drop(first);
        HostLock::acquire(&path, Duration::from_millis(300))
            .await
            .unwrap();
    }
}

//! Durable persistence of [`DesiredState`] in the state directory: a snapshot plus a
//! journal of publication changes.
//!
//! Layout of the directory:
//! - `lock`: holds an exclusive `flock(2)` for as long as the daemon runs, and its pid so
//!   that a second daemon can say who holds it. flock locks die with the process, so a
//!   `kill -9` never leaves a stale lock behind.
//! - `state.json`: the snapshot: the desired state plus `journal_seq`, the number of the
//!   last journal line it already includes. It is replaced by writing `state.json.tmp`,
//!   fsyncing it, renaming it over `state.json` and fsyncing the directory, so after a
//!   crash at any point the file is either the old or the new snapshot, never a mix.
//! - `journal.jsonl`: publish and unpublish changes made since the snapshot, one
//!   numbered line each, appended before the change is reported done (see [`Delta`], and
//!   the `journal` module for why the line is not fdatasynced). Rewriting the whole
//!   state costs O(publications) per port; a line costs one small write.
//!
//! The state is the snapshot with the journal lines numbered above `journal_seq` applied
//! in order. Line numbers only grow, and a snapshot records the highest number handed
//! out so far, so a crash at any point leaves a readable directory and no line is
//! applied twice:
//! - during an append: the torn last line is ignored at load. The change was not
//!   reported done, and the kernel side is brought back in line by reconciliation.
//! - during a snapshot, before the rename: the old snapshot and the whole journal.
//! - after the rename, before the journal is emptied: every line left is at or below the
//!   new `journal_seq` and is skipped.
//! - a power cut: the snapshot is synced; journal lines are not, so they may be lost or
//!   read back as zeros, and replay stops at the first damaged line. Nothing is lost
//!   that matters: every endpoint's namespace went with the reboot, and reconciliation
//!   forgets those endpoints with their publications.
//!
//! Other changes (networks, endpoints, reconciliation) write a snapshot, which empties
//! the journal. Once the journal holds max(1024, publications) lines a compaction is due
//! ([`StateStore::compaction_due`]): the daemon writes the snapshot when changes pause.
//! Under changes that never pause, the change that finds the journal four times that
//! long is written as a snapshot itself, so the snapshot's O(n) cost comes at most once
//! every n changes. A change is also written as a snapshot when the journal holds lines
//! from a previous run (possibly a torn one), so that nothing is ever appended after a
//! torn line: after a restart the first save compacts (the daemon's reconciliation does
//! it at every start).

use std::{
    fs::{self, DirBuilder, File, OpenOptions, TryLockError},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    StateError,
    journal::{self, Delta, Journal},
};
use crate::model::DesiredState;

const LOCK_FILE: &str = "lock";
const STATE_FILE: &str = "state.json";
const TMP_FILE: &str = "state.json.tmp";
const JOURNAL_FILE: &str = "journal.jsonl";

/// The journal may grow to this many lines even when there are fewer publications.
const COMPACT_MIN_ENTRIES: usize = 1024;
/// A journal this many times longer than due is compacted by the next change itself.
pub const COMPACT_FORCE_FACTOR: usize = 4;

/// Journal lines after which a compaction is due.
fn due_at(state: &DesiredState) -> usize {
    state.publications.len().max(COMPACT_MIN_ENTRIES)
}

/// The state directory: a snapshot written atomically, a journal of publication changes
/// since, and a lock that keeps a second daemon out.
pub struct StateStore {
    dir: PathBuf,
    journal: Journal,
    /// Held open for the lifetime of the store: closing it releases the flock.
    _lock: File,
}

/// `state.json` as written: the state's own fields, plus `journal_seq`.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    journal_seq: u64,
    #[serde(flatten)]
    state: &'a DesiredState,
}

/// `state.json` as read. A file from before the journal has no `journal_seq`.
#[derive(Deserialize)]
struct SnapshotIn {
    #[serde(default)]
    journal_seq: u64,
    #[serde(flatten)]
    state: DesiredState,
}

fn io_err(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl StateStore {
    /// Create the directory if needed and take the lock.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        // 0700: the state names every namespace and address; only root needs to read it.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_err(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                // Best effort: the holder may be between truncate and write.
                let _ = lock.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(StateError::Locked {
                    path: dir.display().to_string(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(&lock_path, e)),
        }
        lock.set_len(0)
            .and_then(|()| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(lock, "{}", std::process::id()))
            .and_then(|()| lock.sync_all())
            .map_err(|e| io_err(&lock_path, e))?;
        // A leftover temp file is an interrupted save; state.json is still the truth.
        let tmp = dir.join(TMP_FILE);
        match fs::remove_file(&tmp) {
            Ok(()) => tracing::warn!(path = %tmp.display(), "removed an interrupted state save"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&tmp, e)),
        }
        Ok(StateStore {
            dir: dir.to_path_buf(),
            journal: Journal::open(dir, JOURNAL_FILE)?,
            _lock: lock,
        })
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The saved state (the snapshot with the journal replayed), or `None` on first
    /// start.
    pub fn load(&self) -> Result<Option<DesiredState>, StateError> {
        let path = self.dir.join(STATE_FILE);
        let snapshot = match fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice::<SnapshotIn>(&bytes).map_err(|e| {
                StateError::Corrupt {
                    path: path.display().to_string(),
                    detail: format!(
                        "{e}; fix or move the file away (netd then starts with an empty state)"
                    ),
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&path, e)),
        };
        let found = snapshot.is_some();
        let (after_seq, mut state) =
            snapshot.map_or((0, DesiredState::default()), |s| (s.journal_seq, s.state));
        let replayed = journal::replay(self.journal.path(), after_seq, &mut state)?;
        if replayed > 0 {
            tracing::info!(path = %self.journal.path().display(), lines = replayed, "replayed the state journal");
        }
        Ok((found || replayed > 0).then_some(state))
    }

    /// Whether the journal should be folded into a snapshot: it holds max(1024,
    /// publications) lines, or lines of an earlier run. The daemon does it once changes
    /// pause ([`StateStore::save`]), so that the O(state) write lands between requests
    /// rather than on one; [`StateStore::record`] does it inline only when the journal
    /// reaches [`COMPACT_FORCE_FACTOR`] times that, under changes that never pause.
    pub fn compaction_due(&self, state: &DesiredState) -> bool {
        self.journal.dirty() || self.journal.entries() >= due_at(state)
    }

    /// Persist one publication change to `state`, the state it applies to (which the
    /// caller then updates with [`Delta::apply`]). Usually one journal line; a snapshot
    /// when the journal is due for compaction.
    pub fn record(&mut self, delta: &Delta, state: &DesiredState) -> Result<(), StateError> {
        if self.journal.dirty() || self.journal.entries() >= COMPACT_FORCE_FACTOR * due_at(state) {
            let mut next = state.clone();
            delta.apply(&mut next);
            return self.save(&next);
        }
        self.journal.append(delta)
    }

    /// Write `state` as the new snapshot atomically (write, fsync, rename, fsync the
    /// directory), then empty the journal it now includes.
    pub fn save(&mut self, state: &DesiredState) -> Result<(), StateError> {
        let tmp = self.dir.join(TMP_FILE);
        let path = self.dir.join(STATE_FILE);
        let snapshot = SnapshotOut {
            journal_seq: self.journal.last_seq(),
            state,
        };
        // Compact: with thousands of publications indentation doubles the bytes to
        // serialize and fsync.
        let mut bytes = serde_json::to_vec(&snapshot).map_err(|e| StateError::Corrupt {
            path: path.display().to_string(),
            detail: format!("cannot serialize the state: {e}"),
        })?;
        bytes.push(b'\n');
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        // The rename is only durable once the directory entry is on disk. But the new
        // state is the file's from here: an error now would have the caller roll the
        // kernel back under a state.json that already describes the change.
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::warn!(
                dir = %self.dir.display(), error = %e,
                "could not sync the state directory; the new state is in place, but a power loss may undo it"
            );
        }
        self.journal.clear();
        Ok(())
    }
}

#[cfg(test)]
mod journal_tests;

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, os::unix::fs::PermissionsExt};

    use super::*;
    use crate::model::Network;

    pub(super) fn sample() -> DesiredState {
        let mut s = DesiredState::default();
        s.networks.push(Network {
            name: "netd0".into(),
            id: 1,
            subnet: "172.17.0.0/16".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 17, 0, 1),
            ip_range: None,
            internal: false,
            icc: true,
            masquerade: true,
            mtu: 1500,
            bridge: "netd0".into(),
        });
        s.ipam_cursor
            .insert("netd0".into(), Ipv4Addr::new(172, 17, 0, 9));
        s.next_network_id = 2;
        s
    }

    #[test]
    fn open_creates_private_dir_and_writes_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let store = StateStore::open(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "state dir must not be group/world accessible: {mode:o}"
        );
        let pid = fs::read_to_string(dir.join("lock")).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        assert_eq!(store.dir(), dir);
    }

    #[test]
    fn load_without_state_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_tmp() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(tmp.path()).unwrap();
        let s = sample();
        store.save(&s).unwrap();
        assert!(!tmp.path().join(TMP_FILE).exists());
        assert_eq!(store.load().unwrap(), Some(s.clone()));
        // A second save replaces the first.
        let mut s2 = s;
        s2.networks.clear();
        store.save(&s2).unwrap();
        assert_eq!(store.load().unwrap(), Some(s2));
    }

    #[test]
    fn second_open_is_locked_with_pid_and_lock_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateStore::open(tmp.path()).unwrap();
        let err = StateStore::open(tmp.path())
            .err()
            .expect("second open must fail");
        match &err {
            StateError::Locked { path, pid } => {
                assert_eq!(path, &tmp.path().display().to_string());
                assert_eq!(pid, &std::process::id().to_string());
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("locked") && msg.contains(&std::process::id().to_string()),
            "{msg}"
        );
        drop(first);
        StateStore::open(tmp.path()).expect("lock is released when the store is dropped");
    }

    #[test]
    fn corrupt_state_names_path_and_serde_detail() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        fs::write(tmp.path().join(STATE_FILE), b"{\"networks\": [1,").unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("state.json") && msg.contains("line 1"),
            "{msg}"
        );
    }

    #[test]
    fn open_removes_interrupted_tmp_and_keeps_state() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut store = StateStore::open(tmp.path()).unwrap();
            store.save(&sample()).unwrap();
        }
        fs::write(tmp.path().join(TMP_FILE), b"half a").unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        assert!(!tmp.path().join(TMP_FILE).exists());
        assert_eq!(store.load().unwrap(), Some(sample()));
    }

    #[test]
    fn open_on_a_file_is_an_io_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let err = StateStore::open(&file).err().unwrap();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}

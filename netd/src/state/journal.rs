//! The append-only journal of publication changes between two snapshots.
//!
//! Publishing or unpublishing a port is the one change that happens thousands of times,
//! and rewriting the whole state for each one costs tens of milliseconds at 10,000
//! publications. Instead each such change is one compact JSON line in `journal.jsonl`:
//!
//! ```text
//! {"seq":7,"delta":{"publish":{"endpoint":"web",...}}}
//! ```
//!
//! written with a single `write(2)` before the call returns. See the `store` module for
//! how the journal and the snapshot fit together.
//!
//! The line is not fdatasynced. A publication only means something while its endpoint's
//! namespace exists, and no namespace outlives a reboot: after a power loss the daemon
//! forgets every endpoint, with its publications, whether or not the last lines reached
//! the disk. A daemon that crashes or is killed loses nothing, because `write(2)` has
//! already handed the line to the page cache. The sync cost 0.3 ms per port, and up to
//! 2 ms when it met a filesystem journal commit.

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::Write,
    net::Ipv4Addr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::model::{DesiredState, PortRange, Proto, Publication};

/// A change to the publications that is journalled instead of rewriting the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delta {
    /// Append a publication.
    Publish(Publication),
    /// Remove exactly these publications (one copy per element).
    Unpublish(Vec<Publication>),
}

/// Above this many publications removed at once, removal goes through a hash set instead
/// of one backwards search per publication.
const HASHED_REMOVAL: usize = 16;

/// The fields that make a publication, borrowed: `Publication` itself is not `Hash`.
type PublicationKey<'a> = (
    &'a str,
    &'a str,
    Proto,
    Option<Ipv4Addr>,
    PortRange,
    PortRange,
);

fn key(p: &Publication) -> PublicationKey<'_> {
    (
        &p.endpoint,
        &p.network,
        p.proto,
        p.host_ip,
        p.host_ports,
        p.container_ports,
    )
}

impl Delta {
    /// Apply the change to `state`. The daemon uses this both live and on replay, so
    /// memory and disk cannot disagree about what a line means.
    pub fn apply(&self, state: &mut DesiredState) {
        let pubs = &mut state.publications;
        match self {
            Delta::Publish(p) => pubs.push(p.clone()),
            // A port just published is at the end: searching backwards finds it at once.
            Delta::Unpublish(gone) if gone.len() <= HASHED_REMOVAL => {
                for g in gone {
                    if let Some(i) = pubs.iter().rposition(|p| p == g) {
                        pubs.remove(i);
                    }
                }
            }
            Delta::Unpublish(gone) => {
                // `gone` lists every copy the daemon matched, so dropping every copy of
                // each key is the same as removing one copy per element.
                let keys: HashSet<PublicationKey<'_>> = gone.iter().map(key).collect();
                pubs.retain(|p| !keys.contains(&key(p)));
            }
        }
    }
}

#[derive(Serialize)]
struct LineOut<'a> {
    seq: u64,
    delta: &'a Delta,
}

#[derive(Deserialize)]
struct LineIn {
    seq: u64,
    delta: Delta,
}

/// Only the sequence number, to scan a journal without building its deltas.
#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

fn io_err(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The open journal file and what this process knows about it.
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    /// The highest sequence number in the file or handed out by this process. Never goes
    /// down, so a snapshot that records it covers every line still in the file.
    last_seq: u64,
    /// Complete lines in the file.
    entries: usize,
    /// Bytes in the file: a failed append is cut back to this length.
    len: u64,
    /// The file holds lines this process did not write (a previous run, maybe with a torn
    /// tail) or the remains of a failed append: the next change writes a snapshot, so
    /// nothing is ever appended after a torn line.
    dirty: bool,
}

impl Journal {
    /// Open (or create) the journal and scan it for its last sequence number.
    pub(super) fn open(dir: &Path, name: &str) -> Result<Self, StateError> {
        let path = dir.join(name);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        if !existed {
            // fdatasync on the file does not make its directory entry durable.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err(dir, e))?;
        }
        let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        // Unparsable lines are skipped here; `replay` reports them.
        let last_seq = bytes
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice::<SeqOnly>(l).ok())
            .map(|l| l.seq)
            .max()
            .unwrap_or(0);
        Ok(Journal {
            entries: bytes.iter().filter(|b| **b == b'\n').count(),
            len: bytes.len() as u64,
            dirty: !bytes.is_empty(),
            path,
            file,
            last_seq,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub(super) fn entries(&self) -> usize {
        self.entries
    }

    /// Whether the next change must be a snapshot whatever the journal's length.
    pub(super) fn dirty(&self) -> bool {
        self.dirty
    }

    /// Append one line (not synced: see the module docs). On failure the line is cut off
    /// again, so a change the caller was told failed is not replayed at the next start.
    pub(super) fn append(&mut self, delta: &Delta) -> Result<(), StateError> {
        // Burnt even when the append fails: a half-written line keeps a number that the
        // next snapshot covers.
        self.last_seq += 1;
        let mut line = serde_json::to_vec(&LineOut {
            seq: self.last_seq,
            delta,
        })
        .map_err(|e| StateError::Corrupt {
            path: self.path.display().to_string(),
            detail: format!("cannot serialize a journal entry: {e}"),
        })?;
        line.push(b'\n');
        if let Err(e) = (&self.file).write_all(&line) {
            if let Err(cut) = self.file.set_len(self.len) {
                tracing::warn!(path = %self.path.display(), error = %cut, "cannot cut a failed journal append; the next change writes a snapshot");
            }
            self.dirty = true;
            return Err(io_err(&self.path, e));
        }
        self.entries += 1;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Empty the journal once a snapshot holds everything in it. A failure is only a
    /// warning: every line left is at or below the snapshot's sequence number, so replay
    /// skips it, and the journal stays dirty so the next change retries.
    pub(super) fn clear(&mut self) {
        if self.len == 0 && !self.dirty {
            return;
        }
        // Not synced either: lines the snapshot includes are skipped at replay.
        match self.file.set_len(0) {
            Ok(()) => {
                self.entries = 0;
                self.len = 0;
                self.dirty = false;
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot empty the journal after a snapshot; its lines are already in the snapshot");
                self.dirty = true;
            }
        }
    }
}

/// Apply to `state` every journal line at `path` numbered above `after_seq`, in order.
/// Returns how many lines were applied.
///
/// A torn last line (no newline, or not JSON: the process died during the append, before
/// the caller was told the change was made) is ignored with a warning, and so is
/// everything from the first line holding NUL bytes (a power cut lost unsynced blocks).
/// Any other bad line, or a sequence number that does not increase, is
/// [`StateError::Corrupt`].
pub(super) fn replay(
    path: &Path,
    after_seq: u64,
    state: &mut DesiredState,
) -> Result<usize, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(path, e)),
    };
    let complete = bytes.last().is_none_or(|b| *b == b'\n');
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if body.is_empty() {
        return Ok(0);
    }
    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    let corrupt = |lineno: usize, detail: String| StateError::Corrupt {
        path: path.display().to_string(),
        detail: format!(
            "line {lineno}: {detail}; fix or remove the line (the changes after it are lost)"
        ),
    };
    let (mut applied, mut prev_seq) = (0, 0);
    for (i, line) in lines.iter().enumerate() {
        let (lineno, last) = (i + 1, i + 1 == lines.len());
        if line.contains(&0) {
            // netd never writes a NUL. Unsynced blocks that a power cut lost read back as
            // zeros, and only the lines before them are known to be whole; what they
            // published went with the namespaces the cut took down (module docs).
            tracing::warn!(path = %path.display(), line = lineno, dropped = lines.len() - i, "the journal holds bytes lost in a power cut; replaying only the lines before them");
            break;
        }
        let parsed = if last && !complete {
            Err("no newline at its end".to_string())
        } else {
            serde_json::from_slice::<LineIn>(line).map_err(|e| e.to_string())
        };
        let entry = match parsed {
            Ok(entry) => entry,
            Err(why) if last => {
                tracing::warn!(path = %path.display(), line = lineno, %why, "ignoring a torn last journal line (a change interrupted by a crash)");
                break;
            }
            Err(why) => return Err(corrupt(lineno, why)),
        };
        if entry.seq <= prev_seq {
            return Err(corrupt(
                lineno,
                format!(
                    "sequence number {} after {prev_seq}: the journal is not one netd wrote",
                    entry.seq
                ),
            ));
        }
        prev_seq = entry.seq;
        if entry.seq > after_seq {
            entry.delta.apply(state);
            applied += 1;
        }
    }
    Ok(applied)
}

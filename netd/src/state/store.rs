//! Atomic persistence of [`DesiredState`] in the state directory.

use std::path::{Path, PathBuf};

use super::StateError;
use crate::model::DesiredState;

/// The state directory: `state.json`, written atomically, and a lock that keeps a second
/// daemon out.
pub struct StateStore {
    _dir: PathBuf,
}

impl StateStore {
    /// Create the directory if needed and take the lock.
    pub fn open(_dir: &Path) -> Result<Self, StateError> {
        todo!("state helper")
    }
    /// The saved state, or `None` on first start.
    pub fn load(&self) -> Result<Option<DesiredState>, StateError> {
        todo!()
    }
    /// Replace the saved state atomically (write, fsync, rename, fsync the directory).
    pub fn save(&self, _state: &DesiredState) -> Result<(), StateError> {
        todo!()
    }
}

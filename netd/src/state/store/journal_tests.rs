//! The journal through the store: replay, torn and corrupt lines, snapshots that empty
//! it, compaction, and restarts without a final snapshot.

use std::net::Ipv4Addr;

use super::{tests::sample, *};
use crate::model::{PortRange, Proto, Publication};

fn publication(port: u16) -> Publication {
    Publication {
        endpoint: "web".into(),
        network: "netd0".into(),
        proto: Proto::Tcp,
        host_ip: None,
        host_ports: PortRange::single(port),
        container_ports: PortRange::single(80),
    }
}

/// Record `delta` and apply it, as the daemon does.
fn change(store: &mut StateStore, state: &mut DesiredState, delta: Delta) {
    store.record(&delta, state).unwrap();
    delta.apply(state);
}

fn journal_lines(dir: &Path) -> usize {
    fs::read_to_string(dir.join(JOURNAL_FILE))
        .unwrap()
        .lines()
        .count()
}

/// A store with `sample()` saved as its snapshot.
fn saved(dir: &Path) -> (StateStore, DesiredState) {
    let mut store = StateStore::open(dir).unwrap();
    let state = sample();
    store.save(&state).unwrap();
    (store, state)
}

#[test]
fn publish_is_one_journal_line_and_load_replays_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, mut state) = saved(tmp.path());
    let snapshot = fs::read(tmp.path().join(STATE_FILE)).unwrap();
    for port in [8080, 8081, 8082] {
        change(&mut store, &mut state, Delta::Publish(publication(port)));
    }
    assert_eq!(journal_lines(tmp.path()), 3);
    assert_eq!(
        fs::read(tmp.path().join(STATE_FILE)).unwrap(),
        snapshot,
        "a publish must not rewrite the snapshot"
    );
    assert_eq!(state.publications.len(), 3);
    assert_eq!(store.load().unwrap(), Some(state));
}

#[test]
fn unpublish_replays_exactly_the_removed_publications() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, mut state) = saved(tmp.path());
    for port in 8080..8085 {
        change(&mut store, &mut state, Delta::Publish(publication(port)));
    }
    let gone = vec![publication(8081), publication(8083)];
    change(&mut store, &mut state, Delta::Unpublish(gone));
    let ports: Vec<u16> = state
        .publications
        .iter()
        .map(|p| p.host_ports.start)
        .collect();
    assert_eq!(ports, [8080, 8082, 8084]);
    assert_eq!(store.load().unwrap(), Some(state));
}

#[test]
fn torn_last_line_is_ignored() {
    for tail in [&b"{\"seq\":9,\"delta\":{\"pub"[..], b"\0\0\0\0\n"] {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, mut state) = saved(tmp.path());
        change(&mut store, &mut state, Delta::Publish(publication(8080)));
        drop(store);
        let mut f = OpenOptions::new()
            .append(true)
            .open(tmp.path().join(JOURNAL_FILE))
            .unwrap();
        f.write_all(tail).unwrap();
        drop(f);
        let mut store = StateStore::open(tmp.path()).unwrap();
        assert_eq!(store.load().unwrap(), Some(state.clone()), "tail {tail:?}");
        // The first change after a restart compacts: nothing lands after the torn line.
        change(&mut store, &mut state, Delta::Publish(publication(8081)));
        assert_eq!(journal_lines(tmp.path()), 0);
        drop(store);
        let store = StateStore::open(tmp.path()).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
    }
}

#[test]
fn corrupt_middle_line_is_an_error_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, mut state) = saved(tmp.path());
    for port in [8080, 8081, 8082] {
        change(&mut store, &mut state, Delta::Publish(publication(port)));
    }
    let path = tmp.path().join(JOURNAL_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = "{\"seq\":2,\"delta\":{\"publish\":{}}}";
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("journal.jsonl") && msg.contains("line 2"),
        "{msg}"
    );
}

#[test]
fn lines_from_a_block_lost_in_a_power_cut_on_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, mut state) = saved(tmp.path());
    change(&mut store, &mut state, Delta::Publish(publication(8080)));
    let whole = state.clone();
    for port in [8081, 8082, 8083] {
        change(&mut store, &mut state, Delta::Publish(publication(port)));
    }
    drop(store);
    // The second line's block never reached the disk: zeros up to a block boundary in
    // the middle of the third line, then the rest as written.
    let path = tmp.path().join(JOURNAL_FILE);
    let text = fs::read(&path).unwrap();
    let second = text.iter().position(|b| *b == b'\n').unwrap() + 1;
    let third = second + text[second..].iter().position(|b| *b == b'\n').unwrap() + 1;
    let mut damaged = text.clone();
    damaged[second..third + 5].fill(0);
    fs::write(&path, damaged).unwrap();
    let mut store = StateStore::open(tmp.path()).unwrap();
    assert_eq!(store.load().unwrap(), Some(whole.clone()));
    // Nothing is appended after the damage: the next change writes a snapshot.
    let mut state = whole;
    change(&mut store, &mut state, Delta::Publish(publication(9000)));
    assert_eq!(journal_lines(tmp.path()), 0);
    drop(store);
    let store = StateStore::open(tmp.path()).unwrap();
    assert_eq!(store.load().unwrap(), Some(state));
}

#[test]
fn sequence_going_backwards_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, mut state) = saved(tmp.path());
    change(&mut store, &mut state, Delta::Publish(publication(8080)));
    let path = tmp.path().join(JOURNAL_FILE);
    let line = fs::read_to_string(&path).unwrap();
    fs::write(&path, format!("{line}{line}")).unwrap();
    let msg = store.load().unwrap_err().to_string();
    assert!(msg.contains("line 2") && msg.contains("sequence"), "{msg}");
}

#[test]
fn snapshot_empties_the_journal_and_nothing_is_applied_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, mut state) = saved(tmp.path());
    for port in [8080, 8081] {
        change(&mut store, &mut state, Delta::Publish(publication(port)));
    }
    let journal = fs::read(tmp.path().join(JOURNAL_FILE)).unwrap();
    // A structural change (a network removed) writes a snapshot.
    state.networks.clear();
    store.save(&state).unwrap();
    assert_eq!(journal_lines(tmp.path()), 0);
    assert_eq!(store.load().unwrap(), Some(state.clone()));
    // A crash after the snapshot's rename but before the journal was emptied leaves
    // lines the snapshot already holds: they must be skipped.
    fs::write(tmp.path().join(JOURNAL_FILE), &journal).unwrap();
    assert_eq!(store.load().unwrap(), Some(state.clone()));
    // And a line appended after the snapshot still replays on top of it.
    drop(store);
    let mut store = StateStore::open(tmp.path()).unwrap();
    assert_eq!(store.load().unwrap(), Some(state.clone()));
    store.save(&state).unwrap();
    change(&mut store, &mut state, Delta::Publish(publication(9000)));
    fs::write(
        tmp.path().join(JOURNAL_FILE),
        [journal, fs::read(tmp.path().join(JOURNAL_FILE)).unwrap()].concat(),
    )
    .unwrap();
    assert_eq!(store.load().unwrap(), Some(state.clone()));
    assert_eq!(
        state.publications,
        [publication(8080), publication(8081), publication(9000)]
    );
}

#[test]
fn compaction_is_due_at_max_of_1024_and_publication_count_and_forced_at_four_times() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, mut state) = saved(tmp.path());
    for i in 0..COMPACT_MIN_ENTRIES - 1 {
        change(
            &mut store,
            &mut state,
            Delta::Publish(publication(i as u16)),
        );
    }
    assert!(!store.compaction_due(&state));
    change(&mut store, &mut state, Delta::Publish(publication(4000)));
    assert!(store.compaction_due(&state), "due at 1024 lines");
    assert_eq!(journal_lines(tmp.path()), COMPACT_MIN_ENTRIES);
    store.save(&state).unwrap();
    assert!(!store.compaction_due(&state));
    assert_eq!(
        journal_lines(tmp.path()),
        0,
        "a snapshot empties the journal"
    );
    assert_eq!(store.load().unwrap(), Some(state.clone()));

    // Nobody compacts: the change that finds four times max(1024, publications) lines
    // is a snapshot itself.
    let n = state.publications.len();
    assert_eq!(n, COMPACT_MIN_ENTRIES);
    let forced = COMPACT_FORCE_FACTOR * n;
    let probe = publication(0);
    while journal_lines(tmp.path()) < forced {
        change(
            &mut store,
            &mut state,
            Delta::Unpublish(vec![probe.clone()]),
        );
        change(&mut store, &mut state, Delta::Publish(probe.clone()));
    }
    assert_eq!(journal_lines(tmp.path()), forced);
    change(
        &mut store,
        &mut state,
        Delta::Unpublish(vec![probe.clone()]),
    );
    assert_eq!(journal_lines(tmp.path()), 0, "forced compaction");
    assert_eq!(state.publications.len(), n - 1);
    assert_eq!(store.load().unwrap(), Some(state));
}

#[test]
fn restart_without_snapshot_keeps_every_change() {
    let tmp = tempfile::tempdir().unwrap();
    let mut state = {
        let (mut store, mut state) = saved(tmp.path());
        for port in 8000..8040 {
            change(&mut store, &mut state, Delta::Publish(publication(port)));
        }
        let gone = (8010..8030).map(publication).collect();
        change(&mut store, &mut state, Delta::Unpublish(gone));
        // Dropped like a killed daemon: no final snapshot.
        state
    };
    let mut store = StateStore::open(tmp.path()).unwrap();
    assert_eq!(store.load().unwrap(), Some(state.clone()));
    assert_eq!(state.publications.len(), 20);
    // A second run that is killed too: its changes come on top of the first run's.
    store.save(&state).unwrap();
    change(&mut store, &mut state, Delta::Publish(publication(9999)));
    drop(store);
    let store = StateStore::open(tmp.path()).unwrap();
    assert_eq!(store.load().unwrap(), Some(state));
}

#[test]
fn journal_without_snapshot_loads_onto_an_empty_state() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(tmp.path()).unwrap();
    assert_eq!(store.load().unwrap(), None);
    let mut state = DesiredState::default();
    change(&mut store, &mut state, Delta::Publish(publication(8080)));
    assert!(!tmp.path().join(STATE_FILE).exists());
    assert_eq!(store.load().unwrap(), Some(state));
}

#[test]
fn snapshot_without_journal_seq_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let store = StateStore::open(tmp.path()).unwrap();
    // state.json as netd wrote it before the journal existed.
    fs::write(
        tmp.path().join(STATE_FILE),
        serde_json::to_vec(&sample()).unwrap(),
    )
    .unwrap();
    assert_eq!(store.load().unwrap(), Some(sample()));
    let written: serde_json::Value = {
        let mut store = store;
        store.save(&sample()).unwrap();
        serde_json::from_slice(&fs::read(tmp.path().join(STATE_FILE)).unwrap()).unwrap()
    };
    assert!(written["journal_seq"].is_u64(), "{written}");
    assert_eq!(written["next_network_id"], 2);
}

#[test]
fn unpublish_of_many_removes_one_copy_per_element() {
    let mut state = DesiredState {
        publications: (0..100).map(publication).collect(),
        ..Default::default()
    };
    // Small and large removals take different paths; both keep the order of the rest.
    for gone in [vec![3, 7], (10..60).collect::<Vec<u16>>()] {
        let mut want = state.clone();
        want.publications
            .retain(|p| !gone.contains(&p.host_ports.start));
        Delta::Unpublish(gone.into_iter().map(publication).collect()).apply(&mut state);
        assert_eq!(state, want);
    }
    let host = Ipv4Addr::new(192, 0, 2, 1);
    let other = Publication {
        host_ip: Some(host),
        ..publication(1)
    };
    state.publications.push(other.clone());
    Delta::Unpublish(vec![publication(1)]).apply(&mut state);
    assert_eq!(
        state.publications.last(),
        Some(&other),
        "only the exact match goes"
    );
}

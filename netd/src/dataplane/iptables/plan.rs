//! From a rule list to the smallest iptables-restore script that makes the kernel match it.
//!
//! netd owns the chains of [`Table::own_chains`] outright. In the built-in chains it shares
//! with other software (FORWARD, PREROUTING, POSTROUTING, ...) it must touch only its own
//! rules, and keep Docker's exact text there. To know which rules are its own, even after
//! a crash, netd records every built-in-chain rule it adds in a mirror chain
//! `NETD-OWNED-<CHAIN>` of the same table. Nothing jumps to a mirror chain, so it costs
//! nothing per packet; it is read back with iptables-save and rewritten in the same atomic
//! table commit as the rules it describes.
//!
//! The plan is a list of [`Op`]s per table. The same ops render to the script and replay on
//! the in-memory [`Ruleset`], so netd knows the kernel's state after a successful restore
//! without reading it back (iptables-save of 10,000 rules costs more than the change).

use std::collections::{BTreeMap, HashMap};

use super::rules::{CH_USER, Rule, Table};

/// The chains of one table as iptables-save shows them: name -> rule specs in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRules {
    pub chains: BTreeMap<String, Vec<String>>,
}

/// What is (or will be) in the kernel, for the tables netd writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub tables: BTreeMap<Table, TableRules>,
}

/// A mirror chain's name for a built-in chain.
pub fn mirror_chain(base: &str) -> String {
    format!("NETD-OWNED-{base}")
}

impl Ruleset {
    /// Parse iptables-save output (without counters). Tables netd does not write are
    /// ignored; a table missing from the output is empty, with its built-in chains.
    pub fn parse(save: &str) -> Result<Self, String> {
        let mut set = Ruleset::default();
        let mut table: Option<Table> = None;
        for (no, line) in save.lines().enumerate() {
            let bad = |what: &str| format!("iptables-save line {}: {what}: {line:?}", no + 1);
            if let Some(name) = line.strip_prefix('*') {
                table = Table::ALL.into_iter().find(|t| t.name() == name);
                if let Some(t) = table {
                    set.table_mut(t);
                }
            } else if let Some(t) = table {
                if let Some(decl) = line.strip_prefix(':') {
                    let name = decl
                        .split_whitespace()
                        .next()
                        .ok_or_else(|| bad("chain without a name"))?;
                    set.table_mut(t).chains.entry(name.to_string()).or_default();
                } else if let Some(rest) = line.strip_prefix("-A ") {
                    // `-A CHAIN` alone is a valid rule: match everything, no target.
                    let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                    if chain.is_empty() {
                        return Err(bad("rule without a chain"));
                    }
                    set.table_mut(t)
                        .chains
                        .entry(chain.to_string())
                        .or_default()
                        .push(spec.to_string());
                } else if line == "COMMIT" {
                    table = None;
                }
            }
        }
        for t in Table::ALL {
            set.table_mut(t);
        }
        Ok(set)
    }

    fn table_mut(&mut self, t: Table) -> &mut TableRules {
        self.tables.entry(t).or_insert_with(|| TableRules {
            chains: t
                .base_chains()
                .iter()
                .map(|c| (c.to_string(), Vec::new()))
                .collect(),
        })
    }

    /// The rules of `chain` in `table`, if the chain exists.
    pub fn chain(&self, table: Table, chain: &str) -> Option<&[String]> {
        self.tables
            .get(&table)?
            .chains
            .get(chain)
            .map(Vec::as_slice)
    }

    /// Replay `ops` as the kernel would execute them.
    pub fn apply(&mut self, table: Table, ops: &[Op]) {
        let chains = &mut self.table_mut(table).chains;
        for op in ops {
            match op {
                Op::NewChain(c) => {
                    chains.entry(c.clone()).or_default();
                }
                Op::Flush(c) => chains.entry(c.clone()).or_default().clear(),
                Op::Append(c, s) => chains.entry(c.clone()).or_default().push(s.clone()),
                Op::Insert(c, pos, s) => chains
                    .entry(c.clone())
                    .or_default()
                    .insert(pos - 1, s.clone()),
                Op::DeleteAt(c, pos) => {
                    chains.entry(c.clone()).or_default().remove(pos - 1);
                }
                Op::Delete(c, s) => {
                    let rules = chains.entry(c.clone()).or_default();
                    if let Some(i) = rules.iter().position(|r| r == s) {
                        rules.remove(i);
                    }
                }
            }
        }
    }
}

/// One iptables-restore command. Positions are 1-based, as iptables counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    NewChain(String),
    Flush(String),
    Append(String, String),
    Insert(String, usize, String),
    DeleteAt(String, usize),
    Delete(String, String),
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::NewChain(c) => write!(f, ":{c} - [0:0]"),
            Op::Flush(c) => write!(f, "-F {c}"),
            Op::Append(c, s) => write!(f, "-A {c} {s}"),
            Op::Insert(c, p, s) => write!(f, "-I {c} {p} {s}"),
            Op::DeleteAt(c, p) => write!(f, "-D {c} {p}"),
            Op::Delete(c, s) => write!(f, "-D {c} {s}"),
        }
    }
}

/// The ops for each table that needs any, in the order to run them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub tables: Vec<(Table, Vec<Op>)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// How many commands the script holds.
    pub fn len(&self) -> usize {
        self.tables.iter().map(|(_, ops)| ops.len()).sum()
    }

    /// The script for `iptables-restore --noflush`.
    pub fn script(&self) -> String {
        let mut out = String::new();
        for (table, ops) in &self.tables {
            out.push_str(&format!("*{table}\n"));
            for op in ops {
                out.push_str(&format!("{op}\n"));
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// Plan the change from `current` to the rules `desired`.
pub fn plan(current: &Ruleset, desired: &[Rule]) -> Plan {
    let mut out = Plan::default();
    for table in Table::ALL {
        let ops = plan_table(current, table, desired);
        if !ops.is_empty() {
            out.tables.push((table, ops));
        }
    }
    out
}

fn plan_table(current: &Ruleset, table: Table, desired: &[Rule]) -> Vec<Op> {
    let exists = |c: &str| current.chain(table, c).is_some();
    let mut ops = Vec::new();
    // Own chains, always present (empty when nothing needs them), and DOCKER-USER.
    let mut own: BTreeMap<String, Vec<String>> = table
        .own_chains()
        .iter()
        .map(|c| (c.to_string(), Vec::new()))
        .collect();
    let mut base: BTreeMap<&str, Vec<&Rule>> = BTreeMap::new();
    for r in desired.iter().filter(|r| r.table == table) {
        if r.in_base_chain() {
            base.entry(r.chain).or_default().push(r);
        } else {
            own.entry(r.chain.to_string())
                .or_default()
                .push(r.spec.clone());
        }
    }
    if table == Table::Filter && !exists(CH_USER) {
        ops.push(Op::NewChain(CH_USER.to_string()));
    }
    // Mirrors for every built-in chain that has netd rules now or had them before.
    for chain in table.base_chains() {
        let mirror = mirror_chain(chain);
        if base.contains_key(chain) || exists(&mirror) {
            let specs = base
                .get(chain)
                .map(|rs| rs.iter().map(|r| r.spec.clone()).collect())
                .unwrap_or_default();
            own.insert(mirror, specs);
        }
    }
    for chain in own.keys().filter(|c| !exists(c)) {
        ops.push(Op::NewChain(chain.clone()));
    }
    for chain in table.base_chains() {
        let want = base.get(chain).map(Vec::as_slice).unwrap_or_default();
        ops.extend(plan_base_chain(current, table, chain, want));
    }
    for (chain, want) in &own {
        let have = current.chain(table, chain).unwrap_or_default();
        ops.extend(diff_chain(chain, have, want));
    }
    ops
}

/// Remove netd's stale rules from a built-in chain and add the missing ones: jumps at the
/// top (Docker inserts them), the rest at the end. Other software's rules stay put.
fn plan_base_chain(current: &Ruleset, table: Table, chain: &str, want: &[&Rule]) -> Vec<Op> {
    let mut have: Vec<String> = current.chain(table, chain).unwrap_or_default().to_vec();
    let ours = current
        .chain(table, &mirror_chain(chain))
        .unwrap_or_default();
    let mut wanted: HashMap<&str, usize> = HashMap::new();
    for r in want {
        *wanted.entry(r.spec_text()).or_default() += 1;
    }
    let mut ops = Vec::new();
    for spec in ours {
        match wanted.get_mut(spec.as_str()) {
            Some(n) if *n > 0 => *n -= 1,
            _ => {
                if let Some(i) = have.iter().position(|h| h == spec) {
                    have.remove(i);
                    ops.push(Op::Delete(chain.to_string(), spec.clone()));
                }
            }
        }
    }
    let mut present: HashMap<&str, usize> = HashMap::new();
    for h in &have {
        *present.entry(h.as_str()).or_default() += 1;
    }
    let mut top = 1;
    for r in want {
        let spec = r.spec_text();
        let here = present.get_mut(spec).filter(|n| **n > 0);
        let found = here.map(|n| *n -= 1).is_some();
        if r.is_jump() {
            if !found {
                ops.push(Op::Insert(chain.to_string(), top, spec.to_string()));
            }
            top += 1;
        } else if !found {
            ops.push(Op::Append(chain.to_string(), spec.to_string()));
        }
    }
    ops
}

/// Edit an owned chain from `have` to `want`: keep the rules that are already in order,
/// delete the others (from the bottom, so positions stay valid), then insert what is
/// missing at its final position. Appending one port or removing one costs one command,
/// not a rewrite of 10,000. When the edits would outnumber a rewrite, flush and rewrite.
pub fn diff_chain(chain: &str, have: &[String], want: &[String]) -> Vec<Op> {
    if have == want {
        return Vec::new();
    }
    let mut slots: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, w) in want.iter().enumerate().rev() {
        slots.entry(w.as_str()).or_default().push(j);
    }
    // Greedy in-order match: a rule is kept if it maps to a later slot than the last kept.
    let mut kept = vec![false; want.len()];
    let mut deletes = Vec::new();
    let mut last: Option<usize> = None;
    for (i, h) in have.iter().enumerate() {
        let next = slots.get_mut(h.as_str()).and_then(|s| {
            while s.last().is_some_and(|&j| last.is_some_and(|l| j <= l)) {
                s.pop();
            }
            s.pop()
        });
        match next {
            Some(j) => {
                kept[j] = true;
                last = Some(j);
            }
            None => deletes.push(i + 1),
        }
    }
    let inserts = kept.iter().filter(|k| !**k).count();
    if deletes.len() + inserts > want.len() + 1 {
        let mut ops = vec![Op::Flush(chain.to_string())];
        ops.extend(
            want.iter()
                .map(|w| Op::Append(chain.to_string(), w.clone())),
        );
        return ops;
    }
    let mut ops: Vec<Op> = deletes
        .iter()
        .rev()
        .map(|&p| Op::DeleteAt(chain.to_string(), p))
        .collect();
    let mut len = kept.iter().filter(|k| **k).count();
    for (j, w) in want.iter().enumerate() {
        if kept[j] {
            continue;
        }
        // The first j rules are in place; the chain holds them plus the kept ones after j.
        if j == len {
            ops.push(Op::Append(chain.to_string(), w.clone()));
        } else {
            ops.push(Op::Insert(chain.to_string(), j + 1, w.clone()));
        }
        len += 1;
    }
    ops
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

//! The tally behind `cargo xtask test`'s last lines. The output of `cargo test` (cargo's
//! progress and every test binary's report, through one pipe so that their order is kept)
//! passes through to our stdout as it comes, and its lines are counted on the way, so that
//! the end of a long CI log says how many tests passed, which ones were ignored and why
//! (an ignored test is a behaviour that was not checked, so it must stay visible), and
//! which ones failed.

use std::{
    io::{self, Read as _, Write as _},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::cargo;

/// What the test binaries of one or more `cargo test` runs reported.
#[derive(Debug, Default)]
pub struct Tally {
    /// Sum of the `N passed` of every `test result:` line.
    pub passed: u64,
    /// Sum of the `N failed`.
    pub failed: u64,
    /// Sum of the `N ignored`.
    pub ignored: u64,
    /// Every `test NAME ... ignored[, REASON]` line, in the order they came.
    pub ignored_tests: Vec<Ignored>,
    /// Every `test NAME ... FAILED` line, as `NAME (BINARY)`.
    pub failed_tests: Vec<String>,
    /// The test binary cargo said it runs now (`Running ...`, `Doc-tests ...`).
    binary: String,
    /// Output after the last newline: a line still being written.
    partial: Vec<u8>,
}

/// A test that did not run, and the reason of its `#[ignore = "..."]` if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// `NAME (BINARY)`, test names repeat across binaries (`iptables::...`); `NAME` when
    /// cargo did not say which binary.
    pub name: String,
    pub reason: Option<String>,
}

impl Tally {
    /// Take the next chunk of libtest's output; complete lines are parsed.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.line(&strip_ansi(&String::from_utf8_lossy(&line)));
        }
    }

    /// Add another run's tally to this one.
    pub fn merge(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.ignored_tests.extend(other.ignored_tests);
        self.failed_tests.extend(other.failed_tests);
    }

    /// `N passed, N failed, N ignored`.
    pub fn counts(&self) -> String {
        format!(
            "{} passed, {} failed, {} ignored",
            self.passed, self.failed, self.ignored
        )
    }

    /// The ignored tests grouped by reason, in the order the reasons first came.
    pub fn ignored_by_reason(&self) -> Vec<(&str, Vec<&str>)> {
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for t in &self.ignored_tests {
            let reason = t.reason.as_deref().unwrap_or("(no reason given)");
            match groups.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, names)) => names.push(&t.name),
                None => groups.push((reason, vec![&t.name])),
            }
        }
        groups
    }

    fn line(&mut self, line: &str) {
        let line = line.trim_end();
        if let Some(binary) = binary_of(line) {
            self.binary = binary;
        } else if let Some(counts) = line.strip_prefix("test result: ") {
            // "ok. 5 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 1s"
            for part in counts.split(';') {
                let words: Vec<&str> = part.split_whitespace().collect();
                for pair in words.windows(2) {
                    let Ok(n) = pair[0].parse::<u64>() else {
                        continue;
                    };
                    match pair[1] {
                        "passed" => self.passed += n,
                        "failed" => self.failed += n,
                        "ignored" => self.ignored += n,
                        _ => {}
                    }
                }
            }
        } else if let Some((name, result)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
        {
            let name = if self.binary.is_empty() {
                name.to_owned()
            } else {
                format!("{name} ({})", self.binary)
            };
            if let Some(rest) = result.strip_prefix("ignored") {
                self.ignored_tests.push(Ignored {
                    name,
                    reason: rest.strip_prefix(", ").map(str::to_owned),
                });
            } else if result.starts_with("FAILED") {
                self.failed_tests.push(name);
            }
        }
    }
}

/// The test binary that cargo announces on `line`, by the name of its file without the
/// hash: `dp_isolation` for `Running tests/dp_isolation.rs (target/debug/deps/
/// dp_isolation-0123abcd)`, `netd doc-tests` for `Doc-tests netd`.
fn binary_of(line: &str) -> Option<String> {
    let line = line.trim_start();
    if let Some(krate) = line.strip_prefix("Doc-tests ") {
        return Some(format!("{krate} doc-tests"));
    }
    let (_, path) = line.strip_prefix("Running ")?.rsplit_once(" (")?;
    let file = path.strip_suffix(')')?.rsplit('/').next()?;
    Some(
        file.rsplit_once('-')
            .map_or(file, |(stem, _hash)| stem)
            .to_owned(),
    )
}

/// `line` without the terminal's colour escapes (`ESC [ ... letter`, `ESC ( B`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            Some('(') => {
                chars.next();
            }
            _ => {}
        }
    }
    out
}

/// Run `cmd` (a `cargo test`) with its stdout and stderr passed through to our stdout as
/// they come, and tallied. Fails with the command line when the command fails; the tally
/// is returned either way.
pub fn run(cmd: &mut Command) -> (Tally, anyhow::Result<()>) {
    let mut tally = Tally::default();
    let result = pass_through(cmd, &mut tally);
    (tally, result)
}

fn pass_through(cmd: &mut Command, tally: &mut Tally) -> anyhow::Result<()> {
    let shown = cargo::show(cmd);
    eprintln!("+ {shown}");
    // One pipe for both: two would let a test binary's report arrive after cargo's
    // `Running` line of the next binary, and the tally would credit the wrong one.
    let (mut out, writer) = io::pipe().context("creating a pipe for cargo test's output")?;
    let writer2 = writer
        .try_clone()
        .context("duplicating cargo test's output pipe")?;
    let spawned = cmd.stdout(writer).stderr(writer2).spawn();
    // The command keeps the pipe's write ends until told otherwise; the read below only
    // ends once every write end is closed.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = spawned.with_context(|| format!("starting `{shown}`"))?;
    let mut buf = [0u8; 8192];
    let read = loop {
        match out.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                // A closed stdout (`| head`) must not stop the tests from running.
                let mut stdout = io::stdout();
                let _ = stdout.write_all(&buf[..n]).and_then(|()| stdout.flush());
                tally.feed(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    // Drop the pipe before waiting, so a child still writing gets EPIPE instead of blocking.
    drop(out);
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    read.with_context(|| format!("reading the output of `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "   Compiling netd-tests v0.1.0 (/work/main/tests)\n     \
        Running tests/dp_isolation.rs (target/debug/deps/dp_isolation-0123abcd)\n\n\
        running 4 tests\n\
        test ebpf::spoofed_arp_is_dropped ... ok\n\
        test iptables::spoofed_arp_is_dropped ... ignored, no anti-spoofing\n\
        test iptables::spoofed_source_ip_is_dropped ... ignored, no anti-spoofing\n\
        test iptables::icc ... FAILED\n\n\
        test result: FAILED. 1 passed; 1 failed; 2 ignored; 0 measured; 2 filtered out; \
        finished in 0.01s\n\n   \
        Doc-tests netd\n\n\
        test src/lib.rs - f (line 3) ... ignored\n\
        test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
        finished in 1.50s\n";

    #[test]
    fn counts_and_names_come_from_libtest_lines_split_anywhere() {
        let mut t = Tally::default();
        // Chunks end mid-line, as pipe reads do.
        for chunk in OUTPUT.as_bytes().chunks(7) {
            t.feed(chunk);
        }
        assert_eq!((t.passed, t.failed, t.ignored), (8, 1, 3));
        assert_eq!(t.counts(), "8 passed, 1 failed, 3 ignored");
        assert_eq!(t.failed_tests, ["iptables::icc (dp_isolation)"]);
        assert_eq!(
            t.ignored_by_reason(),
            [
                (
                    "no anti-spoofing",
                    vec![
                        "iptables::spoofed_arp_is_dropped (dp_isolation)",
                        "iptables::spoofed_source_ip_is_dropped (dp_isolation)"
                    ]
                ),
                (
                    "(no reason given)",
                    vec!["src/lib.rs - f (line 3) (netd doc-tests)"]
                ),
            ]
        );
    }

    #[test]
    fn colour_escapes_do_not_hide_results() {
        let mut t = Tally::default();
        t.feed(
            b"test iptables::x ... \x1b[33mignored\x1b(B\x1b[m, why\n\
              test result: \x1b[32mok\x1b(B\x1b[m. 0 passed; 0 failed; 1 ignored\n",
        );
        assert_eq!(t.ignored, 1);
        assert_eq!(
            t.ignored_tests,
            [Ignored {
                name: "iptables::x".into(),
                reason: Some("why".into())
            }]
        );
    }
}

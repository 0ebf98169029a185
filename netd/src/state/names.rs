//! Validation of user-given names: networks and endpoints (Docker's rule) and Linux
//! interface names (the kernel's rule).

/// A name that netd refuses, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {name:?}: {reason}")]
pub struct NameError {
    /// What the name is for: "network", "endpoint", "bridge", ...
    pub kind: String,
    pub name: String,
    pub reason: String,
}

impl From<NameError> for crate::error::Error {
    fn from(e: NameError) -> Self {
        crate::error::Error::Invalid(e.to_string())
    }
}

/// Longest network or endpoint name. Docker has no hard limit, but endpoint names become
/// file names under /run/netns and appear in interface names' sources; 64 keeps them sane.
pub const MAX_NAME_LEN: usize = 64;

/// Linux's IFNAMSIZ (16) minus the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// Docker's rule for object names, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// [`MAX_NAME_LEN`] characters. `kind` names the object in the message.
pub fn validate_name(kind: &str, name: &str) -> Result<(), NameError> {
    let err = |reason: String| NameError {
        kind: kind.into(),
        name: name.into(),
        reason,
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(err("the name is empty".into())),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(err(format!(
                "it must start with a letter or digit, not {c:?}"
            )));
        }
        Some(_) => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(err(format!(
            "{c:?} is not allowed; only [a-zA-Z0-9][a-zA-Z0-9_.-] are"
        )));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(err(format!(
            "it is {} characters long; the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    Ok(())
}

/// The kernel's rule for interface names (`dev_valid_name`): 1 to 15 bytes, not "." or
/// "..", no '/', ':' or whitespace; and no '%', which makes the kernel take the name as a
/// template (`br%d` creates `br0`): the interface would not get the name asked for.
pub fn validate_ifname(kind: &str, name: &str) -> Result<(), NameError> {
    let err = |reason: String| NameError {
        kind: kind.into(),
        name: name.into(),
        reason,
    };
    if name.is_empty() {
        return Err(err("the name is empty".into()));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(err(format!(
            "it is {} bytes long; Linux interface names have at most {MAX_IFNAME_LEN}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(err("\".\" and \"..\" are not interface names".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | ':') || c.is_whitespace())
    {
        return Err(err(format!("{c:?} is not allowed in an interface name")));
    }
    if name.contains('%') {
        return Err(err(
            "'%' is not allowed: the kernel would take the name as a template (br%d -> br0)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(r: Result<(), NameError>, kind: &str, name: &str, needle: &str) {
        let msg = r.expect_err(name).to_string();
        assert!(msg.contains(kind), "{msg:?} should name the kind {kind:?}");
        assert!(
            msg.contains(&format!("{name:?}")),
            "{msg:?} should quote {name:?}"
        );
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }

    #[test]
    fn docker_names() {
        for ok in [
            "a",
            "web",
            "web-1",
            "my_net.v2",
            "0abc",
            "A-Z",
            &"x".repeat(64),
        ] {
            validate_name("network", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        bad(validate_name("network", ""), "network", "", "empty");
        bad(
            validate_name("network", "-web"),
            "network",
            "-web",
            "start with a letter or digit",
        );
        bad(
            validate_name("endpoint", ".hidden"),
            "endpoint",
            ".hidden",
            "'.'",
        );
        bad(
            validate_name("endpoint", "web 1"),
            "endpoint",
            "web 1",
            "' ' is not allowed",
        );
        bad(validate_name("endpoint", "a/b"), "endpoint", "a/b", "'/'");
        bad(validate_name("endpoint", "café"), "endpoint", "café", "'é'");
        let long = "x".repeat(65);
        bad(
            validate_name("network", &long),
            "network",
            &long,
            "65 characters",
        );
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "br-0123456789ab", "netd0", "a", "veth.1-x_y"] {
            validate_ifname("bridge", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        bad(validate_ifname("bridge", ""), "bridge", "", "empty");
        bad(
            validate_ifname("bridge", "br-0123456789abc"),
            "bridge",
            "br-0123456789abc",
            "16 bytes",
        );
        bad(
            validate_ifname("bridge", "."),
            "bridge",
            ".",
            "not interface names",
        );
        bad(
            validate_ifname("bridge", ".."),
            "bridge",
            "..",
            "not interface names",
        );
        bad(validate_ifname("bridge", "br/0"), "bridge", "br/0", "'/'");
        bad(validate_ifname("bridge", "br:0"), "bridge", "br:0", "':'");
        bad(validate_ifname("bridge", "br%d"), "bridge", "br%d", "'%'");
        bad(validate_ifname("bridge", "br 0"), "bridge", "br 0", "' '");
        bad(
            validate_ifname("bridge", "br\t0"),
            "bridge",
            "br\t0",
            "'\\t'",
        );
    }
}

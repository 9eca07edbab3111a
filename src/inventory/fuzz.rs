//! The function the inventory fuzz target (fuzz/) and the saved-corpus test drive: any bytes
//! through loading and validation, then the properties every outcome must have.
//!
//! Loading must never panic, hang or blow the stack, whatever the bytes. An accepted inventory
//! holds only values that are safe on a shell command line; a refused one gives every problem
//! with a position inside the text and a hint of what would be valid.

use std::path::Path;

use super::{Inventory, InventoryErrors, load_bytes};

/// Where fuzzed inventories claim to live: a folder that does not exist, so relative identity
/// files never resolve to real files.
const FUZZ_PATH: &str = "/nonexistent-capstan-fuzz/cluster.yaml";

/// Loads `data` as an inventory and checks the outcome. `Err` describes a broken property
/// (a bug); a refused inventory is `Ok`.
pub fn check_inventory_bytes(data: &[u8]) -> Result<(), String> {
    match load_bytes(data, Path::new(FUZZ_PATH), None) {
        Ok(inventory) => check_accepted(&inventory),
        Err(errors) => check_refused(data, &errors),
    }
}

fn check_accepted(inv: &Inventory) -> Result<(), String> {
    if inv.hosts.is_empty() {
        return Err("an inventory without hosts was accepted".into());
    }
    for host in &inv.hosts {
        for (what, value) in [
            ("host name", host.name.as_str()),
            ("address", host.address.as_str()),
            ("internal address", host.internal_address.as_str()),
        ] {
            if !shell_inert(value) {
                return Err(format!("{what} `{value}` was accepted"));
            }
        }
        for (key, value) in &host.labels {
            if !shell_inert(key) || !shell_inert(value) {
                return Err(format!("label `{key}={value}` was accepted"));
            }
        }
        for taint in &host.taints {
            let text = taint.to_string();
            if !shell_inert(&text) {
                return Err(format!("taint `{text}` was accepted"));
            }
        }
    }
    for san in &inv.cluster.api_endpoint.extra_sans {
        if !shell_inert(san.trim_start_matches("*.")) {
            return Err(format!("extra SAN `{san}` was accepted"));
        }
    }
    if !shell_inert(&inv.cluster.name) || !shell_inert(&inv.cluster.api_endpoint.address) {
        return Err("a cluster name or API address with shell syntax was accepted".into());
    }
    serde_json::to_string(inv).map_err(|e| format!("the inventory does not serialize: {e}"))?;
    Ok(())
}

fn check_refused(data: &[u8], errors: &InventoryErrors) -> Result<(), String> {
    if errors.problems.is_empty() {
        return Err("refused without a problem".into());
    }
    let lines = data.split(|b| *b == b'\n').count();
    for p in &errors.problems {
        if p.line == 0 || p.col == 0 || p.line > lines + 1 {
            return Err(format!(
                "problem at {}:{} outside the text ({lines} lines): {}",
                p.line, p.col, p.message
            ));
        }
        if p.help.is_none() {
            return Err(format!("problem without help: {}", p.message));
        }
    }
    // Rendering must not panic either.
    let _ = errors.to_string();
    Ok(())
}

/// Holds only characters no POSIX shell treats specially.
fn shell_inert(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b':' | b'=' | b'@')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_bytes_are_refused_with_a_position() {
        for data in [
            &b"\xff\xfe"[..],
            b"cluster: {name: a}\n\xc3\x28",
            b"",
            b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ] {
            check_inventory_bytes(data).unwrap();
            assert!(load_bytes(data, Path::new(FUZZ_PATH), None).is_err());
        }
        let err = load_bytes(b"a: 1\nb: \xe9t\xe9\n", Path::new("x.yaml"), None).unwrap_err();
        assert_eq!(err.problems[0].line, 2, "{err}");
        assert_eq!(err.problems[0].col, 4, "{err}");
        assert!(err.to_string().contains("byte 0xe9"), "{err}");
    }

    /// Found by benches/fuzz.sh: YAML counts a lone CR as a line break, so positions after
    /// one named lines past the end of the file. A lone CR is refused where it is; CRLF
    /// line ends are fine.
    #[test]
    fn a_lone_carriage_return_is_refused_where_it_is() {
        let err = load_bytes(
            b"cluster:\n  name: a\rb\n\r\r\r: [\n",
            Path::new("x.yaml"),
            None,
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(
            (err.problems[0].line, err.problems[0].col),
            (2, 10),
            "{err}"
        );
        assert!(err.to_string().contains("carriage return"), "{err}");
        let crlf = b"cluster:\r\n  name: a\r\n  bogus: 1\r\n";
        let err = load_bytes(crlf, Path::new("x.yaml"), None).unwrap_err();
        assert!(!err.to_string().contains("carriage return"), "{err}");
        assert!(err.problems.iter().all(|p| p.line <= 4), "{err}");
        check_inventory_bytes(crlf).unwrap();
    }
}

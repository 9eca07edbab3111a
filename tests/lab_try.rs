//! What a new user sees first: the real `./try-lab.sh` (against the test bed, with the
//! capstan under test) fits on two screens, says each preflight warning once per command,
//! and its second `init` changes nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::lab::{bed, capstan, capstan_env};

/// A terminal of this width; a line longer than it takes more than one row.
const COLUMNS: usize = 120;
/// Two screens of 50 rows.
const ROWS: usize = 100;

/// Removes the script's lab, also when the test fails.
struct Down {
    name: String,
    out: PathBuf,
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = capstan()
            .args(["lab", "down", "--name", &self.name, "--out"])
            .arg(&self.out)
            .output();
    }
}

/// `text` without ANSI colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Rows `text` takes on a terminal `COLUMNS` wide.
fn rows(text: &str) -> usize {
    text.lines()
        .map(|l| l.chars().count().div_ceil(COLUMNS).max(1))
        .sum()
}

/// What each `$ capstan ARGS…` whose arguments start with `args` printed (its command line
/// first).
fn command_output<'a>(out: &'a str, args: &str) -> Vec<&'a str> {
    out.split("\n$ ")
        .filter(|part| part.starts_with(&format!("capstan {args}")))
        .collect()
}

#[test]
fn try_lab_fits_on_two_screens_and_says_things_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = format!("ct-try-{}", std::process::id());
    let _down = Down {
        name: name.clone(),
        out: dir.path().join(&name),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("try-lab.sh");
    let mut cmd = Command::new(&script);
    capstan_env(&mut cmd)
        .env("CAPSTAN_BIN", env!("CARGO_BIN_EXE_capstan"))
        .env("TRY_LAB_DIR", dir.path())
        .env("TRY_LAB_BED", bed())
        .env("TRY_LAB_NAME", &name)
        // The test command built the lab image already (tests/run-all.sh).
        .env("CAPSTAN_SKIP_LAB_IMAGE", "1")
        .env("COLUMNS", COLUMNS.to_string());
    let run = cmd.output().expect("run try-lab.sh");
    let out = plain(&String::from_utf8_lossy(&run.stdout));
    let err = plain(&String::from_utf8_lossy(&run.stderr));
    let all = format!("{out}{err}");
    eprintln!("try-lab.sh printed {} rows:\n{all}", rows(&all));
    assert!(run.status.success(), "try-lab.sh failed:\n{all}");

    // Two screens, stdout and stderr together, as a terminal shows them.
    assert!(
        rows(&all) <= ROWS,
        "{} rows at {COLUMNS} columns, more than two screens ({ROWS})",
        rows(&all)
    );

    // Each command says a warning once, with its hosts, not once per host.
    for args in ["check", "init"] {
        let parts = command_output(&all, &format!("{args} -i "));
        assert!(!parts.is_empty(), "no `capstan {args}` in:\n{all}");
        for part in parts {
            let mut seen = std::collections::BTreeMap::new();
            for l in part
                .lines()
                .filter(|l| l.trim_start().starts_with("warning ["))
            {
                *seen.entry(l.trim()).or_insert(0) += 1;
            }
            for (line, n) in seen {
                assert_eq!(n, 1, "`capstan {args}` says {n} times: {line}\n{part}");
            }
        }
    }

    // The first init builds the cluster; the second changes nothing and says so.
    let inits = command_output(&all, "init -i ");
    let inits: Vec<&&str> = inits
        .iter()
        .filter(|p| !p.lines().next().unwrap_or("").contains("--dry-run"))
        .collect();
    assert_eq!(inits.len(), 2, "{all}");
    assert!(
        inits[1].contains("init: 6 hosts, 0 changed, 6 unchanged, 0 failed, 0 changes"),
        "the second init is not a no-op:\n{}",
        inits[1]
    );
    // And kubectl lists the five nodes Ready.
    let nodes = all.split("\n$ kubectl ").nth(1).expect("kubectl get nodes");
    for node in ["cp1", "cp2", "cp3", "w1", "w2"] {
        assert!(
            nodes
                .lines()
                .any(|l| l.starts_with(node) && l.contains(" Ready ")),
            "{node} is not Ready:\n{nodes}"
        );
    }
}

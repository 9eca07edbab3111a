use super::*;
use crate::facts::{ProbeRequest, probe_script};

/// Runs the probe on this machine with `sh` and parses it: the script works on a real host.
#[test]
fn the_probe_runs_and_parses_on_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("it's a file");
    std::fs::write(&file, b"hello\n").unwrap();
    let hostile = dir.path().join("a;touch pwned");
    let req = ProbeRequest {
        paths: vec![
            file.to_str().unwrap().to_owned(),
            dir.path().to_str().unwrap().to_owned(),
            hostile.to_str().unwrap().to_owned(),
            "/nonexistent/capstan".to_owned(),
        ],
        units: vec!["ssh.service".into(), "capstan-nonexistent.service".into()],
    };
    let script = probe_script(&req).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    if let Ok(dest) = std::env::var("CAPSTAN_PROBE_DUMP") {
        std::fs::write(format!("{dest}.sh"), &script).unwrap();
        std::fs::write(format!("{dest}.txt"), &text).unwrap();
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("pwned").exists(), "a path name was executed");
    let facts = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let f = facts.paths[file.to_str().unwrap()].as_ref().unwrap();
    assert_eq!(f.size, 6);
    assert_eq!(
        f.sha256.as_deref(),
        Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
    );
    assert_eq!(f.kind, "regular file");
    let d = facts.paths[dir.path().to_str().unwrap()].as_ref().unwrap();
    assert_eq!(d.kind, "directory");
    assert_eq!(d.sha256, None);
    assert_eq!(facts.paths["/nonexistent/capstan"], None);
    assert_eq!(facts.paths[hostile.to_str().unwrap()], None);
    assert!(facts.cpus >= 1);
    assert!(facts.memory_bytes > 100 * 1024 * 1024);
    assert!(!facts.kernel.is_empty());
    assert!(facts.has_tool("sh"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((facts.clock_epoch - now).abs() < 5.0, "{} vs {now}", facts.clock_epoch);
    assert!(facts.addresses.iter().any(|a| a.address.is_loopback()));
    assert!(facts.listening.is_some());
}

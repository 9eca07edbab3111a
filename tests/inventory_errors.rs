//! Every bad inventory in tests/fixtures/inventory/bad gives all its problems at once, each
//! with file:line:col and what would be valid. Outputs are compared with insta snapshots.

use std::path::Path;

#[test]
fn bad_inventories_report_every_problem_with_its_position() {
    insta::glob!("fixtures/inventory/bad/*.yaml", |path| {
        let rel = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(path)
            .to_path_buf();
        let err = capstan::inventory::load(&rel).expect_err("a bad inventory must not load");
        assert!(!err.problems.is_empty());
        for p in &err.problems {
            assert!(p.line >= 1 && p.col >= 1, "{p:?} has no position");
            assert!(
                p.help.is_some(),
                "{p:?} says nothing about what would be valid"
            );
        }
        insta::assert_snapshot!(err.to_string());
    });
}

#[test]
fn sample_inventories_are_valid() {
    // The samples name identity files under the user's home; give them one.
    let home = tempfile::tempdir().unwrap();
    for key in [".ssh/id_ed25519", ".vagrant.d/insecure_private_key"] {
        let p = home.path().join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "not checked here").unwrap();
    }
    for dir in ["inventory/sample", "inventory/vagrant"] {
        let file = capstan::inventory::locate(Some(Path::new(dir))).unwrap();
        let inv = capstan::inventory::load_with_home(&file, Some(home.path()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(inv.hosts.len() >= 5, "{dir}");
    }
}

/// Every saved fuzz input (fuzz/corpus/inventory: the fixtures, the samples, alias bombs,
/// deep nesting, huge numbers, non-UTF-8, hostile values, and what benches/fuzz.sh found)
/// goes through the fuzz target's own function: no panic, and its properties hold.
#[test]
fn saved_fuzz_corpus_loads_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/inventory");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let started = std::time::Instant::now();
        if let Err(broken) = capstan::inventory::fuzz::check_inventory_bytes(&data) {
            panic!("{}: {broken}", path.display());
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{} took {:?}",
            path.display(),
            started.elapsed()
        );
        count += 1;
    }
    assert!(count >= 40, "only {count} corpus inputs");
}

#[test]
fn alias_bombs_and_deep_nesting_are_refused_with_a_position() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/inventory");
    for (file, says) in [
        ("alias-bomb.yaml", "alias bomb"),
        ("deep-flow-seq.yaml", "recursion limit"),
        ("deep-flow-map.yaml", "recursion limit"),
        ("deep-block.yaml", "levels deep"),
        ("alias-deep.yaml", "levels deep"),
        ("non-utf8-latin1.yaml", "not UTF-8 text"),
        ("fuzz-found-lone-cr.yaml", "carriage return"),
    ] {
        let err = capstan::inventory::load(&dir.join(file)).expect_err(file);
        assert!(err.to_string().contains(says), "{file}: {err}");
        assert!(err.problems[0].line >= 1, "{file}: {err}");
    }
}

/// A listener that counts connections, standing in for the SSH port of every host.
struct Watch {
    listener: std::net::TcpListener,
}

impl Watch {
    fn new() -> Watch {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("non-blocking");
        Watch { listener }
    }
    fn port(&self) -> u16 {
        self.listener.local_addr().expect("local address").port()
    }
    fn connected(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

/// Hostile values in every field that could reach a shell on a host are refused before any
/// connection: exit 2, the file:line:col of the value, and nothing reaches the SSH port.
#[test]
fn hostile_values_are_refused_before_any_connection() {
    let watch = Watch::new();
    let port = watch.port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    // Each template has one `@` where the hostile value goes, on the line named.
    let fields: &[(&str, &str)] = &[
        ("host name", "  - name: \"@\""),
        ("address", "    address: \"@\""),
        ("internal address", "    internal_address: \"@\""),
        ("label key", "    labels: {\"@\": x}"),
        ("label value", "    labels: {tier: \"@\"}"),
        (
            "taint key",
            "    taints: [{key: \"@\", effect: NoSchedule}]",
        ),
        (
            "taint value",
            "    taints: [{key: k, value: \"@\", effect: NoSchedule}]",
        ),
        ("extra SAN", "  api_endpoint: {extra_sans: [\"@\"]}"),
        ("wildcard SAN", "  api_endpoint: {extra_sans: [\"*.@\"]}"),
        ("cluster name", "  name: \"@\""),
        ("image repository", "  image_repository: \"@\""),
        ("dns domain", "  dns_domain: \"@\""),
        ("ssh user", "  user: \"@\""),
        ("mirror", "  artifacts: {mirror: \"https://example.com/@\"}"),
    ];
    for hostile in [
        "a;rm -rf /",
        "$(reboot)",
        "`id`",
        "x' y",
        "a\\nb",
        "a&&b",
        "a|b",
    ] {
        for (what, template) in fields {
            let line_of_value = template.replace('@', hostile);
            let mut cluster = vec![
                "  name: demo".to_string(),
                "  kubernetes_version: v1.32.3".to_string(),
            ];
            let mut ssh = vec![format!("  port: {port}"), "  user: root".to_string()];
            let mut host = vec![
                "  - name: cp1".to_string(),
                "    address: 127.0.0.1".to_string(),
                "    roles: [control-plane]".to_string(),
            ];
            let key = template.trim_start().split(':').next().unwrap_or("");
            let replace = |lines: &mut Vec<String>| {
                let at = lines
                    .iter()
                    .position(|l| l.trim_start().split(':').next() == Some(key));
                match at {
                    Some(i) => lines[i] = line_of_value.clone(),
                    None => lines.push(line_of_value.clone()),
                }
            };
            match *what {
                "ssh user" => replace(&mut ssh),
                w if template.starts_with("    ") || w == "host name" => replace(&mut host),
                _ => replace(&mut cluster),
            }
            let text = format!(
                "cluster:\n{}\nssh:\n{}\nhosts:\n{}\n",
                cluster.join("\n"),
                ssh.join("\n"),
                host.join("\n")
            );
            std::fs::write(&file, &text).unwrap();
            let line = text
                .lines()
                .position(|l| l == line_of_value)
                .map(|i| i + 1)
                .unwrap();
            let out = assert_cmd::Command::cargo_bin("capstan")
                .unwrap()
                .args(["check", "-i"])
                .arg(&file)
                .env_remove("SSH_AUTH_SOCK")
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{what} `{hostile}` was not refused:\n{text}\n{stdout}\n{stderr}"
            );
            let at = format!("cluster.yaml:{line}:");
            assert!(
                stderr.contains(&at) || stdout.contains(&at),
                "{what} `{hostile}`: no {at} in\n{text}\n{stdout}\n{stderr}"
            );
            assert!(!watch.connected(), "{what} `{hostile}`: capstan connected");
        }
    }
}

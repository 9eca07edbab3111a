//! What a new user reads first: `capstan version`, the completion scripts (loaded in a real
//! bash), the man page, and the README's usage block held against `--help` so that they
//! cannot drift apart.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn capstan(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .env_remove("CAPSTAN_INVENTORY")
        .output()
        .expect("run capstan");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The subcommands `capstan [path] --help` lists (without `help`).
fn subcommands(path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let (code, out, err) = capstan(&args);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn version_text_and_json() {
    let (code, out, _) = capstan(&["version"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("capstan {}\n", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let (code, out, _) = capstan(&["version", "--output", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["capstan"], env!("CARGO_PKG_VERSION"));
    let newest = v["newest_kubernetes"].as_str().expect("a newest version");
    assert!(newest.starts_with("v1."), "{newest}");
    let minors = v["kubernetes_minors"].as_array().expect("minors");
    let newest_minor = newest.rsplit_once('.').expect("vX.Y.Z").0;
    assert!(minors.iter().any(|m| m == newest_minor), "{v}");
}

#[test]
fn bash_completion_loads_and_completes() {
    let (code, script, _) = capstan(&["completion", "bash"]);
    assert_eq!(code, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("capstan.bash");
    std::fs::write(&file, script).expect("write");
    let run = |words: &str, cword: usize| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; \
                 COMP_POINT=${{#COMP_LINE}}; _capstan capstan; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                file.display()
            ))
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = run("capstan ''", 1);
    for c in ["check", "init", "upgrade", "version", "completion"] {
        assert!(top.lines().any(|l| l == c), "{c} not completed: {top}");
    }
    let upgrade = run("capstan upgrade ''", 2);
    assert!(upgrade.lines().any(|l| l == "apply"), "{upgrade}");
    for shell in ["zsh", "fish"] {
        let (code, script, _) = capstan(&["completion", shell]);
        assert_eq!(code, 0);
        assert!(
            script.contains("capstan") && script.contains("upgrade"),
            "{shell}"
        );
    }
}

#[test]
fn the_man_page_names_every_command() {
    let (code, page, _) = capstan(&["man"]);
    assert_eq!(code, 0);
    assert!(page.contains(".TH capstan 1"), "{page}");
    for c in subcommands(&[]) {
        assert!(page.contains(&c), "{c} missing from the man page");
    }
}

/// The README's `## Usage` block: every command it shows exists with every flag it shows,
/// and every command capstan has is shown.
#[test]
fn the_readme_usage_block_matches_the_help() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "## Usage")
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert!(!block.is_empty(), "no usage block in the README");
    // Each entry: its command words and the flags on its line and its continuation lines.
    let mut entries: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for line in &block {
        if let Some(rest) = line.strip_prefix("capstan ") {
            let words: Vec<String> = rest
                .split_whitespace()
                .take_while(|w| w.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
                .map(str::to_string)
                .collect();
            entries.push((words, Vec::new()));
        }
        let Some((_, flags)) = entries.last_mut() else {
            continue;
        };
        // Flags only from the synopsis part (before the description column).
        // The synopsis ends where two spaces open the description column.
        let synopsis = if line.starts_with("capstan ") || line.trim_start().starts_with('[') {
            let t = line.trim_start();
            t.find("  ").map_or(t, |i| &t[..i])
        } else {
            ""
        };
        for w in synopsis.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
            if let Some(f) = w.strip_prefix("--") {
                let name: String = f
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !name.is_empty() {
                    flags.push(format!("--{name}"));
                }
            }
        }
    }
    let mut shown: BTreeSet<Vec<String>> = BTreeSet::new();
    for (words, flags) in &entries {
        // `lab up|down`, `completion bash|zsh|…`: alternatives of one word.
        let mut paths: Vec<Vec<String>> = vec![Vec::new()];
        for w in words {
            let alts: Vec<&str> = w.split('|').collect();
            let is_command_word = paths.iter().all(|p| {
                let known = subcommands(&p.iter().map(String::as_str).collect::<Vec<_>>());
                alts.iter().all(|a| known.iter().any(|k| k == a))
            });
            if !is_command_word {
                break;
            }
            paths = paths
                .iter()
                .flat_map(|p| {
                    alts.iter().map(move |a| {
                        let mut p = p.clone();
                        p.push((*a).to_string());
                        p
                    })
                })
                .collect();
        }
        for p in paths {
            assert!(
                !p.is_empty(),
                "README usage line `capstan {}` names no command",
                words.join(" ")
            );
            let mut args: Vec<&str> = p.iter().map(String::as_str).collect();
            args.push("--help");
            let (code, help, err) = capstan(&args);
            assert_eq!(
                code,
                0,
                "`capstan {}` is in the README but not a command: {err}",
                p.join(" ")
            );
            for f in flags {
                assert!(
                    help.contains(&format!("{f} "))
                        || help.contains(&format!("{f}\n"))
                        || help.contains(&format!("{f}="))
                        || help.contains(&format!("{f} <")),
                    "the README shows `capstan {} {f}`, which its --help does not have",
                    p.join(" ")
                );
            }
            shown.insert(p);
        }
    }
    // Every command, down to the leaves, is in the block.
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let subs = subcommands(&path.iter().map(String::as_str).collect::<Vec<_>>());
        if subs.is_empty() && !path.is_empty() {
            assert!(
                shown.contains(&path),
                "`capstan {}` is missing from the README's usage block",
                path.join(" ")
            );
        }
        for s in subs {
            let mut p = path.clone();
            p.push(s);
            todo.push(p);
        }
    }
}

/// `capstan versions`: the built-in catalog, then an inventory's override laid over it.
#[test]
fn versions_shows_the_catalog_and_an_inventorys_override() {
    let (code, out, err) = capstan(&["versions"]);
    assert_eq!(code, 0, "{err}");
    for minor in ["v1.35", "v1.36", "v1.37"] {
        assert!(out.contains(minor), "{out}");
    }
    assert!(out.contains("A new inventory: kubernetes_version"), "{out}");
    let (code, json, err) = capstan(&["versions", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let minors = v["minors"].as_array().unwrap();
    let m135 = minors.iter().find(|m| m["minor"] == "v1.35").unwrap();
    assert_eq!(m135["end_of_life"], "2027-02-28");
    assert_eq!(m135["coredns"], "v1.13.1");
    assert_eq!(m135["from"], "built in");
    assert!(
        v["pins"]["kubelet"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["version"] == "v1.35.1")
    );

    // v1.38 and its kubelet added beside an inventory: shown, and said to come from there.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster.yaml"),
        "cluster: {name: a, kubernetes_version: v1.38.0}\nhosts:\n  - {name: cp1, address: 192.0.2.1, roles: [control-plane]}\n",
    )
    .unwrap();
    let over = dir.path().join("catalog.yaml");
    std::fs::write(
        &over,
        "kubernetes:\n  v1.38:\n    released: 2026-12-16\n    end_of_life: 2028-02-28\n    images: {coredns: v1.14.4, pause: \"3.10.2\", etcd: 3.7.0-0}\n    containerd: [v2.3.0, v2.2.0]\npins:\n  kubelet:\n    v1.38.0: {amd64: 1111111111111111111111111111111111111111111111111111111111111111}\n",
    )
    .unwrap();
    let inv = dir.path().to_str().unwrap();
    let (code, json, err) = capstan(&["versions", "-i", inv, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let m138 = v["minors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["minor"] == "v1.38")
        .expect("v1.38 from the override");
    assert_eq!(m138["from"], over.display().to_string());
    assert_eq!(m138["newest_patch"], "v1.38.0");
    assert_eq!(v["override_file"], over.display().to_string());
    // A broken override is bad input (exit 2) at its line and column.
    std::fs::write(&over, "kubernetes:\n  v1.38: {released: soon}\n").unwrap();
    let (code, _, err) = capstan(&["versions", "-i", inv]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("catalog.yaml:2:") && err.contains("`soon` is not a date"),
        "{err}"
    );
}

/// An upgrade whose target minor does not run on the inventory's containerd is refused
/// before any connection (the hosts here do not exist), with the matrix and what to set.
#[test]
fn an_upgrade_to_a_minor_the_containerd_does_not_suit_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster.yaml"),
        "cluster: {name: a, kubernetes_version: v1.35.1, versions: {containerd: v2.1.6}}\nhosts:\n  - {name: cp1, address: 192.0.2.1, roles: [control-plane]}\n",
    )
    .unwrap();
    let inv = dir.path().to_str().unwrap();
    for args in [
        vec!["upgrade", "plan", "-i", inv, "--to", "v1.36.2"],
        vec!["upgrade", "apply", "-i", inv, "--to", "v1.36.2", "--yes"],
    ] {
        let (code, _, err) = capstan(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("Kubernetes v1.36 does not run on containerd v2.1.6")
                && err.contains("v2.3.0+ or v2.2.0+ within v2.2")
                && err.contains("cluster.versions.containerd"),
            "{err}"
        );
    }
    // A minor the catalog does not know: refused the same way.
    let (code, _, err) = capstan(&["upgrade", "plan", "-i", inv, "--to", "v1.39.0"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("does not know Kubernetes v1.39.0's minor"),
        "{err}"
    );
}

/// A release the run would install that a `file://` mirror lacks: one error before any
/// connection (the hosts here do not exist), naming each component and version, where the
/// version came from, what the mirror has, and the key to set.
#[test]
fn a_mirror_without_a_release_is_one_error_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    for rel in [
        "release/v1.35.1/bin/linux/amd64",
        "github.com/containerd/containerd/releases/download/v1.7.28",
        "github.com/containerd/containerd/releases/download/v2.1.9",
        "github.com/etcd-io/etcd/releases/download/v3.5.27",
        "github.com/opencontainers/runc/releases/download/v1.3.4",
        "github.com/containernetworking/plugins/releases/download/v1.8.0",
    ] {
        std::fs::create_dir_all(mirror.join(rel)).unwrap();
    }
    let inv = dir.path().join("cluster.yaml");
    let write = |versions: &str| {
        std::fs::write(
            &inv,
            format!(
                "cluster:\n  name: a\n  kubernetes_version: v1.35.1\n  artifacts: {{mirror: 'file://{}'}}\n{versions}hosts:\n  - {{name: cp1, address: 192.0.2.1, roles: [control-plane]}}\n",
                mirror.display()
            ),
        )
        .unwrap();
    };
    // The catalog's default containerd for v1.35 (v2.2.1) is not there, nor etcd v3.5.30.
    write("  versions: {etcd: v3.5.30}\n");
    let inv_arg = inv.to_str().unwrap();
    let (code, _, err) = capstan(&["plan", "-i", inv_arg]);
    assert_eq!(code, 2, "{err}");
    let said = err.replace("\n  | ", " ").replace("\n  │ ", " ");
    for want in [
        "containerd v2.2.1 (the catalog's default for v1.35; the mirror has: v1.7.28, v2.1.9)",
        "etcd v3.5.30 (cluster.versions.etcd; the mirror has: v3.5.27)",
    ] {
        assert!(said.contains(want), "`{want}` not in {said}");
    }
    assert!(!said.contains("runc v"), "runc is there: {said}");
    assert!(!said.contains("kubelet v"), "the kubelet is there: {said}");
    assert!(said.contains("cluster.versions.containerd"), "{said}");
    // Everything there: the run goes on to connect (and fails there, not here).
    write("  versions: {etcd: v3.5.27, containerd: v2.1.9}\n");
    let (_, _, err) = capstan(&["plan", "-i", inv_arg, "--connect-timeout", "1"]);
    assert!(!err.contains("lacks what this run installs"), "{err}");
}

/// `capstan images list`: every image the inventory's version needs (or an upgrade
/// target's), under its `image_repository`, one per line or as JSON; a bad `--to` is bad
/// input before anything else.
#[test]
fn images_list_names_every_image_of_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let write = |cluster: &str| {
        std::fs::write(
            dir.path().join("cluster.yaml"),
            format!("cluster: {{name: a, {cluster}}}\nhosts:\n  - {{name: cp1, address: 192.0.2.1, roles: [control-plane]}}\n"),
        )
        .unwrap();
    };
    let inv = dir.path().to_str().unwrap();
    write("kubernetes_version: v1.35.1");
    let (code, out, err) = capstan(&["images", "list", "-i", inv]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    for image in [
        "registry.k8s.io/kube-apiserver:v1.35.1",
        "registry.k8s.io/kube-controller-manager:v1.35.1",
        "registry.k8s.io/kube-scheduler:v1.35.1",
        "registry.k8s.io/kube-proxy:v1.35.1",
        "registry.k8s.io/coredns/coredns:v1.13.1",
    ] {
        assert!(lines.contains(&image), "{image} missing:\n{out}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("registry.k8s.io/pause:")),
        "{out}"
    );
    // The CNI's images come from its role.
    assert!(lines.iter().any(|l| l.contains("/flannel:")), "{out}");
    assert!(out.ends_with('\n'), "{out:?}");

    // An upgrade target's images, as JSON, named by what runs them.
    let (code, json, err) = capstan(&[
        "images", "list", "-i", inv, "--to", "v1.37.1", "--output", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kubernetes_version"], "v1.37.1");
    let images = v["images"].as_array().unwrap();
    let of = |name: &str| {
        images
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {json}"))["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        of("kube-apiserver"),
        "registry.k8s.io/kube-apiserver:v1.37.1"
    );
    assert_eq!(of("kube-proxy"), "registry.k8s.io/kube-proxy:v1.37.1");
    assert!(
        of("coredns").starts_with("registry.k8s.io/coredns/coredns:v"),
        "{json}"
    );

    // A mirror of the Kubernetes images: every one of them comes from it, as kubeadm's do.
    write("kubernetes_version: v1.36.4, image_repository: mirror.example:5000/k8s");
    let (code, out, err) = capstan(&["images", "list", "-i", inv]);
    assert_eq!(code, 0, "{err}");
    for name in [
        "kube-apiserver:v1.36.4",
        "kube-proxy:v1.36.4",
        "coredns:v",
        "pause:",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("mirror.example:5000/k8s/{name}"))),
            "{name} is not from the mirror:\n{out}"
        );
    }

    // A minor the catalog does not know, and a version that is not one: exit 2, with what to do.
    let (code, _, err) = capstan(&["images", "list", "-i", inv, "--to", "v1.99.0"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("v1.99") && err.contains("capstan versions"),
        "{err}"
    );
    let (code, _, err) = capstan(&["images", "list", "-i", inv, "--to", "banana"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`banana` is not a Kubernetes version"),
        "{err}"
    );
}

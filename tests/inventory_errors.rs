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

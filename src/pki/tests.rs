//! Unit tests: every certificate as kubeadm makes it (parsed back with x509-parser, chains
//! checked with x509-parser and `openssl verify`), kubeconfigs, the re-issue decisions,
//! adoption, the store's permissions, what each host gets.
#![allow(
    clippy::type_complexity,
    clippy::items_after_statements,
    clippy::case_sensitive_file_extension_comparisons
)]

use std::collections::BTreeSet;
use std::path::Path;

use time::{Duration, OffsetDateTime};

use super::adopt::{self, RemoteFiles};
use super::inspect::{self, CertInfo};
use super::plan::{Action, ItemKind};
use super::spec::{self, CaKind, San, Usage};
use super::*;
use crate::inventory::{self, Inventory, KeyAlgorithm};

const THREE_CP: &str = r"
cluster:
  name: demo
  kubernetes_version: v1.32.3
  service_subnet: 10.96.0.0/12
  dns_domain: cluster.local
  api_endpoint:
    mode: external-lb
    address: 192.0.2.10
  pki:
    key_algorithm: KEYALG
hosts:
  - name: cp1
    address: 192.0.2.11
    internal_address: 10.0.0.11
    roles: [control-plane]
  - name: cp2
    address: 192.0.2.12
    internal_address: 10.0.0.12
    roles: [control-plane]
  - name: cp3
    address: 192.0.2.13
    internal_address: 10.0.0.13
    roles: [control-plane]
  - name: w1
    address: 192.0.2.21
    roles: [worker]
  - name: lb1
    address: 192.0.2.10
    roles: [load-balancer]
";

fn inv_with(text: &str, dir: &Path) -> Inventory {
    let path = dir.join("cluster.yaml");
    std::fs::write(&path, text).unwrap();
    inventory::load_str(text, &path, None).unwrap_or_else(|e| panic!("{e}"))
}

fn inv(alg: &str, dir: &Path) -> Inventory {
    inv_with(&THREE_CP.replace("KEYALG", alg), dir)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn fresh(inv: &Inventory) -> PkiState {
    let mut state = PkiState::default();
    let plan = ensure(inv, &mut state, now()).unwrap();
    assert!(
        plan.items.iter().all(|i| i.action == Action::Create),
        "{plan:#?}"
    );
    state
}

fn info(state: &PkiState, id: &str) -> CertInfo {
    inspect::parse_pem(&state.leaves[id].cert_pem).unwrap()
}

fn ip(s: &str) -> San {
    San::Ip(s.parse().unwrap())
}

fn dns(s: &str) -> San {
    San::Dns(s.into())
}

/// (id, CN, O, EKU, issuer): kubeadm's certificate list (certlist.go, kubeconfig phase, v1.29+).
const EXPECTED: &[(&str, &str, &[&str], &[Usage], CaKind)] = &[
    (
        "apiserver",
        "kube-apiserver",
        &[],
        &[Usage::ServerAuth],
        CaKind::Ca,
    ),
    (
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        &["kubeadm:cluster-admins"],
        &[Usage::ClientAuth],
        CaKind::Ca,
    ),
    (
        "front-proxy-client",
        "front-proxy-client",
        &[],
        &[Usage::ClientAuth],
        CaKind::FrontProxyCa,
    ),
    (
        "apiserver-etcd-client",
        "kube-apiserver-etcd-client",
        &[],
        &[Usage::ClientAuth],
        CaKind::EtcdCa,
    ),
    (
        "etcd/healthcheck-client",
        "kube-etcd-healthcheck-client",
        &[],
        &[Usage::ClientAuth],
        CaKind::EtcdCa,
    ),
    (
        "nodes/cp2/etcd/server",
        "cp2",
        &[],
        &[Usage::ServerAuth, Usage::ClientAuth],
        CaKind::EtcdCa,
    ),
    (
        "nodes/cp2/etcd/peer",
        "cp2",
        &[],
        &[Usage::ServerAuth, Usage::ClientAuth],
        CaKind::EtcdCa,
    ),
    (
        "kubeconfig/admin",
        "kubernetes-admin",
        &["kubeadm:cluster-admins"],
        &[Usage::ClientAuth],
        CaKind::Ca,
    ),
    (
        "kubeconfig/super-admin",
        "kubernetes-super-admin",
        &["system:masters"],
        &[Usage::ClientAuth],
        CaKind::Ca,
    ),
    (
        "kubeconfig/controller-manager",
        "system:kube-controller-manager",
        &[],
        &[Usage::ClientAuth],
        CaKind::Ca,
    ),
    (
        "kubeconfig/scheduler",
        "system:kube-scheduler",
        &[],
        &[Usage::ClientAuth],
        CaKind::Ca,
    ),
    (
        "nodes/w1/kubelet-client",
        "system:node:w1",
        &["system:nodes"],
        &[Usage::ClientAuth],
        CaKind::Ca,
    ),
    (
        "nodes/w1/kubelet",
        "system:node:w1",
        &["system:nodes"],
        &[Usage::ServerAuth],
        CaKind::Ca,
    ),
];

fn check_all(alg_text: &str, alg: KeyAlgorithm) {
    let dir = tempfile::tempdir().unwrap();
    let inv = inv(alg_text, dir.path());
    let t0 = now();
    let state = fresh(&inv);
    for kind in CaKind::ALL {
        let ca = inspect::parse_pem(&state.cas[&kind].cert_pem).unwrap();
        assert!(ca.is_ca, "{kind}");
        assert_eq!(ca.common_name, kind.common_name());
        assert!(
            ca.key_cert_sign && ca.digital_signature && ca.key_encipherment,
            "{kind}"
        );
        assert_eq!(ca.key_algorithm, Some(alg));
        assert!(ca.subject_key_id.is_some());
        let life = ca.not_after - ca.not_before;
        assert_eq!(life.whole_days(), 3650, "{kind}");
        assert!(ca.not_before <= t0 && ca.not_before > t0 - Duration::minutes(10));
        assert!(inspect::key_matches(&ca, state.cas[&kind].key_pem.expose()));
    }
    let ids: BTreeSet<String> = spec::leaves(&inv).into_iter().map(|s| s.id).collect();
    let stored: BTreeSet<String> = state.leaves.keys().cloned().collect();
    assert_eq!(ids, stored);
    for (id, cn, org, eku, ca) in EXPECTED {
        let c = info(&state, id);
        assert_eq!(c.common_name, *cn, "{id}");
        assert_eq!(
            c.organization,
            org.iter().map(|s| (*s).to_string()).collect::<Vec<_>>(),
            "{id}"
        );
        assert_eq!(c.usages, eku.to_vec(), "{id}");
        assert!(
            c.digital_signature && c.key_encipherment && !c.key_cert_sign,
            "{id}"
        );
        assert!(!c.is_ca, "{id}");
        assert_eq!(c.key_algorithm, Some(alg), "{id}");
        assert_eq!((c.not_after - c.not_before).whole_days(), 365, "{id}");
        let ca_info = inspect::parse_pem(&state.cas[ca].cert_pem).unwrap();
        assert_eq!(c.issuer_common_name, ca.common_name(), "{id}");
        assert_eq!(
            c.authority_key_id, ca_info.subject_key_id,
            "{id}: AKI is the CA's SKI"
        );
        assert!(c.subject_key_id.is_some(), "{id}");
        assert!(
            inspect::signed_by(&state.leaves[*id].cert_pem, &state.cas[ca].cert_pem),
            "{id}"
        );
        assert!(
            inspect::key_matches(&c, state.leaves[*id].key_pem.expose()),
            "{id}"
        );
        openssl_verify(&state.cas[ca].cert_pem, &state.leaves[*id].cert_pem, id);
    }
    // Serials are random and distinct.
    let serials: BTreeSet<Vec<u8>> = state
        .leaves
        .keys()
        .map(|id| info(&state, id).serial)
        .collect();
    assert_eq!(serials.len(), state.leaves.len());

    let api = info(&state, "apiserver");
    let want: BTreeSet<San> = [
        dns("cp1"),
        dns("cp2"),
        dns("cp3"),
        ip("10.0.0.11"),
        ip("10.0.0.12"),
        ip("10.0.0.13"),
        ip("192.0.2.11"),
        ip("192.0.2.12"),
        ip("192.0.2.13"),
        ip("192.0.2.10"),
        ip("127.0.0.1"),
        ip("10.96.0.1"),
        dns("localhost"),
        dns("kubernetes"),
        dns("kubernetes.default"),
        dns("kubernetes.default.svc"),
        dns("kubernetes.default.svc.cluster.local"),
    ]
    .into_iter()
    .collect();
    assert_eq!(api.sans, want);
    let etcd = info(&state, "nodes/cp2/etcd/server");
    let want: BTreeSet<San> = [
        dns("cp2"),
        dns("localhost"),
        ip("10.0.0.12"),
        ip("192.0.2.12"),
        ip("127.0.0.1"),
        ip("::1"),
    ]
    .into_iter()
    .collect();
    assert_eq!(etcd.sans, want);
    assert_eq!(info(&state, "nodes/cp2/etcd/peer").sans, want);
    let kubelet = info(&state, "nodes/w1/kubelet");
    assert_eq!(
        kubelet.sans,
        [dns("w1"), ip("192.0.2.21")].into_iter().collect()
    );
    // No etcd certs for workers, no kubelet for the load balancer.
    assert!(!state.leaves.contains_key("nodes/w1/etcd/server"));
    assert!(!state.leaves.contains_key("nodes/lb1/kubelet"));
    // The service-account pair matches.
    let sa = state.sa.as_ref().unwrap();
    assert!(String::from_utf8_lossy(&sa.public_pem).contains("BEGIN PUBLIC KEY"));
    assert_eq!(
        inspect::key_public_der(sa.key_pem.expose()).unwrap(),
        pem_body(&sa.public_pem)
    );
}

fn pem_body(pem: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64: String = String::from_utf8_lossy(pem)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn openssl_verify(ca: &[u8], cert: &[u8], what: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca).unwrap();
    std::fs::write(dir.path().join("c.crt"), cert).unwrap();
    let Ok(out) = std::process::Command::new("openssl")
        .args(["verify", "-CAfile", "ca.crt", "c.crt"])
        .current_dir(dir.path())
        .output()
    else {
        return; // no openssl on this machine: x509-parser's check above stands
    };
    assert!(
        out.status.success(),
        "openssl verify {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ecdsa_certificates_are_kubeadms() {
    check_all("ecdsa-p256", KeyAlgorithm::EcdsaP256);
}

#[test]
fn rsa_certificates_are_kubeadms() {
    check_all("rsa-2048", KeyAlgorithm::Rsa2048);
}

#[test]
fn kubeconfigs_embed_the_right_data() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inv("ecdsa-p256", dir.path());
    let state = fresh(&inv);
    let ca = &state.cas[&CaKind::Ca].cert_pem;
    let cases = [
        (
            "admin.conf",
            "kubeconfig/admin",
            "kubernetes-admin",
            "https://192.0.2.10:6443",
        ),
        (
            "nodes/cp1/admin.conf",
            "kubeconfig/admin",
            "kubernetes-admin",
            "https://192.0.2.10:6443",
        ),
        (
            "nodes/cp1/super-admin.conf",
            "kubeconfig/super-admin",
            "kubernetes-super-admin",
            "https://192.0.2.10:6443",
        ),
        (
            "nodes/cp2/controller-manager.conf",
            "kubeconfig/controller-manager",
            "system:kube-controller-manager",
            "https://10.0.0.12:6443",
        ),
        (
            "nodes/cp3/scheduler.conf",
            "kubeconfig/scheduler",
            "system:kube-scheduler",
            "https://10.0.0.13:6443",
        ),
        (
            "nodes/w1/kubelet.conf",
            "nodes/w1/kubelet-client",
            "system:node:w1",
            "https://192.0.2.10:6443",
        ),
        (
            "nodes/cp1/kubelet.conf",
            "nodes/cp1/kubelet-client",
            "system:node:cp1",
            "https://192.0.2.10:6443",
        ),
    ];
    for (file, cert_id, user, server) in cases {
        let text = &state.kubeconfigs[file];
        let doc: serde_yaml::Value = serde_yaml::from_slice(text).unwrap();
        assert_eq!(doc["kind"].as_str(), Some("Config"), "{file}");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"].as_str(),
            Some(server),
            "{file}"
        );
        assert_eq!(doc["clusters"][0]["name"].as_str(), Some("demo"), "{file}");
        assert_eq!(doc["users"][0]["name"].as_str(), Some(user), "{file}");
        let ctx = format!("{user}@demo");
        assert_eq!(
            doc["current-context"].as_str(),
            Some(ctx.as_str()),
            "{file}"
        );
        assert_eq!(
            doc["contexts"][0]["context"]["user"].as_str(),
            Some(user),
            "{file}"
        );
        assert_eq!(
            kubeconfig::certificate_authority(text).as_deref(),
            Some(ca.as_slice()),
            "{file}"
        );
        assert_eq!(
            kubeconfig::client_certificate(text).as_deref(),
            Some(state.leaves[cert_id].cert_pem.as_slice()),
            "{file}"
        );
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(doc["users"][0]["user"]["client-key-data"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            key,
            state.leaves[cert_id].key_pem.expose().as_bytes(),
            "{file}"
        );
    }
    // Only the first control plane gets super-admin.conf.
    assert!(!state.kubeconfigs.contains_key("nodes/cp2/super-admin.conf"));
    assert!(!state.kubeconfigs.contains_key("nodes/w1/admin.conf"));
}

#[test]
fn unchanged_inventory_reissues_nothing_also_after_a_save() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inv("ecdsa-p256", dir.path());
    let store = Store::for_inventory(&inv);
    let mut state = store.load().unwrap();
    ensure(&inv, &mut state, now()).unwrap();
    let saved = store.save(&state).unwrap();
    assert!(saved.written.contains(&"ca.key".to_string()));
    let mut again = store.load().unwrap();
    assert_eq!(again, state, "what was saved loads back identically");
    let plan = ensure(&inv, &mut again, now()).unwrap();
    let changes: Vec<_> = plan.changes().collect();
    assert!(changes.is_empty(), "{changes:#?}");
    assert_eq!(again, state);
    assert!(store.save(&again).unwrap().written.is_empty());
}

#[test]
fn an_added_san_reissues_apiserver_only() {
    let dir = tempfile::tempdir().unwrap();
    let inv1 = inv("ecdsa-p256", dir.path());
    let mut state = fresh(&inv1);
    let before = state.clone();
    let text = THREE_CP.replace("KEYALG", "ecdsa-p256").replace(
        "    address: 192.0.2.10\n  pki:",
        "    address: 192.0.2.10\n    extra_sans: [api.example.com]\n  pki:",
    );
    let inv2 = inv_with(&text, dir.path());
    let plan = ensure(&inv2, &mut state, now()).unwrap();
    let changed: Vec<(&str, Action)> = plan.changes().map(|i| (i.id.as_str(), i.action)).collect();
    assert_eq!(changed, vec![("apiserver", Action::Reissue)]);
    assert!(
        plan.item("apiserver")
            .unwrap()
            .reason
            .as_deref()
            .unwrap()
            .contains("adds DNS:api.example.com")
    );
    assert!(
        info(&state, "apiserver")
            .sans
            .contains(&dns("api.example.com"))
    );
    for (id, pair) in &before.leaves {
        if id != "apiserver" {
            assert_eq!(&state.leaves[id], pair, "{id} untouched");
        }
    }
    assert_eq!(state.cas, before.cas);
}

#[test]
fn a_new_control_plane_reissues_apiserver_and_adds_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let inv1 = inv("ecdsa-p256", dir.path());
    let mut state = fresh(&inv1);
    let text = THREE_CP.replace("KEYALG", "ecdsa-p256").replace(
        "  - name: w1\n",
        "  - name: cp4\n    address: 192.0.2.14\n    roles: [control-plane]\n  - name: cp5\n    address: 192.0.2.15\n    roles: [control-plane]\n  - name: w1\n",
    );
    let inv2 = inv_with(&text, dir.path());
    let plan = ensure(&inv2, &mut state, now()).unwrap();
    let reissued: Vec<&str> = plan
        .changes()
        .filter(|i| i.action == Action::Reissue)
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(reissued, vec!["apiserver"]);
    assert!(
        plan.changes()
            .all(|i| i.action != Action::Reissue || i.id == "apiserver")
    );
    assert!(state.leaves.contains_key("nodes/cp4/etcd/server"));
}

#[test]
fn expiring_certificates_are_renewed_and_cas_warned() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inv("ecdsa-p256", dir.path());
    let long_ago = now() - Duration::days(340);
    let mut state = PkiState::default();
    ensure(&inv, &mut state, long_ago).unwrap();
    let old = state.clone();
    let plan = ensure(&inv, &mut state, now()).unwrap();
    for it in &plan.items {
        match it.kind {
            ItemKind::Certificate => {
                assert_eq!(it.action, Action::Reissue, "{}", it.id);
                assert!(
                    it.reason.as_deref().unwrap().contains("expires in"),
                    "{:?}",
                    it.reason
                );
            }
            ItemKind::Ca | ItemKind::ServiceAccountKey => assert_eq!(it.action, Action::Keep),
            ItemKind::Kubeconfig => assert_eq!(it.action, Action::Update),
        }
    }
    assert_eq!(state.cas, old.cas);
    assert!(info(&state, "apiserver").not_after > now() + Duration::days(360));
    assert!(plan.warnings.is_empty());
    // A CA near its end is a warning, never silently replaced.
    let ca_old = now() - Duration::days(3640);
    let mut state = PkiState::default();
    ensure(&inv, &mut state, ca_old).unwrap();
    let plan = super::plan(&inv, &state, now());
    assert!(
        plan.warnings.iter().any(|w| w.contains("the ca expires")),
        "{:?}",
        plan.warnings
    );
    assert!(
        plan.items
            .iter()
            .filter(|i| i.kind == ItemKind::Ca)
            .all(|i| i.action == Action::Keep)
    );
    // Leaves never outlive their CA.
    let mut state2 = state.clone();
    ensure(&inv, &mut state2, now()).unwrap();
    let ca = inspect::parse_pem(&state2.cas[&CaKind::Ca].cert_pem).unwrap();
    assert!(info(&state2, "apiserver").not_after <= ca.not_after);
}

#[test]
fn a_new_key_algorithm_reissues_leaves_not_cas() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = fresh(&inv("ecdsa-p256", dir.path()));
    let cas = state.cas.clone();
    let inv2 = inv("rsa-2048", dir.path());
    let plan = ensure(&inv2, &mut state, now()).unwrap();
    assert!(
        plan.items
            .iter()
            .filter(|i| i.kind == ItemKind::Certificate)
            .all(|i| i.action == Action::Reissue)
    );
    assert_eq!(state.cas, cas);
    assert_eq!(
        info(&state, "apiserver").key_algorithm,
        Some(KeyAlgorithm::Rsa2048)
    );
    // The ECDSA CA signs RSA leaves.
    assert!(inspect::signed_by(
        &state.leaves["apiserver"].cert_pem,
        &cas[&CaKind::Ca].cert_pem
    ));
}

#[test]
fn a_missing_key_or_a_foreign_signature_reissues() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inv("ecdsa-p256", dir.path());
    let mut state = fresh(&inv);
    let other = fresh(&inv);
    state.leaves.get_mut("front-proxy-client").unwrap().key_pem = KeyPem::new("");
    state
        .leaves
        .insert("apiserver".into(), other.leaves["apiserver"].clone());
    let plan = super::plan(&inv, &state, now());
    let changed: Vec<&str> = plan
        .changes()
        .filter(|i| i.kind == ItemKind::Certificate)
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(changed, vec!["apiserver", "front-proxy-client"]);
    assert!(
        plan.item("apiserver")
            .unwrap()
            .reason
            .as_deref()
            .unwrap()
            .contains("not signed by the current ca")
    );
}

fn remote_of(state: &PkiState) -> RemoteFiles {
    let mut r = RemoteFiles::new();
    for (kind, pair) in &state.cas {
        r.insert(format!("{}.crt", kind.id()), pair.cert_pem.clone());
        r.insert(
            format!("{}.key", kind.id()),
            pair.key_pem.expose().as_bytes().to_vec(),
        );
    }
    let sa = state.sa.as_ref().unwrap();
    r.insert("sa.key".into(), sa.key_pem.expose().as_bytes().to_vec());
    r.insert("sa.pub".into(), sa.public_pem.clone());
    r
}

#[test]
fn missing_local_state_adopts_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inv("ecdsa-p256", dir.path());
    let cluster = fresh(&inv);
    let mut local = PkiState::default();
    let adopted = adopt::adopt(&mut local, "cp1", &remote_of(&cluster), dir.path()).unwrap();
    let whats: Vec<&str> = adopted.iter().map(|a| a.what.as_str()).collect();
    assert_eq!(whats, vec!["ca", "front-proxy-ca", "etcd-ca", "sa"]);
    assert_eq!(local.cas, cluster.cas);
    assert_eq!(local.sa, cluster.sa);
    let plan = ensure(&inv, &mut local, now()).unwrap();
    assert!(
        plan.items
            .iter()
            .filter(|i| i.kind == ItemKind::Ca)
            .all(|i| i.action == Action::Keep)
    );
    assert!(inspect::signed_by(
        &local.leaves["apiserver"].cert_pem,
        &cluster.cas[&CaKind::Ca].cert_pem
    ));
    // Adopting again from the same cluster is a no-op.
    let again = adopt::adopt(&mut local, "cp1", &remote_of(&cluster), dir.path()).unwrap();
    assert!(again.is_empty());
}

#[test]
fn a_ca_mismatch_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inv("ecdsa-p256", dir.path());
    let cluster = fresh(&inv);
    let mut local = fresh(&inv);
    // Only the etcd CA differs; the rest would be adoptable.
    let mut remote = remote_of(&local);
    remote.insert(
        "etcd/ca.crt".into(),
        cluster.cas[&CaKind::EtcdCa].cert_pem.clone(),
    );
    local.cas.remove(&CaKind::FrontProxyCa);
    let before = local.clone();
    let err = adopt::adopt(&mut local, "cp1", &remote, dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("etcd-ca on cp1 differs"), "{text}");
    let local_fp =
        inspect::fingerprint(&inspect::pem_to_der(&before.cas[&CaKind::EtcdCa].cert_pem).unwrap());
    assert!(text.contains(&local_fp), "{text}");
    assert_eq!(local, before, "nothing adopted");
    // A CA without its key cannot be adopted.
    let mut empty = PkiState::default();
    let mut remote = remote_of(&cluster);
    remote.remove("ca.key");
    let err = adopt::adopt(&mut empty, "cp1", &remote, dir.path()).unwrap_err();
    assert!(err.to_string().contains("not its private key"), "{err}");
    assert!(empty.is_empty());
}

#[test]
fn a_readable_pki_folder_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let inv = inv("ecdsa-p256", dir.path());
    let store = Store::for_inventory(&inv);
    store.save(&fresh(&inv)).unwrap();
    let meta = std::fs::metadata(store.root()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let key = store.root().join("etcd/ca.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(store.root().join("etcd"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, PkiError::Insecure { .. }), "{err}");
    assert!(err.to_string().contains("etcd/ca.key"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(store.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        store.load().unwrap_err(),
        PkiError::Insecure { .. }
    ));
}

#[test]
fn hosts_get_kubeadms_files_and_workers_no_ca_key() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inv("ecdsa-p256", dir.path());
    let state = fresh(&inv);
    let files = |name: &str| host_files(&inv, inv.host(name).unwrap(), &state).unwrap();
    let cp1 = files("cp1");
    let paths: BTreeSet<&str> = cp1.iter().map(|f| f.path.as_str()).collect();
    for p in [
        "/etc/kubernetes/pki/ca.crt",
        "/etc/kubernetes/pki/ca.key",
        "/etc/kubernetes/pki/apiserver.crt",
        "/etc/kubernetes/pki/apiserver.key",
        "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
        "/etc/kubernetes/pki/front-proxy-ca.crt",
        "/etc/kubernetes/pki/front-proxy-ca.key",
        "/etc/kubernetes/pki/front-proxy-client.crt",
        "/etc/kubernetes/pki/sa.key",
        "/etc/kubernetes/pki/sa.pub",
        "/etc/kubernetes/pki/apiserver-etcd-client.key",
        "/etc/kubernetes/pki/etcd/ca.crt",
        "/etc/kubernetes/pki/etcd/ca.key",
        "/etc/kubernetes/pki/etcd/server.crt",
        "/etc/kubernetes/pki/etcd/peer.key",
        "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/super-admin.conf",
        "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/scheduler.conf",
        "/etc/kubernetes/kubelet.conf",
        "/var/lib/kubelet/pki/kubelet.crt",
        "/var/lib/kubelet/pki/kubelet.key",
    ] {
        assert!(paths.contains(p), "cp1 lacks {p}");
    }
    for f in &cp1 {
        let secret = f.path.ends_with(".key") || f.path.ends_with(".conf");
        assert_eq!(f.secret, secret, "{}", f.path);
        let mode = if secret || f.path.ends_with("sa.pub") {
            0o600
        } else {
            0o644
        };
        assert_eq!(f.mode, mode, "{}", f.path);
        assert_eq!((f.owner.as_str(), f.group.as_str()), ("root", "root"));
    }
    let server = cp1
        .iter()
        .find(|f| f.path.ends_with("etcd/server.crt"))
        .unwrap();
    assert_eq!(server.bytes, state.leaves["nodes/cp1/etcd/server"].cert_pem);
    assert!(
        !files("cp2")
            .iter()
            .any(|f| f.path.ends_with("super-admin.conf"))
    );

    let w1 = files("w1");
    let paths: Vec<&str> = w1.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "/etc/kubernetes/pki/ca.crt",
            "/etc/kubernetes/kubelet.conf",
            "/var/lib/kubelet/pki/kubelet.crt",
            "/var/lib/kubelet/pki/kubelet.key",
        ]
    );
    assert!(files("lb1").is_empty());
    // The debug form of host files and state never shows key material.
    let dbg = format!("{w1:?} {state:?}");
    assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
}

#[test]
fn external_etcd_keeps_the_etcd_ca_key_on_etcd_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let text = r"
cluster:
  name: demo
  kubernetes_version: v1.32.3
  etcd:
    topology: external
hosts:
  - name: cp1
    address: 10.0.0.11
    roles: [control-plane]
  - name: e1
    address: 10.0.0.31
    roles: [etcd]
";
    let inv = inv_with(text, dir.path());
    let state = fresh(&inv);
    let paths = |name: &str| -> BTreeSet<String> {
        host_files(&inv, inv.host(name).unwrap(), &state)
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect()
    };
    let cp = paths("cp1");
    assert!(cp.contains("/etc/kubernetes/pki/etcd/ca.crt"));
    assert!(cp.contains("/etc/kubernetes/pki/apiserver-etcd-client.crt"));
    assert!(!cp.contains("/etc/kubernetes/pki/etcd/ca.key"));
    assert!(!cp.contains("/etc/kubernetes/pki/etcd/server.crt"));
    let e1 = paths("e1");
    assert!(e1.contains("/etc/kubernetes/pki/etcd/ca.key"));
    assert!(e1.contains("/etc/kubernetes/pki/etcd/server.crt"));
    assert!(!e1.contains("/etc/kubernetes/pki/ca.key"));
    assert!(!e1.contains("/etc/kubernetes/kubelet.conf"));
    // single mode: the endpoint is the one control plane.
    assert!(state.kubeconfigs["admin.conf"].starts_with(b"apiVersion"));
    assert!(
        String::from_utf8_lossy(&state.kubeconfigs["nodes/cp1/kubelet.conf"])
            .contains("server: https://10.0.0.11:6443")
    );
}

#[test]
fn renew_selects_by_kubeadm_names() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inv("ecdsa-p256", dir.path());
    let mut state = fresh(&inv);
    let before = state.clone();
    let plan = plan::renew(
        &inv,
        &mut state,
        &["etcd-server".into(), "admin.conf".into()],
        now(),
        true,
    )
    .unwrap();
    assert_eq!(state, before, "a dry run changes nothing");
    let ids: Vec<&str> = plan.changes().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "kubeconfig/admin",
            "nodes/cp1/etcd/server",
            "nodes/cp2/etcd/server",
            "nodes/cp3/etcd/server",
            "admin.conf",
            "nodes/cp1/admin.conf",
            "nodes/cp2/admin.conf",
            "nodes/cp3/admin.conf",
        ]
    );
    plan::renew(&inv, &mut state, &["apiserver".into()], now(), false).unwrap();
    assert_ne!(state.leaves["apiserver"], before.leaves["apiserver"]);
    assert_eq!(
        state.leaves["front-proxy-client"],
        before.leaves["front-proxy-client"]
    );
    let err = plan::renew(&inv, &mut state, &["apiservr".into()], now(), true).unwrap_err();
    assert!(err.to_string().contains("apiservr"));
}

#[test]
fn expiry_dump_parses_into_kubeadms_table() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inv("ecdsa-p256", dir.path());
    let state = fresh(&inv);
    let host = inv.host("cp1").unwrap();
    let mut dump = String::new();
    for f in host_files(&inv, host, &state).unwrap() {
        if f.path.ends_with(".crt") {
            dump.push_str(&format!(
                "==> {}\n{}",
                f.path,
                String::from_utf8_lossy(&f.bytes)
            ));
        } else if f.path.ends_with(".conf") {
            let b64 = String::from_utf8_lossy(&f.bytes)
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("client-certificate-data: ")
                        .map(str::to_string)
                })
                .unwrap();
            dump.push_str(&format!("==> {}\n{b64}\n", f.path));
        }
    }
    dump.push_str("==> /etc/kubernetes/pki/extra.crt\n");
    dump.push_str(&String::from_utf8_lossy(
        &state.leaves["apiserver"].cert_pem,
    ));
    let managed = hosts::managed_paths(&inv, host);
    let (rows, bad) = expiry::parse_dump("cp1", &dump, &managed, now());
    assert!(bad.is_empty(), "{bad:?}");
    let find = |name: &str| {
        rows.iter()
            .find(|r| r.certificate == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(find("apiserver").certificate_authority, "ca");
    assert_eq!(find("apiserver").residual_time, "364d");
    assert_eq!(find("etcd-server").certificate_authority, "etcd-ca");
    assert_eq!(
        find("front-proxy-client").certificate_authority,
        "front-proxy-ca"
    );
    assert_eq!(find("admin.conf").certificate_authority, "ca");
    assert_eq!(find("kubelet").certificate_authority, "ca");
    assert!(find("ca").is_ca);
    assert_eq!(find("ca").residual_time, "9y");
    assert!(!find("scheduler.conf").externally_managed);
    assert!(find("extra").externally_managed);
    assert_eq!(rows.len(), 17);
}

#[test]
fn residual_times_read_like_kubeadms() {
    use expiry::residual;
    assert_eq!(residual(Duration::seconds(-5)), "<invalid>");
    assert_eq!(residual(Duration::seconds(30)), "30s");
    assert_eq!(residual(Duration::minutes(5)), "5m");
    assert_eq!(residual(Duration::hours(47)), "47h");
    assert_eq!(residual(Duration::days(364)), "364d");
    assert_eq!(residual(Duration::days(3649)), "9y");
}

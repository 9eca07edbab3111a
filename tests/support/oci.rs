//! Small OCI images made by the tests: one layer holding one file, as registry blobs
//! (to push) or as an OCI layout archive (what `ctr images export` writes).

use std::io::Write as _;

use sha2::Digest as _;

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A one-layer OCI image of `file` (as /`name`): its blobs (config, layer) and manifest.
pub fn oci_image(name: &str, file: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(file.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, name, file).expect("tar");
    let tar = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    let layer = gz.finish().expect("gzip");
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": [format!("/{name}")]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
    }))
    .expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .expect("json");
    (config, layer, manifest)
}

/// An OCI layout archive of one image named `reference` (its index carries the name as
/// `ctr images export` writes it); `reference: None` leaves the image unnamed.
pub fn oci_archive(reference: Option<&str>, file_name: &str, file: &[u8]) -> Vec<u8> {
    let (config, layer, manifest) = oci_image(file_name, file);
    let mut annotations = serde_json::Map::new();
    if let Some(r) = reference {
        annotations.insert("io.containerd.image.name".into(), r.into());
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "annotations": annotations,
        }],
    }))
    .expect("json");
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: String, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, bytes).expect("tar");
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    for blob in [&config, &layer, &manifest] {
        let digest = sha256(blob);
        add(format!("blobs/sha256/{}", &digest["sha256:".len()..]), blob);
    }
    tar.into_inner().expect("tar")
}

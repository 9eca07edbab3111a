//! Pinned sha256 sums of upstream release files, per component, version and architecture.
//!
//! Every value here was copied from kubespray's checksum list,
//! `roles/kubespray_defaults/vars/main/checksums.yml` in kubernetes-sigs/kubespray at commit
//! 118b2dce02d3e5730461c8ba8c91cd9dd5dc0b10 (kubespray computes them from upstream's
//! published files). Nothing here is computed or guessed by capstan. What each sum covers:
//!
//! - kubelet, kubectl: the binary at `dl.k8s.io/release/{v}/bin/linux/{arch}/{name}`
//!   (`kubelet_checksums`, `kubectl_checksums`);
//! - etcd: the release tarball `etcd-{v}-linux-{arch}.tar.gz` (`etcd_binary_checksums`);
//! - containerd: `containerd-{V}-linux-{arch}.tar.gz` (`containerd_archive_checksums`);
//! - runc: the binary `runc.{arch}` (`runc_checksums`);
//! - crictl: `crictl-{v}-linux-{arch}.tar.gz` (`crictl_checksums`);
//! - CNI plugins: `cni-plugins-linux-{arch}-{v}.tgz` (`cni_binary_checksums`).
//!
//! A version listed with `None` for both architectures is known to the catalog (its layout
//! is upstream's) but has no pinned sum: the versions Debian bookworm packages, which the
//! test mirror repacks and which therefore verify only with `checksums: mirror`.

/// One version of a component: its pinned sums (None: not pinned for that architecture).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pin {
    pub version: &'static str,
    pub amd64: Option<&'static str>,
    pub arm64: Option<&'static str>,
}

const fn pin(version: &'static str, amd64: &'static str, arm64: &'static str) -> Pin {
    Pin {
        version,
        amd64: Some(amd64),
        arm64: Some(arm64),
    }
}

/// Known to the catalog, not pinned (Debian's builds in the test mirror, a kubectl build).
const fn known(version: &'static str) -> Pin {
    Pin {
        version,
        amd64: None,
        arm64: None,
    }
}

pub(crate) const KUBELET: &[Pin] = &[
    pin(
        "v1.32.4",
        "3e0c265fe80f3ea1b7271a00879d4dbd5e6ea1e91ecf067670c983e07c33a6f4",
        "91117b71eb2bb3dd79ec3ed444e058a347349108bf661838f53ee30d2a0ff168",
    ),
    pin(
        "v1.32.5",
        "2b2988edd1646bf139dee6956d4283c520ff151a36febd10701ffda4852b8250",
        "034753a2e308afeb4ce3cf332d38346c6e660252eac93b268fac0e112a56ff46",
    ),
    pin(
        "v1.32.10",
        "bfff8f244992162c0491f8f42d807165ed5c685aecfb3e8000412535ad18a873",
        "21cc3d98550d3a23052d649e77956f2557e7f6119ff1e27dc82b852d006136cd",
    ),
    pin(
        "v1.33.1",
        "f7224648451dd4f9f2c4f79416f9874223c286ce41727788965fd0341ddb59c4",
        "10540261c311ae005b9af514d83c02694e12614406a8524fd2d0bad75296f70d",
    ),
    pin(
        "v1.33.6",
        "10cd08fe1f9169fd7520123bcdfff87e37b8a4e21c39481faa382f00355b6973",
        "7d8b7c63309cfe2da2331a1ae13cce070b9ba01e487099e7881a4281667c131d",
    ),
    pin(
        "v1.34.2",
        "9c5e717b774ee9b9285ce47e7d2150c29e84837eb19a7eaa24b60b1543c9d58f",
        "3e31b1bee9ab32264a67af8a19679777cd372b1c3a04b5d7621289cf137b357c",
    ),
];

pub(crate) const KUBECTL: &[Pin] = &[
    // The kubectl builds this machine has (tests/lab/build-mirror.sh puts them in the test
    // mirror); v1.31.9 has no pinned sum in the kubespray list above.
    known("v1.31.9"),
    pin(
        "v1.32.4",
        "10d739e9af8a59c9e7a730a2445916e04bc9cbb44bc79d22ce460cd329fa076c",
        "c6f96d0468d6976224f5f0d81b65e1a63b47195022646be83e49d38389d572c2",
    ),
    pin(
        "v1.32.5",
        "aaa7e6ff3bd28c262f2d95c8c967597e097b092e9b79bcb37de699e7488e3e7b",
        "9edee84103e63c40a37cd15bd11e04e7835f65cb3ff5a50972058ffc343b4d96",
    ),
    pin(
        "v1.32.10",
        "6e14ef4e509e9f3d1dfc2815643f832f853d2d9f6622d4a0f83f77c7e4014b57",
        "1f4229526e16bf9f5b854fbf3bdb9c7040404a29c1d1e4193258b8a73de06e92",
    ),
    pin(
        "v1.33.1",
        "5de4e9f2266738fd112b721265a0c1cd7f4e5208b670f811861f699474a100a3",
        "d595d1a26b7444e0beb122e25750ee4524e74414bbde070b672b423139295ce6",
    ),
    pin(
        "v1.33.6",
        "d25d9b63335c038333bed785e9c6c4b0e41d791a09cac5f3e8df9862c684afbe",
        "3ab32d945a67a6000ba332bf16382fc3646271da6b7d751608b320819e5b8f38",
    ),
    pin(
        "v1.34.2",
        "9591f3d75e1581f3f7392e6ad119aab2f28ae7d6c6e083dc5d22469667f27253",
        "95df604e914941f3172a93fa8feeb1a1a50f4011dfbe0c01e01b660afc8f9b85",
    ),
];

pub(crate) const ETCD: &[Pin] = &[
    // Debian bookworm's etcd-server/etcd-client (the test mirror).
    known("v3.4.23"),
    pin(
        "v3.5.16",
        "b414b27a5ad05f7cb01395c447c85d3227e3fb1c176e51757a283b817f645ccc",
        "8e68c55e6d72b791a9e98591c755af36f6f55aa9eca63767822cd8a3817fdb23",
    ),
    pin(
        "v3.5.21",
        "adddda4b06718e68671ffabff2f8cee48488ba61ad82900e639d108f2148501c",
        "95bf6918623a097c0385b96f139d90248614485e781ec9bee4768dbb6c79c53f",
    ),
    pin(
        "v3.5.24",
        "042497e2ddcee06f22e5d486d81f58affa26b53ee423e2a6aaca3d3ea98c8191",
        "efc01f6b3fbef0f000cb53bcad4845c116d7fdd8769ca39d9c40d2fe4d2e509f",
    ),
    pin(
        "v3.5.25",
        "168af82b59772e1811a9af7b358d42f5c6df44e0d9767afb006ecf12c4bbd607",
        "419dce0b679df31cc45201ef2449b7a6a48e9d241af01741957c9ac86a35badc",
    ),
];

pub(crate) const CONTAINERD: &[Pin] = &[
    // Debian bookworm's containerd package (the test mirror).
    known("v1.6.20"),
    pin(
        "v1.7.27",
        "5b038fb22ab5dbb1ce57dd3d8f102460cd8619ff2afc78870837b06e8c4e840a",
        "3f03ea60c7dacddf890be3ab18f7ef859d9d104b19627f52038d7984361912bc",
    ),
    pin(
        "v1.7.29",
        "71d9f6e4ea4a9e108e2172b0e7f6fa137e086808db3e6874dbdb91c01102d3d4",
        "176d523a6d6dc5520e0c35b8eb0de6e54bd4d00486d5fbbeb4163f30e2962f17",
    ),
    pin(
        "v2.0.5",
        "88ab31f3e78e4d2fa12dcb933032122d11d441c83b79a89c6c8076f871e50df8",
        "36eaf77dc65df4b60d6e06204631a4105b4e942dd2704d618758a2aa0eecc264",
    ),
    pin(
        "v2.0.7",
        "6dc663cd245d19c3e68260ca86247469563a31decac925087b62a2a819dfcbee",
        "e590e39956a451ff692454ea991961b08627c514dcc253e8845d2a57f9a78e2f",
    ),
    pin(
        "v2.1.5",
        "403af72d9f956ed8a5ad5b0ac0f1e8e371a1488f2b9edf9b4ba13db0653936ea",
        "fe81122c0cc8222470fa3be51f42fa918ac29ffd956ccd2fc408c1997babd2ca",
    ),
];

pub(crate) const RUNC: &[Pin] = &[
    // Debian bookworm's runc package (the test mirror).
    known("v1.1.5"),
    pin(
        "v1.2.6",
        "0774f49d1b1eebb5849e644db5e4dc6f2b06cee05f13b3d17d5d6ba62d6f2ebc",
        "12c612e2ebe6ca198de676ce75ed557e79fe6109032209bb8e25166c967fe170",
    ),
    pin(
        "v1.2.9",
        "b21fda1d5a1510b19c3f6fb43ecb3a92887654a9d0c2b64e84b8b08f24ff0e30",
        "c155ae4716480be73a1c3bbedfa23df179800ba39ca83eb59f5b1b9b72a7ecbd",
    ),
    pin(
        "v1.3.4",
        "5966ca40b6187b30e33bfc299c5f1fe72e8c1aa01cf3fefdadf391668f47f103",
        "d6dcab36d1b6af1b72c7f0662e5fcf446a291271ba6006532b95c4144e19d428",
    ),
];

pub(crate) const CRICTL: &[Pin] = &[
    pin(
        "v1.32.0",
        "f050b71d3a73a91a4e0990b90143ed04dcd100cc66f953736fcb6a2730e283c4",
        "f2f4e20658b72d00897f41e4b57093c8080e2d800ee894a5f4351f31d1833e30",
    ),
    pin(
        "v1.33.0",
        "8307399e714626e69d1213a4cd18c8dec3d0201ecdac009b1802115df8973f0f",
        "e1f34918d77d5b4be85d48f5d713ca617698a371b049ea1486000a5e86ab1ff3",
    ),
    pin(
        "v1.34.0",
        "a8ff2a3edb37a98daf3aba7c3b284fe0aa5bff24166d896ab9ef64c8913c9f51",
        "c31d252e203df5f4cf37f314bd3092eb79087e791631c1e607087c74b6d0423f",
    ),
];

pub(crate) const CNI_PLUGINS: &[Pin] = &[
    pin(
        "v1.6.0",
        "682b49ff8933a997a52107161f1745f8312364b4c7f605ccdf7a77499130d89d",
        "db09ab057ecf60b05ba05cbec38d55b95cc139c7f1078e2e4857cc13af158cee",
    ),
    pin(
        "v1.6.2",
        "b8e811578fb66023f90d2e238d80cec3bdfca4b44049af74c374d4fae0f9c090",
        "01e0e22acc7f7004e4588c1fe1871cc86d7ab562cd858e1761c4641d89ebfaa4",
    ),
    pin(
        "v1.7.1",
        "1a28a0506bfe5bcdc981caf1a49eeab7e72da8321f1119b7be85f22621013098",
        "119fcb508d1ac2149e49a550752f9cd64d023a1d70e189b59c476e4d2bf7c497",
    ),
    pin(
        "v1.8.0",
        "ab3bda535f9d90766cccc90d3dddb5482003dd744d7f22bcf98186bf8eea8be6",
        "57ce466fc3b79db1f19b8f4c63e07a1112306efa53c94fe810a2150dd9e07ddb",
    ),
];

//! `cluster.registries`: containerd's registry hosts (`certs.d/<host>/hosts.toml`), checked,
//! with what they name read in: CA bundles and client certificates from files beside the
//! inventory, credentials from files beside it or from the environment. A credential is never
//! taken from the inventory's own text, and never shown: it is held as a [`Secret`].

use std::path::Path;

use base64::Engine as _;
use serde::Serialize;

use super::model::{EndpointSpec, InventoryFile};
use super::validate::{Collector, expand_path, is_dns_name};
use crate::ssh::Secret;

/// One registry host: its mirrors in the order containerd tries them, then its server.
#[derive(Debug, Clone, Serialize)]
pub struct Registry {
    /// The registry host as image names spell it (`docker.io`, `registry.example:5000`,
    /// `_default` for every registry without a folder of its own): its certs.d folder.
    pub host: String,
    pub mirrors: Vec<Endpoint>,
    /// The registry itself; `None` for `_default`, which has no server of its own.
    pub server: Option<Endpoint>,
}

impl Registry {
    /// Whether its hosts.toml carries a credential (it is then 0600 and never shown).
    pub fn has_credentials(&self) -> bool {
        self.endpoints().any(|e| e.authorization.is_some())
    }

    /// The mirrors, then the server.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.mirrors.iter().chain(self.server.as_ref())
    }
}

/// A mirror or a registry's server.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// `https://HOST[:PORT][/PATH]` or `http://…`.
    pub url: String,
    pub capabilities: Vec<String>,
    /// The CA bundle's PEM text.
    pub ca: Option<String>,
    /// The client certificate's PEM text.
    pub client_cert: Option<String>,
    #[serde(skip)]
    pub client_key: Option<Secret>,
    pub skip_verify: bool,
    /// The `Authorization` header containerd sends (`Basic …` or `Bearer …`).
    #[serde(skip)]
    pub authorization: Option<Secret>,
}

impl Endpoint {
    pub fn plain_http(&self) -> bool {
        self.url.starts_with("http://")
    }
}

/// What containerd may do with an endpoint.
const CAPABILITIES: [&str; 3] = ["pull", "resolve", "push"];
/// Files named by the inventory larger than this are refused unread (a CA bundle of every
/// public root is about 200 KB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The one registry host without a server: the folder for every registry without its own.
pub const DEFAULT_HOST: &str = "_default";

const CREDENTIAL_HELP: &str = "read it from a file beside the inventory (`password_file: registry.pass`, mode 0600) or from the environment (`password_env: REGISTRY_PASSWORD`); tokens likewise with token_file or token_env";

pub(super) fn resolve(
    c: &mut Collector<'_>,
    file: &InventoryFile,
    base_dir: &Path,
) -> Vec<Registry> {
    let mut out = Vec::new();
    for (host, spec) in &file.cluster.registries {
        if let Err(why) = check_registry_host(host) {
            let loc = c.root.locate_key(&["cluster", "registries"], host);
            c.problems.push(super::Problem {
                line: loc.line,
                col: loc.col,
                message: format!("registry host `{host}` {why}"),
                help: Some(
                    "name the registry as image references do: HOST or HOST:PORT (docker.io, registry.example:5000), or _default for all others"
                        .into(),
                ),
            });
            continue;
        }
        let mut mirrors = Vec::new();
        for (i, m) in spec.mirrors.iter().enumerate() {
            let at = ["cluster", "registries", host, "mirrors", &i.to_string()].map(String::from);
            let Some(url) = &m.url else {
                c.at(
                    &strs(&at),
                    format!("mirror {} of `{host}` has no url", i + 1),
                    "add `url: https://HOST[:PORT]` (or http:// for plain http)",
                );
                continue;
            };
            mirrors.extend(endpoint(c, m, url.clone(), &at, base_dir));
        }
        let at = ["cluster", "registries", host, "server"].map(String::from);
        let server = match (&spec.server, host.as_str()) {
            (Some(_), DEFAULT_HOST) => {
                c.at(
                    &strs(&at),
                    "`_default` has no server of its own",
                    "list the registry under `mirrors:` of _default, or give it a folder of its own by its host name",
                );
                None
            }
            (_, DEFAULT_HOST) => None,
            (given, _) => {
                let spec = given.clone().unwrap_or_default();
                let url = spec.url.clone().unwrap_or_else(|| default_server(host));
                endpoint(c, &spec, url, &at, base_dir)
            }
        };
        if spec.server.is_none() && spec.mirrors.is_empty() {
            let loc = c.root.locate_key(&["cluster", "registries"], host);
            c.problems.push(super::Problem {
                line: loc.line,
                col: loc.col,
                message: format!("registry `{host}` has neither mirrors nor server settings"),
                help: Some(
                    "add `mirrors: [{url: …}]` or `server: {…}`, or remove the entry".into(),
                ),
            });
        }
        out.push(Registry {
            host: host.clone(),
            mirrors,
            server,
        });
    }
    out
}

/// Where containerd reaches a registry by default (Docker Hub's API is not at docker.io).
fn default_server(host: &str) -> String {
    if host == "docker.io" {
        "https://registry-1.docker.io".to_string()
    } else {
        format!("https://{host}")
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// One endpoint checked at `at`, its files and credentials read; `None` when it has problems.
fn endpoint(
    c: &mut Collector<'_>,
    spec: &EndpointSpec,
    url: String,
    at: &[String],
    base_dir: &Path,
) -> Option<Endpoint> {
    let before = c.problems.len();
    let key = |k: &str| {
        let mut p: Vec<String> = at.to_vec();
        p.push(k.to_string());
        p
    };
    if let Err(why) = check_url(&url) {
        c.at(
            &strs(&key("url")),
            format!("`{url}` is not a registry URL: {why}"),
            "write it as https://HOST[:PORT][/PATH], or http://… for a registry that serves plain http",
        );
    }
    let capabilities = spec
        .capabilities
        .clone()
        .unwrap_or_else(|| vec!["pull".into(), "resolve".into()]);
    for (j, cap) in capabilities.iter().enumerate() {
        if !CAPABILITIES.contains(&cap.as_str()) {
            c.at(
                &strs(&[key("capabilities"), vec![j.to_string()]].concat()),
                format!("`{cap}` is not a registry capability"),
                "capabilities are pull, resolve and push (a mirror: [pull] or [pull, resolve])",
            );
        }
    }
    if capabilities.is_empty() {
        c.at(
            &strs(&key("capabilities")),
            "an endpoint with no capabilities is never used",
            "give [pull, resolve] (the default), or remove the endpoint",
        );
    }
    for (field, given) in [("password", &spec.password), ("token", &spec.token)] {
        if given.is_some() {
            c.at(
                &strs(&key(field)),
                format!("a {field} written in the inventory is refused: inventories are shared, read and committed"),
                CREDENTIAL_HELP,
            );
        }
    }
    let ca = spec.ca_file.as_ref().and_then(|f| {
        let text = read_beside(c, f, &key("ca_file"), base_dir, "CA file")?;
        pem_certificates(c, &text, f, &key("ca_file"), "CA bundle")
    });
    let client = match (&spec.client_cert_file, &spec.client_key_file) {
        (Some(cert), Some(k)) => {
            let cert_text = read_beside(
                c,
                cert,
                &key("client_cert_file"),
                base_dir,
                "client certificate",
            )
            .and_then(|t| {
                pem_certificates(c, &t, cert, &key("client_cert_file"), "client certificate")
            });
            let key_text = read_beside(c, k, &key("client_key_file"), base_dir, "client key").and_then(|t| {
                if is_pem_private_key(&t) {
                    Some(t)
                } else {
                    c.at(
                        &strs(&key("client_key_file")),
                        format!("{k} is not a PEM private key"),
                        "give the client certificate's key as PEM (-----BEGIN PRIVATE KEY-----, or RSA/EC PRIVATE KEY)",
                    );
                    None
                }
            });
            cert_text.zip(key_text)
        }
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            let (have, missing) = if spec.client_cert_file.is_some() {
                ("client_cert_file", "client_key_file")
            } else {
                ("client_key_file", "client_cert_file")
            };
            c.at(
                &strs(&key(have)),
                format!("{have} without {missing}"),
                "a client certificate needs its key: give both client_cert_file and client_key_file",
            );
            None
        }
    };
    let authorization = credentials(c, spec, at, base_dir);
    (c.problems.len() == before).then(|| Endpoint {
        url: url.trim_end_matches('/').to_string(),
        capabilities,
        ca,
        client_cert: client.as_ref().map(|(cert, _)| cert.clone()),
        client_key: client.map(|(_, k)| Secret::new(k)),
        skip_verify: spec.skip_verify,
        authorization,
    })
}

/// The `Authorization` header from the endpoint's credentials: `Basic base64(user:password)`
/// or `Bearer token`, each from exactly one file or environment variable.
fn credentials(
    c: &mut Collector<'_>,
    spec: &EndpointSpec,
    at: &[String],
    base_dir: &Path,
) -> Option<Secret> {
    let key = |k: &str| {
        let mut p: Vec<String> = at.to_vec();
        p.push(k.to_string());
        p
    };
    let sources: Vec<(&str, &String)> = [
        ("password_file", &spec.password_file),
        ("password_env", &spec.password_env),
        ("token_file", &spec.token_file),
        ("token_env", &spec.token_env),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    if let Some(user) = &spec.username
        && (user.is_empty() || user.contains(':') || user.chars().any(char::is_control))
    {
        c.at(
            &strs(&key("username")),
            format!("`{user}` is not a registry user name"),
            "a user name is not empty and has no ':' or control characters (basic auth joins user:password)",
        );
    }
    let (kind, value) = match sources.as_slice() {
        [] => {
            if spec.username.is_some() && spec.password.is_none() {
                c.at(
                    &strs(&key("username")),
                    "a username without a password",
                    "add password_file (a file beside the inventory) or password_env (an environment variable)",
                );
            }
            return None;
        }
        [one] => *one,
        [_, second, ..] => {
            c.at(
                &strs(&key(second.0)),
                format!(
                    "more than one credential: {}",
                    sources
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "give one of password_file, password_env, token_file, token_env",
            );
            return None;
        }
    };
    let is_password = kind.starts_with("password");
    if is_password && spec.username.is_none() {
        c.at(
            &strs(&key(kind)),
            format!("{kind} without a username"),
            "add `username:` (basic auth), or use token_file/token_env for a bearer token",
        );
        return None;
    }
    if !is_password && spec.username.is_some() {
        c.at(
            &strs(&key("username")),
            "a username with a token",
            "a token is sent as `Bearer TOKEN` without a user: remove `username:`, or use password_file/password_env for user and password",
        );
        return None;
    }
    let secret = if kind.ends_with("_file") {
        let text = read_beside(c, value, &key(kind), base_dir, "credential file")?;
        // One trailing line end is the editor's, not the secret's.
        let text = text
            .strip_suffix('\n')
            .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t))
            .to_string();
        Secret::new(text)
    } else {
        if value.is_empty()
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            c.at(
                &strs(&key(kind)),
                format!("`{value}` is not an environment variable name"),
                "give the variable's name (letters, digits, '_'), e.g. REGISTRY_PASSWORD",
            );
            return None;
        }
        match std::env::var(value) {
            Ok(v) => Secret::new(v),
            Err(e) => {
                c.at(
                    &strs(&key(kind)),
                    format!("environment variable {value} {}", match e {
                        std::env::VarError::NotPresent => "is not set",
                        std::env::VarError::NotUnicode(_) => "is not UTF-8 text",
                    }),
                    format!("export {value} before running capstan, or read the credential from a file beside the inventory ({}_file)", &kind[..kind.len() - 4]),
                );
                return None;
            }
        }
    };
    let what = if is_password { "password" } else { "token" };
    if secret.expose().is_empty() {
        c.at(
            &strs(&key(kind)),
            format!("the {what} from {kind} `{value}` is empty"),
            format!("put the {what} there (one line)"),
        );
        return None;
    }
    if secret.expose().chars().any(char::is_control) {
        c.at(
            &strs(&key(kind)),
            format!(
                "the {what} from {kind} `{value}` has a line break or control character inside"
            ),
            format!("the {what} is one line; remove what else the file holds"),
        );
        return None;
    }
    Some(Secret::new(match &spec.username {
        Some(user) if is_password => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", secret.expose()))
        ),
        _ => format!("Bearer {}", secret.expose()),
    }))
}

/// A file named by the inventory, read as text; a problem at `at` when it cannot be.
fn read_beside(
    c: &mut Collector<'_>,
    given: &str,
    at: &[String],
    base_dir: &Path,
    what: &str,
) -> Option<String> {
    let path = expand_path(given, base_dir, c.home.as_deref());
    // Opened only when it is a regular file: a FIFO or a device could block.
    let read = std::fs::metadata(&path).and_then(|m| {
        if !m.is_file() {
            Err(std::io::Error::other("not a regular file"))
        } else if m.len() > MAX_FILE_BYTES {
            Err(std::io::Error::other(format!(
                "{} bytes, more than the {MAX_FILE_BYTES} capstan reads",
                m.len()
            )))
        } else {
            std::fs::read(&path)
        }
    });
    let problem = match read {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => return Some(text),
            Err(_) => "is not text".to_string(),
        },
        Err(e) => format!("cannot be read: {e}"),
    };
    c.at(
        &strs(at),
        format!("{what} {} {problem}", path.display()),
        "relative paths start at the inventory's folder; check the name",
    );
    None
}

/// `text` when it holds PEM certificates only, every one of which parses.
fn pem_certificates(
    c: &mut Collector<'_>,
    text: &str,
    given: &str,
    at: &[String],
    what: &str,
) -> Option<String> {
    let mut count = 0;
    let mut bad = None;
    for pem in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        match pem {
            Ok(p) if p.label == "CERTIFICATE" && p.parse_x509().is_ok() => count += 1,
            Ok(p) => {
                bad = Some(format!(
                    "holds a {} block that is not a certificate",
                    p.label
                ));
                break;
            }
            Err(e) => {
                bad = Some(format!("has a PEM block that does not parse ({e})"));
                break;
            }
        }
    }
    let problem = match (count, bad) {
        (_, Some(b)) => b,
        (0, None) => "holds no PEM certificate".to_string(),
        _ => return Some(text.to_string()),
    };
    c.at(
        &strs(at),
        format!("{what} {given} {problem}"),
        "give PEM certificates (-----BEGIN CERTIFICATE-----), e.g. the registry CA's ca.crt",
    );
    None
}

fn is_pem_private_key(text: &str) -> bool {
    let mut blocks = x509_parser::pem::Pem::iter_from_buffer(text.as_bytes());
    matches!(blocks.next(), Some(Ok(p)) if p.label.ends_with("PRIVATE KEY"))
        && blocks.next().is_none()
}

/// `HOST[:PORT]` as image references name registries, or `_default`.
fn check_registry_host(host: &str) -> Result<(), &'static str> {
    if host == DEFAULT_HOST {
        return Ok(());
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err("has a port that is not 1-65535");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok()
        || (is_dns_name(name) && name == name.to_ascii_lowercase())
    {
        Ok(())
    } else {
        Err("is not a lowercase host name or IPv4 address")
    }
}

/// `http(s)://HOST[:PORT][/PATH]`: no user info (credentials go elsewhere), query or
/// fragment, nothing that would need quoting in hosts.toml.
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("it does not start with https:// or http://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(
            "it carries user info: credentials go in password_file/password_env, never in the URL",
        );
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        let (ip, after) = v6
            .split_once(']')
            .ok_or("its IPv6 address has no closing ]")?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "its IPv6 address does not parse")?;
        if let Some(port) = after.strip_prefix(':') {
            port.parse::<u16>().map_err(|_| "its port is not 1-65535")?;
        } else if !after.is_empty() {
            return Err("it has text after the IPv6 address");
        }
        return check_path(path);
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) => {
                if !port.parse::<u16>().is_ok_and(|p| p > 0) {
                    return Err("its port is not 1-65535");
                }
                h
            }
            None => authority,
        }
    };
    if host.is_empty() {
        return Err("it has no host");
    }
    if host.parse::<std::net::Ipv4Addr>().is_err() && !is_dns_name(host) {
        return Err("its host is not a host name or IP address");
    }
    check_path(path)
}

fn check_path(path: &str) -> Result<(), &'static str> {
    if path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'))
    {
        Ok(())
    } else {
        Err(
            "its path has characters other than letters, digits, '/', '-', '_', '.' and '~' (no query or fragment)",
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const HOSTS: &str = "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n";

    /// A CA made here, as a registry's operator would hand it over.
    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn load(dir: &Path, registries: &str) -> Result<crate::inventory::Inventory, Vec<String>> {
        let text = format!(
            "cluster:\n  name: a\n  kubernetes_version: v1.32.4\n  registries:\n{registries}{HOSTS}"
        );
        crate::inventory::load_str(&text, &dir.join("cluster.yaml"), None).map_err(|e| {
            e.problems
                .iter()
                .map(|p| {
                    format!(
                        "{}:{}: {} | {}",
                        p.line,
                        p.col,
                        p.message,
                        p.help.as_deref().unwrap_or("")
                    )
                })
                .collect()
        })
    }

    #[test]
    fn mirrors_servers_and_credentials_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_pem();
        std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
        std::fs::write(dir.path().join("reg.pass"), "s3cr3t-pass\n").unwrap();
        let inv = load(
            dir.path(),
            "    docker.io:\n      mirrors:\n        - {url: https://mirror.lab:5443/, ca_file: ca.pem, username: capstan, password_file: reg.pass}\n        - {url: http://cache.lab:5000, capabilities: [pull]}\n    registry.lab:5000:\n      server: {url: http://registry.lab:5000}\n    _default:\n      mirrors: [{url: https://all.lab}]\n",
        )
        .unwrap_or_else(|p| panic!("{p:#?}"));
        let r = &inv.cluster.registries;
        assert_eq!(
            r.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(),
            ["_default", "docker.io", "registry.lab:5000"]
        );
        let docker = &r[1];
        assert_eq!(docker.mirrors[0].url, "https://mirror.lab:5443");
        assert_eq!(docker.mirrors[0].capabilities, ["pull", "resolve"]);
        assert_eq!(docker.mirrors[0].ca.as_deref(), Some(ca.as_str()));
        // base64("capstan:s3cr3t-pass"): the file's trailing line end is not the password's.
        assert_eq!(
            docker.mirrors[0].authorization.as_ref().unwrap().expose(),
            "Basic Y2Fwc3RhbjpzM2NyM3QtcGFzcw=="
        );
        assert!(docker.has_credentials());
        assert_eq!(docker.mirrors[1].capabilities, ["pull"]);
        assert!(docker.mirrors[1].plain_http());
        assert_eq!(
            docker.server.as_ref().unwrap().url,
            "https://registry-1.docker.io"
        );
        assert!(r[0].server.is_none());
        assert!(r[2].server.as_ref().unwrap().plain_http());
        assert!(!r[2].has_credentials());
        // Nothing secret is in what is serialized (JSON output, template `cluster`).
        let json = serde_json::to_string(&inv.cluster).unwrap();
        assert!(
            !json.contains("s3cr3t") && !json.contains("Y2Fwc3Rhbj"),
            "{json}"
        );
        assert!(!format!("{:?}", inv.cluster).contains("s3cr3t"));
    }

    #[test]
    fn bad_registries_are_refused_at_their_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("not-a-ca.pem"), "hello\n").unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let p = load(
            dir.path(),
            "    docker.io:\n      mirrors:\n        - {url: mirror.lab:5443}\n        - {url: https://m.lab, ca_file: missing.pem}\n        - {url: https://m2.lab, ca_file: not-a-ca.pem, capabilities: [pull, delete]}\n        - {url: 'https://u:p@m3.lab'}\n        - {ca_file: x}\n    Registry.Lab:\n      server: {skip_verify: true}\n    ghcr.io:\n      server: {username: me, password: hunter2}\n    quay.io:\n      server: {token: abc, unknown_key: 1}\n    r.lab:\n      server: {client_cert_file: key.pem}\n    e.lab:\n      server: {username: me, password_env: CAPSTAN_TEST_SURELY_UNSET_VAR}\n    t.lab:\n      server: {username: me, token_file: key.pem}\n",
        )
        .unwrap_err();
        let all = p.join("\n");
        let has = |pos: &str, text: &str| {
            assert!(
                p.iter().any(|l| l.starts_with(pos) && l.contains(text)),
                "no `{pos} … {text}` in:\n{all}"
            );
        };
        has(
            "7:17:",
            "`mirror.lab:5443` is not a registry URL: it does not start with https://",
        );
        has("8:41:", "CA file");
        has("8:41:", "missing.pem cannot be read");
        has("9:42:", "CA bundle not-a-ca.pem holds no PEM certificate");
        has("9:77:", "`delete` is not a registry capability");
        has("10:17:", "carries user info");
        has("11:11:", "mirror 5 of `docker.io` has no url");
        has(
            "12:5:",
            "registry host `Registry.Lab` is not a lowercase host name",
        );
        has("15:40:", "a password written in the inventory is refused");
        has("15:40:", "password_file: registry.pass");
        assert!(!all.contains("hunter2"), "{all}");
        has("17:28:", "unknown key `unknown_key`");
        has("19:34:", "client_cert_file without client_key_file");
        has(
            "21:44:",
            "environment variable CAPSTAN_TEST_SURELY_UNSET_VAR is not set",
        );
        has("23:26:", "a username with a token");
        has("17:23:", "a token written in the inventory is refused");
        assert!(!all.contains("a username without a password"), "{all}");
    }

    #[test]
    fn clear_text_token_and_an_empty_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let p = load(
            dir.path(),
            "    quay.io:\n      server: {token: abc}\n    a.lab: {}\n    b.lab:\n      server: {token_file: empty}\n",
        )
        .unwrap_err();
        assert!(
            p[0].starts_with("6:23: a token written in the inventory is refused"),
            "{p:#?}"
        );
        assert!(
            p[1].starts_with("7:5: registry `a.lab` has neither mirrors nor server settings"),
            "{p:#?}"
        );
        assert!(
            p[2].starts_with("9:28: the token from token_file `empty` is empty"),
            "{p:#?}"
        );
    }

    #[test]
    fn urls_and_hosts() {
        use super::{check_registry_host, check_url};
        for ok in [
            "https://r.lab",
            "http://10.0.0.1:5000",
            "https://r.lab/v2/x",
            "https://[fd00::1]:5000",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "r.lab",
            "ftp://r.lab",
            "https://",
            "https://r.lab:0",
            "https://r.lab/?q",
            "https://r.lab/\"x",
            "https://r lab",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        for ok in [
            "docker.io",
            "registry.example:5000",
            "10.0.0.1:5000",
            "_default",
        ] {
            assert!(check_registry_host(ok).is_ok(), "{ok}");
        }
        for bad in ["Docker.io", "r.lab:x", "r.lab:70000", "a/b", "", "../x"] {
            assert!(check_registry_host(bad).is_err(), "{bad}");
        }
    }
}

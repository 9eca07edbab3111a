//! Resolving a [`Target`] into the concrete hops to dial: the inventory's values first, then
//! `~/.ssh/config` (`HostName`, Port, User, `IdentityFile`, `ProxyJump`), then the defaults.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ssh2_config::{HostParams, ParseRule, SshConfig};

use super::error::SshError;
use super::{BastionTarget, SshOptions, Target};

/// One SSH server to authenticate to: the target itself, or a bastion on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hop {
    /// Host name or IP to dial (after ssh config `HostName`); also the `known_hosts` name.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Key files to try, in order (the explicit one, then ssh config's, or the defaults).
    pub identity_files: Vec<PathBuf>,
}

impl Hop {
    /// `host:port` (`[v6]:port`), for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `user@host:port`, for messages about bastions.
    pub fn label(&self) -> String {
        format!("{}@{}", self.user, self.address())
    }
}

/// The path to one host: zero or more bastions, then the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub jumps: Vec<Hop>,
    pub target: Hop,
}

/// Reads the ssh config named in the options (none when `ssh_config` is `None`).
pub(crate) fn load_ssh_config(target: &Target, opts: &SshOptions) -> Result<SshConfig, SshError> {
    let Some(path) = &opts.ssh_config else {
        return Ok(SshConfig::default());
    };
    let err = |message: String| SshError::Config {
        host: target.name.clone(),
        address: target.address.clone(),
        path: path.clone(),
        message,
    };
    let file = File::open(path).map_err(|e| err(e.to_string()))?;
    let mut reader = BufReader::new(file);
    SshConfig::default()
        .parse(
            &mut reader,
            ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
        )
        .map_err(|e| err(e.to_string()))
}

/// Works out every hop for `target`.
pub(crate) fn resolve(target: &Target, opts: &SshOptions) -> Result<Route, SshError> {
    let config = load_ssh_config(target, opts)?;
    let params = config.query(&target.address);
    let target_hop = hop_from(
        &target.address,
        target.port,
        target.user.as_deref(),
        target.identity_file.as_deref(),
        &params,
        opts,
    );

    let jumps = if let Some(bastion) = &target.bastion {
        vec![bastion_hop(bastion, &config, opts)]
    } else {
        match &params.proxy_jump {
            Some(list) if !(list.len() == 1 && list[0].eq_ignore_ascii_case("none")) => list
                .iter()
                .map(|spec| {
                    let jump = parse_jump(spec).ok_or_else(|| SshError::Config {
                        host: target.name.clone(),
                        address: target.address.clone(),
                        path: opts.ssh_config.clone().unwrap_or_default(),
                        message: format!("ProxyJump entry `{spec}` is not [user@]host[:port]"),
                    })?;
                    Ok(bastion_hop(&jump, &config, opts))
                })
                .collect::<Result<Vec<_>, SshError>>()?,
            _ => Vec::new(),
        }
    };
    Ok(Route {
        jumps,
        target: target_hop,
    })
}

fn bastion_hop(bastion: &BastionTarget, config: &SshConfig, opts: &SshOptions) -> Hop {
    let params = config.query(&bastion.address);
    hop_from(
        &bastion.address,
        bastion.port,
        bastion.user.as_deref(),
        bastion.identity_file.as_deref(),
        &params,
        opts,
    )
}

fn hop_from(
    address: &str,
    port: Option<u16>,
    user: Option<&str>,
    identity_file: Option<&Path>,
    params: &HostParams,
    opts: &SshOptions,
) -> Hop {
    let host = params
        .host_name
        .as_deref()
        .map_or_else(|| address.to_string(), |h| h.replace("%h", address));
    let mut identity_files: Vec<PathBuf> = identity_file.map(expand_tilde).into_iter().collect();
    if let Some(files) = &params.identity_file {
        for f in files {
            let f = expand_tilde(f);
            if !identity_files.contains(&f) {
                identity_files.push(f);
            }
        }
    }
    if identity_files.is_empty() {
        identity_files = opts
            .default_identities
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect();
    }
    Hop {
        host,
        port: port.or(params.port).unwrap_or(22),
        user: user
            .map(str::to_string)
            .or_else(|| params.user.clone())
            .unwrap_or_else(|| "root".to_string()),
        identity_files,
    }
}

/// `~/x` -> `$HOME/x`.
pub(crate) fn expand_tilde(path: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~")
        && let Some(home) = dirs::home_dir()
    {
        return home.join(rest);
    }
    path.to_path_buf()
}

/// Parses one `ProxyJump` entry: `[user@]host[:port]`, `[user@][v6addr]:port`, or
/// `ssh://[user@]host[:port]`.
pub(crate) fn parse_jump(spec: &str) -> Option<BastionTarget> {
    let spec = spec.trim();
    let spec = spec.strip_prefix("ssh://").unwrap_or(spec);
    let (user, rest) = match spec.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return None,
        None => (None, spec),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (h.to_string(), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse().ok()?)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some(BastionTarget {
        address: host,
        port,
        user,
        identity_file: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Become;
    use std::io::Write;

    fn target(address: &str) -> Target {
        Target {
            name: "n1".into(),
            address: address.into(),
            port: None,
            user: None,
            identity_file: None,
            become_method: Become::None,
            bastion: None,
        }
    }

    fn opts_with(config: &str) -> (tempfile::TempDir, SshOptions) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(config.as_bytes())
            .unwrap();
        let mut opts = SshOptions::new(dir.path().join("known_hosts"));
        opts.ssh_config = Some(path);
        opts.default_identities = Vec::new();
        (dir, opts)
    }

    #[test]
    fn jump_specs() {
        let j = parse_jump("ops@jump.example:2222").unwrap();
        assert_eq!(j.user.as_deref(), Some("ops"));
        assert_eq!(j.address, "jump.example");
        assert_eq!(j.port, Some(2222));
        let j = parse_jump("jump").unwrap();
        assert_eq!((j.user, j.address.as_str(), j.port), (None, "jump", None));
        let j = parse_jump("ssh://a@[::1]:22").unwrap();
        assert_eq!((j.address.as_str(), j.port), ("::1", Some(22)));
        assert!(parse_jump("host:notaport").is_none());
        assert!(parse_jump("@host").is_none());
        assert!(parse_jump("").is_none());
    }

    #[test]
    fn defaults_without_config() {
        let mut opts = SshOptions::new("/nonexistent/known_hosts");
        opts.ssh_config = None;
        opts.default_identities = Vec::new();
        let route = resolve(&target("10.0.0.1"), &opts).unwrap();
        assert_eq!(route.target.host, "10.0.0.1");
        assert_eq!(route.target.port, 22);
        assert_eq!(route.target.user, "root");
        assert!(route.jumps.is_empty());
    }

    #[test]
    fn ssh_config_fills_what_the_inventory_leaves_open() {
        let (_d, opts) = opts_with(
            "Host cp1\n  HostName 10.1.1.1\n  Port 2200\n  User ops\n  IdentityFile /keys/cp1\n  ProxyJump admin@jump:2022\n\nHost jump\n  HostName 10.9.9.9\n  IdentityFile /keys/jump\n\nHost *\n  IdentityFile /keys/all\n",
        );
        let route = resolve(&target("cp1"), &opts).unwrap();
        assert_eq!(route.target.host, "10.1.1.1");
        assert_eq!(route.target.port, 2200);
        assert_eq!(route.target.user, "ops");
        assert_eq!(
            route.target.identity_files,
            vec![PathBuf::from("/keys/cp1"), PathBuf::from("/keys/all")]
        );
        assert_eq!(route.jumps.len(), 1);
        let jump = &route.jumps[0];
        assert_eq!(jump.host, "10.9.9.9");
        assert_eq!(jump.port, 2022);
        assert_eq!(jump.user, "admin");
        assert_eq!(
            jump.identity_files,
            vec![PathBuf::from("/keys/jump"), PathBuf::from("/keys/all")]
        );

        // The inventory wins over the config.
        let mut t = target("cp1");
        t.port = Some(22);
        t.user = Some("root".into());
        t.identity_file = Some("/keys/inv".into());
        t.bastion = Some(BastionTarget {
            address: "other".into(),
            port: None,
            user: None,
            identity_file: None,
        });
        let route = resolve(&t, &opts).unwrap();
        assert_eq!(route.target.port, 22);
        assert_eq!(route.target.user, "root");
        assert_eq!(route.target.identity_files[0], PathBuf::from("/keys/inv"));
        assert_eq!(route.jumps[0].host, "other");
        assert_eq!(route.jumps[0].user, "root");
    }

    #[test]
    fn proxyjump_none_means_direct() {
        let (_d, opts) = opts_with("Host *\n  ProxyJump none\n");
        assert!(resolve(&target("x"), &opts).unwrap().jumps.is_empty());
    }

    #[test]
    fn missing_config_file_is_an_error_naming_it() {
        let mut opts = SshOptions::new("/nonexistent/known_hosts");
        opts.ssh_config = Some("/nonexistent/ssh_config".into());
        let err = resolve(&target("x"), &opts).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ssh_config"), "{err}");
    }
}

//! Desired state of one host: the roles' resources, rendered, in a stable order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::Value;
use sha2::{Digest, Sha256};

use super::render::{RenderError, Renderer};
use super::role::{ResourceSpec, Role, UnitState, parse_mode};

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Rendered or literal text held in memory.
    Inline(Vec<u8>),
    /// A verified file in the operator's artifact cache (binaries: too big to hold).
    Cached(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFile {
    pub path: String,
    pub content: Content,
    pub sha256: String,
    pub size: u64,
    pub owner: String,
    pub group: String,
    pub mode: u32,
    pub secret: bool,
    /// Written when missing, never replaced (see the role's `create_only`).
    pub create_only: bool,
    /// For a binary whose sha256 is not capstan's pin: what verified it.
    pub verified_by: Option<String>,
}

impl DesiredFile {
    /// Text files get a diff in plans; binaries and secrets never do.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Inline(bytes) if !self.secret => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    Directory {
        path: String,
        owner: String,
        group: String,
        mode: u32,
    },
    File(DesiredFile),
    Unit {
        name: String,
        /// The unit file capstan installs for it, if any.
        unit_file: Option<String>,
        enabled: bool,
        state: UnitState,
        restart_on: Vec<String>,
        reload_on: Vec<String>,
    },
    Sysctl {
        key: String,
        value: String,
    },
    Module {
        name: String,
    },
    Package {
        name: String,
    },
    Command {
        name: String,
        run: String,
        creates: Option<String>,
        unless: Option<String>,
        /// A guard whose output, when it fails, is the change's diff.
        diff: Option<String>,
        /// Runs when one of these paths changes in the same apply.
        on_change: Vec<String>,
    },
}

impl Desired {
    /// The kind and the name a user reads in a plan.
    pub fn label(&self) -> (&'static str, &str) {
        match self {
            Desired::Directory { path, .. } => ("directory", path),
            Desired::File(f) => ("file", &f.path),
            Desired::Unit { name, .. } => ("unit", name),
            Desired::Sysctl { key, .. } => ("sysctl", key),
            Desired::Module { name } => ("module", name),
            Desired::Package { name } => ("package", name),
            Desired::Command { name, .. } => ("command", name),
        }
    }
}

/// Supplies verified artifact files from the operator's cache.
pub trait ArtifactSource {
    /// The cached file for `artifact` (a catalog component), or `member` of its archive,
    /// with its sha256 and size.
    fn fetch(&self, artifact: &str, file: &str) -> Result<(PathBuf, String, u64), String>;

    /// What `artifact`'s sha256 was checked against, when it was not capstan's own pin
    /// (plans say so beside the binary).
    fn verified_by(&self, _artifact: &str) -> Option<String> {
        None
    }
}

/// A problem turning roles into desired state.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
pub enum DesiredError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Render(#[from] RenderError),
    #[error("{origin}: {message}")]
    #[diagnostic(code(capstan::role))]
    Invalid {
        origin: String,
        message: String,
        #[help]
        help: Option<String>,
    },
}

/// Where sysctls and modules are persisted, so that they hold after a reboot.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/99-capstan.conf";
pub const MODULES_FILE: &str = "/etc/modules-load.d/capstan.conf";
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// How much of the desired state to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Names, paths and keys only (contents empty): what to probe, before facts exist.
    Shape,
    /// Everything, contents and binaries included.
    Full,
}

/// Renders the resources of `roles` for one host, in role order then declaration order.
pub fn build(
    roles: &[&Role],
    renderer: &Renderer,
    ctx: &Value,
    artifacts: &dyn ArtifactSource,
    mode: Mode,
) -> Result<Vec<Desired>, DesiredError> {
    let full = mode == Mode::Full;
    let mut out: Vec<Desired> = Vec::new();
    let mut sysctls: BTreeMap<String, String> = BTreeMap::new();
    let mut modules: Vec<String> = Vec::new();
    for role in roles {
        let role_ctx = role_context(role, ctx);
        for (i, spec) in role.spec.resources.iter().enumerate() {
            let loc = role.tree.locate(&["resources", &i.to_string()]);
            let origin = format!("roles/{}/role.yaml:{loc}", role.name);
            // One resource per item of `for_each`, each rendered with its `item`.
            let each = match spec {
                ResourceSpec::Directory { for_each, .. }
                | ResourceSpec::File { for_each, .. }
                | ResourceSpec::Unit { for_each, .. }
                | ResourceSpec::Command { for_each, .. } => for_each.as_deref(),
                _ => None,
            };
            let contexts: Vec<Value> = match each {
                None => vec![role_ctx.clone()],
                Some(expr) => renderer
                    .items(&format!("{origin} (for_each)"), expr, &role_ctx)?
                    .into_iter()
                    .map(|item| minijinja::context! { item => item, ..role_ctx.clone() })
                    .collect(),
            };
            for role_ctx in contexts {
                let r = |s: &str| renderer.render_str(&origin, s, &role_ctx);
                let invalid = |message: String, help: &str| DesiredError::Invalid {
                    origin: origin.clone(),
                    message,
                    help: Some(help.to_string()),
                };
                let path_of = |s: &str| -> Result<String, DesiredError> {
                    let p = r(s)?;
                    check_path(&p).map_err(|m| invalid(m, "managed paths are absolute, without '..', quotes, '|' or control characters"))?;
                    Ok(p)
                };
                let mode_of = |m: &str| parse_mode(m).unwrap_or(0o644);
                match spec {
                    ResourceSpec::Directory {
                        path,
                        owner,
                        group,
                        mode,
                        ..
                    } => out.push(Desired::Directory {
                        path: path_of(path)?,
                        owner: r(owner)?,
                        group: r(group)?,
                        mode: mode_of(mode),
                    }),
                    ResourceSpec::File {
                        path,
                        owner,
                        group,
                        mode,
                        secret,
                        create_only,
                        source: Some(source),
                        ..
                    } => {
                        let source = PathBuf::from(r(source)?);
                        let (sha256, size) = local_sha256(&source).map_err(|e| {
                            invalid(
                                format!("cannot read {}: {e}", source.display()),
                                "check the file beside the inventory",
                            )
                        })?;
                        out.push(Desired::File(DesiredFile {
                            path: path_of(path)?,
                            content: Content::Cached(source),
                            sha256,
                            size,
                            owner: r(owner)?,
                            group: r(group)?,
                            mode: mode_of(mode),
                            secret: *secret,
                            create_only: *create_only,
                            verified_by: None,
                        }));
                    }
                    ResourceSpec::File {
                        path,
                        content,
                        template,
                        owner,
                        group,
                        mode,
                        secret,
                        create_only,
                        ..
                    } => {
                        let text = match (content, template) {
                            _ if !full => String::new(),
                            (Some(c), _) => r(c)?,
                            (None, Some(t)) => renderer.render_template(&r(t)?, &role_ctx)?,
                            (None, None) => String::new(),
                        };
                        let mut file = inline_file(
                            path_of(path)?,
                            text.into_bytes(),
                            r(owner)?,
                            r(group)?,
                            mode_of(mode),
                            *secret,
                        );
                        file.create_only = *create_only;
                        out.push(Desired::File(file));
                    }
                    ResourceSpec::Binary {
                        artifact,
                        file,
                        path,
                        mode,
                    } => {
                        let artifact = r(artifact)?;
                        let file = file.as_deref().map(r).transpose()?;
                        let (cached, sha256, size) = artifacts
                            .fetch(&artifact, file.as_deref().unwrap_or(&artifact))
                            .map_err(|e| {
                                invalid(
                                    e,
                                    "check the artifact mirror and the versions in the inventory",
                                )
                            })?;
                        out.push(Desired::File(DesiredFile {
                            path: path_of(path)?,
                            content: Content::Cached(cached),
                            sha256,
                            size,
                            owner: "root".into(),
                            group: "root".into(),
                            mode: mode_of(mode),
                            secret: false,
                            create_only: false,
                            verified_by: artifacts.verified_by(&artifact),
                        }));
                    }
                    ResourceSpec::Unit {
                        name,
                        template,
                        enabled,
                        state,
                        restart_on,
                        reload_on,
                        ..
                    } => {
                        let name = r(name)?;
                        check_unit_name(&name)
                            .map_err(|m| invalid(m, "unit names look like containerd.service"))?;
                        let unit_file = match template {
                            Some(t) => {
                                let text = if full {
                                    renderer.render_template(&r(t)?, &role_ctx)?
                                } else {
                                    String::new()
                                };
                                let path = format!("{UNIT_DIR}/{name}");
                                out.push(Desired::File(inline_file(
                                    path.clone(),
                                    text.into_bytes(),
                                    "root".into(),
                                    "root".into(),
                                    0o644,
                                    false,
                                )));
                                Some(path)
                            }
                            None => None,
                        };
                        out.push(Desired::Unit {
                            name,
                            unit_file,
                            enabled: *enabled,
                            state: *state,
                            restart_on: restart_on
                                .iter()
                                .map(|p| path_of(p))
                                .collect::<Result<_, _>>()?,
                            reload_on: reload_on
                                .iter()
                                .map(|p| path_of(p))
                                .collect::<Result<_, _>>()?,
                        });
                    }
                    ResourceSpec::Sysctl { key, value } => {
                        let key = r(key)?;
                        let value = r(value)?;
                        if key.is_empty()
                            || !key.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
                            })
                        {
                            return Err(invalid(
                                format!("`{key}` is not a sysctl key"),
                                "keys look like net.ipv4.ip_forward",
                            ));
                        }
                        if value.contains(['\n', '\'']) {
                            return Err(invalid(
                                format!("sysctl value `{value}` has a newline or quote"),
                                "give a plain value",
                            ));
                        }
                        sysctls.insert(key.clone(), value.clone());
                        out.push(Desired::Sysctl { key, value });
                    }
                    ResourceSpec::Module { name } => {
                        let name = r(name)?;
                        if name.is_empty()
                            || !name
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
                        {
                            return Err(invalid(
                                format!("`{name}` is not a kernel module name"),
                                "module names look like br_netfilter",
                            ));
                        }
                        if !modules.contains(&name) {
                            modules.push(name.clone());
                        }
                        out.push(Desired::Module { name });
                    }
                    ResourceSpec::Package { name } => {
                        let name = r(name)?;
                        if name.is_empty()
                            || !name.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_')
                            })
                        {
                            return Err(invalid(
                                format!("`{name}` is not a package name"),
                                "package names look like conntrack",
                            ));
                        }
                        out.push(Desired::Package { name });
                    }
                    ResourceSpec::Command {
                        name,
                        run,
                        creates,
                        unless,
                        diff,
                        on_change,
                        ..
                    } => out.push(Desired::Command {
                        name: r(name)?,
                        run: r(run)?,
                        creates: creates.as_deref().map(path_of).transpose()?,
                        unless: unless.as_deref().map(r).transpose()?,
                        diff: diff.as_deref().map(r).transpose()?,
                        on_change: on_change
                            .iter()
                            .map(|p| path_of(p))
                            .collect::<Result<_, _>>()?,
                    }),
                }
            }
        }
    }
    // Persist what was applied live, so it survives a reboot.
    if !sysctls.is_empty() {
        let text: String = std::iter::once(
            "# Managed by capstan; local changes are reverted on the next run.\n".to_string(),
        )
        .chain(sysctls.iter().map(|(k, v)| format!("{k} = {v}\n")))
        .collect();
        out.push(Desired::File(inline_file(
            SYSCTL_FILE.into(),
            text.into_bytes(),
            "root".into(),
            "root".into(),
            0o644,
            false,
        )));
    }
    if !modules.is_empty() {
        let text: String = std::iter::once(
            "# Managed by capstan; local changes are reverted on the next run.\n".to_string(),
        )
        .chain(modules.iter().map(|m| format!("{m}\n")))
        .collect();
        out.push(Desired::File(inline_file(
            MODULES_FILE.into(),
            text.into_bytes(),
            "root".into(),
            "root".into(),
            0o644,
            false,
        )));
    }
    dedupe(out)
}

/// The key of the context under which a workflow passes per-host overrides of role vars.
pub const VAR_OVERRIDES: &str = "var_overrides";

fn role_context(role: &Role, ctx: &Value) -> Value {
    // Role defaults, then what the workflow decided for this host (a joining etcd member's
    // initial cluster, say); the BTreeMap keeps the order stable.
    let mut vars = role.spec.vars.clone();
    if let Ok(overrides) = ctx.get_attr(VAR_OVERRIDES)
        && let Ok(keys) = overrides.try_iter()
    {
        for key in keys {
            if let (Some(k), Ok(v)) = (key.as_str(), overrides.get_item(&key))
                && !v.is_undefined()
            {
                vars.insert(k.to_string(), v.to_string());
            }
        }
    }
    minijinja::context! { vars => vars, ..ctx.clone() }
}

/// A file held in memory, with its hash.
/// sha256 and size of a file of the operator's, read once per process (an image archive
/// can be large, and every host's desired state names it).
fn local_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    type Seen = BTreeMap<PathBuf, (u64, std::time::SystemTime, String)>;
    static SEEN: std::sync::Mutex<Seen> = std::sync::Mutex::new(BTreeMap::new());
    let meta = std::fs::metadata(path)?;
    let modified = meta.modified()?;
    let key = path.to_path_buf();
    if let Some((size, at, sha)) = SEEN
        .lock()
        .map_err(|_| std::io::Error::other("poisoned"))?
        .get(&key)
        && *size == meta.len()
        && *at == modified
    {
        return Ok((sha.clone(), *size));
    }
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    let sha = hex::encode(hasher.finalize());
    if let Ok(mut seen) = SEEN.lock() {
        seen.insert(key, (size, modified, sha.clone()));
    }
    Ok((sha, size))
}

pub fn inline_file(
    path: String,
    bytes: Vec<u8>,
    owner: String,
    group: String,
    mode: u32,
    secret: bool,
) -> DesiredFile {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    DesiredFile {
        path,
        size: bytes.len() as u64,
        content: Content::Inline(bytes),
        sha256,
        owner,
        group,
        mode,
        secret,
        create_only: false,
        verified_by: None,
    }
}

/// Two roles may declare the same thing identically; declaring it differently is an error.
fn dedupe(items: Vec<Desired>) -> Result<Vec<Desired>, DesiredError> {
    let mut seen: BTreeMap<(&'static str, String), usize> = BTreeMap::new();
    let mut out: Vec<Desired> = Vec::with_capacity(items.len());
    for item in items {
        let (kind, name) = item.label();
        let key = (kind, name.to_string());
        if let Some(&i) = seen.get(&key) {
            if out[i] != item {
                return Err(DesiredError::Invalid {
                    origin: format!("{kind} {name}"),
                    message: "declared twice with different settings".into(),
                    help: Some("two roles of this host manage it; keep one declaration".into()),
                });
            }
            continue;
        }
        seen.insert(key, out.len());
        out.push(item);
    }
    Ok(out)
}

fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("`{p}` is not an absolute path"));
    }
    if p.split('/').any(|c| c == "..")
        || p.chars()
            .any(|c| c.is_control() || matches!(c, '\'' | '"' | '|' | '\\'))
    {
        return Err(format!("`{p}` is not a path capstan manages"));
    }
    Ok(())
}

fn check_unit_name(n: &str) -> Result<(), String> {
    let ok = n.contains('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{n}` is not a systemd unit name"))
    }
}

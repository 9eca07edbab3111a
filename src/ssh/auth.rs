//! User authentication: identity files (ed25519, ECDSA, RSA with rsa-sha2), then the agent.

use std::path::Path;
use std::sync::Arc;

use russh::MethodKind;
use russh::client::{AuthResult, Handle, Handler};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, load_secret_key};

use super::error::SshError;

/// Who is authenticating, for messages.
pub(crate) struct AuthContext<'a> {
    pub host: &'a str,
    pub address: &'a str,
    pub user: &'a str,
    pub identity_files: &'a [std::path::PathBuf],
    pub agent_socket: Option<&'a Path>,
}

/// Lazily asks the server which RSA signature hash it accepts.
struct RsaHash {
    asked: bool,
    hash: Option<HashAlg>,
}

impl RsaHash {
    async fn get<H: Handler>(&mut self, handle: &Handle<H>) -> Option<HashAlg> {
        if self.asked {
            return self.hash;
        }
        // `None` from russh: the server sent no server-sig-algs; SHA-256 is what every
        // OpenSSH since 7.2 accepts (and `ssh-rsa`/SHA-1 is disabled by default since 8.8).
        let h = match handle.best_supported_rsa_hash().await {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => Some(HashAlg::Sha256),
        };
        self.asked = true;
        self.hash = h;
        h
    }
}

fn describe_remaining(result: &AuthResult) -> Option<String> {
    match result {
        AuthResult::Failure {
            remaining_methods, ..
        } => Some(
            remaining_methods
                .iter()
                .map(|m| <&str>::from(m).to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        AuthResult::Success => None,
    }
}

fn publickey_allowed(result: &AuthResult) -> bool {
    match result {
        AuthResult::Failure {
            remaining_methods, ..
        } => remaining_methods.contains(&MethodKind::PublicKey),
        AuthResult::Success => true,
    }
}

/// Tries every identity in turn; Ok on the first one the server accepts.
pub(crate) async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    ctx: &AuthContext<'_>,
) -> Result<(), SshError> {
    let mut tried: Vec<String> = Vec::new();
    let mut offered: Vec<PublicKey> = Vec::new();
    let mut server_methods: Option<String> = None;
    let mut rsa = RsaHash {
        asked: false,
        hash: None,
    };
    let lost = |e: &dyn std::fmt::Display, tried: &[String]| SshError::Auth {
        host: ctx.host.to_string(),
        address: ctx.address.to_string(),
        user: ctx.user.to_string(),
        tried: format!(
            "{}; then the server closed the connection ({e}) — too many keys offered? sshd allows MaxAuthTries (default 6)",
            if tried.is_empty() {
                "nothing tried".to_string()
            } else {
                tried.join("; ")
            }
        ),
    };

    for path in ctx.identity_files {
        let shown = path.display();
        let key = match load_secret_key(path, None) {
            Ok(key) => key,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                tried.push(format!(
                    "{shown} is passphrase-protected (add it to ssh-agent with ssh-add)"
                ));
                continue;
            }
            Err(russh::keys::Error::IO(e)) => {
                tried.push(format!("{shown}: {e}"));
                continue;
            }
            Err(e) => {
                tried.push(format!("{shown}: not a usable private key ({e})"));
                continue;
            }
        };
        let public = key.public_key().clone();
        if offered.contains(&public) {
            continue;
        }
        let hash = if key.algorithm().is_rsa() {
            rsa.get(handle).await
        } else {
            None
        };
        let algorithm = key.algorithm().as_str().to_string();
        let result = handle
            .authenticate_publickey(ctx.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| lost(&e, &tried))?;
        if result.success() {
            return Ok(());
        }
        tried.push(format!("key {shown} ({algorithm}) refused"));
        offered.push(public);
        server_methods = describe_remaining(&result);
        if !publickey_allowed(&result) {
            break;
        }
    }

    if let Some(socket) = ctx.agent_socket
        && server_methods
            .as_deref()
            .is_none_or(|m| m.split(',').any(|m| m == "publickey"))
    {
        match AgentClient::connect_uds(socket).await {
            Err(e) => tried.push(format!(
                "ssh-agent at {} unreachable ({e})",
                socket.display()
            )),
            Ok(mut agent) => match agent.request_identities().await {
                Err(e) => tried.push(format!("ssh-agent did not list its keys ({e})")),
                Ok(identities) => {
                    let mut refused = 0usize;
                    for identity in identities {
                        let AgentIdentity::PublicKey { key, .. } = identity else {
                            continue;
                        };
                        if offered.contains(&key) {
                            continue;
                        }
                        let hash = if key.algorithm().is_rsa() {
                            rsa.get(handle).await
                        } else {
                            None
                        };
                        match handle
                            .authenticate_publickey_with(ctx.user, key.clone(), hash, &mut agent)
                            .await
                        {
                            Ok(result) if result.success() => return Ok(()),
                            Ok(result) => {
                                refused += 1;
                                offered.push(key);
                                server_methods = describe_remaining(&result);
                                if !publickey_allowed(&result) {
                                    break;
                                }
                            }
                            Err(russh::AgentAuthError::Send(e)) => return Err(lost(&e, &tried)),
                            Err(russh::AgentAuthError::Key(e)) => {
                                tried.push(format!("ssh-agent could not sign ({e})"));
                                offered.push(key);
                            }
                        }
                    }
                    tried.push(format!("{refused} ssh-agent key(s) refused"));
                }
            },
        }
    } else if ctx.agent_socket.is_none() {
        tried.push("no ssh-agent (SSH_AUTH_SOCK unset)".into());
    }

    if tried.is_empty() {
        tried.push("no identity file configured and no ssh-agent key".into());
    }
    let mut tried = tried.join("; ");
    if let Some(methods) = server_methods {
        tried.push_str("; the server accepts: ");
        tried.push_str(&methods);
    }
    Err(SshError::Auth {
        host: ctx.host.to_string(),
        address: ctx.address.to_string(),
        user: ctx.user.to_string(),
        tried,
    })
}

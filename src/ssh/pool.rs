//! Connections opened ahead of a run's work. A run that takes the cluster lock connects to
//! its hosts first (every host key checked before anything is sent anywhere), takes the lock
//! over the lock host's connection, then works over the same connections: one handshake
//! per host, the lock host's included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Connection, SshError};

/// Per host, its open connection or why there is none. Clones share the same pool.
#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<HashMap<String, Result<Connection, SshError>>>>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts = self.lock().len();
        f.debug_struct("Pool").field("hosts", &hosts).finish()
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Result<Connection, SshError>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records host `name`'s connect result.
    pub fn put(&self, name: &str, result: Result<Connection, SshError>) {
        self.lock().insert(name.to_string(), result);
    }

    /// For the work on host `name`: a clone of its open connection (it stays pooled for
    /// later steps of the run), or its connect error (taken: a later step connects anew).
    /// `None` when the pool has nothing for it.
    pub fn checkout(&self, name: &str) -> Option<Result<Connection, SshError>> {
        let mut map = self.lock();
        match map.get(name)? {
            Ok(conn) => Some(Ok(conn.clone())),
            Err(_) => map.remove(name),
        }
    }

    /// Host `name`'s open connection (a clone), or why there is none, as text; the entry
    /// stays for the work.
    pub fn peek(&self, name: &str) -> Option<Result<Connection, String>> {
        self.lock().get(name).map(|r| match r {
            Ok(conn) => Ok(conn.clone()),
            Err(e) => Err(e.to_string()),
        })
    }

    /// Whether a host's key changed (then nothing at all may be sent, the lock included).
    pub fn stopped_by_host_key(&self) -> bool {
        self.lock().values().any(|r| {
            matches!(
                r,
                Err(SshError::HostKeyChanged { .. } | SshError::StoppedByHostKey { .. })
            )
        })
    }

    /// Empties the pool, disconnecting every connection no one else still holds.
    pub async fn close_all(&self) {
        let conns: Vec<Connection> = self.lock().drain().filter_map(|(_, r)| r.ok()).collect();
        for conn in conns {
            conn.close().await;
        }
    }
}

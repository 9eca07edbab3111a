//! `capstan kubeconfig`: the admin kubeconfig from the local PKI, or a kubeconfig for
//! another identity with a fresh client certificate signed by the cluster CA.
//!
//! Both point at the API endpoint as the operator reaches it ([`spec::operator_url`]). A
//! certificate issued for `--user` is never stored: its key exists only in the printed
//! kubeconfig. Nothing is written to the PKI folder.

use time::{Duration, OffsetDateTime};

use crate::error::BadInput;
use crate::inventory::Inventory;
use crate::pki::spec::{self, CaKind, LeafSpec, Usage};
use crate::pki::{KeyedCert, PkiError, Store, inspect, issue, kubeconfig};

/// The admin kubeconfig's client certificate in the PKI.
const ADMIN_CERT: &str = "kubeconfig/admin";
/// The admin kubeconfig's user name (kubeadm's).
const ADMIN_USER: &str = "kubernetes-admin";
/// Longest validity `--validity` accepts (kubeadm's leaf validity).
pub const MAX_VALIDITY: Duration = issue::LEAF_VALIDITY;
/// Shortest validity `--validity` accepts.
pub const MIN_VALIDITY: Duration = Duration::minutes(5);
/// Longest user or group name: X.509's upper bound for a common name or organization.
const MAX_NAME: usize = 64;

/// An identity to issue a client certificate for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name (the certificate's CN).
    pub user: String,
    /// The groups (its O entries), in order, without duplicates.
    pub groups: Vec<String>,
}

/// A printed kubeconfig and what the operator should know about it (never key material).
#[derive(Debug)]
pub struct Issued {
    /// The kubeconfig (holds a private key: print it, never log it).
    pub kubeconfig: Vec<u8>,
    pub user: String,
    pub groups: Vec<String>,
    pub server: String,
    pub not_after: OffsetDateTime,
    /// Set when the certificate ends earlier than asked (the CA expires first).
    pub clipped_by_ca: bool,
}

/// Checks a `--user` or `--group` value: non-empty, at most 64 characters, only letters,
/// digits and `- . _ : @ + =`, and not starting with `-`. Such names are safe in a shell,
/// a file name and a kubeconfig alike.
pub fn validate_name(flag: &str, value: &str) -> Result<(), BadInput> {
    const ALLOWED: &str =
        "letters, digits and - . _ : @ + = (e.g. jane, ci:deployer, jane@example.com)";
    if value.is_empty() {
        return Err(BadInput::new(
            format!("{flag} is empty"),
            format!("give a name: {ALLOWED}"),
        ));
    }
    if let Some((pos, c)) = value
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || "-._:@+=".contains(*c)))
    {
        return Err(BadInput::new(
            format!(
                "{flag} `{}` holds {} at position {}",
                shown(value),
                describe(c),
                pos + 1
            ),
            format!("names may hold only {ALLOWED}"),
        ));
    }
    if value.starts_with('-') {
        return Err(BadInput::new(
            format!("{flag} `{value}` starts with `-`"),
            "a name starting with `-` reads as an option to other tools: start it with a letter or digit",
        ));
    }
    if value.chars().count() > MAX_NAME {
        return Err(BadInput::new(
            format!(
                "{flag} `{value}` is {} characters long",
                value.chars().count()
            ),
            format!("a certificate's names hold at most {MAX_NAME} characters"),
        ));
    }
    Ok(())
}

/// `value` with control characters escaped (the rest as typed).
fn shown(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn describe(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\t' => "a tab".into(),
        c if c.is_control() => format!("a control character ({})", c.escape_debug()),
        c => format!("`{c}`"),
    }
}

/// Validates `--user` and `--group` values into an [`Identity`] (groups deduplicated, in
/// the order given).
pub fn identity(user: &str, groups: &[String]) -> Result<Identity, BadInput> {
    validate_name("--user", user)?;
    let mut out: Vec<String> = Vec::new();
    for g in groups {
        validate_name("--group", g)?;
        if !out.contains(g) {
            out.push(g.clone());
        }
    }
    if out.len() > issue::MAX_ORGANIZATIONS {
        return Err(BadInput::new(
            format!("{} groups given", out.len()),
            format!(
                "a certificate holds at most {} groups; bind roles to fewer, broader groups",
                issue::MAX_ORGANIZATIONS
            ),
        ));
    }
    Ok(Identity {
        user: user.to_string(),
        groups: out,
    })
}

/// Parses a validity such as `30m`, `24h`, `7d` or `1d12h` (units s, m, h, d), between
/// five minutes and a year.
pub fn parse_validity(text: &str) -> Result<Duration, BadInput> {
    let help = "write a number and a unit, e.g. 30m, 24h, 7d or 1d12h (units s, m, h, d), \
                between 5m and 365d";
    let bad = |why: String| BadInput::new(format!("--validity `{}` {why}", shown(text)), help);
    let mut total = Duration::ZERO;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => Duration::SECOND,
            'm' => Duration::MINUTE,
            'h' => Duration::HOUR,
            'd' => Duration::DAY,
            _ => {
                return Err(bad(format!(
                    "has `{}` where a digit or unit belongs",
                    c.escape_debug()
                )));
            }
        };
        if digits.is_empty() {
            return Err(bad(format!(
                "has the unit `{c}` without a number before it"
            )));
        }
        let n: i32 = digits
            .parse()
            .ok()
            .filter(|n| *n <= 1_000_000)
            .ok_or_else(|| bad("is far too long".into()))?;
        total += unit * n;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad(format!("ends with `{digits}` without a unit")));
    }
    if total == Duration::ZERO && text.trim().is_empty() {
        return Err(bad("is empty".into()));
    }
    if total < MIN_VALIDITY {
        return Err(bad("is shorter than 5 minutes".into()));
    }
    if total > MAX_VALIDITY {
        return Err(bad("is longer than a year".into()));
    }
    Ok(total)
}

/// The PKI is missing or incomplete: the user has to create it first (bad input, exit 2).
fn missing(store: &Store, what: &str) -> miette::Report {
    BadInput::new(
        format!("the local PKI in {} has no {what}", store.root().display()),
        "create it with `capstan certs generate -i INVENTORY` (or `capstan init`), or point -i \
         at the inventory whose .capstan/ folder holds this cluster's PKI",
    )
    .into()
}

fn cluster_ca(store: &Store, state: &crate::pki::PkiState) -> miette::Result<KeyedCert> {
    state
        .cas
        .get(&CaKind::Ca)
        .cloned()
        .ok_or_else(|| missing(store, "cluster CA (ca.crt, ca.key)"))
}

/// The admin kubeconfig: the PKI's `kubernetes-admin` client certificate, the cluster CA,
/// the operator's API URL. Refuses a certificate that is expired or not signed by the CA.
pub fn admin(inv: &Inventory, now: OffsetDateTime) -> miette::Result<Issued> {
    let store = Store::for_inventory(inv);
    let state = store.load()?;
    let ca = cluster_ca(&store, &state)?;
    let cert = state
        .leaves
        .get(ADMIN_CERT)
        .filter(|c| !c.key_pem.expose().is_empty())
        .ok_or_else(|| {
            missing(
                &store,
                "admin client certificate (kubeconfig/admin.crt and .key)",
            )
        })?;
    let path = store.root().join(format!("{ADMIN_CERT}.crt"));
    let info = inspect::parse_pem(&cert.cert_pem).map_err(|e| PkiError::Unreadable {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if !inspect::signed_by(&cert.cert_pem, &ca.cert_pem) {
        return Err(PkiError::Unreadable {
            path,
            message: "it is not signed by the cluster CA (ca.crt)".into(),
        }
        .into());
    }
    if !inspect::key_matches(&info, cert.key_pem.expose()) {
        return Err(PkiError::Unreadable {
            path,
            message: "its key (kubeconfig/admin.key) does not belong to it".into(),
        }
        .into());
    }
    if info.not_after <= now {
        return Err(miette::miette!(
            code = "capstan::kubeconfig::expired",
            help = "re-issue it with `capstan certs renew admin.conf -i INVENTORY`, then run this again",
            "the admin client certificate ({}) expired on {}",
            path.display(),
            info.not_after.date()
        ));
    }
    let server = spec::operator_url(inv);
    Ok(Issued {
        kubeconfig: kubeconfig::render(&inv.cluster.name, &server, ADMIN_USER, &ca.cert_pem, cert),
        user: ADMIN_USER.into(),
        groups: info.organization,
        server,
        not_after: info.not_after,
        clipped_by_ca: false,
    })
}

/// A kubeconfig for `who` with a new client certificate (fresh key) signed by the cluster
/// CA, valid for `validity` from `now` (never past the CA). Nothing is stored.
pub fn for_identity(
    inv: &Inventory,
    who: &Identity,
    validity: Duration,
    now: OffsetDateTime,
) -> miette::Result<Issued> {
    let store = Store::for_inventory(inv);
    let state = store.load()?;
    let ca = cluster_ca(&store, &state)?;
    let ca_info = inspect::parse_pem(&ca.cert_pem).map_err(|e| PkiError::Unreadable {
        path: store.root().join("ca.crt"),
        message: e.to_string(),
    })?;
    if ca_info.not_after <= now {
        return Err(miette::miette!(
            code = "capstan::kubeconfig::ca_expired",
            help = "a cluster whose CA expired needs a new CA and every certificate re-issued",
            "the cluster CA ({}) expired on {}",
            store.root().join("ca.crt").display(),
            ca_info.not_after.date()
        ));
    }
    let leaf = LeafSpec {
        id: format!("kubeconfig/user/{}", who.user),
        name: format!("client certificate for {}", who.user),
        ca: CaKind::Ca,
        common_name: who.user.clone(),
        organization: who.groups.clone(),
        sans: std::collections::BTreeSet::new(),
        usages: vec![Usage::ClientAuth],
    };
    // `new_leaf_valid_for` backdates notBefore; the requested validity counts from now.
    let cert = issue::new_leaf_valid_for(
        &leaf,
        &ca,
        inv.cluster.pki.key_algorithm,
        now,
        validity + issue::BACKDATE,
    )?;
    let info = inspect::parse_pem(&cert.cert_pem)
        .map_err(|e| PkiError::Crypto(format!("cannot read the certificate just issued: {e}")))?;
    let server = spec::operator_url(inv);
    Ok(Issued {
        kubeconfig: kubeconfig::render(&inv.cluster.name, &server, &who.user, &ca.cert_pem, &cert),
        user: who.user.clone(),
        groups: who.groups.clone(),
        server,
        clipped_by_ca: now + validity > ca_info.not_after,
        not_after: info.not_after,
    })
}

/// The kubeconfig as JSON (kubectl reads either), for `--output json`.
pub fn to_json(kubeconfig: &[u8]) -> miette::Result<String> {
    let value: serde_json::Value = serde_yaml::from_slice(kubeconfig)
        .map_err(|e| miette::miette!("cannot convert the kubeconfig to JSON: {e}"))?;
    serde_json::to_string_pretty(&value)
        .map(|s| s + "\n")
        .map_err(|e| miette::miette!("cannot render JSON: {e}"))
}

/// One line for stderr about what was issued (names and dates only).
pub fn summary(issued: &Issued) -> String {
    let groups = if issued.groups.is_empty() {
        "no groups".to_string()
    } else {
        format!("groups {}", issued.groups.join(", "))
    };
    let mut line = format!(
        "kubeconfig for {} ({groups}) at {}, certificate valid until {}",
        issued.user,
        issued.server,
        issued
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| issued.not_after.to_string())
    );
    if issued.clipped_by_ca {
        line.push_str(" (shortened: the cluster CA expires then)");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "jane",
            "ci:deployer",
            "jane@example.com",
            "a.b_c-d+e=f",
            "system:masters",
        ] {
            assert!(validate_name("--user", ok).is_ok(), "{ok}");
        }
        let msg = |v: &str| validate_name("--user", v).err().map(|e| e.message);
        assert_eq!(msg(""), Some("--user is empty".into()));
        assert_eq!(
            msg("jane doe"),
            Some("--user `jane doe` holds a space at position 5".into())
        );
        assert_eq!(
            msg("x;rm -rf"),
            Some("--user `x;rm -rf` holds `;` at position 2".into())
        );
        assert!(msg("$(id)").is_some_and(|m| m.contains("`$`")));
        assert!(msg("a\nb").is_some_and(|m| m.contains("control character")));
        assert!(msg("-rf").is_some_and(|m| m.contains("starts with `-`")));
        assert!(msg(&"a".repeat(65)).is_some_and(|m| m.contains("65 characters")));
        assert!(msg("jäne").is_some());
    }

    #[test]
    fn groups_deduplicated_in_order() {
        let id = identity("jane", &["dev".into(), "ops".into(), "dev".into()]).expect("valid");
        assert_eq!(id.groups, ["dev", "ops"]);
        assert!(identity("jane", &[String::new()]).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("g{i}")).collect();
        assert!(identity("jane", &many[..16]).is_ok());
        assert!(identity("jane", &many).is_err());
    }

    #[test]
    fn validity() {
        assert_eq!(parse_validity("24h").ok(), Some(Duration::hours(24)));
        assert_eq!(parse_validity("30m").ok(), Some(Duration::minutes(30)));
        assert_eq!(parse_validity("1d12h").ok(), Some(Duration::hours(36)));
        assert_eq!(parse_validity("365d").ok(), Some(Duration::days(365)));
        for bad in ["", "24", "h", "1m", "366d", "24x", "-1h", "99999999999d"] {
            assert!(parse_validity(bad).is_err(), "{bad}");
        }
    }
}

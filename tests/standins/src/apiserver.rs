//! kube-apiserver stand-in: HTTPS with client-cert authentication, a small authorizer, objects
//! stored as JSON in the real etcd, discovery, CRUD, patch, evictions with PDBs.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use serde_json::{Value, json};

use crate::cidr::Cidr;
use crate::common::{self, log};
use crate::etcd::{Etcd, EtcdError};
use crate::flags::Kind::{Bool as B, Value as V};
use crate::flags::{Kind, Parsed};
use crate::resources::{self, Res};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{Request, Response};
use crate::tls::{self, User};
use crate::{patch, rbac, timefmt};

const NAME: &str = "kube-apiserver";

pub const FLAGS: &[(&str, Kind)] = &[
    ("advertise-address", V),
    ("allow-privileged", B),
    ("anonymous-auth", B),
    ("api-audiences", V),
    ("apiserver-count", V),
    ("audit-log-path", V),
    ("audit-log-maxage", V),
    ("audit-log-maxbackup", V),
    ("audit-log-maxsize", V),
    ("audit-policy-file", V),
    ("authorization-mode", V),
    ("authorization-config", V),
    ("bind-address", V),
    ("cert-dir", V),
    ("client-ca-file", V),
    ("cloud-provider", V),
    ("default-not-ready-toleration-seconds", V),
    ("default-unreachable-toleration-seconds", V),
    ("disable-admission-plugins", V),
    ("enable-admission-plugins", V),
    ("enable-aggregator-routing", B),
    ("enable-bootstrap-token-auth", B),
    ("encryption-provider-config", V),
    ("endpoint-reconciler-type", V),
    ("etcd-cafile", V),
    ("etcd-certfile", V),
    ("etcd-keyfile", V),
    ("etcd-prefix", V),
    ("etcd-servers", V),
    ("etcd-servers-overrides", V),
    ("event-ttl", V),
    ("external-hostname", V),
    ("kubelet-certificate-authority", V),
    ("kubelet-client-certificate", V),
    ("kubelet-client-key", V),
    ("kubelet-preferred-address-types", V),
    ("max-mutating-requests-inflight", V),
    ("max-requests-inflight", V),
    ("oidc-issuer-url", V),
    ("oidc-client-id", V),
    ("profiling", B),
    ("proxy-client-cert-file", V),
    ("proxy-client-key-file", V),
    ("request-timeout", V),
    ("requestheader-allowed-names", V),
    ("requestheader-client-ca-file", V),
    ("requestheader-extra-headers-prefix", V),
    ("requestheader-group-headers", V),
    ("requestheader-username-headers", V),
    ("runtime-config", V),
    ("secure-port", V),
    ("service-account-issuer", V),
    ("service-account-key-file", V),
    ("service-account-lookup", B),
    ("service-account-signing-key-file", V),
    ("service-cluster-ip-range", V),
    ("service-node-port-range", V),
    ("storage-backend", V),
    ("storage-media-type", V),
    ("tls-cert-file", V),
    ("tls-cipher-suites", V),
    ("tls-min-version", V),
    ("tls-private-key-file", V),
    ("token-auth-file", V),
    ("watch-cache", B),
];

pub struct ApiServer {
    version: String,
    etcd: Etcd,
    client_roots: Arc<RootCertStore>,
    advertise: String,
    /// Set once the default namespaces and RBAC policy exist: the real server's readyz
    /// holds back on its post-start hooks the same way, so "ready" means usable.
    bootstrapped: Arc<std::sync::atomic::AtomicBool>,
    signer: crate::satoken::Signer,
    sa_keys: crate::satoken::Verifier,
    issuer: String,
    /// --api-audiences, defaulting to the issuer.
    audiences: Vec<String>,
    service_range: Option<Cidr>,
    secure_port: u16,
    /// --advertise-address (or the bind address): this server's entry in the `kubernetes`
    /// Service's endpoints.
    advertise_ip: String,
    /// The client of the kubelets' :10250 (pods/log), with --kubelet-client-certificate.
    kubelet: ureq::Agent,
    kubelet_address_types: Vec<String>,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    Response::json(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn not_found(res: &Res, name: &str) -> Response {
    let gr = if res.group.is_empty() {
        res.name.to_string()
    } else {
        format!("{}.{}", res.name, res.group)
    };
    status(404, "NotFound", &format!("{gr} \"{name}\" not found"))
}

fn etcd_error(e: &EtcdError) -> Response {
    status(503, "ServiceUnavailable", &e.to_string())
}

fn key(res: &Res, ns: &str, name: &str) -> String {
    if res.namespaced {
        format!("/registry/{}/{ns}/{name}", res.name)
    } else {
        format!("/registry/{}/{name}", res.name)
    }
}

fn prefix(res: &Res, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if res.namespaced => format!("/registry/{}/{ns}/", res.name),
        _ => format!("/registry/{}/", res.name),
    }
}

fn with_rv(mut obj: Value, rev: i64, res: &Res) -> Value {
    obj["metadata"]["resourceVersion"] = json!(rev.to_string());
    obj["kind"] = json!(res.kind);
    obj["apiVersion"] = json!(res.api_version());
    obj
}

/// A parsed resource URL.
struct Target {
    res: &'static Res,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(group: &str, version: &str, segs: &[&str]) -> Option<Target> {
    let (ns, rest) = if segs.len() >= 3
        && segs[0] == "namespaces"
        && resources::find(group, version, segs[2]).is_some_and(|r| r.namespaced)
    {
        (Some(segs[1].to_string()), &segs[2..])
    } else {
        (None, segs)
    };
    let res = resources::find(group, version, rest.first()?)?;
    if rest.len() > 3 {
        return None;
    }
    Some(Target {
        res,
        ns,
        name: rest.get(1).map(|s| (*s).to_string()),
        sub: rest.get(2).map(|s| (*s).to_string()),
    })
}

impl ApiServer {
    fn authenticate(&self, req: &Request) -> Result<User, Response> {
        if req.peer_certs.is_empty() {
            if let Some(token) = req.header("authorization").strip_prefix("Bearer ") {
                return self.token_user(token.trim()).map_err(|e| {
                    log(NAME, &format!("unable to authenticate the request: {e}"));
                    status(401, "Unauthorized", "Unauthorized")
                });
            }
            return Ok(User {
                name: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
            });
        }
        tls::verify_client_chain(&self.client_roots, &req.peer_certs).map_err(|e| {
            log(
                NAME,
                &format!("unable to authenticate the request: verifying certificate: {e}"),
            );
            status(401, "Unauthorized", "Unauthorized")
        })?;
        let mut u = tls::identity(&req.peer_certs[0])
            .map_err(|_| status(401, "Unauthorized", "Unauthorized"))?;
        u.groups.push("system:authenticated".into());
        Ok(u)
    }

    /// The service account a bearer token names, once its signature, issuer, audience and
    /// validity are checked and (as --service-account-lookup does) the service account,
    /// and the pod it is bound to, still exist.
    fn token_user(&self, token: &str) -> Result<User, String> {
        if !crate::satoken::looks_like_jwt(token) {
            return Err("invalid bearer token".into());
        }
        let claims = self
            .sa_keys
            .verify(token)
            .map_err(|e| format!("[invalid bearer token, {e}]"))?;
        if claims["iss"].as_str() != Some(self.issuer.as_str()) {
            return Err("[invalid bearer token, token issuer is not trusted]".into());
        }
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        )
        .unwrap_or(i64::MAX);
        if claims["exp"].as_i64().is_none_or(|e| e < now) {
            return Err("[invalid bearer token, service account token has expired]".into());
        }
        if claims["nbf"].as_i64().is_some_and(|n| n > now + 60) {
            return Err("[invalid bearer token, service account token is not valid yet]".into());
        }
        let auds: Vec<&str> = match &claims["aud"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !auds.iter().any(|a| self.audiences.iter().any(|x| x == a)) {
            return Err(
                "[invalid bearer token, token audiences is invalid for the target audiences]"
                    .into(),
            );
        }
        let sub = claims["sub"].as_str().unwrap_or("");
        let Some((ns, name)) = sub
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
        else {
            return Err("[invalid bearer token, not a service account token]".into());
        };
        let k8s = &claims["kubernetes.io"];
        let sa = self
            .etcd
            .get(&format!("/registry/serviceaccounts/{ns}/{name}"))
            .map_err(|e| e.to_string())?
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok());
        match sa {
            Some(sa) if sa["metadata"]["uid"] == k8s["serviceaccount"]["uid"] => {}
            Some(_) => {
                return Err(format!(
                    "[invalid bearer token, service account {ns}/{name} was recreated: its UID does not match the claim]"
                ));
            }
            None => {
                return Err(format!(
                    "[invalid bearer token, service account {ns}/{name} has been deleted]"
                ));
            }
        }
        if let Some(pod) = k8s["pod"]["name"].as_str() {
            let live = self
                .etcd
                .get(&format!("/registry/pods/{ns}/{pod}"))
                .map_err(|e| e.to_string())?
                .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok());
            if !live.is_some_and(|p| p["metadata"]["uid"] == k8s["pod"]["uid"]) {
                return Err(format!(
                    "[invalid bearer token, pod {ns}/{pod} does not exist or was recreated]"
                ));
            }
        }
        Ok(User {
            name: sub.to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        })
    }

    /// Node, controller-manager and scheduler rules; `system:masters` may do anything.
    fn authorize(user: &User, verb: &str, t: &Target, obj: Option<&Value>) -> bool {
        if user.in_group("system:masters") {
            return true;
        }
        let res = t.res.name;
        let sub = t.sub.as_deref().unwrap_or("");
        let ns = t.ns.as_deref().unwrap_or("");
        let name = t
            .name
            .as_deref()
            .or_else(|| obj.and_then(|o| o["metadata"]["name"].as_str()))
            .unwrap_or("");
        let read = matches!(verb, "get" | "list");
        if let Some(node) = user
            .name
            .strip_prefix("system:node:")
            .filter(|_| user.in_group("system:nodes"))
        {
            return match res {
                "nodes" => read || name == node,
                "leases" => ns == "kube-node-lease" && name == node,
                "pods" if read => true,
                "pods" => {
                    sub != "eviction"
                        && sub != "binding"
                        && obj.is_some_and(|o| o["spec"]["nodeName"].as_str() == Some(node))
                }
                "events" => verb == "create" || verb == "patch" || verb == "update",
                // Checked further by the caller: the token must be bound to a pod of
                // this node (the Node authorizer's rule).
                "serviceaccounts" if sub == "token" => verb == "create",
                "namespaces"
                | "services"
                | "endpoints"
                | "configmaps"
                | "secrets"
                | "serviceaccounts"
                | "persistentvolumeclaims"
                | "persistentvolumes" => read,
                _ => false,
            };
        }
        let lease_of = |holder: &str| {
            res == "leases" && ns == "kube-system" && (name == holder || (verb == "list"))
        };
        match user.name.as_str() {
            "system:kube-controller-manager" => {
                lease_of("kube-controller-manager")
                    || matches!(
                        res,
                        "pods"
                            | "replicasets"
                            | "deployments"
                            | "daemonsets"
                            | "events"
                            | "controllerrevisions"
                            | "endpointslices"
                            | "configmaps"
                            | "serviceaccounts"
                    )
                    || (res == "nodes" && matches!(verb, "get" | "list" | "patch" | "update"))
                    || (matches!(res, "namespaces" | "poddisruptionbudgets" | "services") && read)
            }
            "system:kube-scheduler" => {
                lease_of("kube-scheduler")
                    || (res == "pods" && (read || matches!(sub, "binding" | "status")))
                    || (res == "nodes" && read)
                    || (res == "events" && verb == "create")
            }
            _ => false,
        }
    }

    /// The RBAC authorizer: the Roles, ClusterRoles and bindings stored in etcd.
    fn rbac_allows(&self, user: &User, verb: &str, t: &Target, obj: Option<&Value>) -> bool {
        const RBAC: &str = "rbac.authorization.k8s.io";
        let objects = |resource: &str, ns: Option<&str>| -> Vec<Value> {
            let Some(res) = resources::find(RBAC, "v1", resource) else {
                return Vec::new();
            };
            match self.etcd.list(&prefix(res, ns)) {
                Ok((kvs, _)) => kvs
                    .iter()
                    .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                    .collect(),
                Err(e) => {
                    log(NAME, &format!("RBAC: cannot read {resource}: {e}"));
                    Vec::new()
                }
            }
        };
        let ns = t.ns.as_deref();
        let policy = rbac::Policy {
            cluster_roles: objects("clusterroles", None),
            cluster_role_bindings: objects("clusterrolebindings", None),
            roles: ns.map(|n| objects("roles", Some(n))).unwrap_or_default(),
            role_bindings: ns
                .map(|n| objects("rolebindings", Some(n)))
                .unwrap_or_default(),
        };
        let resource = match &t.sub {
            Some(sub) => format!("{}/{sub}", t.res.name),
            None => t.res.name.to_string(),
        };
        // A create names no object in its URL; RBAC's resourceNames never cover it.
        let name = if verb == "create" && t.sub.is_none() {
            ""
        } else {
            t.name
                .as_deref()
                .or_else(|| obj.and_then(|o| o["metadata"]["name"].as_str()))
                .unwrap_or("")
        };
        policy.allows(
            user,
            &rbac::Attrs {
                verb,
                group: t.res.group,
                resource,
                name,
                namespace: ns,
            },
        )
    }

    fn forbidden(user: &User, verb: &str, t: &Target) -> Response {
        let scope = match &t.ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        let res = match &t.sub {
            Some(s) => format!("{}/{s}", t.res.name),
            None => t.res.name.to_string(),
        };
        let what = match &t.name {
            Some(n) => format!("{res} \"{n}\" is forbidden"),
            None => format!("{res} is forbidden"),
        };
        status(
            403,
            "Forbidden",
            &format!(
                "{what}: User \"{}\" cannot {verb} resource \"{res}\" in API group \"{}\" {scope}",
                user.name, t.res.group
            ),
        )
    }

    pub fn handle(&self, req: Request) -> Response {
        let user = match self.authenticate(&req) {
            Ok(u) => u,
            Err(r) => return r,
        };
        let path = req.path.trim_end_matches('/').to_string();
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        match path.as_str() {
            "/healthz" | "/livez" | "/healthz/ping" | "/livez/ping" => {
                return Response::text(200, "ok");
            }
            "/readyz" | "/readyz/etcd" | "/healthz/etcd" | "/livez/etcd" => {
                return self.readyz(&req);
            }
            "/version" => {
                let (maj, min) = crate::version::major_minor(&self.version);
                return Response::json(
                    200,
                    &json!({"major": maj, "minor": min, "gitVersion": self.version,
                    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                    "buildDate": "1970-01-01T00:00:00Z", "goVersion": "standin", "compiler": "rustc",
                    "platform": "linux/amd64"}),
                );
            }
            _ => {}
        }
        if user.name == "system:anonymous" {
            return status(
                403,
                "Forbidden",
                &format!(
                    "forbidden: User \"system:anonymous\" cannot {} path \"{}\"",
                    req.method.to_lowercase(),
                    req.path
                ),
            );
        }
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segs.as_slice() {
            ["api"] => return Response::json(200, &resources::api_versions(&self.advertise)),
            ["api", "v1"] => return Response::json(200, &resources::resource_list("", "v1")),
            ["apis"] => return Response::json(200, &resources::api_group_list()),
            ["apis", g] => {
                return resources::api_group(g).map_or_else(
                    || {
                        status(
                            404,
                            "NotFound",
                            "the server could not find the requested resource",
                        )
                    },
                    |d| Response::json(200, &d),
                );
            }
            ["apis", g, v] if resources::group_known(g, v) => {
                return Response::json(200, &resources::resource_list(g, v));
            }
            ["openapi", "v3"] => return Response::json(200, &resources::openapi_root()),
            ["openapi", "v3", rest @ ..] => {
                return resources::openapi_gv(&rest.join("/")).map_or_else(
                    || {
                        status(
                            404,
                            "NotFound",
                            "the server could not find the requested resource",
                        )
                    },
                    |d| Response::json(200, &d),
                );
            }
            _ => {}
        }
        let target = match segs.as_slice() {
            ["api", "v1", rest @ ..] => parse_target("", "v1", rest),
            ["apis", g, v, rest @ ..] => parse_target(g, v, rest),
            _ => None,
        };
        let Some(t) = target else {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        if req.q("watch").is_some_and(|w| w == "true" || w == "1") {
            return status(
                405,
                "MethodNotAllowed",
                "watch is not supported by this server",
            );
        }
        let ct = req.header("content-type");
        if !req.body.is_empty() && ct.contains("protobuf") {
            return status(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {ct}"
                ),
            );
        }
        let body: Option<Value> = if req.body.is_empty() {
            None
        } else {
            match serde_json::from_slice(&req.body) {
                Ok(v) => Some(v),
                Err(e) => return status(400, "BadRequest", &format!("invalid JSON body: {e}")),
            }
        };
        let verb = match (req.method.as_str(), &t.name) {
            ("GET", None) => "list",
            ("GET", Some(_)) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", Some(_)) => "delete",
            ("DELETE", None) => "deletecollection",
            _ => {
                return status(
                    405,
                    "MethodNotAllowed",
                    &format!("{} is not supported", req.method),
                );
            }
        };
        self.resource(&req, &user, verb, &t, body)
    }

    fn readyz(&self, req: &Request) -> Response {
        if !self.bootstrapped.load(std::sync::atomic::Ordering::Acquire) {
            return Response::text(
                500,
                "[+]ping ok\n[-]poststarthook/rbac/bootstrap-roles failed: not finished\nreadyz check failed\n",
            );
        }
        match self.etcd.revision() {
            Ok(_) => {
                if req.q("verbose").is_some() {
                    Response::text(200, "[+]ping ok\n[+]etcd ok\nreadyz check passed\n")
                } else {
                    Response::text(200, "ok")
                }
            }
            Err(e) => {
                log(NAME, &format!("readyz: etcd check failed: {e}"));
                Response::text(
                    500,
                    &format!("[+]ping ok\n[-]etcd failed: {e}\nreadyz check failed\n"),
                )
            }
        }
    }

    fn ns_exists(&self, ns: &str) -> Result<bool, EtcdError> {
        Ok(self
            .etcd
            .get(&format!("/registry/namespaces/{ns}"))?
            .is_some())
    }

    fn load(&self, t: &Target, ns: &str, name: &str) -> Result<Option<(Value, i64)>, EtcdError> {
        Ok(self.etcd.get(&key(t.res, ns, name))?.and_then(|kv| {
            serde_json::from_slice(&kv.value)
                .ok()
                .map(|v| (v, kv.mod_revision))
        }))
    }

    fn resource(
        &self,
        req: &Request,
        user: &User,
        verb: &str,
        t: &Target,
        body: Option<Value>,
    ) -> Response {
        let ns = t.ns.clone().unwrap_or_default();
        if t.res.namespaced && t.name.is_some() && t.ns.is_none() {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        // Load the current object for writes, so the authorizer can see it.
        let existing = match (&t.name, verb) {
            (Some(name), "update" | "patch" | "delete" | "create")
                if t.sub.is_some() || verb != "create" =>
            {
                match self.load(t, &ns, name) {
                    Ok(e) => e,
                    Err(e) => return etcd_error(&e),
                }
            }
            _ => None,
        };
        let authz_obj = match verb {
            "create" if t.sub.is_none() => body.as_ref(),
            _ => existing.as_ref().map(|(v, _)| v),
        };
        // A node may create a pod only for itself, and update one only if it stays its own.
        let allowed = Self::authorize(user, verb, t, authz_obj)
            && (verb != "update"
                || t.res.name != "pods"
                || Self::authorize(user, verb, t, body.as_ref())
                || user.in_group("system:masters")
                || !user.in_group("system:nodes"));
        let allowed = allowed
            && (t.sub.as_deref() != Some("token")
                || self.token_for_own_pod(user, &ns, body.as_ref()));
        if !allowed && !self.rbac_allows(user, verb, t, authz_obj) {
            return Self::forbidden(user, verb, t);
        }
        match (verb, t.sub.as_deref()) {
            ("list", None) => self.list(req, t),
            ("get", None | Some("status")) => match existing.or_else(|| {
                self.load(t, &ns, t.name.as_deref().unwrap_or(""))
                    .ok()
                    .flatten()
            }) {
                Some((v, rev)) if crate::table::wants_table(req.header("accept")) => {
                    Response::json(
                        200,
                        &crate::table::table(
                            t.res.kind,
                            &[with_rv(v, rev, t.res)],
                            &rev.to_string(),
                            req.q("includeObject").unwrap_or("Metadata"),
                        ),
                    )
                }
                Some((v, rev)) => Response::json(200, &with_rv(v, rev, t.res)),
                None => not_found(t.res, t.name.as_deref().unwrap_or("")),
            },
            ("create", None) => self.create(t, &ns, body, req.q("dryRun").is_some()),
            ("create", Some("eviction")) => self.evict(t, &ns, existing),
            ("create", Some("binding")) => self.bind(t, &ns, existing, body),
            ("create", Some("token")) => {
                self.token_request(&ns, t.name.as_deref().unwrap_or(""), existing, body)
            }
            ("get", Some("log")) => self.pod_log(req, t, &ns),
            ("update", None | Some("status")) => {
                self.update(t, &ns, existing, body, req.q("dryRun").is_some())
            }
            ("patch", None | Some("status")) => self.patch(
                t,
                &ns,
                existing,
                body,
                req.header("content-type"),
                req.q("dryRun").is_some(),
            ),
            ("delete", None) => self.delete(t, &ns, existing),
            _ => status(
                405,
                "MethodNotAllowed",
                &format!("{verb} is not supported on {}", t.res.name),
            ),
        }
    }

    fn list(&self, req: &Request, t: &Target) -> Response {
        let labels = match LabelSelector::parse(req.q("labelSelector").unwrap_or("")) {
            Ok(l) => l,
            Err(e) => return status(400, "BadRequest", &e),
        };
        let fields = match FieldSelector::parse(req.q("fieldSelector").unwrap_or("")) {
            Ok(f) => f,
            Err(e) => return status(400, "BadRequest", &e),
        };
        let (kvs, rev) = match self.etcd.list(&prefix(t.res, t.ns.as_deref())) {
            Ok(x) => x,
            Err(e) => return etcd_error(&e),
        };
        let mut items = Vec::new();
        for kv in kvs {
            let Ok(v) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if labels.matches(&v) && fields.matches(&v) {
                items.push(with_rv(v, kv.mod_revision, t.res));
            }
        }
        if crate::table::wants_table(req.header("accept")) {
            return Response::json(
                200,
                &crate::table::table(
                    t.res.kind,
                    &items,
                    &rev.to_string(),
                    req.q("includeObject").unwrap_or("Metadata"),
                ),
            );
        }
        Response::json(
            200,
            &json!({
                "kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(),
                "metadata": {"resourceVersion": rev.to_string()}, "items": items,
            }),
        )
    }

    fn check_kind(t: &Target, obj: &Value) -> Result<(), Response> {
        if !obj.is_object() {
            return Err(status(
                400,
                "BadRequest",
                "the request body must be a JSON object",
            ));
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str)
            && k != t.res.kind
        {
            return Err(status(
                400,
                "BadRequest",
                &format!(
                    "the kind {k:?} does not match the resource {:?} (kind {:?})",
                    t.res.name, t.res.kind
                ),
            ));
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
            && av != t.res.api_version()
        {
            return Err(status(
                400,
                "BadRequest",
                &format!("apiVersion {av:?} does not match {:?}", t.res.api_version()),
            ));
        }
        Ok(())
    }

    fn create(&self, t: &Target, ns: &str, body: Option<Value>, dry_run: bool) -> Response {
        let Some(mut obj) = body else {
            return status(400, "BadRequest", "a body is required");
        };
        if let Err(r) = Self::check_kind(t, &obj) {
            return r;
        }
        if t.res.name == "services"
            && let Err(r) = self.allocate_cluster_ip(&mut obj)
        {
            return r;
        }
        let meta_ns = obj["metadata"]["namespace"].as_str().map(String::from);
        if t.res.namespaced {
            if let Some(m) = &meta_ns
                && m != ns
            {
                return status(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                );
            }
            match self.ns_exists(ns) {
                Ok(true) => {}
                Ok(false) => {
                    return status(404, "NotFound", &format!("namespaces \"{ns}\" not found"));
                }
                Err(e) => return etcd_error(&e),
            }
            obj["metadata"]["namespace"] = json!(ns);
        }
        let name = match obj["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match obj["metadata"]["generateName"].as_str() {
                Some(g) => format!("{g}{}", common::name_suffix(5)),
                None => {
                    return status(
                        422,
                        "Invalid",
                        &format!(
                            "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                            t.res.kind
                        ),
                    );
                }
            },
        };
        obj["metadata"]["name"] = json!(name);
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.insert("uid".into(), json!(common::uid()));
            m.insert("creationTimestamp".into(), json!(timefmt::now()));
            if t.res.has_status() && t.res.name != "nodes" && t.res.name != "pods" {
                m.insert("generation".into(), json!(1));
            }
        }
        defaults(t.res, &mut obj);
        let k = key(t.res, ns, &name);
        if dry_run {
            return Response::json(201, &with_rv(obj, 0, t.res));
        }
        let data = serde_json::to_vec(&obj).unwrap_or_default();
        match self.etcd.put_if(&k, &data, 0) {
            Ok(Some(rev)) => Response::json(201, &with_rv(obj, rev, t.res)),
            Ok(None) => {
                let gr = if t.res.group.is_empty() {
                    t.res.name.to_string()
                } else {
                    format!("{}.{}", t.res.name, t.res.group)
                };
                status(
                    409,
                    "AlreadyExists",
                    &format!("{gr} \"{name}\" already exists"),
                )
            }
            Err(e) => etcd_error(&e),
        }
    }

    /// Stores `new` in place of `old` (at `rev`), keeping identity fields; status subresource
    /// semantics as the real server: the main resource keeps status, /status keeps the rest.
    fn store_update(
        &self,
        t: &Target,
        ns: &str,
        old: &Value,
        rev: i64,
        mut new: Value,
        dry_run: bool,
    ) -> Response {
        let name = t.name.clone().unwrap_or_default();
        if let Err(r) = Self::check_kind(t, &new) {
            return r;
        }
        if new["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return status(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            );
        }
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && rv != rev.to_string()
        {
            return conflict(t, &name);
        }
        if t.res.name == "services"
            && t.sub.is_none()
            && let Err(r) = keep_cluster_ip(old, &mut new)
        {
            return r;
        }
        if t.sub.as_deref() == Some("status") {
            let st = new.get("status").cloned().unwrap_or(Value::Null);
            new = old.clone();
            new["status"] = st;
        } else if t.res.has_status() {
            new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
            if new["status"].is_null()
                && let Some(m) = new.as_object_mut()
            {
                m.remove("status");
            }
        }
        for f in ["uid", "creationTimestamp", "namespace", "name"] {
            if let Some(v) = old["metadata"].get(f) {
                new["metadata"][f] = v.clone();
            }
        }
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        if let Some(g) = old["metadata"]["generation"].as_i64() {
            let bump = i64::from(t.sub.is_none() && old.get("spec") != new.get("spec"));
            new["metadata"]["generation"] = json!(g + bump);
        }
        // An update that changes nothing is not written: the object keeps its
        // resourceVersion (the real server's GuaranteedUpdate does the same).
        if dry_run || new == *old {
            return Response::json(200, &with_rv(new, rev, t.res));
        }
        let data = serde_json::to_vec(&new).unwrap_or_default();
        match self.etcd.put_if(&key(t.res, ns, &name), &data, rev) {
            Ok(Some(r)) => Response::json(200, &with_rv(new, r, t.res)),
            Ok(None) => conflict(t, &name),
            Err(e) => etcd_error(&e),
        }
    }

    fn update(
        &self,
        t: &Target,
        ns: &str,
        existing: Option<(Value, i64)>,
        body: Option<Value>,
        dry_run: bool,
    ) -> Response {
        let Some(new) = body else {
            return status(400, "BadRequest", "a body is required");
        };
        match existing {
            Some((old, rev)) => self.store_update(t, ns, &old, rev, new, dry_run),
            None => not_found(t.res, t.name.as_deref().unwrap_or("")),
        }
    }

    fn patch(
        &self,
        t: &Target,
        ns: &str,
        existing: Option<(Value, i64)>,
        body: Option<Value>,
        ct: &str,
        dry_run: bool,
    ) -> Response {
        let Some(p) = body else {
            return status(400, "BadRequest", "a patch body is required");
        };
        let name = t.name.clone().unwrap_or_default();
        let mut current = existing;
        for _ in 0..5 {
            let Some((old, rev)) = current.take() else {
                return not_found(t.res, &name);
            };
            let base = with_rv(old.clone(), rev, t.res);
            let patched = if ct.starts_with("application/json-patch+json") {
                patch::json_patch(&base, &p)
            } else if ct.starts_with("application/merge-patch+json") {
                Ok(patch::merge(&base, &p))
            } else if ct.starts_with("application/strategic-merge-patch+json") {
                Ok(patch::strategic(&base, &p).unwrap_or_else(|| json!({})))
            } else {
                return status(
                    415,
                    "UnsupportedMediaType",
                    &format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"
                    ),
                );
            };
            let mut new = match patched {
                Ok(v) => v,
                Err(e) => {
                    return status(
                        422,
                        "Invalid",
                        &format!("the patch could not be applied: {e}"),
                    );
                }
            };
            // A patch without a resourceVersion applies to whatever is current.
            if new["metadata"]["resourceVersion"] == base["metadata"]["resourceVersion"]
                && let Some(m) = new["metadata"].as_object_mut()
            {
                m.remove("resourceVersion");
            }
            let r = self.store_update(t, ns, &old, rev, new, dry_run);
            if r.status != 409 || p.pointer("/metadata/resourceVersion").is_some() {
                return r;
            }
            current = match self.load(t, ns, &name) {
                Ok(c) => c,
                Err(e) => return etcd_error(&e),
            };
        }
        conflict(t, &name)
    }

    fn delete(&self, t: &Target, ns: &str, existing: Option<(Value, i64)>) -> Response {
        let name = t.name.clone().unwrap_or_default();
        let Some((old, rev)) = existing else {
            return not_found(t.res, &name);
        };
        match self.etcd.delete_if(&key(t.res, ns, &name), rev) {
            Ok(true) => {}
            Ok(false) => return conflict(t, &name),
            Err(e) => return etcd_error(&e),
        }
        if t.res.name == "namespaces" {
            // The namespace controller's job, done at once: remove everything inside.
            for r in resources::RESOURCES.iter().filter(|r| r.namespaced) {
                if let Ok((kvs, _)) = self.etcd.list(&prefix(r, Some(&name))) {
                    for kv in kvs {
                        let _ = self.etcd.delete_if(&kv.key, kv.mod_revision);
                    }
                }
            }
        }
        Response::json(200, &with_rv(old, rev, t.res))
    }

    fn bind(
        &self,
        t: &Target,
        ns: &str,
        existing: Option<(Value, i64)>,
        body: Option<Value>,
    ) -> Response {
        let name = t.name.clone().unwrap_or_default();
        let Some((old, rev)) = existing else {
            return not_found(t.res, &name);
        };
        let Some(node) = body
            .as_ref()
            .and_then(|b| b["target"]["name"].as_str())
            .map(String::from)
        else {
            return status(400, "BadRequest", "a Binding needs target.name");
        };
        if old["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
        {
            return status(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node {:?}",
                    old["spec"]["nodeName"]
                ),
            );
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(node);
        let data = serde_json::to_vec(&new).unwrap_or_default();
        match self.etcd.put_if(&key(t.res, ns, &name), &data, rev) {
            Ok(Some(_)) => Response::json(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ),
            Ok(None) => conflict(t, &name),
            Err(e) => etcd_error(&e),
        }
    }

    /// policy/v1 Eviction: refused with 429 when it would break a PodDisruptionBudget.
    fn evict(&self, t: &Target, ns: &str, existing: Option<(Value, i64)>) -> Response {
        let name = t.name.clone().unwrap_or_default();
        let Some((pod, rev)) = existing else {
            return not_found(t.res, &name);
        };
        let pdbs = match self
            .etcd
            .list(&format!("/registry/poddisruptionbudgets/{ns}/"))
        {
            Ok((kvs, _)) => kvs,
            Err(e) => return etcd_error(&e),
        };
        let pods: Vec<Value> = match self.etcd.list(&format!("/registry/pods/{ns}/")) {
            Ok((kvs, _)) => kvs
                .iter()
                .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                .collect(),
            Err(e) => return etcd_error(&e),
        };
        let pod_running = pod["status"]["phase"].as_str() == Some("Running");
        for kv in pdbs {
            let Ok(pdb) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let sel = LabelSelector::from_object(&pdb["spec"]["selector"]);
            if sel.is_empty() || !sel.matches(&pod) || !pod_running {
                continue;
            }
            let matching: Vec<&Value> = pods.iter().filter(|p| sel.matches(p)).collect();
            let pname = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
            match admit_eviction(&pdb, &matching, &name, std::time::SystemTime::now()) {
                Err((healthy, needed)) => {
                    return Response::json(
                        429,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                        "reason": "TooManyRequests", "code": 429,
                        "details": {"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {pname} needs {needed} healthy pods and has {healthy} currently")}]}}),
                    );
                }
                // The eviction is recorded in the PDB's status with a compare-and-swap, as
                // the real API server does: of two evictions racing (kubectl drain evicts
                // a node's pods at once, through any API server), one loses and retries.
                Ok(recorded) => {
                    let data = serde_json::to_vec(&recorded).unwrap_or_default();
                    match self.etcd.put_if(&kv.key, &data, kv.mod_revision) {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            return status(
                                429,
                                "TooManyRequests",
                                &format!(
                                    "the disruption budget {pname} is being updated by another eviction; please retry"
                                ),
                            );
                        }
                        Err(e) => return etcd_error(&e),
                    }
                }
            }
        }
        match self.etcd.delete_if(&key(t.res, ns, &name), rev) {
            Ok(true) => Response::json(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ),
            Ok(false) => conflict(t, &name),
            Err(e) => etcd_error(&e),
        }
    }
}

fn conflict(t: &Target, name: &str) -> Response {
    let gr = if t.res.group.is_empty() {
        t.res.name.to_string()
    } else {
        format!("{}.{}", t.res.name, t.res.group)
    };
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {gr} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
    )
}

/// An int or a percentage of `total` (rounded up, as the disruption controller does).
fn int_or_percent(v: &Value, total: usize) -> Option<i64> {
    let total = i64::try_from(total).unwrap_or(i64::MAX);
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map(|p| (p * total + 99) / 100),
        _ => None,
    }
}

/// How long an eviction stays counted in a PDB's `status.disruptedPods` when its pod does
/// not go away (the disruption controller's DeletionTimeout).
const DISRUPTION_TIMEOUT: Duration = Duration::from_secs(120);

/// A PodDisruptionBudget's verdict on evicting pod `name` of `pods` (those it selects):
/// the PDB with the eviction recorded in `status.disruptedPods` (pods evicted but maybe not
/// gone yet do not count as healthy), or, refused, (healthy pods, pods it needs healthy).
fn admit_eviction(
    pdb: &Value,
    pods: &[&Value],
    name: &str,
    now: std::time::SystemTime,
) -> Result<Value, (usize, usize)> {
    let exists = |n: &str| pods.iter().any(|p| p["metadata"]["name"] == n);
    let mut disrupted = serde_json::Map::new();
    if let Some(m) = pdb["status"]["disruptedPods"].as_object() {
        for (pod, at) in m {
            let fresh = at
                .as_str()
                .and_then(timefmt::parse)
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age < DISRUPTION_TIMEOUT);
            if fresh && exists(pod) {
                disrupted.insert(pod.clone(), at.clone());
            }
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| {
            // Healthy as the disruption controller counts it: the pod's Ready condition.
            crate::cm_network::pod_ready(p)
                && p["metadata"]["deletionTimestamp"].is_null()
                && !p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| disrupted.contains_key(n))
        })
        .count();
    let allowed = disruptions_allowed(&pdb["spec"], healthy, pods.len());
    if allowed < 1 {
        // healthy - allowed: what the budget wants healthy.
        let needed = usize::try_from(i64::try_from(healthy).unwrap_or(0) - allowed).unwrap_or(0);
        return Err((healthy, needed));
    }
    disrupted.insert(name.to_string(), json!(timefmt::rfc3339(now)));
    let mut out = pdb.clone();
    out["status"]["disruptedPods"] = Value::Object(disrupted);
    out["status"]["disruptionsAllowed"] = json!(allowed - 1);
    out["status"]["currentHealthy"] = json!(healthy);
    out["status"]["expectedPods"] = json!(pods.len());
    Ok(out)
}

fn disruptions_allowed(spec: &Value, healthy: usize, expected: usize) -> i64 {
    let h = i64::try_from(healthy).unwrap_or(0);
    let e = i64::try_from(expected).unwrap_or(0);
    if let Some(min) = int_or_percent(&spec["minAvailable"], expected) {
        h - min
    } else if let Some(max) = int_or_percent(&spec["maxUnavailable"], expected) {
        h - (e - max)
    } else {
        h
    }
}

fn defaults(res: &Res, obj: &mut Value) {
    match res.name {
        "namespaces" => {
            obj["spec"]["finalizers"] = json!(["kubernetes"]);
            obj["status"]["phase"] = json!("Active");
        }
        "pods" => {
            if obj["status"]["phase"].is_null() {
                obj["status"]["phase"] = json!("Pending");
            }
            if obj["spec"]["restartPolicy"].is_null() {
                obj["spec"]["restartPolicy"] = json!("Always");
            }
        }
        "deployments" | "replicasets" | "statefulsets" if obj["spec"]["replicas"].is_null() => {
            obj["spec"]["replicas"] = json!(1);
        }
        _ => {}
    }
}

fn load_flag_file(p: &Parsed, flag: &str) -> Result<Option<Vec<u8>>, String> {
    match p.get(flag) {
        Some(path) if !path.is_empty() => std::fs::read(path)
            .map(Some)
            .map_err(|e| format!("--{flag}={path}: open {path}: {e}")),
        _ => Ok(None),
    }
}

fn check_pair(p: &Parsed, cert: &str, key: &str) -> Result<(), String> {
    match (p.get(cert), p.get(key)) {
        (Some(c), Some(k)) => {
            tls::load_pair(c, &format!("--{cert}"), k, &format!("--{key}")).map(|_| ())
        }
        (Some(_), None) => Err(format!("--{cert} is set but --{key} is not")),
        (None, Some(_)) => Err(format!("--{key} is set but --{cert} is not")),
        (None, None) => Ok(()),
    }
}

/// The client of the kubelets: --kubelet-client-certificate/--kubelet-client-key; the
/// kubelet's serving certificate checked against --kubelet-certificate-authority, and (as
/// the real server does without that flag) not checked at all otherwise.
fn kubelet_agent(p: &Parsed) -> Result<ureq::Agent, String> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let mut cfg = TlsConfig::builder().provider(TlsProvider::Rustls);
    match p.get("kubelet-certificate-authority") {
        Some(f) => {
            let cas = tls::load_certs(f, "--kubelet-certificate-authority")?;
            let roots: Vec<Certificate<'static>> = cas
                .iter()
                .map(|c| Certificate::from_der(c).to_owned())
                .collect();
            cfg = cfg.root_certs(RootCerts::Specific(Arc::new(roots)));
        }
        None => cfg = cfg.disable_verification(true),
    }
    if let (Some(c), Some(k)) = (
        p.get("kubelet-client-certificate"),
        p.get("kubelet-client-key"),
    ) {
        let chain: Vec<Certificate<'static>> = tls::load_certs(c, "--kubelet-client-certificate")?
            .iter()
            .map(|c| Certificate::from_der(c).to_owned())
            .collect();
        let pem = std::fs::read(k).map_err(|e| format!("--kubelet-client-key={k}: {e}"))?;
        let key = PrivateKey::from_pem(&pem)
            .map_err(|e| format!("--kubelet-client-key={k}: {e}"))?
            .to_owned();
        cfg = cfg.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(cfg.build())
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .timeout_connect(Some(Duration::from_secs(5)))
        .build()
        .new_agent())
}

fn setup(
    p: &Parsed,
    version: String,
) -> Result<(ApiServer, Arc<rustls::ServerConfig>, String), String> {
    let mut problems = Vec::new();
    if p.get("service-account-issuer").is_none_or(str::is_empty) {
        problems.push("service-account-issuer is a required flag".to_string());
    }
    if p.get("service-account-signing-key-file")
        .is_none_or(str::is_empty)
    {
        problems.push(
            "--service-account-signing-key-file and --service-account-issuer are required flags"
                .to_string(),
        );
    }
    if p.get("etcd-servers").is_none_or(str::is_empty) {
        problems.push("--etcd-servers must be specified".to_string());
    }
    if p.get("client-ca-file").is_none_or(str::is_empty) {
        problems.push(
            "--client-ca-file is required (this stand-in authenticates client certificates only)"
                .to_string(),
        );
    }
    if !problems.is_empty() {
        return Err(format!("[{}]", problems.join(", ")));
    }
    let signing_pem = load_flag_file(p, "service-account-signing-key-file")?.unwrap_or_default();
    tls::key_from_pem(&signing_pem, "--service-account-signing-key-file")?;
    let signer =
        crate::satoken::Signer::from_pem(&signing_pem, "--service-account-signing-key-file")?;
    let sa_keys = match load_flag_file(p, "service-account-key-file")? {
        Some(raw) => crate::satoken::Verifier::from_pem(&raw, "--service-account-key-file")?,
        None => {
            crate::satoken::Verifier::from_pem(&signing_pem, "--service-account-signing-key-file")?
        }
    };
    let issuer = p.get("service-account-issuer").unwrap_or("").to_string();
    let audiences: Vec<String> = match p.get("api-audiences") {
        Some(a) if !a.is_empty() => a.split(',').map(|x| x.trim().to_string()).collect(),
        _ => vec![issuer.clone()],
    };
    // Without the flag the real server uses 10.0.0.0/24.
    let mut service_range = None;
    for cidr in p
        .get("service-cluster-ip-range")
        .filter(|r| !r.is_empty())
        .unwrap_or("10.0.0.0/24")
        .split(',')
    {
        let c =
            Cidr::parse(cidr).map_err(|e| format!("--service-cluster-ip-range: {cidr:?}: {e}"))?;
        let width = if c.v6 { 128 } else { 32 };
        if width - c.bits > 20 {
            return Err(format!(
                "specified --service-cluster-ip-range is too large; for {width}-bit addresses, the mask must be >= {}",
                width - 20
            ));
        }
        service_range.get_or_insert(c);
    }
    if let Some(a) = p.get("advertise-address") {
        a.parse::<IpAddr>()
            .map_err(|e| format!("--advertise-address={a}: {e}"))?;
    }
    let port = p.get("secure-port").unwrap_or("6443");
    let secure_port = port
        .parse::<u16>()
        .map_err(|e| format!("--secure-port={port}: {e}"))?;
    let client_ca = tls::load_certs(p.required("client-ca-file")?, "--client-ca-file")?;
    let client_roots = tls::roots(&client_ca, "--client-ca-file")?;
    if let Some(f) = p.get("requestheader-client-ca-file") {
        tls::load_certs(f, "--requestheader-client-ca-file")?;
    }
    check_pair(p, "kubelet-client-certificate", "kubelet-client-key")?;
    let kubelet = kubelet_agent(p)?;
    let kubelet_address_types: Vec<String> = p
        .get("kubelet-preferred-address-types")
        .unwrap_or("Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP")
        .split(',')
        .map(|t| t.trim().to_string())
        .collect();
    check_pair(p, "proxy-client-cert-file", "proxy-client-key-file")?;
    let serving = match (p.get("tls-cert-file"), p.get("tls-private-key-file")) {
        (Some(c), Some(k)) => tls::load_pair(c, "--tls-cert-file", k, "--tls-private-key-file")?,
        (None, None) => tls::self_signed(&["localhost".into(), "127.0.0.1".into()])?,
        _ => {
            return Err("--tls-cert-file and --tls-private-key-file must be given together".into());
        }
    };
    // etcd: every URL over TLS with the etcd client cert, signed by the etcd CA.
    let servers: Vec<String> = p
        .required("etcd-servers")?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    for s in &servers {
        if !s.starts_with("https://") {
            return Err(format!(
                "--etcd-servers: {s:?}: this stand-in talks to etcd over TLS only (https://)"
            ));
        }
    }
    let ca = tls::load_certs(
        p.required("etcd-cafile")
            .map_err(|_| "--etcd-cafile is required for https etcd servers".to_string())?,
        "--etcd-cafile",
    )?;
    let certfile = p
        .required("etcd-certfile")
        .map_err(|_| "--etcd-certfile is required for https etcd servers".to_string())?;
    let keyfile = p
        .required("etcd-keyfile")
        .map_err(|_| "--etcd-keyfile is required for https etcd servers".to_string())?;
    let pair = tls::load_pair(certfile, "--etcd-certfile", keyfile, "--etcd-keyfile")?;
    tls::check_signed_by(
        &pair.cert,
        &format!("--etcd-certfile={certfile}"),
        &ca,
        "--etcd-cafile",
    )?;
    let key_pem = std::fs::read(keyfile).map_err(|e| format!("--etcd-keyfile={keyfile}: {e}"))?;
    let key = ureq::tls::PrivateKey::from_pem(&key_pem)
        .map_err(|e| format!("--etcd-keyfile={keyfile}: {e}"))?
        .to_owned();
    let etcd = Etcd::new(servers, &ca, &pair.cert, key);
    let bind = p.get("bind-address").unwrap_or("0.0.0.0");
    let addr = crate::server::join_host_port(bind, port);
    let adv =
        p.get("advertise-address")
            .unwrap_or(if bind == "0.0.0.0" { "127.0.0.1" } else { bind });
    let cfg = tls::server_config(serving, Some(client_roots.clone()))?;
    Ok((
        ApiServer {
            version,
            etcd,
            client_roots,
            advertise: crate::server::join_host_port(adv, port),
            bootstrapped: Arc::default(),
            signer,
            sa_keys,
            issuer,
            audiences,
            service_range,
            secure_port,
            advertise_ip: adv.to_string(),
            kubelet,
            kubelet_address_types,
        },
        cfg,
        addr,
    ))
}

/// Creates the namespaces every cluster has, once etcd answers.
fn bootstrap(api: &ApiServer) {
    loop {
        let mut ok = true;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let k = format!("/registry/namespaces/{ns}");
            let obj = json!({"kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": ns, "uid": common::uid(), "creationTimestamp": timefmt::now(), "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            if let Err(e) = api
                .etcd
                .put_if(&k, &serde_json::to_vec(&obj).unwrap_or_default(), 0)
            {
                log(NAME, &format!("waiting for etcd: {e}"));
                ok = false;
                break;
            }
        }
        if ok {
            bootstrap_policy(api);
            if let Err(e) = api.reconcile_kubernetes_service() {
                log(
                    NAME,
                    &format!("cannot reconcile the kubernetes Service: {e}"),
                );
            }
            api.bootstrapped
                .store(true, std::sync::atomic::Ordering::Release);
            // The endpoint reconciler: this server's entry stays fresh while it lives.
            loop {
                std::thread::sleep(Duration::from_secs(5));
                if let Err(e) = api.reconcile_kubernetes_service() {
                    log(
                        NAME,
                        &format!("cannot reconcile the kubernetes Service: {e}"),
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The bootstrap RBAC policy every cluster has: the `cluster-admin` ClusterRole, bound to
/// `system:masters`. Created once; later edits are kept (as the real server's reconciler
/// does for roles marked not to auto-update).
fn bootstrap_policy(api: &ApiServer) {
    let meta = |name: &str| {
        json!({"name": name, "uid": common::uid(), "creationTimestamp": timefmt::now(),
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
    };
    let role = |name: &str, rules: Value| {
        (
            format!("/registry/clusterroles/{name}"),
            json!({"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1",
                "metadata": meta(name), "rules": rules}),
        )
    };
    let binding = |name: &str, subject: Value| {
        (
            format!("/registry/clusterrolebindings/{name}"),
            json!({"kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
                "metadata": meta(name),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [subject]}),
        )
    };
    let more = [
        // As the real bootstrap policy defines them (plugin/pkg/auth/authorizer/rbac/bootstrappolicy).
        role(
            "system:node-proxier",
            json!([
                {"apiGroups": [""], "resources": ["endpoints", "services"], "verbs": ["list", "watch"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
            ]),
        ),
        binding(
            "system:node-proxier",
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-proxy"}),
        ),
        role(
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}]),
        ),
        binding(
            "system:basic-user",
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}),
        ),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        binding(
            "system:public-info-viewer",
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}),
        ),
    ];
    for (k, obj) in more {
        if let Err(e) = api
            .etcd
            .put_if(&k, &serde_json::to_vec(&obj).unwrap_or_default(), 0)
        {
            log(
                NAME,
                &format!("cannot create the bootstrap policy {k}: {e}"),
            );
        }
    }
    let objects = [
        (
            "/registry/clusterroles/cluster-admin",
            json!({"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1",
                "metadata": meta("cluster-admin"),
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                          {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
        ),
        (
            "/registry/clusterrolebindings/cluster-admin",
            json!({"kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
                "metadata": meta("cluster-admin"),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]}),
        ),
    ];
    for (k, obj) in objects {
        if let Err(e) = api
            .etcd
            .put_if(k, &serde_json::to_vec(&obj).unwrap_or_default(), 0)
        {
            log(
                NAME,
                &format!("cannot create the bootstrap policy {k}: {e}"),
            );
        }
    }
}

pub fn main(args: &[String]) -> ! {
    let (p, version) = common::start(NAME, args, FLAGS);
    let (api, cfg, addr) = match setup(&p, version.clone()) {
        Ok(x) => x,
        Err(e) => common::fatal(NAME, &e),
    };
    let api = Arc::new(api);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => common::fatal(NAME, &format!("cannot start the runtime: {e}")),
    };
    rt.block_on(async move {
        let listener = match crate::server::bind(&addr, "--bind-address/--secure-port").await {
            Ok(l) => l,
            Err(e) => common::fatal(NAME, &e),
        };
        log(
            NAME,
            &format!("version {version}: serving securely on {addr}"),
        );
        let b = api.clone();
        tokio::task::spawn_blocking(move || bootstrap(&b));
        let h = api.clone();
        crate::server::serve(listener, Some(cfg), Arc::new(move |r| h.handle(r))).await;
    });
    std::process::exit(0)
}

/// A Service's ClusterIP outlives updates: one sent without it keeps the allocated one
/// (the real server's patchAllocatedValues), a different one is refused.
fn keep_cluster_ip(old: &Value, new: &mut Value) -> Result<(), Response> {
    let Some(ip) = old["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    if old["spec"]["type"] == "ExternalName" || new["spec"]["type"] == "ExternalName" {
        return Ok(());
    }
    match new["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty()) {
        None => {
            new["spec"]["clusterIP"] = json!(ip);
            new["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
            for f in ["ipFamilies", "ipFamilyPolicy"] {
                if new["spec"][f].is_null() {
                    new["spec"][f] = old["spec"][f].clone();
                }
            }
            Ok(())
        }
        Some(n) if n == ip => Ok(()),
        Some(n) => Err(invalid(
            "Service",
            old["metadata"]["name"].as_str().unwrap_or(""),
            &format!(
                "spec.clusterIPs[0]: Invalid value: []string{{\"{n}\"}}: may not change once set"
            ),
        )),
    }
}

/// Seconds since the epoch.
fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    )
    .unwrap_or(i64::MAX)
}

fn invalid(kind: &str, name: &str, msg: &str) -> Response {
    status(
        422,
        "Invalid",
        &format!("{kind} \"{name}\" is invalid: {msg}"),
    )
}

/// How long the `kubernetes` Service's endpoint of a server that stopped renewing counts
/// (the lease endpoint reconciler's master lease TTL).
const MASTER_LEASE_TTL: Duration = Duration::from_secs(15);

impl ApiServer {
    fn get_json(&self, k: &str) -> Result<Option<(Value, i64)>, EtcdError> {
        Ok(self.etcd.get(k)?.and_then(|kv| {
            serde_json::from_slice(&kv.value)
                .ok()
                .map(|v| (v, kv.mod_revision))
        }))
    }

    /// A node may ask for a token only for a pod bound to it (the Node authorizer);
    /// anyone else is left to RBAC.
    fn token_for_own_pod(&self, user: &User, ns: &str, body: Option<&Value>) -> bool {
        let Some(node) = user
            .name
            .strip_prefix("system:node:")
            .filter(|_| user.in_group("system:nodes"))
        else {
            return true;
        };
        let r = body.map_or(&Value::Null, |b| &b["spec"]["boundObjectRef"]);
        if r["kind"] != "Pod" {
            return false;
        }
        let name = r["name"].as_str().unwrap_or("");
        matches!(self.get_json(&format!("/registry/pods/{ns}/{name}")),
            Ok(Some((p, _))) if p["spec"]["nodeName"].as_str() == Some(node))
    }

    /// POST .../serviceaccounts/NAME/token: an authentication.k8s.io/v1 TokenRequest in,
    /// the same with `status.token` (a signed JWT) out.
    fn token_request(
        &self,
        ns: &str,
        name: &str,
        existing: Option<(Value, i64)>,
        body: Option<Value>,
    ) -> Response {
        let body = body.unwrap_or_else(|| json!({}));
        let Some((sa, _)) = existing else {
            return status(
                404,
                "NotFound",
                &format!("serviceaccounts \"{name}\" not found"),
            );
        };
        let name = sa["metadata"]["name"].as_str().unwrap_or("").to_string();
        if let Some(k) = body["kind"].as_str()
            && k != "TokenRequest"
        {
            return status(
                400,
                "BadRequest",
                &format!("not a TokenRequest: kind {k:?}"),
            );
        }
        let spec = &body["spec"];
        let seconds = spec["expirationSeconds"].as_i64().unwrap_or(3600);
        if seconds < 600 {
            return invalid(
                "TokenRequest",
                &name,
                &format!(
                    "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                ),
            );
        }
        if seconds > 1 << 32 {
            return invalid(
                "TokenRequest",
                &name,
                &format!(
                    "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"
                ),
            );
        }
        let audiences: Vec<Value> = match spec["audiences"].as_array() {
            Some(a) if !a.is_empty() => a.clone(),
            _ => self.audiences.iter().map(|a| json!(a)).collect(),
        };
        let now = unix_now();
        let mut k8s = json!({"namespace": ns,
            "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]}});
        let bound = &spec["boundObjectRef"];
        if !bound.is_null() {
            let kind = bound["kind"].as_str().unwrap_or("");
            let bname = bound["name"].as_str().unwrap_or("");
            let (res, field) = match kind {
                "Pod" => ("pods", "pod"),
                "Secret" => ("secrets", "secret"),
                _ => {
                    return invalid(
                        "TokenRequest",
                        &name,
                        &format!(
                            "spec.boundObjectRef.kind: Unsupported value: {kind:?}: supported values: \"Pod\", \"Secret\""
                        ),
                    );
                }
            };
            let obj = match self.get_json(&format!("/registry/{res}/{ns}/{bname}")) {
                Ok(Some((o, _))) => o,
                Ok(None) => {
                    return status(404, "NotFound", &format!("{res} \"{bname}\" not found"));
                }
                Err(e) => return etcd_error(&e),
            };
            if let Some(uid) = bound["uid"].as_str()
                && !uid.is_empty()
                && obj["metadata"]["uid"] != uid
            {
                return status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {res} \"{bname}\": the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                );
            }
            k8s[field] = json!({"name": bname, "uid": obj["metadata"]["uid"]});
            if kind == "Pod"
                && let Some(node) = obj["spec"]["nodeName"].as_str()
                && let Ok(Some((n, _))) = self.get_json(&format!("/registry/nodes/{node}"))
            {
                k8s["node"] = json!({"name": node, "uid": n["metadata"]["uid"]});
            }
        }
        let claims = json!({"aud": audiences, "exp": now + seconds, "iat": now, "nbf": now,
            "iss": self.issuer, "jti": common::uid(),
            "sub": format!("system:serviceaccount:{ns}:{name}"), "kubernetes.io": k8s});
        let token = match self.signer.sign(&claims) {
            Ok(t) => t,
            Err(e) => {
                return status(
                    500,
                    "InternalError",
                    &format!("failed to sign the token: {e}"),
                );
            }
        };
        let exp =
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(now + seconds).unwrap_or(0));
        let mut spec_out =
            json!({"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": bound});
        if bound.is_null()
            && let Some(m) = spec_out.as_object_mut()
        {
            m.remove("boundObjectRef");
        }
        Response::json(
            201,
            &json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": ns, "creationTimestamp": timefmt::now()},
                "spec": spec_out,
                "status": {"token": token, "expirationTimestamp": timefmt::rfc3339(exp)}}),
        )
    }

    /// Allocates (or checks the requested) ClusterIP of a Service being created, and fills
    /// the fields the real server defaults.
    fn allocate_cluster_ip(&self, obj: &mut Value) -> Result<(), Response> {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let spec = &mut obj["spec"];
        if spec["type"].is_null() {
            spec["type"] = json!("ClusterIP");
        }
        if spec["sessionAffinity"].is_null() {
            spec["sessionAffinity"] = json!("None");
        }
        if let Some(ports) = spec["ports"].as_array_mut() {
            for p in ports {
                if p["protocol"].is_null() {
                    p["protocol"] = json!("TCP");
                }
                if p["targetPort"].is_null() {
                    p["targetPort"] = p["port"].clone();
                }
            }
        }
        if spec["type"] == "ExternalName" {
            return Ok(());
        }
        if spec["internalTrafficPolicy"].is_null() {
            spec["internalTrafficPolicy"] = json!("Cluster");
        }
        let requested = spec["clusterIP"]
            .as_str()
            .or_else(|| spec["clusterIPs"][0].as_str())
            .filter(|s| !s.is_empty())
            .map(String::from);
        if requested.as_deref() == Some("None") {
            spec["clusterIP"] = json!("None");
            spec["clusterIPs"] = json!(["None"]);
            return Ok(());
        }
        let Some(range) = self.service_range else {
            return Ok(());
        };
        let (kvs, _) = self
            .etcd
            .list("/registry/services/")
            .map_err(|e| etcd_error(&e))?;
        let taken: Vec<String> = kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .filter_map(|s| s["spec"]["clusterIP"].as_str().map(String::from))
            .collect();
        let ip = if let Some(req) = requested {
            let bad = |why: &str| {
                invalid(
                    "Service",
                    &name,
                    &format!("spec.clusterIPs: Invalid value: []string{{\"{req}\"}}: {why}"),
                )
            };
            let Ok(addr) = req.parse::<IpAddr>() else {
                return Err(bad("must be a valid IP address"));
            };
            if !range.contains(addr) {
                return Err(bad(&format!(
                    "failed to allocate IP {req}: the provided IP ({req}) is not in the valid range. The range of valid IPs is {range}"
                )));
            }
            if taken.contains(&addr.to_string()) {
                return Err(bad(&format!(
                    "failed to allocate IP {req}: provided IP is already allocated"
                )));
            }
            addr.to_string()
        } else {
            // Dynamic allocation prefers the upper band, leaving the low addresses
            // (the DNS Service's .10) to the Services that ask for them, as the real
            // allocator does.
            let size = range.size().min(1 << 20);
            let reserved_top = u128::from(!range.v6);
            let band = (size / 16).clamp(16, 256).min(size.saturating_sub(2));
            let free = (band..size - reserved_top)
                .chain(1..band)
                .map(|i| range.nth(i).to_string())
                .find(|ip| !taken.contains(ip));
            let Some(ip) = free else {
                return Err(status(
                    500,
                    "InternalError",
                    "Internal error occurred: failed to allocate a serviceIP: range is full",
                ));
            };
            ip
        };
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        spec["ipFamilies"] = json!([if range.v6 { "IPv6" } else { "IPv4" }]);
        spec["ipFamilyPolicy"] = json!("SingleStack");
        Ok(())
    }

    /// One pass of the endpoint reconciler: renews this server's master lease and keeps
    /// the `kubernetes` Service, its Endpoints and EndpointSlice listing every server whose
    /// lease is fresh.
    fn reconcile_kubernetes_service(&self) -> Result<(), String> {
        let e = |e: EtcdError| e.to_string();
        let now = std::time::SystemTime::now();
        let lease_key = format!("/registry/masterleases/{}", self.advertise_ip);
        let cur = self
            .etcd
            .get(&lease_key)
            .map_err(e)?
            .map_or(0, |kv| kv.mod_revision);
        let lease = json!({"ip": self.advertise_ip, "renewTime": timefmt::micro(now)});
        self.etcd
            .put_if(
                &lease_key,
                &serde_json::to_vec(&lease).unwrap_or_default(),
                cur,
            )
            .map_err(e)?;
        let (kvs, _) = self.etcd.list("/registry/masterleases/").map_err(e)?;
        let mut ips = Vec::new();
        for kv in kvs {
            let Ok(v) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let fresh = v["renewTime"]
                .as_str()
                .and_then(timefmt::parse)
                .and_then(|t| now.duration_since(t).ok().or(Some(Duration::ZERO)))
                .is_some_and(|age| age < MASTER_LEASE_TTL);
            match v["ip"].as_str() {
                Some(ip) if fresh => ips.push(ip.to_string()),
                _ => {
                    let _ = self.etcd.delete_if(&kv.key, kv.mod_revision);
                }
            }
        }
        ips.sort();
        ips.dedup();
        let meta = |name: &str, labels: Value| {
            json!({"name": name, "namespace": "default", "uid": common::uid(),
                "creationTimestamp": timefmt::now(), "labels": labels})
        };
        let port = self.secure_port;
        if let Some(range) = self.service_range {
            let ip = range.nth(1).to_string();
            let want_ports =
                json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]);
            let svc = json!({"metadata": meta("kubernetes", json!({"component": "apiserver", "provider": "kubernetes"})),
                "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": want_ports,
                         "sessionAffinity": "None", "ipFamilies": [if range.v6 { "IPv6" } else { "IPv4" }],
                         "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
                "status": {"loadBalancer": {}}});
            self.ensure("/registry/services/default/kubernetes", svc, |old| {
                (old["spec"]["ports"] != want_ports).then(|| {
                    let mut new = old.clone();
                    new["spec"]["ports"] = want_ports.clone();
                    new
                })
            })?;
        }
        let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        let subsets = if ips.is_empty() {
            json!([])
        } else {
            json!([{"addresses": addresses, "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}])
        };
        let ep = json!({"metadata": meta("kubernetes", json!({"endpointslice.kubernetes.io/skip-mirror": "true"})), "subsets": subsets});
        self.ensure("/registry/endpoints/default/kubernetes", ep, |old| {
            (old["subsets"] != subsets).then(|| {
                let mut new = old.clone();
                new["subsets"] = subsets.clone();
                new
            })
        })?;
        let v6 = ips.iter().any(|i| i.contains(':'));
        let endpoints: Vec<Value> = ips
            .iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
            .collect();
        let endpoints = json!(endpoints);
        let slice = json!({"metadata": meta("kubernetes", json!({"kubernetes.io/service-name": "kubernetes"})),
            "addressType": if v6 { "IPv6" } else { "IPv4" }, "endpoints": endpoints,
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
        self.ensure(
            "/registry/endpointslices/default/kubernetes",
            slice,
            |old| {
                (old["endpoints"] != endpoints).then(|| {
                    let mut new = old.clone();
                    new["endpoints"] = endpoints.clone();
                    new
                })
            },
        )
    }

    /// Creates `k` as `fresh` when missing, else stores what `change` makes of it.
    fn ensure(
        &self,
        k: &str,
        fresh: Value,
        change: impl Fn(&Value) -> Option<Value>,
    ) -> Result<(), String> {
        match self.get_json(k).map_err(|e| e.to_string())? {
            None => self
                .etcd
                .put_if(k, &serde_json::to_vec(&fresh).unwrap_or_default(), 0)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Some((old, rev)) => match change(&old) {
                Some(new) => self
                    .etcd
                    .put_if(k, &serde_json::to_vec(&new).unwrap_or_default(), rev)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            },
        }
    }

    /// GET .../pods/NAME/log: proxied to the kubelet of the pod's node, as the real server
    /// does (https://<node address>:<kubelet port>/containerLogs/NS/POD/CONTAINER).
    fn pod_log(&self, req: &Request, t: &Target, ns: &str) -> Response {
        let name = t.name.clone().unwrap_or_default();
        let pod = match self.get_json(&format!("/registry/pods/{ns}/{name}")) {
            Ok(Some((p, _))) => p,
            Ok(None) => return not_found(t.res, &name),
            Err(e) => return etcd_error(&e),
        };
        let containers: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        let inits: Vec<&str> = pod["spec"]["initContainers"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        let container = match req.q("container").filter(|c| !c.is_empty()) {
            Some(c) => c.to_string(),
            None if containers.len() == 1 => containers[0].to_string(),
            None => {
                return status(
                    400,
                    "BadRequest",
                    &format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        containers.join(" ")
                    ),
                );
            }
        };
        if !containers.contains(&container.as_str()) && !inits.contains(&container.as_str()) {
            return status(
                400,
                "BadRequest",
                &format!("container {container} is not valid for pod {name}"),
            );
        }
        let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            return status(
                400,
                "BadRequest",
                &format!("pod {name} does not have a host assigned"),
            );
        };
        let node_obj = match self.get_json(&format!("/registry/nodes/{node}")) {
            Ok(Some((n, _))) => n,
            Ok(None) => return status(404, "NotFound", &format!("nodes \"{node}\" not found")),
            Err(e) => return etcd_error(&e),
        };
        let Some(host) = self.kubelet_address(&node_obj) else {
            return status(
                500,
                "InternalError",
                &format!(
                    "no preferred addresses found; known addresses: {}",
                    node_obj["status"]["addresses"]
                ),
            );
        };
        let kport = node_obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .filter(|p| *p > 0)
            .unwrap_or(10250);
        let mut query = Vec::new();
        for (from, to) in [
            ("tailLines", "tailLines"),
            ("previous", "previous"),
            ("timestamps", "timestamps"),
            ("sinceSeconds", "sinceSeconds"),
            ("sinceTime", "sinceTime"),
            ("limitBytes", "limitBytes"),
        ] {
            if let Some(v) = req.q(from) {
                query.push(format!(
                    "{to}={}",
                    v.replace('%', "%25")
                        .replace('&', "%26")
                        .replace('+', "%2B")
                        .replace(':', "%3A")
                ));
            }
        }
        let url = format!(
            "https://{}/containerLogs/{ns}/{name}/{container}{}",
            crate::server::join_host_port(&host, &kport.to_string()),
            if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            }
        );
        match self.kubelet.get(&url).call() {
            Ok(mut r) => {
                let code = r.status().as_u16();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                if code == 200 {
                    Response::text(200, &text)
                } else {
                    status(code, "InternalError", text.trim())
                }
            }
            Err(e) => status(500, "InternalError", &format!("Get \"{url}\": {e}")),
        }
    }

    /// The node address the kubelet is reached at, by --kubelet-preferred-address-types.
    fn kubelet_address(&self, node: &Value) -> Option<String> {
        let addrs = node["status"]["addresses"].as_array()?;
        self.kubelet_address_types.iter().find_map(|ty| {
            addrs
                .iter()
                .find(|a| a["type"] == ty.as_str())
                .and_then(|a| a["address"].as_str())
                .map(String::from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdb_math() {
        assert_eq!(disruptions_allowed(&json!({"minAvailable": 2}), 2, 2), 0);
        assert_eq!(disruptions_allowed(&json!({"minAvailable": 1}), 2, 2), 1);
        assert_eq!(disruptions_allowed(&json!({"maxUnavailable": 1}), 3, 3), 1);
        assert_eq!(
            disruptions_allowed(&json!({"maxUnavailable": "0%"}), 3, 3),
            0
        );
        assert_eq!(
            disruptions_allowed(&json!({"minAvailable": "50%"}), 2, 2),
            1
        );
    }

    #[test]
    fn an_eviction_is_recorded_so_that_a_racing_one_is_refused() {
        let pod = |n: &str| json!({"metadata": {"name": n, "labels": {"app": "web"}}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let pods = [pod("a"), pod("b"), pod("c"), pod("d")];
        let refs: Vec<&Value> = pods.iter().collect();
        let pdb = json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 3}});
        let now = std::time::SystemTime::now();
        let first = admit_eviction(&pdb, &refs, "a", now).expect("one disruption allowed");
        assert_eq!(first["status"]["disruptionsAllowed"], 0);
        assert!(first["status"]["disruptedPods"]["a"].is_string());
        // Pod a is not gone yet: a second eviction against the recorded PDB is refused.
        assert_eq!(admit_eviction(&first, &refs, "b", now), Err((3, 3)));
        // Once a is gone and its replacement runs, the next one may go.
        let refs: Vec<&Value> = pods[1..].iter().collect();
        let mut more = refs.clone();
        let e = pod("e");
        more.push(&e);
        let second = admit_eviction(&first, &more, "b", now).expect("a replaced");
        assert!(second["status"]["disruptedPods"]["a"].is_null());
        // An eviction whose pod never went away stops counting after the timeout.
        let later = now + DISRUPTION_TIMEOUT + Duration::from_secs(1);
        let pods = [pod("a"), pod("b"), pod("c"), pod("d")];
        let refs: Vec<&Value> = pods.iter().collect();
        assert!(admit_eviction(&first, &refs, "b", later).is_ok());
        // Too few healthy: refused with what it needs.
        assert_eq!(admit_eviction(&pdb, &refs[..3], "a", now), Err((3, 3)));
        assert_eq!(admit_eviction(&pdb, &refs[..2], "a", now), Err((2, 3)));
    }

    #[test]
    fn targets() {
        let t = parse_target("", "v1", &["namespaces", "ns1", "pods", "p", "eviction"]).unwrap();
        assert_eq!(
            (
                t.res.name,
                t.ns.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods", Some("ns1"), Some("p"), Some("eviction"))
        );
        let t = parse_target("", "v1", &["namespaces", "ns1"]).unwrap();
        assert_eq!((t.res.name, t.name.as_deref()), ("namespaces", Some("ns1")));
        let t = parse_target("", "v1", &["nodes", "n1", "status"]).unwrap();
        assert_eq!((t.res.name, t.sub.as_deref()), ("nodes", Some("status")));
        assert!(parse_target("", "v1", &["bogus"]).is_none());
    }
}

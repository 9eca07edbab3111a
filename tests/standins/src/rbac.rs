//! RBAC as kube-apiserver's authorizer evaluates it, over the Roles, ClusterRoles and their
//! bindings stored in etcd: a request is allowed when some binding whose subjects include
//! the user (by name, group or service account) refers to a role with a rule that covers the
//! verb, API group, resource (or `resource/subresource`) and, when the rule names them, the
//! object's name. `*` matches anything. ClusterRoleBindings apply everywhere; RoleBindings
//! only in their namespace (to a Role there, or to a ClusterRole).

use serde_json::Value;

use crate::tls::User;

/// What a request asks for, in RBAC's terms.
pub struct Attrs<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    /// `pods`, or `pods/eviction` for a subresource.
    pub resource: String,
    /// Empty for a list or a create.
    pub name: &'a str,
    /// The request's namespace, if namespaced.
    pub namespace: Option<&'a str>,
}

fn has(list: &Value, want: &str) -> bool {
    list.as_array()
        .is_some_and(|a| a.iter().any(|x| x == "*" || x == want))
}

/// Whether one PolicyRule covers the request.
pub fn rule_allows(rule: &Value, a: &Attrs) -> bool {
    if !has(&rule["verbs"], a.verb) || !has(&rule["apiGroups"], a.group) {
        return false;
    }
    let resource_ok = has(&rule["resources"], &a.resource)
        || a.resource
            .split_once('/')
            .is_some_and(|(_, sub)| has(&rule["resources"], &format!("*/{sub}")));
    if !resource_ok {
        return false;
    }
    match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => !a.name.is_empty() && names.iter().any(|n| n == a.name),
        _ => true,
    }
}

/// Whether a binding's subject is this user. `binding_ns` is the binding's namespace (a
/// ServiceAccount subject without one means that namespace).
pub fn subject_matches(s: &Value, binding_ns: &str, user: &User) -> bool {
    let name = s["name"].as_str().unwrap_or("");
    match s["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.in_group(name),
        Some("ServiceAccount") => {
            let ns = s["namespace"].as_str().unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn named<'v>(objects: &'v [Value], name: &str) -> Option<&'v Value> {
    objects
        .iter()
        .find(|o| o["metadata"]["name"].as_str() == Some(name))
}

/// The stored RBAC objects one decision needs.
#[derive(Default)]
pub struct Policy {
    pub cluster_roles: Vec<Value>,
    pub cluster_role_bindings: Vec<Value>,
    /// Roles and RoleBindings of the request's namespace.
    pub roles: Vec<Value>,
    pub role_bindings: Vec<Value>,
}

impl Policy {
    /// The rules of a binding's role: a ClusterRole, or (for a RoleBinding in `namespace`)
    /// a Role of that namespace.
    fn rules_of<'v>(&'v self, role_ref: &Value, namespace: Option<&str>) -> &'v [Value] {
        let name = role_ref["name"].as_str().unwrap_or("");
        let role = match (role_ref["kind"].as_str(), namespace) {
            (Some("ClusterRole"), _) => named(&self.cluster_roles, name),
            (Some("Role"), Some(ns)) => {
                named(&self.roles, name).filter(|r| r["metadata"]["namespace"].as_str() == Some(ns))
            }
            _ => None,
        };
        role.and_then(|r| r["rules"].as_array())
            .map_or(&[], Vec::as_slice)
    }

    pub fn allows(&self, user: &User, a: &Attrs) -> bool {
        let grants = |binding: &Value, namespace: Option<&str>| {
            let ns = binding["metadata"]["namespace"].as_str().unwrap_or("");
            binding["subjects"]
                .as_array()
                .is_some_and(|subs| subs.iter().any(|s| subject_matches(s, ns, user)))
                && self
                    .rules_of(&binding["roleRef"], namespace)
                    .iter()
                    .any(|rule| rule_allows(rule, a))
        };
        self.cluster_role_bindings.iter().any(|b| grants(b, None))
            || a.namespace.is_some_and(|ns| {
                self.role_bindings
                    .iter()
                    .any(|b| b["metadata"]["namespace"].as_str() == Some(ns) && grants(b, Some(ns)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| (*g).to_string()).collect(),
        }
    }

    fn attrs<'a>(verb: &'a str, resource: &str, name: &'a str, ns: Option<&'a str>) -> Attrs<'a> {
        Attrs {
            verb,
            group: "",
            resource: resource.into(),
            name,
            namespace: ns,
        }
    }

    #[test]
    fn bindings_roles_and_rules() {
        let policy = Policy {
            cluster_roles: vec![
                json!({"metadata": {"name": "cluster-admin"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
                json!({"metadata": {"name": "reader"}, "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]}),
            ],
            cluster_role_bindings: vec![
                json!({"metadata": {"name": "admins"}, "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
                       "subjects": [{"kind": "Group", "name": "kubeadm:cluster-admins"}]}),
            ],
            roles: vec![
                json!({"metadata": {"name": "cm", "namespace": "kube-system"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kube-proxy"], "verbs": ["get"]}]}),
            ],
            role_bindings: vec![
                json!({"metadata": {"name": "cm", "namespace": "kube-system"}, "roleRef": {"kind": "Role", "name": "cm"},
                       "subjects": [{"kind": "ServiceAccount", "name": "kube-proxy"}, {"kind": "User", "name": "jane"}]}),
                json!({"metadata": {"name": "read", "namespace": "kube-system"}, "roleRef": {"kind": "ClusterRole", "name": "reader"},
                       "subjects": [{"kind": "User", "name": "jane"}]}),
            ],
        };
        let admin = user("kubernetes-admin", &["kubeadm:cluster-admins"]);
        assert!(policy.allows(&admin, &attrs("delete", "nodes", "n1", None)));
        assert!(!policy.allows(
            &user("kubernetes-admin", &[]),
            &attrs("get", "nodes", "n1", None)
        ));
        let ks = Some("kube-system");
        let sa = user("system:serviceaccount:kube-system:kube-proxy", &[]);
        assert!(policy.allows(&sa, &attrs("get", "configmaps", "kube-proxy", ks)));
        assert!(!policy.allows(&sa, &attrs("get", "configmaps", "coredns", ks)));
        assert!(!policy.allows(&sa, &attrs("list", "configmaps", "", ks)));
        assert!(!policy.allows(
            &sa,
            &attrs("get", "configmaps", "kube-proxy", Some("default"))
        ));
        let jane = user("jane", &[]);
        assert!(policy.allows(&jane, &attrs("list", "pods", "", ks)));
        assert!(policy.allows(&jane, &attrs("get", "pods/log", "p", ks)));
        assert!(!policy.allows(&jane, &attrs("create", "pods/eviction", "p", ks)));
        assert!(!policy.allows(&jane, &attrs("list", "pods", "", None)));
    }
}

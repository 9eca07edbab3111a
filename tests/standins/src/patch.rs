//! PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch (the parts kubectl
//! sends: merge keys, `$patch`, `$setElementOrder`, `$retainKeys`, `$deleteFromPrimitiveList`)
//! and JSON patch (RFC 6902).

use serde_json::{Map, Value};

pub fn merge(target: &Value, patch: &Value) -> Value {
    let Some(p) = patch.as_object() else {
        return patch.clone();
    };
    let mut out = target.as_object().cloned().unwrap_or_default();
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let cur = out.get(k).cloned().unwrap_or(Value::Null);
            out.insert(k.clone(), merge(&cur, v));
        }
    }
    Value::Object(out)
}

fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |k: &str| items.iter().any(|i| i.get(k).is_some());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" | "addresses" => Some("type"),
        "taints" => Some("key"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

/// Strategic merge of `patch` into `target`; None when the patch deletes the whole value.
pub fn strategic(target: &Value, patch: &Value) -> Option<Value> {
    let Some(p) = patch.as_object() else {
        return Some(patch.clone());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => return None,
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            return Some(Value::Object(m));
        }
        _ => {}
    }
    let mut out: Map<String, Value> = target.as_object().cloned().unwrap_or_default();
    let retain: Option<Vec<String>> = p.get("$retainKeys").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    });
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Some(del)) = (out.get_mut(field), v.as_array()) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let cur = out.get(k).cloned().unwrap_or(Value::Null);
        let merged = match (v, &cur) {
            (Value::Array(pl), Value::Array(cl)) => merge_list(k, cl, pl),
            (Value::Array(pl), _) => Some(Value::Array(
                pl.iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .collect(),
            )),
            (Value::Object(_), _) => strategic(&cur, v),
            _ => Some(v.clone()),
        };
        match merged {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => {
                out.remove(k);
            }
        }
    }
    if let Some(keep) = retain {
        out.retain(|k, _| keep.contains(k));
    }
    Some(Value::Object(out))
}

fn merge_list(field: &str, cur: &[Value], patch: &[Value]) -> Option<Value> {
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Some(Value::Array(
            patch
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        ));
    }
    let Some(key) = merge_key(field, patch) else {
        return Some(Value::Array(patch.to_vec()));
    };
    let mut out: Vec<Value> = cur.to_vec();
    for item in patch {
        let id = item.get(key).cloned();
        let pos = id
            .as_ref()
            .and_then(|id| out.iter().position(|o| o.get(key) == Some(id)));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                out.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => {
                if let Some(m) = strategic(&out[i], item) {
                    out[i] = m;
                }
            }
            None => out.push(item.clone()),
        }
    }
    Some(Value::Array(out))
}

fn unescape(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

fn pointer_parts(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(p)
                .ok_or_else(|| format!("path component {p:?} not found"))?,
            Value::Array(a) => {
                let i: usize = p.parse().map_err(|_| format!("bad array index {p:?}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("array index {i} out of range"))?
            }
            _ => return Err(format!("cannot descend into {p:?}")),
        };
    }
    Ok(cur)
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, String> {
    let parts = pointer_parts(path)?;
    let (last, parents) = parts
        .split_last()
        .ok_or("cannot remove the whole document")?;
    match parent_mut(doc, parents)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| format!("{path}: not found")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(format!("{path}: index out of range"))
            }
        }
        _ => Err(format!("{path}: parent is not a container")),
    }
}

fn add_at(doc: &mut Value, path: &str, v: Value, replace: bool) -> Result<(), String> {
    let parts = pointer_parts(path)?;
    let Some((last, parents)) = parts.split_last() else {
        *doc = v;
        return Ok(());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => {
            if replace && !m.contains_key(last) {
                return Err(format!("{path}: not found"));
            }
            m.insert(last.clone(), v);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            if replace {
                *a.get_mut(i)
                    .ok_or_else(|| format!("{path}: index out of range"))? = v;
            } else if i <= a.len() {
                a.insert(i, v);
            } else {
                return Err(format!("{path}: index out of range"));
            }
            Ok(())
        }
        _ => Err(format!("{path}: parent is not a container")),
    }
}

pub fn json_patch(target: &Value, ops: &Value) -> Result<Value, String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is an array of operations")?;
    let mut doc = target.clone();
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{name} {path}: no value"))
        };
        match name {
            "add" => add_at(&mut doc, path, value()?, false)?,
            "replace" => add_at(&mut doc, path, value()?, true)?,
            "remove" => {
                remove_at(&mut doc, path)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(format!("test operation failed at {path}"));
                }
            }
            "move" | "copy" => {
                let from = op
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or("move/copy without from")?;
                let v = if name == "move" {
                    remove_at(&mut doc, from)?
                } else {
                    doc.pointer(from)
                        .cloned()
                        .ok_or_else(|| format!("{from}: not found"))?
                };
                add_at(&mut doc, path, v, false)?;
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_by_key() {
        let cur = json!({"spec": {"unschedulable": false, "template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
        let p = json!({"spec": {"unschedulable": true, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "b:2"}, {"name": "a", "$patch": "delete"}]}}}});
        let out = strategic(&cur, &p).unwrap();
        assert_eq!(out["spec"]["unschedulable"], json!(true));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "image": "b:2"}])
        );
        let out = strategic(&out, &json!({"spec": {"unschedulable": null}})).unwrap();
        assert!(out["spec"].get("unschedulable").is_none());
    }

    #[test]
    fn json_patch_ops() {
        let d = json!({"a": [1, 2], "b": {"c": 1}});
        let p = json!([{"op": "add", "path": "/a/-", "value": 3}, {"op": "replace", "path": "/b/c", "value": 2},
            {"op": "remove", "path": "/a/0"}, {"op": "test", "path": "/b/c", "value": 2}]);
        assert_eq!(
            json_patch(&d, &p).unwrap(),
            json!({"a": [2, 3], "b": {"c": 2}})
        );
        assert!(json_patch(&d, &json!([{"op": "test", "path": "/b/c", "value": 9}])).is_err());
    }

    #[test]
    fn merge_patch() {
        assert_eq!(
            merge(
                &json!({"a": 1, "b": {"c": 1}}),
                &json!({"a": null, "b": {"d": 2}})
            ),
            json!({"b": {"c": 1, "d": 2}})
        );
    }
}

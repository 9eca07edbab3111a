//! Server-side printing: `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`, as kubectl
//! asks for `get` (columns like the real server's for nodes, pods and deployments).

use std::time::SystemTime;

use serde_json::{Value, json};

pub fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

fn age(obj: &Value) -> String {
    let Some(t) = obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(crate::timefmt::parse)
    else {
        return "<unknown>".into();
    };
    let s = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn columns(kind: &str) -> Vec<&'static str> {
    match kind {
        "Node" => vec!["Name", "Status", "Roles", "Age", "Version"],
        "Pod" => vec!["Name", "Ready", "Status", "Restarts", "Age", "Node"],
        "Deployment" => vec!["Name", "Ready", "Up-to-date", "Available", "Age"],
        "DaemonSet" => vec!["Name", "Desired", "Current", "Ready", "Age"],
        "Lease" => vec!["Name", "Holder", "Age"],
        _ => vec!["Name", "Age"],
    }
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = json!(o["metadata"]["name"]);
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    match kind {
        "Node" => {
            let ready = o["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|x| x["type"] == "Ready"))
                .map(|c| c["status"] == "True");
            let mut status = match ready {
                Some(true) => "Ready".to_string(),
                Some(false) => "NotReady".into(),
                None => "Unknown".into(),
            };
            if o["spec"]["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = o["metadata"]["labels"]
                .as_object()
                .map(|l| {
                    l.keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/").map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let roles = if roles.is_empty() {
                "<none>".to_string()
            } else {
                roles.join(",")
            };
            vec![
                name,
                json!(status),
                json!(roles),
                json!(age(o)),
                json!(
                    o["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .unwrap_or("")
                ),
            ]
        }
        "Pod" => {
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let statuses = o["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            let restarts: i64 = statuses.iter().map(|s| n(&s["restartCount"])).sum();
            let waiting = statuses
                .iter()
                .find_map(|s| s["state"]["waiting"]["reason"].as_str().map(String::from));
            let phase = waiting.unwrap_or_else(|| {
                o["status"]["phase"]
                    .as_str()
                    .unwrap_or("Pending")
                    .to_string()
            });
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(phase),
                json!(restarts),
                json!(age(o)),
                json!(o["spec"]["nodeName"].as_str().unwrap_or("<none>")),
            ]
        }
        "Deployment" => vec![
            name,
            json!(format!(
                "{}/{}",
                n(&o["status"]["readyReplicas"]),
                n(&o["spec"]["replicas"])
            )),
            json!(n(&o["status"]["updatedReplicas"])),
            json!(n(&o["status"]["availableReplicas"])),
            json!(age(o)),
        ],
        "DaemonSet" => vec![
            name,
            json!(n(&o["status"]["desiredNumberScheduled"])),
            json!(n(&o["status"]["currentNumberScheduled"])),
            json!(n(&o["status"]["numberReady"])),
            json!(age(o)),
        ],
        "Lease" => vec![
            name,
            json!(o["spec"]["holderIdentity"].as_str().unwrap_or("")),
            json!(age(o)),
        ],
        _ => vec![name, json!(age(o))],
    }
}

/// A Table of `items` (objects of `kind`), rows carrying what `include_object` asks for.
pub fn table(kind: &str, items: &[Value], resource_version: &str, include_object: &str) -> Value {
    let cols: Vec<Value> = columns(kind)
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": c, "type": if *c == "Restarts" { "integer" } else { "string" },
            "format": if i == 0 { "name" } else { "" }, "description": "", "priority": i32::from(*c == "Node")}))
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            };
            json!({"cells": cells(kind, o), "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
           "columnDefinitions": cols, "rows": rows})
}

//! TEST-ONLY stand-ins for the Kubernetes server binaries (kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubelet), for capstan's lab. One binary; the
//! personality comes from the name it is run as. Never shipped, never described as Kubernetes.

#![allow(
    dead_code,
    clippy::many_single_char_names,
    clippy::case_sensitive_file_extension_comparisons,
    clippy::unnecessary_wraps,
    clippy::items_after_statements,
    clippy::format_collect
)]

mod apiserver;
mod cidr;
mod client;
mod cm_network;
mod common;
mod controllers;
mod coredns;
mod dns;
mod etcd;
mod flags;
mod flanneld;
mod klog;
mod kube_proxy;
mod kubeclient;
mod kubeconfig;
mod kubelet;
mod kubelet_pods;
mod patch;
mod pause;
mod rbac;
mod resources;
mod satoken;
mod selectors;
mod server;
mod table;
mod timefmt;
mod tls;
mod version;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    let args = &argv[1.min(argv.len())..];
    match name.as_str() {
        "kube-apiserver" => apiserver::main(args),
        "kube-controller-manager" => controllers::controller_manager_main(args),
        "kube-scheduler" => controllers::scheduler_main(args),
        "kubelet" => kubelet::main(args),
        "kube-proxy" => kube_proxy::main(args),
        "coredns" => coredns::main(args),
        "flanneld" => flanneld::main(args),
        "pause" => pause::main(args),
        _ => {
            if args.first().map(String::as_str) == Some("stamp") && args.len() == 4 {
                match version::stamp(
                    std::path::Path::new(&args[1]),
                    std::path::Path::new(&args[2]),
                    &args[3],
                ) {
                    Ok(()) => std::process::exit(0),
                    Err(e) => {
                        eprintln!("standin stamp: {e}");
                        std::process::exit(1);
                    }
                }
            }
            eprintln!(
                "standin: run me as kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, coredns, flanneld or pause \
                 (a copy or symlink with that name), or `standin stamp SRC DEST vX.Y.Z`"
            );
            std::process::exit(1);
        }
    }
}

//! What every personality shares: logging, fatal errors, version and help handling.

use crate::flags::{self, Kind, Parsed};

pub fn log(component: &str, msg: &str) {
    eprintln!("{} {component}: {msg}", crate::timefmt::now_micro());
}

/// Parses argv for `component`; handles --help and --version; exits 1 on bad flags.
/// Returns the parsed flags and the stamped version.
pub fn start(component: &str, args: &[String], specs: &[(&str, Kind)]) -> (Parsed, String) {
    let parsed = match flags::parse(args, specs) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: {e}");
            eprintln!("Run '{component} --help' for usage.");
            std::process::exit(1);
        }
    };
    let version = match crate::version::current() {
        Ok(v) => v,
        Err(e) => fatal(component, &e),
    };
    if parsed.bool("help", false) {
        println!(
            "{component} (capstan TEST stand-in honouring the contract of {component} {version})\n\nFlags:"
        );
        let mut names: Vec<&str> = specs
            .iter()
            .chain(flags::COMMON.iter())
            .map(|(n, _)| *n)
            .collect();
        names.sort_unstable();
        for n in names {
            println!("      --{n}");
        }
        std::process::exit(0);
    }
    if let Some(v) = parsed.get("version")
        && v != "false"
    {
        println!("Kubernetes {version}");
        std::process::exit(0);
    }
    (parsed, version)
}

pub fn fatal(component: &str, msg: &str) -> ! {
    eprintln!("{} {component}: error: {msg}", crate::timefmt::now_micro());
    eprintln!("Error: {msg}");
    std::process::exit(1);
}

/// Random lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n.div_ceil(2)];
    let _ = getrandom(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect::<String>()[..n].to_string()
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

pub fn uid() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Kubernetes' generateName suffix alphabet (no vowels, no confusable digits).
pub fn name_suffix(n: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut buf = vec![0u8; n];
    let _ = getrandom(&mut buf);
    buf.iter()
        .map(|b| ALPHA[usize::from(*b) % ALPHA.len()] as char)
        .collect()
}

/// The machine's hostname, lowercased (the default node name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "localhost".into(), |s| s.trim().to_lowercase())
}

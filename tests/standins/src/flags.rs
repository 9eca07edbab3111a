//! Strict command-line parsing in the style of spf13/pflag, as the Kubernetes binaries use:
//! `--name=value`, `--name value`, boolean `--name` / `--name=false`; anything unknown is an
//! error (`unknown flag: --x`) and the process exits 1.

use std::collections::HashMap;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Bool,
    Value,
}

/// Flags every component accepts (klog's and the generic ones).
pub const COMMON: &[(&str, Kind)] = &[
    ("help", Kind::Bool),
    ("version", Kind::Value),
    ("v", Kind::Value),
    ("vmodule", Kind::Value),
    ("log-flush-frequency", Kind::Value),
    ("logging-format", Kind::Value),
    ("log-json-split-stream", Kind::Bool),
    ("log-text-split-stream", Kind::Bool),
    ("feature-gates", Kind::Value),
];

#[derive(Debug, Default)]
pub struct Parsed {
    values: HashMap<String, String>,
}

impl Parsed {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
    pub fn bool(&self, name: &str, default: bool) -> bool {
        self.get(name).map_or(default, |v| v == "true")
    }
    /// A required value, with an error naming the flag.
    pub fn required(&self, name: &str) -> Result<&str, String> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(format!("--{name} is required")),
        }
    }
}

fn parse_bool(name: &str, v: &str) -> Result<String, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok("true".into()),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok("false".into()),
        _ => Err(format!(
            "invalid argument {v:?} for \"--{name}\" flag: strconv.ParseBool: parsing {v:?}: invalid syntax"
        )),
    }
}

/// Parses `args` (without argv[0]) against `specs` plus [`COMMON`].
pub fn parse(args: &[String], specs: &[(&str, Kind)]) -> Result<Parsed, String> {
    let kind_of = |n: &str| {
        specs
            .iter()
            .chain(COMMON.iter())
            .find(|(s, _)| *s == n)
            .map(|(_, k)| *k)
    };
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (dashes, body) = if let Some(b) = arg.strip_prefix("--") {
            ("--", b)
        } else if let Some(b) = arg.strip_prefix('-').filter(|b| !b.is_empty()) {
            ("-", b)
        } else {
            return Err(format!(
                "unknown command {arg:?}: this command takes no arguments"
            ));
        };
        if body.is_empty() {
            // `--` ends the flags; the components take no positional arguments.
            if let Some(extra) = args.get(i) {
                return Err(format!(
                    "unknown command {extra:?}: this command takes no arguments"
                ));
            }
            break;
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        // Single-dash: pflag shorthands; the components know -h and -v only.
        let name = if dashes == "-" {
            match name {
                "h" => "help",
                "v" => "v",
                _ => return Err(format!("unknown shorthand flag: '{}' in {arg}", &name[..1])),
            }
        } else {
            name
        };
        let Some(kind) = kind_of(name) else {
            return Err(format!("unknown flag: --{name}"));
        };
        let value = match (kind, inline) {
            (Kind::Bool, Some(v)) => parse_bool(name, &v)?,
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Value, Some(v)) => v,
            (Kind::Value, None) if name == "version" => "true".to_string(),
            (Kind::Value, None) => {
                let Some(v) = args.get(i) else {
                    return Err(format!("flag needs an argument: --{name}"));
                };
                i += 1;
                v.clone()
            }
        };
        out.values.insert(name.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn pflag_forms() {
        let specs = [
            ("secure-port", Kind::Value),
            ("allow-privileged", Kind::Bool),
        ];
        let p = parse(
            &s(&[
                "--secure-port",
                "6443",
                "--allow-privileged",
                "-v=2",
                "--version",
            ]),
            &specs,
        )
        .unwrap();
        assert_eq!(p.get("secure-port"), Some("6443"));
        assert!(p.bool("allow-privileged", false));
        assert_eq!(p.get("v"), Some("2"));
        assert_eq!(p.get("version"), Some("true"));
        let p = parse(&s(&["--allow-privileged=false", "--secure-port=1"]), &specs).unwrap();
        assert!(!p.bool("allow-privileged", true));
        assert_eq!(p.get("secure-port"), Some("1"));
    }

    #[test]
    fn errors() {
        let specs = [
            ("secure-port", Kind::Value),
            ("allow-privileged", Kind::Bool),
        ];
        assert_eq!(
            parse(&s(&["--nope=1"]), &specs).unwrap_err(),
            "unknown flag: --nope"
        );
        assert_eq!(
            parse(&s(&["--secure-port"]), &specs).unwrap_err(),
            "flag needs an argument: --secure-port"
        );
        assert!(parse(&s(&["--allow-privileged=maybe"]), &specs).is_err());
        assert!(parse(&s(&["positional"]), &specs).is_err());
        assert!(parse(&s(&["-x"]), &specs).is_err());
    }
}

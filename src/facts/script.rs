//! The probe script: POSIX `sh`, one exec, a few forks per section and none per item.

use std::fmt::Write as _;

use super::{
    COMPONENTS, FactsError, INSTALLED_STATE, MARKER, PROBE_FORMAT, PROBED_MODULES, PROBED_TOOLS,
    ProbeRequest,
};

/// Quotes `s` for POSIX `sh`: single quotes, with each `'` written as `'\''`.
pub fn sh_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

fn check_path(p: &str) -> Result<(), FactsError> {
    let bad = |reason| {
        Err(FactsError::BadRequest {
            what: "path",
            value: p.to_owned(),
            reason,
        })
    };
    if !p.starts_with('/') {
        return bad("paths must be absolute");
    }
    if p.len() > 4096 {
        return bad("paths are limited to 4096 bytes");
    }
    if p.chars().any(char::is_control) {
        return bad("paths must not contain control characters (newline, tab...)");
    }
    if p.contains('\\') {
        return bad("paths must not contain backslashes (sha256sum would escape them)");
    }
    Ok(())
}

fn check_unit(u: &str) -> Result<(), FactsError> {
    let bad = |reason| {
        Err(FactsError::BadRequest {
            what: "systemd unit",
            value: u.to_owned(),
            reason,
        })
    };
    if u.is_empty() || u.len() > 255 {
        return bad("unit names are 1 to 255 characters long");
    }
    if u.starts_with('-') {
        return bad("unit names must not start with '-'");
    }
    if !u
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\'))
    {
        return bad("unit names may contain only ASCII letters, digits and : _ . @ - \\");
    }
    Ok(())
}

impl ProbeRequest {
    /// Checks every path and unit name; the first bad one is the error.
    pub fn validate(&self) -> Result<(), FactsError> {
        self.paths.iter().try_for_each(|p| check_path(p))?;
        self.installed_state
            .iter()
            .try_for_each(|p| check_path(p))?;
        for (name, _) in &self.extra {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(FactsError::BadRequest {
                    what: "section",
                    value: name.clone(),
                    reason: "section names are letters, digits and '-'",
                });
            }
        }
        self.units.iter().try_for_each(|u| check_unit(u))
    }
}

/// The fixed part of the probe: helpers and host-wide facts.
///
/// Conventions: `b NAME` / `e NAME` open and close a section; `r NAME CMD...` runs a command
/// into a section and records its exit status; `cf FILE` prints a small file without a fork;
/// `rd KEY FILE` prints `KEY=first line of FILE` when FILE is readable.
const PRELUDE: &str = r#"LC_ALL=C; export LC_ALL
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}; export PATH
b() { printf '::capstan:: begin %s\n' "$1"; }
e() { printf '::capstan:: end %s\n' "$1"; }
r() { n=$1; shift; b "$n"; o=$("$@" 2>&1); s=$?; [ -n "$o" ] && printf '%s\n' "$o"; printf '::capstan:: end %s %s\n' "$n" "$s"; }
cf() { [ -r "$1" ] && while IFS= read -r l || [ -n "$l" ]; do printf '%s\n' "$l"; done < "$1"; return 0; }
rd() { if [ -r "$2" ] && { IFS= read -r v < "$2" || [ -n "$v" ]; }; then printf '%s=%s\n' "$1" "$v"; fi; v=; }
have() { command -v "$1" >/dev/null 2>&1; }
T=; have timeout && T='timeout 10'
"#;

const HOST_FACTS: &str = r#"b basics
u=; c=
if [ -r /proc/self/status ]; then while read -r k v1 v2 _r; do case $k in Uid:) u=$v2;; Cpus_allowed_list:) c=$v1;; esac; done < /proc/self/status; fi
[ -n "$u" ] || u=$(id -u 2>/dev/null)
printf 'uid=%s\n' "$u"
kv=; km=
[ -r /proc/sys/kernel/osrelease ] && { IFS= read -r kv < /proc/sys/kernel/osrelease || [ -n "$kv" ]; }
[ -r /proc/sys/kernel/arch ] && { IFS= read -r km < /proc/sys/kernel/arch || [ -n "$km" ]; }
if [ -z "$kv" ] || [ -z "$km" ]; then un=$(uname -rm); kv=${un% *}; km=${un##* }; fi
printf 'kernel=%s\nmachine=%s\n' "$kv" "$km"
rd hostname /proc/sys/kernel/hostname
rd machine_id /etc/machine-id
rd pid1 /proc/1/comm
sd=0; [ -d /run/systemd/system ] && sd=1
echo systemd_booted=$sd
n=0; oi=$IFS; IFS=,; for x in $c; do case $x in *-*) n=$((n + ${x#*-} - ${x%-*} + 1));; ?*) n=$((n + 1));; esac; done; IFS=$oi
if [ "$n" -gt 0 ] 2>/dev/null; then printf 'cpus=%s\n' "$n"; elif have nproc; then printf 'cpus=%s\n' "$(nproc)"; else printf 'cpus=%s\n' "$(grep -c '^processor' /proc/cpuinfo)"; fi
rd container_file /run/systemd/container
[ -f /.dockerenv ] && echo dockerenv=1
[ -f /run/.containerenv ] && echo containerenv=1
# systemd as PID 1 records the container it runs in (/run/systemd/container); ask
# systemd-detect-virt only where nothing else would tell.
dv=1; [ $sd = 1 ] && dv=0
case $kv in *[Mm]icrosoft*|*WSL*) dv=1;; esac
[ -e /proc/vz ] && dv=1
if [ $dv = 1 ] && have systemd-detect-virt; then printf 'detect_virt=%s\n' "$(systemd-detect-virt --container 2>/dev/null)"; fi
e basics
b sysctl
rd ip_forward /proc/sys/net/ipv4/ip_forward
rd ipv6_forwarding /proc/sys/net/ipv6/conf/all/forwarding
if [ -d /proc/sys/net/bridge ]; then echo bridge_dir=1; else echo bridge_dir=0; fi
rd bridge_nf_call_iptables /proc/sys/net/bridge/bridge-nf-call-iptables
rd bridge_nf_call_ip6tables /proc/sys/net/bridge/bridge-nf-call-ip6tables
e sysctl
b dns
ns() { [ -r "$2" ] && while read -r k v _r; do [ "$k" = nameserver ] && printf '%s %s\n' "$1" "$v"; done < "$2"; return 0; }
ns host /etc/resolv.conf
[ -S /run/systemd/resolve/io.systemd.Resolve ] && echo resolved_running
[ -r /run/systemd/resolve/resolv.conf ] && echo resolved_file
ns resolved /run/systemd/resolve/resolv.conf
e dns
"#;

/// [`file_facts`] by the shell, without the modules.
const FILES_SH: &str = r#"b os
if [ -r /etc/os-release ]; then cf /etc/os-release; else cf /usr/lib/os-release; fi
e os
b meminfo
cf /proc/meminfo
e meminfo
b swaps
cf /proc/swaps
e swaps
b cgroup
while read -r _d mp fs opts _r; do case $fs in cgroup|cgroup2) printf 'mount %s %s %s\n' "$mp" "$fs" "$opts";; esac; done < /proc/mounts
if [ -r /sys/fs/cgroup/cgroup.controllers ]; then rd controllers /sys/fs/cgroup/cgroup.controllers; elif [ -r /sys/fs/cgroup/unified/cgroup.controllers ]; then rd unified_controllers /sys/fs/cgroup/unified/cgroup.controllers; fi
e cgroup
"#;

/// Addresses and listening sockets: the costliest part of the host facts (an `ip` and an
/// `ss` each), which a `light` probe leaves out.
const NETWORK_FACTS: &str = r#"if have ip; then
  r addrs-ip ip -o addr show
else
  b addrs-proc-inet6; cf /proc/net/if_inet6; e addrs-proc-inet6
  b addrs-proc-fib; cat /proc/net/fib_trie 2>/dev/null; e addrs-proc-fib
fi
if have ss; then
  r listen-ss ss -ltnp
else
  b listen-proc-tcp; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; e listen-proc-tcp
  b listen-proc-fds; ls -l /proc/[0-9]*/fd 2>/dev/null | grep -e '^/proc/' -e 'socket:\['; e listen-proc-fds
  b listen-proc-comm
  for p in /proc/[0-9]*; do [ -r "$p/comm" ] && IFS= read -r c < "$p/comm" && printf '%s %s\n' "${p#/proc/}" "$c"; done
  e listen-proc-comm
fi
"#;

/// Stats the positional parameters and hashes the regular files among them (sections
/// `stat`, `sha256`): the awk program that reads `stat`'s output, after [`FILES_AWK`] in
/// the same awk, so that one awk reads every file the probe needs.
///
/// Quick check (rsync's): a regular file whose size, mtime and inode still match what
/// capstan recorded when it installed it (the state file, `state`) keeps the recorded
/// hash; only the others are read, by one `sha256sum` that awk starts. `verify` = 1 hashes
/// everything.
const STAT_AWK: &str = r#"
function q(x,   n, p, i, r) { n = split(x, p, sq); r = sq p[1]; for (i = 2; i <= n; i++) r = r sq "\\" sq sq p[i]; return r sq }
BEGIN { if (!verify) while ((getline l < state) > 0) { if (split(l, a, "\t") == 5) { rec[a[5]] = a[2] " " a[3] " " a[4]; sum[a[5]] = a[1] } } b("stat") }
{ print }
$9 ~ /^regular/ { if (($10 in rec) && rec[$10] == $1 " " $7 " " $8) sums = sums sum[$10] "  " $10 "\n"; else h = h " " q($10) }
END { e("stat"); b("sha256"); printf "%s", sums; if (h != "") { fflush(); system("sha256sum --" h " 2>/dev/null") } e("sha256") }"#;

/// What `stat` prints of each path (tab-separated; the name last, as it may hold spaces).
const STAT_FORMAT: &str = "'%s\t%a\t%u\t%g\t%U\t%G\t%Y\t%i\t%F\t%n'";

/// The states of the units in the positional parameters, from ONE `systemctl show`.
///
/// A unit with no file, drop-in folder or symlink in any of systemd's unit folders is
/// `not-found` to systemd: it is listed in `units-absent` and not asked about, so that a
/// host with none of the units (a bare host) costs no `systemctl` at all. Names that
/// systemd completes or instantiates (no suffix, `@`) are always asked about.
const UNITS: &str = r#"if have systemctl && [ -d /run/systemd/system ]; then
b units-absent
for u do
  f=1
  case $u in
    *@*|*/*) ;;
    *.*) f=0
      for d in /etc/systemd/system.control /run/systemd/system.control /run/systemd/transient /run/systemd/generator.early /etc/systemd/system /etc/systemd/system.attached /run/systemd/system /run/systemd/system.attached /run/systemd/generator /usr/local/lib/systemd/system /lib/systemd/system /usr/lib/systemd/system /run/systemd/generator.late; do
        if [ -e "$d/$u" ] || [ -L "$d/$u" ] || [ -e "$d/$u.d" ]; then f=1; break; fi
      done;;
  esac
  if [ $f = 1 ]; then set -- "$@" "$u"; else printf '%s\n' "$u"; fi
  shift
done
e units-absent
[ $# -gt 0 ] && r units systemctl show -p Id -p LoadState -p ActiveState -p SubState -p UnitFileState -- "$@"
fi
"#;

/// The sections read from files (os, meminfo, swaps, cgroup, modules) and, when `paths`,
/// the `stat` and `sha256` of the positional parameters.
///
/// With awk, ONE awk reads every file and `stat`'s output (each fork costs the host a
/// millisecond or more, and a converged host's probe is mostly forks); without it, the
/// shell reads the files and every path goes to `sha256sum` (folders fail quietly).
fn file_facts(s: &mut String, paths: bool, state: &str, verify: bool) {
    let mods = PROBED_MODULES.join("|");
    let builtin_pats: Vec<String> = PROBED_MODULES
        .iter()
        .flat_map(|m| [format!("{m}.ko"), format!("{m}.ko.*")])
        .collect();
    let builtin_pats = builtin_pats.join("|");
    let awk_mods = PROBED_MODULES.join(" ");
    let verify = if verify { "1" } else { "0" };
    let _ = write!(
        s,
        "sy=; for m in {awk_mods}; do [ -d \"/sys/module/$m\" ] && sy=\"$sy $m\"; done\n\
         if have awk; then\n"
    );
    if paths {
        let _ = writeln!(
            s,
            "stat -c {STAT_FORMAT} -- \"$@\" 2>/dev/null | awk -F'\\t' -v kv=\"$kv\" -v mods='{awk_mods}' -v sysfs=\"$sy\" \
             -v state={state} -v verify={verify} -v \"sq='\" '{FILES_AWK}{STAT_AWK}'"
        );
    } else {
        let _ = writeln!(
            s,
            "awk -v kv=\"$kv\" -v mods='{awk_mods}' -v sysfs=\"$sy\" '{FILES_AWK}' </dev/null"
        );
    }
    let _ = write!(
        s,
        "else\n{FILES_SH}\
         b modules\n\
         [ -r /proc/modules ] && while read -r m _r; do case $m in {mods}) echo \"loaded $m\";; esac; done < /proc/modules\n\
         if [ -r \"/lib/modules/$kv/modules.builtin\" ]; then while read -r m; do case ${{m##*/}} in {builtin_pats}) echo \"builtin ${{m##*/}}\";; esac; done < \"/lib/modules/$kv/modules.builtin\"; fi\n\
         while read -r a f; do [ -n \"$f\" ] || f=$a; case $f in overlay) echo 'fs overlay';; esac; done < /proc/filesystems\n\
         for m in $sy; do echo \"sysfs $m\"; done\n\
         e modules\n"
    );
    if paths {
        let _ = write!(
            s,
            "b stat\nstat -c {STAT_FORMAT} -- \"$@\" 2>/dev/null\ne stat\n\
             b sha256\nsha256sum -- \"$@\" 2>/dev/null\ne sha256\n"
        );
    }
    s.push_str("fi\n");
}

/// [`file_facts`] by awk: each file read once. `sysfs` lists the modules the shell found
/// in /sys/module (`$sy`, also the shell fallback's: awk cannot test for a folder).
const FILES_AWK: &str = r#"
function b(n) { print "::capstan:: begin " n }
function e(n) { print "::capstan:: end " n }
function cat(file,   l) { while ((getline l < file) > 0) print l; close(file) }
function one(k, file,   l) { if ((getline l < file) > 0) print k "=" l; close(file) }
BEGIN {
  n = split(mods, want, " "); for (i = 1; i <= n; i++) { ismod[want[i]] = 1; ko[want[i] ".ko"] = 1 }
  b("os"); os = "/etc/os-release"; if ((getline l < os) < 0) os = "/usr/lib/os-release"; close(os); cat(os); e("os")
  b("meminfo"); cat("/proc/meminfo"); e("meminfo")
  b("swaps"); cat("/proc/swaps"); e("swaps")
  b("cgroup")
  while ((getline l < "/proc/mounts") > 0) { split(l, f, " "); if (f[3] == "cgroup" || f[3] == "cgroup2") print "mount " f[2] " " f[3] " " f[4] }
  close("/proc/mounts")
  cc = "/sys/fs/cgroup/cgroup.controllers"; v2 = (getline l < cc) >= 0; close(cc)
  if (v2) one("controllers", cc); else one("unified_controllers", "/sys/fs/cgroup/unified/cgroup.controllers")
  e("cgroup")
  b("modules")
  while ((getline l < "/proc/modules") > 0) { split(l, f, " "); if (f[1] in ismod) print "loaded " f[1] }
  mb = "/lib/modules/" kv "/modules.builtin"
  while ((getline l < mb) > 0) { k = l; sub(/.*\//, "", k); x = k; sub(/\.ko\..*$/, ".ko", x); if (x in ko) print "builtin " k }
  while ((getline l < "/proc/filesystems") > 0) { k = l; sub(/^.*[ \t]/, "", k); if (k == "overlay") print "fs overlay" }
  n = split(sysfs, sf, " "); for (i = 1; i <= n; i++) print "sysfs " sf[i]
  e("modules")
}"#;

/// Builds the probe script for `req`.
///
/// The script is POSIX `sh` (dash, bash, busybox ash), runs as `sh -c` (possibly under
/// `sudo -n`) or fed on stdin, never fails early, and prints every section whether or
/// not a tool is missing. Every path and unit is shell-quoted.
///
/// The output is held until the end and written at once: the shell writes each line as
/// it goes, which sshd would send as a hundred small packets, each a wake-up and a
/// syscall or two on the host and on the operator's machine. One fork buys that back.
pub fn probe_script(req: &ProbeRequest) -> Result<String, FactsError> {
    req.validate()?;
    let mut s = String::with_capacity(8192);
    s.push_str("capstan_probe() {\n");
    s.push_str(PRELUDE);
    let _ = writeln!(s, "printf '{MARKER} probe %s\\n' {PROBE_FORMAT}");
    s.push_str(HOST_FACTS);
    if !req.light {
        s.push_str(NETWORK_FACTS);
    }

    // Tools: a PATH search with shell built-ins only.
    s.push_str("b tools\nfor t in");
    for t in PROBED_TOOLS {
        let _ = write!(s, " {t}");
    }
    s.push_str(
        "; do printf '%s ' \"$t\"; command -v \"$t\" 2>/dev/null || echo -; done\ne tools\n",
    );

    // Components: path, then the version command's output and status.
    s.push_str("b components\n");
    for c in COMPONENTS {
        let _ = writeln!(s, "printf '%s ' {c}; command -v {c} 2>/dev/null || echo -");
    }
    s.push_str("e components\n");
    // Running each binary for its version is the probe's biggest cost: light skips it.
    if !req.light {
        for c in COMPONENTS {
            let _ = writeln!(s, "have {c} && r version-{c} $T {c} {}", c.version_args());
        }
    }

    // Requested paths, each written once (as the positional parameters).
    s.push_str("b request-paths\n");
    if !req.paths.is_empty() {
        s.push_str("set --");
        for p in &req.paths {
            let _ = write!(s, " {}", sh_quote(p));
        }
        s.push_str("\nprintf '%s\\n' \"$@\"\n");
    }
    s.push_str("e request-paths\n");
    // Files, then every path stat'ed at once and the regular files hashed at once: by one
    // awk when there is one (shell loops re-read a /proc file once per line: quadratic in its
    // length, and a node's /proc/mounts is long), else by the shell.
    file_facts(
        &mut s,
        !req.paths.is_empty(),
        &sh_quote(req.installed_state.as_deref().unwrap_or(INSTALLED_STATE)),
        req.verify,
    );

    // Requested units: one systemctl call.
    s.push_str("b request-units\n");
    if req.units.is_empty() {
        s.push_str("e request-units\n");
    } else {
        s.push_str("set --");
        for u in &req.units {
            let _ = write!(s, " {}", sh_quote(u));
        }
        s.push_str("\nprintf '%s\\n' \"$@\"\ne request-units\n");
        s.push_str(UNITS);
    }

    // Sections asked for by callers (the engine's sysctls, modules, packages, guards).
    for (name, script) in &req.extra {
        let _ = write!(s, "b {name}\n{script}\ne {name}\n");
    }

    // The clock last, closest to when the operator receives the output.
    // bash has the time without a fork; other shells ask date.
    s.push_str(
        "b clock\nif [ -n \"${EPOCHREALTIME:-}\" ]; then echo \"$EPOCHREALTIME\"; else date +%s.%N; fi\ne clock\n",
    );
    let _ = writeln!(s, "printf '{MARKER} done\\n'");
    // `$(...)` drops the final newline: printf puts it back.
    s.push_str("}\ncapstan_out=$(capstan_probe); capstan_status=$?\nprintf '%s\\n' \"$capstan_out\"\nexit $capstan_status\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_names() {
        assert_eq!(sh_quote("a;rm -rf /"), "'a;rm -rf /'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote("$(id)`id`"), "'$(id)`id`'");
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let req = ProbeRequest {
            paths: vec!["relative/path".into()],
            ..ProbeRequest::default()
        };
        let err = probe_script(&req).unwrap_err().to_string();
        assert!(
            err.contains("relative/path") && err.contains("absolute"),
            "{err}"
        );

        let req = ProbeRequest {
            paths: vec!["/etc/a\nb".into()],
            ..ProbeRequest::default()
        };
        assert!(probe_script(&req).is_err());

        let req = ProbeRequest {
            paths: vec![],
            units: vec!["a;rm -rf /".into()],
            ..ProbeRequest::default()
        };
        let err = probe_script(&req).unwrap_err().to_string();
        let section = ProbeRequest {
            extra: vec![("a b".into(), "true".into())],
            ..ProbeRequest::default()
        };
        assert!(probe_script(&section).is_err());
        assert!(
            err.contains("systemd unit") && err.contains("a;rm -rf /"),
            "{err}"
        );

        let req = ProbeRequest {
            paths: vec![],
            units: vec!["--all".into()],
            ..ProbeRequest::default()
        };
        assert!(probe_script(&req).is_err());
    }
}

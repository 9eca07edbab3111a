//! klog's text format, as the Kubernetes components write it:
//! `E1023 02:57:42.438216       1 server.go:556] "Error running ProxyServer" err="..."`.

/// Go's `%q` of a string (enough for log values: quotes, backslashes, newlines, tabs).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One structured line: `level` is I, W or E; `at` the source location shown.
pub fn line(level: char, at: &str, msg: &str, kv: &[(&str, String)]) -> String {
    let t = crate::timefmt::now_micro(); // 2006-01-02T15:04:05.000000Z
    let mut s = format!(
        "{level}{}{} {} {:>7} {at}] {}",
        &t[5..7],
        &t[8..10],
        &t[11..26],
        std::process::id(),
        quote(msg)
    );
    for (k, v) in kv {
        s.push_str(&format!(" {k}={}", quote(v)));
    }
    s
}

pub fn info(at: &str, msg: &str, kv: &[(&str, String)]) {
    eprintln!("{}", line('I', at, msg, kv));
}

pub fn error(at: &str, msg: &str, kv: &[(&str, String)]) {
    eprintln!("{}", line('E', at, msg, kv));
}

/// One unstructured line (klog.Infof and friends, as flannel logs).
pub fn plain(level: char, at: &str, msg: &str) {
    let t = crate::timefmt::now_micro();
    eprintln!(
        "{level}{}{} {} {:>7} {at}] {msg}",
        &t[5..7],
        &t[8..10],
        &t[11..26],
        std::process::id()
    );
}

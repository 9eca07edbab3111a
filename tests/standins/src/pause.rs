//! pause stand-in (entrypoint `/pause`): sleeps until SIGINT or SIGTERM, reaping children, as
//! the real pause.c.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};

pub fn main(args: &[String]) {
    if args.first().is_some_and(|a| a.eq_ignore_ascii_case("-v")) {
        // Stamped vMAJOR.MINOR.PATCH; pause tags drop a zero patch (3.10, 3.10.1).
        let v = crate::version::current().unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1);
        });
        println!("pause.c {}", v.strip_suffix(".0").unwrap_or(&v));
        std::process::exit(0);
    }
    if std::process::id() != 1 {
        eprintln!("Warning: pause should be the first process");
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGCHLD);
    if let Err(e) = set.thread_block() {
        eprintln!("pause: cannot block signals: {e}");
        std::process::exit(1);
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if s == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(sig) => {
                let name = if sig == Signal::SIGINT {
                    "Interrupt"
                } else {
                    "Terminated"
                };
                eprintln!("Shutting down, got signal: {name}");
                std::process::exit(0);
            }
            Err(_) => {}
        }
    }
}

use std::process::ExitCode;

fn main() -> ExitCode {
    match capstan::run() {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            capstan::error::exit_code_for(&report)
        }
    }
}

//! The argument that asks a function's binary to run as a long-running
//! process outside Lambda (`collect serve`, `dispatch consume`) instead of
//! serving Lambda invocations (no argument).

/// The command line asks for something else than Lambda (no argument) or
/// the binary's long-running mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown argument {got:?}: run `{program}` (a Lambda function) or `{program} {mode}`")]
pub struct UnknownMode {
    /// The binary.
    pub program: &'static str,
    /// Its long-running mode.
    pub mode: &'static str,
    /// The first argument given.
    pub got: String,
}

/// Whether the arguments after the program name ask for `program`'s
/// long-running `mode` (`mode` alone) rather than Lambda (no argument).
pub fn long_running(
    program: &'static str,
    mode: &'static str,
    mut args: impl Iterator<Item = String>,
) -> Result<bool, UnknownMode> {
    match (args.next(), args.next()) {
        (None, _) => Ok(false),
        (Some(first), None) if first == mode => Ok(true),
        (Some(got), _) => Err(UnknownMode { program, mode, got }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_comes_from_the_arguments() {
        let args =
            |a: &[&str]| long_running("dispatch", "consume", a.iter().map(|s| s.to_string()));
        assert_eq!(args(&[]), Ok(false));
        assert_eq!(args(&["consume"]), Ok(true));
        let unknown = |got: &str| UnknownMode {
            program: "dispatch",
            mode: "consume",
            got: got.into(),
        };
        assert_eq!(args(&["serve"]), Err(unknown("serve")));
        assert_eq!(args(&["consume", "extra"]), Err(unknown("consume")));
        assert_eq!(
            unknown("serve").to_string(),
            "unknown argument \"serve\": run `dispatch` (a Lambda function) or `dispatch consume`"
        );
    }
}

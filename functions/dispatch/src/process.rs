//! What the functions' binaries need to run as long-running processes
//! outside Lambda (`dispatch consume`, `collect serve`): the argument that
//! asks for it, and the signals that stop it gracefully.

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

/// Resolves on the first SIGTERM (`docker stop`, ECS, Kubernetes) or SIGINT
/// (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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

//! The Docker side of the tests: the image built from `docker/Dockerfile`,
//! containers on the host network, and the compose stack of `docker/`.
//!
//! Everything goes through the real `docker` client and Debian's
//! `docker-compose` against the daemon `scripts/test` starts (`DOCKER_HOST`).
//! The image under test is the one `scripts/test` builds before the tests
//! (`EDGEPUSH_DOCKER_IMAGE`: `docker/Dockerfile` with `BINARIES=prebuilt`,
//! from the binaries it compiled, on the local stand-in of its base image);
//! a test without it fails, saying how to get it. Containers carry the label
//! `edgepush.test`, are removed when their handle is dropped, and whatever
//! is left is removed by `scripts/test` on exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, bail};

/// The label of every container a test starts.
pub const LABEL: &str = "edgepush.test";

fn required(name: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => bail!(
            "{name} is not set: the Docker tests need a Docker daemon and the image under test; \
             run scripts/test (it starts the one and builds the other), or see docker/README.md"
        ),
    }
}

/// The docker client: `EDGEPUSH_DOCKER_CLI`, else `docker`.
pub fn docker_cli() -> String {
    std::env::var("EDGEPUSH_DOCKER_CLI")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "docker".into())
}

/// The repository root (the build context).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs `program args`, returns its output when it succeeded; the error
/// carries stderr.
pub fn run(program: &str, args: &[&str], envs: &[(String, String)]) -> anyhow::Result<Output> {
    let output = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// `docker args`: stdout, trimmed.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = run(&docker_cli(), args, &[])?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The image under test (`EDGEPUSH_DOCKER_IMAGE`), checked to exist in the
/// daemon.
pub fn image() -> anyhow::Result<String> {
    let image = required("EDGEPUSH_DOCKER_IMAGE")?;
    docker(&["image", "inspect", "--format", "{{.Id}}", &image]).with_context(|| {
        format!(
            "EDGEPUSH_DOCKER_IMAGE={image} is not in the daemon: run scripts/test (it builds it)"
        )
    })?;
    Ok(image)
}

/// A container of the test, removed (with `docker rm -f`) when dropped.
pub struct Container {
    name: String,
}

impl Container {
    /// `docker run -d --network host --label edgepush.test --name <name>`
    /// with `env`, `image` and `command`.
    pub fn run(
        name: &str,
        image: &str,
        env: &[(String, String)],
        command: &[&str],
    ) -> anyhow::Result<Self> {
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--network",
            "host",
            "--label",
            LABEL,
            "--name",
            name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push(image.into());
        args.extend(command.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args)?;
        Ok(Self { name: name.into() })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `docker inspect -f <format>`.
    pub fn inspect(&self, format: &str) -> anyhow::Result<String> {
        docker(&["inspect", "-f", format, &self.name])
    }

    /// Whether it runs.
    pub fn running(&self) -> anyhow::Result<bool> {
        Ok(self.inspect("{{.State.Running}}")? == "true")
    }

    /// Its output so far (stdout and stderr).
    pub fn logs(&self) -> String {
        match run(&docker_cli(), &["logs", &self.name], &[]) {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(no logs: {e:#})"),
        }
    }

    /// `docker exec <name> args`: stdout, trimmed.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// `docker stop <name>` with Docker's default grace period (10 s, then
    /// SIGKILL), run on a blocking thread; returns the exit code.
    pub async fn stop(&self) -> anyhow::Result<i64> {
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || docker(&["stop", &name]))
            .await
            .context("docker stop task")??;
        let code = self.inspect("{{.State.ExitCode}}")?;
        code.parse()
            .with_context(|| format!("exit code {code:?} of {}", self.name))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(docker_cli())
            .args(["rm", "-f", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A compose project of `docker/compose.yml` with `docker/compose.host.yml`
/// on top; `docker-compose down` when dropped.
pub struct ComposeStack {
    project: String,
    env: Vec<(String, String)>,
}

impl ComposeStack {
    /// `up -d --no-build --no-deps <services>` with `env` for the files'
    /// variables, as project `project`.
    pub fn up(
        project: &str,
        env: Vec<(String, String)>,
        services: &[&str],
    ) -> anyhow::Result<Self> {
        let mut env = env;
        env.push(("COMPOSE_PROJECT_NAME".into(), project.into()));
        let stack = Self {
            project: project.into(),
            env,
        };
        let mut args = vec!["up", "-d", "--no-build", "--no-deps"];
        args.extend_from_slice(services);
        stack.compose(&args)?;
        Ok(stack)
    }

    /// `docker-compose -f docker/compose.yml -f docker/compose.host.yml -p
    /// <project> args`: stdout.
    pub fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        let compose = std::env::var("EDGEPUSH_DOCKER_COMPOSE")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "docker-compose".into());
        let mut all = vec![
            "-f",
            "docker/compose.yml",
            "-f",
            "docker/compose.host.yml",
            "-p",
            self.project.as_str(),
        ];
        all.extend_from_slice(args);
        let output = run(&compose, &all, &self.env)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The container of `service`.
    pub fn container(&self, service: &str) -> anyhow::Result<String> {
        let id = self.compose(&["ps", "-q", service])?.trim().to_owned();
        if id.is_empty() {
            bail!("no container for service {service}");
        }
        Ok(id)
    }

    /// `docker inspect -f <format>` of `service`'s container.
    pub fn inspect(&self, service: &str, format: &str) -> anyhow::Result<String> {
        docker(&["inspect", "-f", format, &self.container(service)?])
    }

    /// Every service's logs.
    pub fn logs(&self) -> String {
        self.compose(&["logs", "--no-color"])
            .unwrap_or_else(|e| format!("(no logs: {e:#})"))
    }
}

impl Drop for ComposeStack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--timeout", "10", "--remove-orphans"]);
    }
}

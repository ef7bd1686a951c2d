//! The Temporal dev server (`temporal server start-dev`), for `psa demo`, tests and benchmarks:
//! loopback only, in memory, and tuned: without `transferProcessorMaxPollRPS` every workflow task
//! waits about 50 ms on the dev server's single shard. Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `temporal` CLI: `TEMPORAL_CLI`, then `temporal` on PATH, then the first of `local`
/// (project-local installs) that exists.
pub fn find_cli(local: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TEMPORAL_CLI") {
        return Some(p.into());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("temporal"))
            .find(|p| p.exists())
    });
    on_path.or_else(|| local.iter().find(|p| p.exists()).cloned())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether the frontend at `address` reports SERVING.
pub async fn healthy(cli: &Path, address: &str) -> bool {
    tokio::process::Command::new(cli)
        .args(["operator", "cluster", "health", "--address", address])
        .output()
        .await
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("SERVING"))
        .unwrap_or(false)
}

/// Waits up to 30 s for the frontend at `address`.
pub async fn wait_healthy(cli: &Path, address: &str) -> bool {
    for _ in 0..300 {
        if healthy(cli, address).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A running dev server.
pub struct DevServer {
    pub address: String,
    child: Child,
}

impl DevServer {
    /// Starts a dev server on free ports. The ports are picked by binding port 0 and letting go,
    /// so another process can take one in between: a start that fails is tried again (3 times).
    pub async fn start(cli: &Path) -> Result<DevServer, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_once(cli).await {
                Ok(server) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn start_once(cli: &Path) -> Result<DevServer, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let extra = |flag: &str| -> Result<[String; 2], String> {
            Ok([
                flag.to_owned(),
                free_port().map_err(|e| e.to_string())?.to_string(),
            ])
        };
        let child = Command::new(cli)
            .args([
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--headless",
                "--log-level",
                "error",
            ])
            .args(["--port", &port.to_string()])
            .args(extra("--http-port")?)
            .args(extra("--metrics-port")?)
            .args([
                "--dynamic-config-value",
                "history.transferProcessorMaxPollRPS=10000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start the Temporal dev server ({}): {e}",
                    cli.display()
                )
            })?;
        let mut server = DevServer {
            address: format!("127.0.0.1:{port}"),
            child,
        };
        if !wait_healthy(cli, &server.address).await
            || server.child.try_wait().ok().flatten().is_some()
        {
            return Err("the Temporal dev server did not become healthy".into());
        }
        Ok(server)
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! `psa probe URL`: a health check for images without curl.

use std::time::Duration;

use crate::config::CliError;

/// `psa probe URL`: a minimal HTTP/1.0 GET, for container health checks.
pub async fn run(url: &str) -> Result<(), CliError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| CliError::Usage(format!("probe needs an http:// URL, not {url:?}")))?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(head)) if head.split_whitespace().nth(1) == Some("200") => Ok(()),
        Ok(Ok(head)) => Err(CliError::Failed(anyhow::anyhow!(
            "{url} answered {}",
            head.lines().next().unwrap_or_default()
        ))),
        Ok(Err(e)) => Err(CliError::Failed(anyhow::anyhow!("{url}: {e}"))),
        Err(_) => Err(CliError::Failed(anyhow::anyhow!(
            "{url}: no answer within 5 s"
        ))),
    }
}

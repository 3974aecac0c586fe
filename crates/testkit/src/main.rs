//! `aether-mock`: the mock upstream as a standalone process, for benchmarks,
//! demos and cross-process tests.
//!
//! ```text
//! aether-mock [--listen 127.0.0.1:0] [--no-record] [--key KEY]...
//! ```
//!
//! The first stdout line is `listening on http://ADDR`, so scripts can read
//! the port. Behaviour is driven through the `/__mock/` control API. The
//! process stops on SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use aether_testkit::{MockOptions, MockUpstream};

const USAGE: &str = "usage: aether-mock [--listen ADDR] [--no-record] [--key KEY]...\n\
  --listen ADDR   address to bind (default 127.0.0.1:0, a free port)\n\
  --no-record     do not record requests (benchmarks)\n\
  --key KEY       accept only these upstream credentials (repeatable; default: any)\n";

fn parse_args(args: impl Iterator<Item = String>) -> Result<MockOptions, String> {
    let mut opts = MockOptions::default();
    let mut keys = Vec::new();
    let mut args = args;
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                opts.listen = v
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("bad --listen {v}: {e}"))?;
            }
            "--no-record" => opts.record = false,
            "--key" => keys.push(value("--key")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !keys.is_empty() {
        opts.keys = Some(keys);
    }
    Ok(opts)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(msg) => {
            let mut err = std::io::stderr().lock();
            if !msg.is_empty() {
                let _ = writeln!(err, "aether-mock: {msg}");
            }
            let _ = write!(err, "{USAGE}");
            return if msg.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let mock = match MockUpstream::try_start_with(opts).await {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "aether-mock: cannot bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        // Scripts read this first line to find the port, so flush it now.
        let _ = writeln!(out, "listening on {}", mock.url());
        let _ = out.flush();
    }
    wait_for_signal().await;
    mock.shutdown(Duration::from_secs(2)).await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn parses_flags() {
        let o = parse_args(args(&[
            "--listen",
            "127.0.0.1:9",
            "--no-record",
            "--key=a",
            "--key",
            "b",
        ]))
        .unwrap();
        assert_eq!(o.listen.port(), 9);
        assert!(!o.record);
        assert_eq!(o.keys, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert!(parse_args(args(&["--listen"])).is_err());
        assert!(parse_args(args(&["--bogus"])).is_err());
        assert_eq!(parse_args(args(&["--help"])).err(), Some(String::new()));
    }
}

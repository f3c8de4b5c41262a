//! Opens N idle MySQL sessions through a carbide listener and reports the
//! carbide process's resident memory per session. Used by
//! `benches/proxy_load.sh`:
//!
//!     idle_sessions 127.0.0.1:9306 2000 <carbide-pid>

use mysql_async::prelude::Queryable;
use std::time::Duration;

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, n, pid] = args.as_slice() else {
        return Err("usage: idle_sessions HOST:PORT N CARBIDE_PID".into());
    };
    let (host, port) = addr.rsplit_once(':').ok_or("HOST:PORT")?;
    let n: usize = n.parse()?;
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port.parse()?)
        .user(Some("root"))
        .prefer_socket(false)
        .into();
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(mysql_async::Conn::new(opts.clone()).await?);
    }
    for c in conns.iter_mut().take(10) {
        c.query_drop("SELECT 1").await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "idle sessions: {n}; carbide RSS {before} KiB -> {after} KiB; {per:.1} KiB per session"
    );
    for c in conns {
        let _ = c.disconnect().await;
    }
    Ok(())
}

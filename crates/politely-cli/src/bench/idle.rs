//! `politely bench idle`: open many connections, join them to rooms of two, hold them idle, and
//! read the server's memory per connection from its resident set.

use super::{Socket, join, thousands, ws_url};
use crate::system;
use clap::Args;
use futures_util::StreamExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[derive(Args, Debug)]
pub(crate) struct IdleArgs {
    /// The server, e.g. ws://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    url: String,
    /// Connections to open (1 to 100,000). Past about 28,000, one source address runs out of
    /// ephemeral ports: widen net.ipv4.ip_local_port_range (in a network namespace of your own).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    connections: u64,
    /// The server's pid, to read its memory (it must run on this machine).
    #[arg(long)]
    server_pid: Option<u32>,
    /// How long to hold the connections once all have joined, in seconds (at most 600).
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

pub(crate) fn run(args: &IdleArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.hold >= 0.0 && args.hold <= 600.0,
        "--hold must be in [0, 600]"
    );
    let url = ws_url(&args.url)?;
    let files = system::raise_open_files_limit();
    anyhow::ensure!(
        files > args.connections + 64,
        "the open-files limit ({files}) is too low for {} connections",
        args.connections
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(idle(args, url))
}

async fn idle(args: &IdleArgs, url: String) -> anyhow::Result<ExitCode> {
    let rss_before = args.server_pid.and_then(system::rss_bytes);
    let run_id = std::process::id();
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let joined = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections as usize);
    for i in 0..args.connections {
        let room = format!("bench-idle-{run_id}-{}", i / 2);
        let (url, permits, joined, dropped, stop) = (
            url.clone(),
            permits.clone(),
            joined.clone(),
            dropped.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await?;
            let (ws, _) = join(&url, &room, 4096).await?;
            drop(permit);
            joined.fetch_add(1, Relaxed);
            hold(ws, &stop, &dropped).await;
            anyhow::Ok(())
        }));
    }
    // Wait until every connection joined or failed.
    let mut failed = 0u64;
    let mut first_error = None;
    loop {
        let done = joined.load(Relaxed) + failed;
        if done >= args.connections {
            break;
        }
        let finished: Vec<usize> = tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_finished())
            .map(|(i, _)| i)
            .collect();
        for i in finished.into_iter().rev() {
            if let Err(e) = tasks.swap_remove(i).await? {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_time = started.elapsed();
    let held = joined.load(Relaxed);
    // Let the server settle (allocator caches, the last welcomes) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = args.server_pid.and_then(system::rss_bytes);
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let still_open = held - dropped.load(Relaxed);
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }

    println!(
        "idle: {} connections joined in {:.1} s, {} failed; {} still open after holding {:.0} s",
        thousands(held),
        connect_time.as_secs_f64(),
        failed,
        thousands(still_open),
        args.hold
    );
    if let Some(e) = first_error {
        println!("first failure: {e:#}");
    }
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let per = after.saturating_sub(before) as f64 / held.max(1) as f64;
        println!(
            "server memory: {:.1} MiB before, {:.1} MiB with the connections: {:.1} KiB per idle connection",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            per / 1024.0
        );
    }
    let ok = failed == 0 && still_open == held;
    println!("{}", if ok { "ok" } else { "FAILED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Keeps reading (so pings are answered) until told to stop, then closes.
async fn hold(mut ws: Socket, stop: &tokio_util::sync::CancellationToken, dropped: &AtomicU64) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
            message = ws.next() => match message {
                Some(Ok(_)) => continue,
                _ => {
                    dropped.fetch_add(1, Relaxed);
                    return;
                }
            },
        }
    }
}

//! A `redis-server` of the test's own, on a unix socket in a directory of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct RedisServer {
    pub child: Child,
    dir: PathBuf,
    /// Append-only persistence: what Redis acknowledged survives a `kill -9` of its process.
    append_only: bool,
}

impl RedisServer {
    /// Without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(false)
    }

    pub fn start_with(append_only: bool) -> RedisServer {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "politely-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let child = RedisServer::spawn(&dir, append_only);
        RedisServer {
            child,
            dir,
            append_only,
        }
    }

    /// Kills it (SIGKILL) and starts another on the same socket and directory: without
    /// persistence the new one has no data; with it, it loads the append-only file.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = RedisServer::spawn(&self.dir, self.append_only);
    }

    fn spawn(dir: &Path, append_only: bool) -> Child {
        let socket = dir.join("redis.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", ""])
            .args(["--appendonly", if append_only { "yes" } else { "no" }])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; .ci/run installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server made no socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }

    /// A `redis-cli` command against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(self.dir.join("redis.sock"))
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

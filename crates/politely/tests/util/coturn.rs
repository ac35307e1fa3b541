//! Debian's coturn on loopback, for the TURN tests (shared with the CLI's tests).

#![allow(dead_code, unreachable_pub)]

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `static-auth-secret` of every [`Coturn`].
pub const TURN_SECRET: &str = "a shared secret for the test";

/// coturn on 127.0.0.1, relaying from 127.0.0.1 only, with REST credentials; ended on drop
/// (and with the test's thread, by `setpriv --pdeathsig`).
pub struct Coturn {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Coturn {
    pub fn start(extra: &[&str]) -> Coturn {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A relay port range of its own, apart from other tests' servers.
        let relay = 20_000 + (port % 400) * 100;
        let dir = std::env::temp_dir().join(format!("politely-coturn-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "turnserver", "-n"])
            .args([
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                "--allow-loopback-peers",
                "--no-tcp",
                "--no-tls",
                "--no-dtls",
                "--no-tcp-relay",
                "--no-cli",
                "--fingerprint",
                "--use-auth-secret",
                "--realm=politely.test",
                "--simple-log",
                "--log-file=stdout",
            ])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={relay}"))
            .arg(format!("--max-port={}", relay + 99))
            .arg(format!("--static-auth-secret={TURN_SECRET}"))
            .arg(format!(
                "--pidfile={}",
                dir.join("turnserver.pid").display()
            ))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coturn's turnserver (Debian package coturn)");
        let coturn = Coturn { child, port, dir };
        coturn.wait_ready();
        coturn
    }

    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// Waits until the server answers a STUN binding request.
    fn wait_ready(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        // A binding request: type 0x0001, length 0, the magic cookie, a transaction id.
        let mut request = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(&[7; 12]);
        let mut buf = [0u8; 512];
        for _ in 0..100 {
            socket.send_to(&request, ("127.0.0.1", self.port)).unwrap();
            if socket.recv_from(&mut buf).is_ok() {
                return;
            }
        }
        panic!("coturn did not answer on port {}", self.port);
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

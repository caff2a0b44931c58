//! Userspace WireGuard inside the agent, for kernels without the module: boringtun's device
//! (a TUN device named as the kernel one would be, its own threads for packets and timers)
//! driven over a socket pair in WireGuard's userspace API ([`super::uapi`]).
//!
//! boringtun's own control socket mode is not used: it blocks SIGTERM and SIGINT in the
//! calling thread and takes them from a signalfd, so the agent would never see its stop
//! signal. Instead the agent serves `/var/run/wireguard/<name>.sock` itself (as wireguard-go
//! does) and answers `get` there, so `wg show` works; `set` is refused there (the agent owns
//! the device, and a change by hand would be undone by the next reconcile).
//!
//! The TUN device lives as long as the agent's process holds it: an agent that exits or is
//! killed leaves no device behind, and a restart makes a new one.

use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boringtun::device::{DeviceConfig, DeviceHandle};
use node_kernel::wireguard::{DeviceSettings, PeerChange, WgDevice};

use super::keys::Key;
use super::uapi;
use crate::log::{info, warning};

/// Where WireGuard's userspace implementations keep their control sockets (`wg` looks there).
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// Packet threads of one device. One: measured pod to pod (scripts/bench-wireguard.sh, 2
/// cores) 0.81 Gbit/s with one thread, 0.40 with two (its threads contend for the device's
/// lock and a flow's packets all come from one TUN queue), and four stalled the transfer.
const THREADS: usize = 1;

/// One userspace device.
pub struct Userspace {
    name: String,
    handle: Option<DeviceHandle>,
    control: Arc<Mutex<UnixStream>>,
    /// The private key set, for `wg show` (boringtun answers only the public key, from which
    /// `wg` can show nothing; wireguard-go answers the private key on its 0600 socket too).
    private: Arc<Mutex<Option<[u8; 32]>>>,
    relay: Option<Relay>,
}

impl fmt::Debug for Userspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Userspace")
            .field("name", &self.name)
            .field("running", &self.handle.is_some())
            .field("relay", &self.relay)
            .finish()
    }
}

fn locked(control: &Mutex<UnixStream>) -> io::Result<std::sync::MutexGuard<'_, UnixStream>> {
    control
        .lock()
        .map_err(|_| io::Error::other("the WireGuard control connection's lock is poisoned"))
}

impl Userspace {
    /// Creates the TUN device `name` and starts boringtun on it (no key, no peers yet).
    pub fn start(name: &str) -> io::Result<Userspace> {
        let (ours, theirs) = UnixStream::pair()?;
        // boringtun takes the descriptor over (it reads its API there and ends the device
        // when the agent's end closes).
        let config = DeviceConfig {
            n_threads: THREADS,
            use_connected_socket: true,
            use_multi_queue: false,
            uapi_fd: theirs.into_raw_fd(),
        };
        let handle = DeviceHandle::new(name, config).map_err(|e| {
            io::Error::other(format!(
                "starting userspace WireGuard on TUN device {name}: {e}"
            ))
        })?;
        ours.set_read_timeout(Some(Duration::from_secs(10)))?;
        let control = Arc::new(Mutex::new(ours));
        let private = Arc::new(Mutex::new(None));
        let device = Device {
            control: Arc::clone(&control),
            private: Arc::clone(&private),
        };
        let relay = match Relay::start(Path::new(SOCKET_DIR), name, device) {
            Ok(r) => {
                info!("serving `wg show {name}` at {}", r.path.display());
                Some(r)
            }
            Err(e) => {
                warning!("no control socket for `wg show {name}` in {SOCKET_DIR}: {e}");
                None
            }
        };
        Ok(Userspace {
            name: name.to_owned(),
            handle: Some(handle),
            control,
            private,
            relay,
        })
    }

    /// Applies settings (when any is set) and peer changes, one transaction each.
    pub fn configure(&self, settings: &DeviceSettings, peers: &[PeerChange]) -> io::Result<()> {
        let mut c = locked(&self.control)?;
        if *settings != DeviceSettings::default() {
            uapi::exchange(&mut *c, &uapi::settings_request(settings))?;
            if let (Some(k), Ok(mut p)) = (settings.private_key, self.private.lock()) {
                *p = Some(k);
            }
        }
        for change in peers {
            for request in uapi::peer_requests(change) {
                uapi::exchange(&mut *c, &request)?;
            }
        }
        Ok(())
    }

    /// The device's key, port and peers.
    pub fn read(&self) -> io::Result<WgDevice> {
        let lines = uapi::exchange(&mut *locked(&self.control)?, "get=1\n\n")?;
        uapi::parse_device(&lines)
    }

    /// Stops the relay (its socket file removed) and the device's threads.
    pub fn stop(&mut self) {
        if let Some(r) = self.relay.take() {
            r.stop();
        }
        // Dropping the handle tells boringtun's threads to exit; the TUN device goes when the
        // last of them lets go of it (at the latest with the process).
        self.handle = None;
    }
}

/// What the relay asks: the device's control connection and its private key.
#[derive(Debug, Clone)]
struct Device {
    control: Arc<Mutex<UnixStream>>,
    private: Arc<Mutex<Option<[u8; 32]>>>,
}

/// `/var/run/wireguard/<name>.sock`, answering `get` for `wg show`.
#[derive(Debug)]
struct Relay {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(dir: &Path, name: &str, device: Device) -> io::Result<Relay> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.sock"));
        // A socket left by an agent that was killed: nobody answers it any more.
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::Builder::new()
            .name(format!("wg-api-{name}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let _ = answer(conn, &device);
                    }
                }
            })?;
        Ok(Relay { path, stop })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the thread out of accept().
        let _ = UnixStream::connect(&self.path);
        let _ = fs::remove_file(&self.path);
    }
}

/// Answers one client: `get=1` from the device (its public key given as the private key, as
/// wireguard-go answers), anything else refused with EPERM.
fn answer(conn: UnixStream, device: &Device) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&conn);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\n" {
            break;
        }
    }
    let reply = if first == "get=1\n" {
        match locked(&device.control).and_then(|mut c| uapi::exchange(&mut *c, "get=1\n\n")) {
            Ok(lines) => {
                let private = device.private.lock().ok().and_then(|p| *p);
                let lines: Vec<String> = lines
                    .into_iter()
                    .filter_map(|l| match (l.starts_with("own_public_key="), private) {
                        (false, _) => Some(l),
                        (true, Some(k)) => Some(format!("private_key={}", Key(k).to_hex())),
                        (true, None) => None,
                    })
                    .collect();
                let mut r = lines.join("\n");
                if !r.is_empty() {
                    r.push('\n');
                }
                r + "errno=0\n\n"
            }
            Err(e) => format!("errno={}\n\n", e.raw_os_error().unwrap_or(nix::libc::EIO)),
        }
    } else {
        format!("errno={}\n\n", nix::libc::EPERM)
    };
    (&conn).write_all(reply.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake device end: answers every request with the scripted reply.
    fn device_end(reply: &'static str) -> Device {
        let (ours, theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut r = BufReader::new(&theirs);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\n" {
                    let _ = (&theirs).write_all(reply.as_bytes());
                }
            }
        });
        Device {
            control: Arc::new(Mutex::new(ours)),
            private: Arc::new(Mutex::new(Some([0x11; 32]))),
        }
    }

    fn ask(path: &Path, request: &str) -> String {
        let mut c = UnixStream::connect(path).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let mut r = BufReader::new(&c);
        while r.read_line(&mut out).unwrap() > 0 {
            if out.ends_with("\n\n") {
                break;
            }
        }
        out
    }

    #[test]
    fn the_relay_answers_get_refuses_set_and_removes_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let device = device_end("own_public_key=ab\nlisten_port=51820\nerrno=0\n\n");
        let relay = Relay::start(dir.path(), "flannel-wg", device).unwrap();
        let path = dir.path().join("flannel-wg.sock");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            ask(&path, "get=1\n\n"),
            format!(
                "private_key={}\nlisten_port=51820\nerrno=0\n\n",
                Key([0x11; 32]).to_hex()
            )
        );
        assert_eq!(ask(&path, "set=1\nlisten_port=1\n\n"), "errno=1\n\n");
        relay.stop();
        assert!(!path.exists());
    }

    #[test]
    fn a_socket_left_by_a_killed_agent_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flannel-wg.sock");
        drop(UnixListener::bind(&path).unwrap());
        let relay = Relay::start(dir.path(), "flannel-wg", device_end("errno=0\n\n")).unwrap();
        assert_eq!(ask(&path, "get=1\n\n"), "errno=0\n\n");
        relay.stop();
    }
}

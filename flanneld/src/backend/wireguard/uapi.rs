//! WireGuard's cross-platform userspace API (the text protocol `wg(8)` speaks to
//! wireguard-go's and boringtun's control sockets): `set=1` with `key=value` lines, `get=1`
//! answered with the device's lines, each ended by an empty line and `errno=N`.
//!
//! Written for boringtun's reading of it: a `public_key` section naming a peer the device
//! has already must remove it first (boringtun cannot change a peer in place), and a
//! transaction's later peer sections inherit the earlier ones' values, so each peer change
//! is a transaction of its own.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;
use node_kernel::wireguard::{DeviceSettings, PeerChange, WgDevice, WgPeer};

use super::keys::Key;

/// The lines of one `set=1` transaction of the device's settings.
pub fn settings_request(settings: &DeviceSettings) -> String {
    let mut r = String::from("set=1\n");
    if let Some(k) = settings.private_key {
        r.push_str(&format!("private_key={}\n", Key(k).to_hex()));
    }
    if let Some(p) = settings.listen_port {
        r.push_str(&format!("listen_port={p}\n"));
    }
    if settings.replace_peers {
        r.push_str("replace_peers=true\n");
    }
    r.push('\n');
    r
}

/// The transactions of one peer change: a removal, or a removal then the peer anew.
pub fn peer_requests(change: &PeerChange) -> Vec<String> {
    let (key, peer) = match change {
        PeerChange::Remove(k) => (k, None),
        PeerChange::Set(p) => (&p.public_key, Some(p)),
    };
    let remove = format!("set=1\npublic_key={}\nremove=true\n\n", Key(*key).to_hex());
    let Some(p) = peer else {
        return vec![remove];
    };
    let mut add = format!("set=1\npublic_key={}\n", Key(p.public_key).to_hex());
    if let Some(psk) = p.preshared_key {
        add.push_str(&format!("preshared_key={}\n", Key(psk).to_hex()));
    }
    if p.keepalive != 0 {
        add.push_str(&format!("persistent_keepalive_interval={}\n", p.keepalive));
    }
    if let Some(e) = p.endpoint {
        add.push_str(&format!("endpoint={e}\n"));
    }
    add.push_str("replace_allowed_ips=true\n");
    for ip in &p.allowed_ips {
        add.push_str(&format!("allowed_ip={}/{}\n", ip.network(), ip.prefix()));
    }
    add.push('\n');
    vec![remove, add]
}

/// Sends one transaction and reads its answer: the lines before `errno=`, or the errno as
/// an error.
pub fn exchange<S: io::Read + Write>(stream: &mut S, request: &str) -> io::Result<Vec<String>> {
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the WireGuard device closed its control connection",
            ));
        }
        let line = line.trim_end_matches('\n');
        if let Some(code) = line.strip_prefix("errno=") {
            // The empty line that ends the answer.
            let mut end = String::new();
            reader.read_line(&mut end)?;
            let code: i32 = code.parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad answer {line:?}"))
            })?;
            return if code == 0 {
                Ok(lines)
            } else {
                Err(io::Error::from_raw_os_error(code))
            };
        }
        lines.push(line.to_owned());
    }
}

/// Reads `get=1`'s answer into a device.
pub fn parse_device(lines: &[String]) -> io::Result<WgDevice> {
    let bad = |l: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad line {l:?}"));
    let mut dev = WgDevice::default();
    let mut handshake_sec = None;
    for line in lines {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let key = || Key::from_hex(v).map(|k| k.0).ok_or_else(|| bad(line));
        match k {
            "private_key" => dev.public_key = Some(Key(key()?).public().0),
            "own_public_key" => dev.public_key = Some(key()?),
            "listen_port" => dev.listen_port = v.parse().map_err(|_| bad(line))?,
            "public_key" => dev.peers.push(WgPeer::new(key()?, None, Vec::new())),
            _ => {
                let Some(peer) = dev.peers.last_mut() else {
                    continue;
                };
                match k {
                    "preshared_key" => {
                        let k = key()?;
                        peer.preshared_key = (k != [0; 32]).then_some(k);
                    }
                    "endpoint" => {
                        peer.endpoint = Some(v.parse::<SocketAddr>().map_err(|_| bad(line))?)
                    }
                    "persistent_keepalive_interval" => {
                        peer.keepalive = v.parse().map_err(|_| bad(line))?
                    }
                    "allowed_ip" => peer
                        .allowed_ips
                        .push(v.parse::<IpNetwork>().map_err(|_| bad(line))?),
                    "last_handshake_time_sec" => handshake_sec = v.parse::<u64>().ok(),
                    "last_handshake_time_nsec" => {
                        let nsec = v.parse::<u32>().unwrap_or(0);
                        let since = Duration::new(handshake_sec.take().unwrap_or(0), nsec);
                        peer.last_handshake = (!since.is_zero()).then_some(since);
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [u8; 32] = [0x11; 32];

    fn peer() -> WgPeer {
        WgPeer {
            keepalive: 25,
            preshared_key: Some([0x22; 32]),
            ..WgPeer::new(
                K,
                Some("192.168.50.12:51820".parse().unwrap()),
                vec!["10.10.16.0/20".parse().unwrap()],
            )
        }
    }

    #[test]
    fn a_peer_is_removed_then_set_in_transactions_of_their_own() {
        let r = peer_requests(&PeerChange::Set(peer()));
        let hex = Key(K).to_hex();
        assert_eq!(r[0], format!("set=1\npublic_key={hex}\nremove=true\n\n"));
        assert_eq!(
            r[1],
            format!(
                "set=1\npublic_key={hex}\npreshared_key={}\npersistent_keepalive_interval=25\nendpoint=192.168.50.12:51820\nreplace_allowed_ips=true\nallowed_ip=10.10.16.0/20\n\n",
                Key([0x22; 32]).to_hex()
            )
        );
        assert_eq!(peer_requests(&PeerChange::Remove(K)), vec![r[0].clone()]);
    }

    #[test]
    fn settings_are_one_transaction() {
        let s = DeviceSettings {
            private_key: Some(K),
            listen_port: Some(51820),
            replace_peers: true,
        };
        assert_eq!(
            settings_request(&s),
            format!(
                "set=1\nprivate_key={}\nlisten_port=51820\nreplace_peers=true\n\n",
                Key(K).to_hex()
            )
        );
    }

    #[test]
    fn an_answer_is_read_to_its_errno() {
        let mut io = std::io::Cursor::new(Vec::new());
        // A stream whose "reply" is what was written before: the cursor reads from 0.
        io.get_mut().extend(b"listen_port=51820\nerrno=0\n\n");
        let lines = exchange(&mut Duplex(io), "get=1\n\n").unwrap();
        assert_eq!(lines, ["listen_port=51820"]);
        let refused = std::io::Cursor::new(b"errno=22\n\n".to_vec());
        let e = exchange(&mut Duplex(refused), "set=1\n\n").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(22));
    }

    #[test]
    fn get_answers_of_boringtun_and_wireguard_go_are_read() {
        let hex = Key(K).to_hex();
        let lines: Vec<String> = [
            format!("private_key={}", Key([0x33; 32]).to_hex()),
            "listen_port=51820".into(),
            format!("public_key={hex}"),
            format!("preshared_key={}", Key([0x22; 32]).to_hex()),
            "endpoint=192.168.50.12:51820".into(),
            "persistent_keepalive_interval=25".into(),
            "allowed_ip=10.10.16.0/20".into(),
            "last_handshake_time_sec=1700000000".into(),
            "last_handshake_time_nsec=5".into(),
            "rx_bytes=10".into(),
            format!("public_key={}", Key([0x44; 32]).to_hex()),
            "last_handshake_time_sec=0".into(),
            "last_handshake_time_nsec=0".into(),
        ]
        .into();
        let dev = parse_device(&lines).unwrap();
        assert_eq!(dev.public_key, Some(Key([0x33; 32]).public().0));
        assert_eq!(dev.listen_port, 51820);
        assert!(peer().is_met_by(&dev.peers[0]));
        assert_eq!(
            dev.peers[0].last_handshake,
            Some(Duration::new(1_700_000_000, 5))
        );
        assert_eq!(dev.peers[1].last_handshake, None);
        let own = parse_device(&[format!("own_public_key={hex}")]).unwrap();
        assert_eq!(own.public_key, Some(K));
        assert!(
            parse_device(&[
                "endpoint=x".into(),
                format!("public_key={hex}"),
                "endpoint=x".into()
            ])
            .is_err()
        );
    }

    /// Reads from the cursor, swallows writes.
    struct Duplex(std::io::Cursor<Vec<u8>>);
    impl io::Read for Duplex {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Write for Duplex {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}

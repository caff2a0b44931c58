//! The node's WireGuard key pair: the private key kept in a file (`/run/flannel/wgkey`, or
//! `WIREGUARD_KEY_FILE`) in Go's format, base64 of 32 bytes, so a restarted agent (ours or
//! Go's) publishes the same public key and its peers need not change; the public key derived
//! with X25519. Keys are never logged: [`Key`]'s `Debug` hides them.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Go's default key file.
pub const DEFAULT_KEY_FILE: &str = "/run/flannel/wgkey";

/// A 32-byte WireGuard key (private, public or preshared).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub [u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    /// Decodes Go's (and `wg`'s) text form: standard base64 of 32 bytes; surrounding
    /// whitespace is ignored (a key file written by hand ends with a newline).
    pub fn parse(text: &str) -> Result<Key, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Key)
            .map_err(|_| format!("{} bytes, a key has 32", bytes.len()))
    }

    /// The base64 text form (what leases and `wg` show for public keys).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The UAPI's text form: lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Decodes the UAPI's hex form.
    pub fn from_hex(text: &str) -> Option<Key> {
        if text.len() != 64 {
            return None;
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Key(k))
    }

    /// The public key of this private key.
    pub fn public(&self) -> Key {
        let secret = boringtun::x25519::StaticSecret::from(self.0);
        Key(boringtun::x25519::PublicKey::from(&secret).to_bytes())
    }
}

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading, creating or writing the file failed.
    #[error("WireGuard key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The file holds no key (the content is not shown: it is a secret).
    #[error(
        "WireGuard key file {path}: {why}; remove it to have a new key made (peers then learn the new public key from the lease)"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// The private key in `path`, or a new one written there (mode 0600 from its creation,
/// written whole under a temporary name then renamed, so a crash never leaves half a key). A file readable by
/// others is tightened to 0600.
pub fn load_or_create(path: &Path) -> Result<Key, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::File::open(path) {
        Ok(mut f) => {
            let mut text = String::new();
            f.read_to_string(&mut text).map_err(io_err)?;
            let mode = f.metadata().map_err(io_err)?.permissions().mode();
            if mode & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
            }
            Key::parse(&text).map_err(|why| KeyError::Invalid {
                path: path.to_owned(),
                why,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = generate().map_err(io_err)?;
            write_new(path, &key).map_err(io_err)?;
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// A new private key from the kernel's random source.
fn generate() -> io::Result<Key> {
    let mut k = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut k)?;
    // X25519's clamping, as `wg genkey` writes its keys.
    k[0] &= 248;
    k[31] = (k[31] & 127) | 64;
    Ok(Key(k))
}

fn write_new(path: &Path, key: &Key) -> io::Result<()> {
    crate::files::write_atomic(path, key.to_base64().as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_key_is_kept_0600_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flannel/wgkey");
        let k = load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&path).unwrap(), k);
        assert_eq!(fs::read_to_string(&path).unwrap(), k.to_base64());
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn gos_key_file_with_a_newline_is_read_and_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wgkey");
        // A key pair checked with `wg pubkey` (wireguard-tools 1.0.20210914).
        fs::write(&path, "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let k = load_or_create(&path).unwrap();
        assert_eq!(
            k.public().to_base64(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_broken_key_file_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wgkey");
        fs::write(&path, "c2VjcmV0").unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("6 bytes, a key has 32"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert_eq!(format!("{:?}", Key([1; 32])), "Key(…)");
    }

    #[test]
    fn hex_round_trips() {
        let k = Key([0xab; 32]);
        assert_eq!(Key::from_hex(&k.to_hex()), Some(k));
        assert_eq!(Key::from_hex("ab"), None);
    }
}

//! Test certificates made with openssl: a self-signed CA and the certificates it issues
//! (etcd's mutual TLS, the apiserver's serving certificate, clients' kubeconfigs). RSA 2048,
//! valid two days: they live as long as a test's temp dir.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl args…` in `dir`; a failure aborts the test with openssl's stderr.
pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA: its certificate and private key.
#[derive(Debug, Clone)]
pub struct Ca {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// A certificate the CA issued: the certificate and its private key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

fn text(p: &Path) -> String {
    p.display().to_string()
}

impl Ca {
    /// Makes a self-signed CA with common name `cn` as `<dir>/<cert_name>` and
    /// `<dir>/ca.key`.
    pub fn make(dir: &Path, cert_name: &str, cn: &str) -> Ca {
        fs::create_dir_all(dir).unwrap();
        let ca = Ca {
            cert: dir.join(cert_name),
            key: dir.join("ca.key"),
        };
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &text(&ca.key),
                "-out",
                &text(&ca.cert),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        ca
    }

    /// Issues `<dir>/<stem>.<suffix>` with key `<dir>/<stem>.key` for `subject`
    /// (`/CN=…/O=…`), with the openssl extensions `ext` (written to `<dir>/<stem>.ext`: the
    /// subjectAltName, the key usages).
    pub fn issue(&self, dir: &Path, stem: &str, suffix: &str, subject: &str, ext: &str) -> Issued {
        let file = |s: &str| dir.join(format!("{stem}.{s}"));
        let (key, csr, ext_file) = (file("key"), file("csr"), file("ext"));
        let issued = Issued {
            cert: file(suffix),
            key,
        };
        fs::write(&ext_file, ext).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &text(&issued.key),
                "-out",
                &text(&csr),
                "-subj",
                subject,
            ],
        );
        // One serial file next to the CA, made by its first certificate.
        let serial = self.cert.with_extension("srl");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &text(&csr),
                "-CA",
                &text(&self.cert),
                "-CAkey",
                &text(&self.key),
                "-CAserial",
                &text(&serial),
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &text(&issued.cert),
                "-extfile",
                &text(&ext_file),
            ],
        );
        issued
    }
}

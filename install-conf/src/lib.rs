//! `install-conf`: what a flannel DaemonSet's init containers run to put the CNI plugins and
//! the conflist on the node, from an image with no shell and no `cp`.
//!
//! - `install-conf SRC DEST`: Go flanneld's `install-conf` (kube-flannel.yml's `install-cni`
//!   init container runs it as `install-conf /etc/kube-flannel/cni-conf.json
//!   /etc/cni/net.d/10-flannel.conflist`): `SRC` becomes the file `DEST`.
//! - `install-conf SRC... DIR` (the destination ends in `/`, is an existing directory, or
//!   there are more than two arguments): each `SRC` goes into the directory `DIR` under its
//!   own name (the plugins into `/opt/cni/bin`), as `cp` does.
//!
//! Each file is written to a new temp file of its own (`.<name>.<pid>.<n>.tmp`, created
//! exclusively: two installs at once, or a link planted at that name, cannot make one
//! write through another) in the destination's directory, synced, given the
//! source's permission bits and renamed over the destination, and the directory is synced: a
//! runtime executing or reading the old file is not disturbed, and a reader never sees part
//! of one (as `install.sh` installs, and as Go's `CopyFileAtomic`). A destination that already
//! holds the same bytes and mode is left alone. Exit 0 when everything is in place, 1 on the
//! first failure (what failed, with the path and the OS error), 2 for a wrong command line.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a file could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The source could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The source.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The destination could not be written, synced or renamed into place.
    #[error("{what} {path}: {source}")]
    Write {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A destination with nothing to name the file by.
    #[error("{0}: not a file name")]
    NoName(PathBuf),
}

/// What happened to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written (new or changed).
    Installed,
    /// It held the same bytes and mode already.
    Unchanged,
}

fn write_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::Write {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Installs `src` as the file `dest`, atomically.
pub fn install(src: &Path, dest: &Path) -> Result<Outcome, InstallError> {
    let read = |source| InstallError::Read {
        path: src.to_owned(),
        source,
    };
    let bytes = fs::read(src).map_err(read)?;
    let mode = fs::metadata(src).map_err(read)?.permissions().mode() & 0o7777;
    if let Ok(old) = fs::metadata(dest)
        && old.is_file()
        && old.permissions().mode() & 0o7777 == mode
        && fs::read(dest).is_ok_and(|b| b == bytes)
    {
        return Ok(Outcome::Unchanged);
    }
    let name = dest
        .file_name()
        .ok_or_else(|| InstallError::NoName(dest.to_owned()))?;
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut f;
    let mut attempt = 0u32;
    let tmp = loop {
        let tmp = dir.join(format!(
            ".{}.{}.{attempt}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => {
                f = file;
                break tmp;
            }
            // Left by a killed run of the same PID (a container's PID 1), or taken.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(write_err("creating", &tmp)(e)),
        }
    };
    let written = (|| {
        f.write_all(&bytes).map_err(write_err("writing", &tmp))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(write_err("setting the mode of", &tmp))?;
        f.sync_all().map_err(write_err("syncing", &tmp))?;
        fs::rename(&tmp, dest).map_err(write_err("renaming into place", dest))
    })();
    if written.is_err() {
        // Nothing half-written is left next to the destination.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err("syncing the directory", dir))?;
    Ok(Outcome::Installed)
}

/// The (source, destination) pairs a command line asks for; `None` for a wrong one.
pub fn plan(args: &[OsString]) -> Option<Vec<(PathBuf, PathBuf)>> {
    let (last, srcs) = args.split_last()?;
    if srcs.is_empty() {
        return None;
    }
    let into_dir =
        srcs.len() > 1 || last.to_string_lossy().ends_with('/') || Path::new(last).is_dir();
    srcs.iter()
        .map(|s| {
            let src = PathBuf::from(s);
            let dest = if into_dir {
                Path::new(last).join(src.file_name()?)
            } else {
                PathBuf::from(last)
            };
            Some((src, dest))
        })
        .collect()
}

/// The program: installs what `args` (without the program name) ask for, says what it did
/// on stdout and what failed on stderr; the exit code.
pub fn main_with(args: &[OsString]) -> i32 {
    let Some(plan) = plan(args) else {
        eprintln!("usage: install-conf SRC DEST\n       install-conf SRC... DIR");
        return 2;
    };
    for (src, dest) in plan {
        match install(&src, &dest) {
            Ok(Outcome::Installed) => println!("installed {}", dest.display()),
            Ok(Outcome::Unchanged) => println!("unchanged {}", dest.display()),
            Err(e) => {
                eprintln!("error installing {}: {e}", src.display());
                return 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            plan(&os(&[
                "/etc/kube-flannel/cni-conf.json",
                "/etc/cni/net.d/10-flannel.conflist"
            ])),
            Some(vec![(
                "/etc/kube-flannel/cni-conf.json".into(),
                "/etc/cni/net.d/10-flannel.conflist".into()
            )])
        );
        assert_eq!(
            plan(&os(&["/flannel", "/bridge", "/opt/cni/bin"])),
            Some(vec![
                ("/flannel".into(), "/opt/cni/bin/flannel".into()),
                ("/bridge".into(), "/opt/cni/bin/bridge".into())
            ])
        );
        assert_eq!(
            plan(&os(&["/flannel", "/opt/cni/bin/"])),
            Some(vec![("/flannel".into(), "/opt/cni/bin/flannel".into())])
        );
        // Before: an existing directory without a trailing `/` was taken as the file to
        // replace, and the rename failed.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_str().unwrap();
        assert_eq!(
            plan(&os(&["/flannel", dir])),
            Some(vec![("/flannel".into(), d.path().join("flannel"))])
        );
        assert_eq!(plan(&os(&["/flannel"])), None);
        assert_eq!(plan(&os(&[])), None);
        assert_eq!(main_with(&os(&["only-one"])), 2);
    }

    #[test]
    fn installs_atomically_with_the_mode_and_leaves_the_same_file_alone() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("flannel");
        fs::write(&src, b"plugin v1").unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
        let bin = d.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let dest = bin.join("flannel");
        assert_eq!(install(&src, &dest).unwrap(), Outcome::Installed);
        assert_eq!(fs::read(&dest).unwrap(), b"plugin v1");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&dest).unwrap());
        assert_eq!(install(&src, &dest).unwrap(), Outcome::Unchanged);
        // An executing reader keeps the old file: the new one is another inode.
        fs::write(&src, b"plugin v2").unwrap();
        assert_eq!(install(&src, &dest).unwrap(), Outcome::Installed);
        assert_ne!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&dest).unwrap()),
            inode
        );
        assert_eq!(fs::read(&dest).unwrap(), b"plugin v2");
        // Before: the temp name was fixed and opened with O_TRUNC, following a link planted
        // there. Now a name taken is passed over, and what it points to is not touched.
        let victim = d.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let planted = bin.join(format!(".flannel.{}.0.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        fs::write(&src, b"plugin v3").unwrap();
        assert_eq!(install(&src, &dest).unwrap(), Outcome::Installed);
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&dest).unwrap(), b"plugin v3");
        fs::remove_file(&planted).unwrap();
        // No temp file left.
        let names: Vec<_> = fs::read_dir(&bin)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["flannel"]);
    }

    #[test]
    fn failures_name_the_path_and_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let e = install(&d.path().join("missing"), &d.path().join("x")).unwrap_err();
        assert!(
            e.to_string().starts_with("reading ") && e.to_string().contains("missing"),
            "{e}"
        );
        let src = d.path().join("conf");
        fs::write(&src, "{}").unwrap();
        let e = install(&src, &d.path().join("no-such-dir/10-flannel.conflist")).unwrap_err();
        assert!(
            e.to_string().contains("creating") && e.to_string().contains("no-such-dir"),
            "{e}"
        );
        assert_eq!(
            main_with(&os(&[src.to_str().unwrap(), "/nonexistent-dir-of-cni-rs/"])),
            1
        );
    }
}

//! Network namespaces pinned by a bind mount on a file in a temporary directory, as runtimes
//! pin theirs under /var/run/netns, but private to one test.

// setns() between fork and exec is the one thing here that needs unsafe: std offers no
// other way to start a child in another network namespace without a helper binary.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

#[derive(Debug)]
pub struct TestNetns {
    path: PathBuf,
    mounted: bool,
}

impl TestNetns {
    /// Creates a new, empty network namespace pinned at `path` (which must not exist).
    pub fn create(path: &Path) -> TestNetns {
        crate::reaper::gate();
        File::create(path).unwrap();
        let target = path.to_owned();
        // unshare() switches only the calling thread, so a throwaway thread does it and the
        // bind mount keeps the namespace alive after the thread exits.
        std::thread::spawn(move || -> nix::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot create network namespace {}: {e}", path.display()));
        TestNetns {
            path: path.to_owned(),
            mounted: true,
        }
    }

    /// A namespace that exists already (e.g. `/proc/PID/ns/net` of a runtime's sandbox), used
    /// as it is: dropping the value leaves it alone.
    pub fn existing(path: &Path) -> TestNetns {
        TestNetns {
            path: path.to_owned(),
            mounted: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    /// Deletes the namespace as a runtime does after the pod is gone; the path then no
    /// longer exists.
    pub fn delete(&mut self) {
        if self.mounted {
            let _ = umount2(&self.path, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&self.path);
            self.mounted = false;
        }
    }

    /// A command that will run inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        crate::reaper::gate();
        let fd: OwnedFd = File::open(&self.path)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path.display()))
            .into();
        let mut cmd = Command::new(program);
        // SAFETY: setns is a single async-signal-safe system call; the closure allocates
        // nothing and only borrows an fd it owns.
        unsafe {
            cmd.pre_exec(move || {
                setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// Runs a command inside the namespace and returns its output (for `ip`, `ping`, ...).
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    /// Runs a command inside the namespace and returns its stdout; panics if it fails.
    pub fn sh(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        self.delete();
    }
}

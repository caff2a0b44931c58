//! The floor of the side-by-side benchmark: the kernel work of a chain ADD done by `ip
//! -batch`, one run for the host side (veth pair with its peer created in the pod's
//! namespace, bridge port, up) and one inside the pod (address, link up, default route);
//! deletion is one `ip link del`. No chain of separate processes can do the same work faster.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::Bench;
use super::stats::Samples;

type Result<T> = std::result::Result<T, String>;

fn ip(args: &[&str]) -> Result<()> {
    let st = Command::new("ip")
        .args(args)
        .status()
        .map_err(|e| format!("ip: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("ip {} failed ({st})", args.join(" ")))
    }
}

/// A name under /run/netns for a pinned namespace (`ip -n` takes only names), removed on drop.
struct NetnsName(std::path::PathBuf);

impl Drop for NetnsName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Does the kernel work of a chain ADD and DEL for `pods` pods with `ip` and returns how long
/// each took, in microseconds: the ADD's two `ip -batch` runs, and the DEL's `ip link del`.
pub fn measure(b: &Bench, pods: u32) -> Result<(Samples, Samples)> {
    ip(&["link", "add", "floorbr", "type", "bridge"])?;
    ip(&["addr", "add", "10.13.0.1/16", "dev", "floorbr"])?;
    ip(&["link", "set", "floorbr", "up"])?;
    std::fs::create_dir_all("/run/netns").map_err(|e| format!("/run/netns: {e}"))?;
    // Named after the work directory, so that the script's cleanup finds leftovers.
    let prefix = b
        .work
        .file_name()
        .map_or("cni-rs-bench".into(), |n| n.to_string_lossy().into_owned());
    let (host_batch, pod_batch) = (
        b.work.join("floor-host.batch"),
        b.work.join("floor-pod.batch"),
    );
    let (mut add, mut del) = (Samples::new(), Samples::new());
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let elapsed = |t: Instant| u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
    for i in 0..pods {
        let id = format!("f-{i}");
        let _ns = b.netns(&id);
        let name = format!("{prefix}-{i}");
        let link = NetnsName(Path::new("/run/netns").join(&name));
        std::os::unix::fs::symlink(b.netns_path(&id), &link.0)
            .map_err(|e| format!("{}: {e}", link.0.display()))?;
        let host = format!("vf{i:08x}");
        let netns = b.netns_path(&id);
        write(
            &host_batch,
            format!(
                "link add {host} type veth peer name eth0 netns {netns}\nlink set {host} master floorbr\nlink set {host} up\n"
            ),
        )?;
        write(
            &pod_batch,
            format!(
                "addr add 10.13.1.{}/16 dev eth0\nlink set eth0 up\nroute add default via 10.13.0.1\n",
                i % 250 + 2
            ),
        )?;
        let host_batch = host_batch.display().to_string();
        let pod_batch = pod_batch.display().to_string();
        let t = Instant::now();
        ip(&["-batch", &host_batch])?;
        ip(&["-n", &name, "-batch", &pod_batch])?;
        add.push(elapsed(t));
        let t = Instant::now();
        ip(&["link", "del", &host])?;
        del.push(elapsed(t));
    }
    Ok((add, del))
}

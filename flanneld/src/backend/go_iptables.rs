//! Go flanneld's iptables-mode rules, removed at start. Go writes its masquerade rules to
//! the nat chain `FLANNEL-POSTRTG` (jumped to from `POSTROUTING`) and its forward rules to
//! the filter chain `FLANNEL-FWD` (from `FORWARD`), through whichever iptables its image or
//! host has, nft-based or legacy. A node moved from Go to this agent would otherwise run two
//! masquerade rule sets: Go's, which nothing updates any more, and ours in nftables. Go
//! itself (≥ 0.27) deletes the other mode's objects at start in the same way.
//!
//! iptables' own tools do the work (`iptables-nft`, `iptables-legacy` and their `ip6tables`
//! twins, each when installed): the legacy backend has no netlink interface, and the
//! nft-based one stores its rules in compat expressions only its tool decodes. Nothing is
//! written to iptables, and a node without the tools had no Go rules written through them.

use std::process::Command;

use crate::log::{detail, info, warning};

/// The chains Go's iptables mode writes: (table, the built-in chain that jumps to it, chain).
pub const GO_CHAINS: [(&str, &str, &str); 2] = [
    ("nat", "POSTROUTING", "FLANNEL-POSTRTG"),
    ("filter", "FORWARD", "FLANNEL-FWD"),
];

/// The iptables variants that may hold Go's rules.
pub const TOOLS: [&str; 4] = [
    "iptables-nft",
    "iptables-legacy",
    "ip6tables-nft",
    "ip6tables-legacy",
];

/// Runs iptables' tools.
pub trait Iptables {
    /// The [`TOOLS`] installed.
    fn tools(&self) -> Vec<String>;
    /// Runs `tool args`: its standard output, or why it failed (its standard error).
    fn run(&mut self, tool: &str, args: &[&str]) -> Result<String, String>;
}

/// The tools found on `PATH`.
#[derive(Debug, Clone, Default)]
pub struct Binaries {
    found: Vec<String>,
}

impl Binaries {
    /// The [`TOOLS`] found in the directories of `PATH` (and the sbin directories, which
    /// a service's `PATH` may lack).
    pub fn from_path() -> Binaries {
        let path = std::env::var("PATH").unwrap_or_default();
        let dirs: Vec<&str> = path
            .split(':')
            .chain(["/usr/sbin", "/sbin"])
            .filter(|d| !d.is_empty())
            .collect();
        let found = TOOLS
            .iter()
            .filter_map(|t| {
                dirs.iter()
                    .map(|d| std::path::Path::new(d).join(t))
                    .find(|p| p.is_file())
                    .map(|p| p.to_string_lossy().into_owned())
            })
            .collect();
        Binaries { found }
    }
}

impl Iptables for Binaries {
    fn tools(&self) -> Vec<String> {
        self.found.clone()
    }

    fn run(&mut self, tool: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(tool)
            .args(args)
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

/// The rule numbers in `listing` (`-L <chain> -n --line-numbers`) whose target is
/// `target`, highest first (deleting a rule renumbers the ones after it).
pub fn jumps_to(listing: &str, target: &str) -> Vec<u32> {
    let mut numbers: Vec<u32> = listing
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let n = cols.next()?.parse().ok()?;
            (cols.next()? == target).then_some(n)
        })
        .collect();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    numbers
}

/// Removes Go's chains and the jumps to them from every installed variant; returns what
/// was removed, each also logged. A failure is logged and the rest is still tried.
pub fn remove_go_chains(ipt: &mut dyn Iptables) -> Vec<String> {
    let mut removed = Vec::new();
    for tool in ipt.tools() {
        let name = tool.rsplit('/').next().unwrap_or(&tool).to_owned();
        for (table, parent, chain) in GO_CHAINS {
            let lock = ["-w", "5", "-t", table];
            let listing = match ipt.run(
                &tool,
                &[&lock[..], &["-L", parent, "-n", "--line-numbers"]].concat(),
            ) {
                Ok(l) => l,
                Err(e) => {
                    // Go logs this at V(2): a kernel without this table has no Go rules.
                    detail!(2, "{name}: listing {table} {parent}: {e}");
                    continue;
                }
            };
            for n in jumps_to(&listing, chain) {
                let n = n.to_string();
                match ipt.run(&tool, &[&lock[..], &["-D", parent, &n]].concat()) {
                    Ok(_) => {
                        removed.push(format!("{name}: {table} {parent} rule {n} (-j {chain})"))
                    }
                    Err(e) => warning!(
                        "{name}: deleting the jump to Go's {chain} from {table} {parent}: {e}"
                    ),
                }
            }
            if ipt
                .run(&tool, &[&lock[..], &["-S", chain]].concat())
                .is_err()
            {
                continue; // no such chain
            }
            let flushed = ipt.run(&tool, &[&lock[..], &["-F", chain]].concat());
            match flushed.and_then(|_| ipt.run(&tool, &[&lock[..], &["-X", chain]].concat())) {
                Ok(_) => removed.push(format!("{name}: {table} chain {chain}")),
                Err(e) => warning!("{name}: deleting Go's chain {table} {chain}: {e}"),
            }
        }
    }
    if !removed.is_empty() {
        info!(
            "removed Go flanneld's iptables rules (ours are in nftables; two masquerade rule sets must not run): {}",
            removed.join("; ")
        );
    }
    removed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// iptables in memory: per (tool, table), chains holding their rules' targets.
    #[derive(Debug, Default)]
    pub(crate) struct FakeIptables {
        pub tools: Vec<String>,
        pub chains: BTreeMap<(String, String), BTreeMap<String, Vec<String>>>,
        pub calls: Vec<String>,
    }

    impl FakeIptables {
        /// Go's rules, as its iptables mode writes them, in `tool`.
        pub(crate) fn with_go_rules(mut self, tool: &str) -> FakeIptables {
            self.tools.push(tool.to_owned());
            let mut nat = BTreeMap::new();
            nat.insert(
                "POSTROUTING".to_owned(),
                vec!["KUBE-POSTROUTING".to_owned(), "FLANNEL-POSTRTG".to_owned()],
            );
            nat.insert(
                "FLANNEL-POSTRTG".to_owned(),
                vec!["RETURN".into(), "RETURN".into(), "MASQUERADE".into()],
            );
            let mut filter = BTreeMap::new();
            filter.insert(
                "FORWARD".to_owned(),
                vec![
                    "FLANNEL-FWD".to_owned(),
                    "ACCEPT".to_owned(),
                    "FLANNEL-FWD".to_owned(),
                ],
            );
            filter.insert(
                "FLANNEL-FWD".to_owned(),
                vec!["ACCEPT".into(), "ACCEPT".into()],
            );
            self.chains.insert((tool.into(), "nat".into()), nat);
            self.chains.insert((tool.into(), "filter".into()), filter);
            self
        }
    }

    impl Iptables for FakeIptables {
        fn tools(&self) -> Vec<String> {
            self.tools.clone()
        }

        fn run(&mut self, tool: &str, args: &[&str]) -> Result<String, String> {
            self.calls.push(format!("{tool} {}", args.join(" ")));
            let table = args[3];
            let chains = self
                .chains
                .get_mut(&(tool.to_owned(), table.to_owned()))
                .ok_or("can't initialize iptables table")?;
            let missing = || "No chain/target/match by that name.".to_owned();
            match &args[4..] {
                ["-L", c, "-n", "--line-numbers"] => {
                    let rules = chains.get(*c).ok_or_else(missing)?;
                    let mut out = format!(
                        "Chain {c} (policy ACCEPT)\nnum  target  prot opt source destination\n"
                    );
                    for (i, t) in rules.iter().enumerate() {
                        out += &format!("{}    {t}  all  --  0.0.0.0/0  0.0.0.0/0\n", i + 1);
                    }
                    Ok(out)
                }
                ["-D", c, n] => {
                    let rules = chains.get_mut(*c).ok_or_else(missing)?;
                    let i: usize = n.parse().map_err(|_| "bad number".to_owned())?;
                    rules.remove(i - 1);
                    Ok(String::new())
                }
                ["-S", c] => chains
                    .get(*c)
                    .map(|_| format!("-N {c}\n"))
                    .ok_or_else(missing),
                ["-F", c] => chains
                    .get_mut(*c)
                    .map(|r| r.clear())
                    .map(|_| String::new())
                    .ok_or_else(missing),
                ["-X", c] => {
                    let referenced = chains.values().flatten().any(|t| t == c);
                    if referenced {
                        return Err("Too many links.".into());
                    }
                    chains.remove(*c).map(|_| String::new()).ok_or_else(missing)
                }
                other => Err(format!("unexpected {other:?}")),
            }
        }
    }

    #[test]
    fn go_chains_and_jumps_go_from_every_variant_other_rules_stay() {
        let mut ipt = FakeIptables::default()
            .with_go_rules("iptables-nft")
            .with_go_rules("iptables-legacy");
        let removed = remove_go_chains(&mut ipt);
        assert_eq!(removed.len(), 2 * (1 + 1 + 2 + 1), "{removed:?}");
        for tool in ["iptables-nft", "iptables-legacy"] {
            let nat = &ipt.chains[&(tool.to_owned(), "nat".to_owned())];
            assert_eq!(nat.keys().collect::<Vec<_>>(), ["POSTROUTING"]);
            assert_eq!(
                nat["POSTROUTING"],
                ["KUBE-POSTROUTING"],
                "kube-proxy's jump stays"
            );
            let filter = &ipt.chains[&(tool.to_owned(), "filter".to_owned())];
            assert_eq!(filter.keys().collect::<Vec<_>>(), ["FORWARD"]);
            assert_eq!(filter["FORWARD"], ["ACCEPT"]);
        }
        // Again: nothing left to remove, nothing fails.
        assert!(remove_go_chains(&mut ipt).is_empty());
    }

    #[test]
    fn a_variant_without_the_table_or_without_tools_is_skipped() {
        let mut ipt = FakeIptables {
            tools: vec!["ip6tables-legacy".into()],
            ..FakeIptables::default()
        };
        assert!(remove_go_chains(&mut ipt).is_empty());
        assert!(remove_go_chains(&mut FakeIptables::default()).is_empty());
    }

    #[test]
    fn jump_numbers_highest_first() {
        let listing = "Chain FORWARD (policy ACCEPT)\nnum  target     prot opt source destination\n1    FLANNEL-FWD  all  --  0.0.0.0/0 0.0.0.0/0\n2    ACCEPT all -- 0.0.0.0/0 0.0.0.0/0\n3    FLANNEL-FWD  all  --  0.0.0.0/0 0.0.0.0/0\n";
        assert_eq!(jumps_to(listing, "FLANNEL-FWD"), [3, 1]);
        assert!(jumps_to(listing, "FLANNEL-POSTRTG").is_empty());
    }
}

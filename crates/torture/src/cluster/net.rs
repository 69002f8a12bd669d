//! The test network: one network namespace per node, each with a veth pair to a bridge in the
//! test's own namespace, and nftables rules inside a node's namespace for partitions and
//! packet loss. Needs root (`ip netns`); without it the nodes run on loopback and the faults
//! that need a network are skipped, said so in the report.
//!
//! ```text
//!  test (host namespace)  cvbrN 10.R.0.1/24
//!     ├── veth ── ns cvN-1  eth0 10.R.0.11   node 1
//!     ├── veth ── ns cvN-2  eth0 10.R.0.12   node 2
//!     └── …
//! ```

use std::net::Ipv4Addr;
use std::process::Command;

/// Runs a command; an error names it and what it printed.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command inside namespace `ns`.
fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<(), String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Where the nodes live: namespaces on a bridge, or loopback.
pub(super) enum Net {
    /// Network namespaces (root only).
    Namespaces(Namespaces),
    /// Loopback: no partitions.
    Loopback,
}

/// The namespaces and bridge of one test run; removed on drop.
pub(super) struct Namespaces {
    tag: u16,
    nodes: Vec<Ipv4Addr>,
}

impl Net {
    /// A network for up to `nodes` nodes: namespaces if this process may make them.
    pub(super) fn new(nodes: usize) -> Self {
        match Namespaces::create(nodes) {
            Ok(ns) => Self::Namespaces(ns),
            Err(why) => {
                eprintln!(
                    "cluster faults: no network namespaces ({why}); running on loopback without partitions or packet loss"
                );
                Self::Loopback
            }
        }
    }

    /// Whether partitions and packet loss can be made.
    pub(super) fn can_partition(&self) -> bool {
        matches!(self, Self::Namespaces(_))
    }

    /// Node `i`'s address (0-based).
    pub(super) fn ip(&self, i: usize) -> Ipv4Addr {
        match self {
            Self::Namespaces(ns) => ns.nodes[i],
            Self::Loopback => Ipv4Addr::LOCALHOST,
        }
    }

    /// The command prefix that runs a program as node `i` (inside its namespace).
    pub(super) fn prefix(&self, i: usize) -> Vec<String> {
        match self {
            Self::Namespaces(ns) => {
                vec!["ip".into(), "netns".into(), "exec".into(), ns.name(i)]
            }
            Self::Loopback => Vec::new(),
        }
    }

    /// Node `i` drops every packet from the nodes in `from` (and, with `both`, to them).
    pub(super) fn block(&self, i: usize, from: &[usize], both: bool) -> Result<(), String> {
        let Self::Namespaces(ns) = self else { return Ok(()) };
        for j in from {
            let ip = ns.nodes[*j].to_string();
            ns.nft(i, &["add", "rule", "inet", "fault", "input", "ip", "saddr", &ip, "drop"])?;
            if both {
                ns.nft(i, &["add", "rule", "inet", "fault", "output", "ip", "daddr", &ip, "drop"])?;
            }
        }
        Ok(())
    }

    /// Node `i` drops `percent` of the packets it receives from other nodes.
    pub(super) fn lose(&self, i: usize, percent: u32) -> Result<(), String> {
        let Self::Namespaces(ns) = self else { return Ok(()) };
        let percent = percent.to_string();
        ns.nft(
            i,
            &[
                "add",
                "rule",
                "inet",
                "fault",
                "input",
                "ip",
                "saddr",
                &ns.subnet(),
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &percent,
                "drop",
            ],
        )
    }

    /// Every rule removed: the network whole again.
    pub(super) fn heal(&self) -> Result<(), String> {
        let Self::Namespaces(ns) = self else { return Ok(()) };
        for i in 0..ns.nodes.len() {
            ns.nft(i, &["flush", "table", "inet", "fault"])?;
        }
        Ok(())
    }
}

impl Namespaces {
    fn name(&self, i: usize) -> String {
        format!("cv{}-{}", self.tag, i + 1)
    }

    fn bridge(&self) -> String {
        format!("cvbr{}", self.tag)
    }

    fn subnet(&self) -> String {
        format!("10.{}.{}.0/24", 100 + self.tag / 256, self.tag % 256)
    }

    fn nft(&self, i: usize, args: &[&str]) -> Result<(), String> {
        run_in(&self.name(i), "nft", args)
    }

    fn create(nodes: usize) -> Result<Self, String> {
        if Command::new("nft").arg("--version").output().is_err() {
            return Err("nft is not installed (apt-get install nftables)".into());
        }
        // A tag of our own, so runs side by side (or a crashed run's leftovers) do not clash.
        let tag = u16::try_from(std::process::id() % 50_000).unwrap_or(0);
        let (a, b) = (100 + tag / 256, tag % 256);
        let mut ns = Self {
            tag,
            nodes: (0..nodes)
                .map(|i| {
                    Ipv4Addr::new(
                        10,
                        u8::try_from(a).unwrap_or(100),
                        u8::try_from(b).unwrap_or(0),
                        u8::try_from(11 + i).unwrap_or(250),
                    )
                })
                .collect(),
        };
        let bridge = ns.bridge();
        let _ = run("ip", &["link", "del", &bridge]);
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        let gateway = format!("10.{a}.{b}.1/24");
        run("ip", &["addr", "add", &gateway, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..nodes {
            if let Err(e) = ns.add_node(i) {
                ns.nodes.truncate(i + 1);
                return Err(e);
            }
        }
        Ok(ns)
    }

    fn add_node(&self, i: usize) -> Result<(), String> {
        let name = self.name(i);
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        let host = format!("cvh{}x{}", self.tag, i + 1);
        run("ip", &["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &name])?;
        run("ip", &["link", "set", &host, "master", &self.bridge()])?;
        run("ip", &["link", "set", &host, "up"])?;
        let address = format!("{}/24", self.nodes[i]);
        run_in(&name, "ip", &["addr", "add", &address, "dev", "eth0"])?;
        run_in(&name, "ip", &["link", "set", "eth0", "up"])?;
        run_in(&name, "ip", &["link", "set", "lo", "up"])?;
        self.nft(i, &["add", "table", "inet", "fault"])?;
        for (chain, hook) in [("input", "input"), ("output", "output")] {
            let spec = format!("{{ type filter hook {hook} priority 0 ; policy accept ; }}");
            self.nft(i, &["add", "chain", "inet", "fault", chain, &spec])?;
        }
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = run("ip", &["netns", "del", &self.name(i)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}

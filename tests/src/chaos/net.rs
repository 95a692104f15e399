//! A private network for a chaos run: one network namespace per node, each
//! joined by a veth pair to a bridge in the root namespace, where the
//! harness's clients live.
//!
//! ```text
//!  root ns: clients ── bridge rk<tag>b 10.a.b.1/24
//!                        ├── veth rk<tag>v1 ══ eth0 10.a.b.11 (ns rkchaos-<pid>-<tag>-n1)
//!                        ├── veth rk<tag>v2 ══ eth0 10.a.b.12 (ns ...-n2)
//!                        └── ...
//!  cut(from → to): in `from`'s namespace, packets to `to`'s address are
//!  classified (tc u32) into an htb class whose queue holds 0 packets: 100% loss,
//!  one way. Clients in the root namespace are never cut off.
//! ```
//!
//! `tc netem` is not used because kernels without `sch_netem` (and without
//! tc actions) are common in CI containers; a zero-length `pfifo` drops every
//! packet classified to it just as `netem loss 100%` would.
//!
//! Everything is created with names unique to the run and removed on drop,
//! also when the test fails; leftovers of a run whose process died are removed
//! by the next run.

use std::net::Ipv4Addr;
use std::process::Command;

/// A network of `n` namespaces on one bridge.
pub struct Net {
    tag: String,
    pid: u32,
    subnet: [u8; 2],
    nodes: usize,
    created_bridge: bool,
    created_ns: Vec<String>,
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("running {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

const NS_PREFIX: &str = "rkchaos-";

/// Why namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("network namespaces need root (the harness is not running as root)".into());
    }
    if let Err(e) = run(&["ip", "-V"]) {
        return Some(format!("the `ip` tool (iproute2) is missing: {e}"));
    }
    if let Err(e) = run(&["tc", "-V"]) {
        return Some(format!("the `tc` tool (iproute2) is missing: {e}"));
    }
    let probe = format!("{NS_PREFIX}{}-probe", std::process::id());
    if let Err(e) = run(&["ip", "netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    let _ = run(&["ip", "netns", "del", &probe]);
    None
}

/// Removes namespaces and bridges left by chaos runs whose process is gone.
fn remove_leftovers() {
    let Ok(list) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(pid), Some(tag)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = run(&["ip", "netns", "del", name]);
        let _ = run(&["ip", "link", "del", &format!("rk{tag}b")]);
    }
}

impl Net {
    /// Creates the bridge and `nodes` namespaces. `salt` makes the names of
    /// concurrent runs in one process distinct.
    pub fn create(nodes: usize, salt: u64) -> Result<Net, String> {
        if nodes == 0 || nodes > 9 {
            return Err(format!(
                "1..=9 nodes fit a chaos network, asked for {nodes}"
            ));
        }
        remove_leftovers();
        let pid = std::process::id();
        let used = run(&["ip", "-4", "addr"]).unwrap_or_default();
        let mut mix = u64::from(pid)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(salt.wrapping_mul(0xbf58_476d_1ce4_e5b9));
        for _ in 0..64 {
            mix = mix.rotate_left(17).wrapping_mul(0x94d0_49bb_1331_11eb) ^ 0x5555;
            let tag = format!("{:05x}", mix & 0xf_ffff);
            let subnet = [100 + (mix >> 20) as u8 % 100, (mix >> 28) as u8];
            let bridge = format!("rk{tag}b");
            if used.contains(&format!("inet 10.{}.{}.", subnet[0], subnet[1]))
                || run(&["ip", "link", "show", &bridge]).is_ok()
            {
                continue;
            }
            let mut net = Net {
                tag,
                pid,
                subnet,
                nodes,
                created_bridge: false,
                created_ns: Vec::new(),
            };
            net.build()?;
            return Ok(net);
        }
        Err("no free subnet/bridge name found for the chaos network".into())
    }

    fn bridge(&self) -> String {
        format!("rk{}b", self.tag)
    }

    /// Namespace name of node `i` (0-based).
    pub fn ns(&self, i: usize) -> String {
        format!("{NS_PREFIX}{}-{}-n{}", self.pid, self.tag, i + 1)
    }

    /// Address of node `i` (0-based).
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], 11 + i as u8)
    }

    fn build(&mut self) -> Result<(), String> {
        let bridge = self.bridge();
        let gateway = format!("10.{}.{}.1/24", self.subnet[0], self.subnet[1]);
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        self.created_bridge = true;
        run(&["ip", "addr", "add", &gateway, "dev", &bridge])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        for i in 0..self.nodes {
            let ns = self.ns(i);
            let outer = format!("rk{}v{}", self.tag, i + 1);
            let inner = format!("rk{}p{}", self.tag, i + 1);
            run(&["ip", "netns", "add", &ns])?;
            self.created_ns.push(ns.clone());
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            run(&["ip", "link", "set", &inner, "netns", &ns])?;
            run(&["ip", "link", "set", &outer, "master", &bridge])?;
            run(&["ip", "link", "set", &outer, "up"])?;
            let exec = ["ip", "netns", "exec", ns.as_str()];
            let inside = |rest: &[&str]| {
                let mut args = exec.to_vec();
                args.extend_from_slice(rest);
                run(&args)
            };
            inside(&["ip", "link", "set", "lo", "up"])?;
            inside(&["ip", "link", "set", &inner, "name", "eth0"])?;
            let addr = format!("{}/24", self.addr(i));
            inside(&["ip", "addr", "add", &addr, "dev", "eth0"])?;
            inside(&["ip", "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// The command prefix that runs a program inside node `i`'s namespace.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(i)]
    }

    /// Drops every packet of each directed pair `(from, to)` (0-based node
    /// indexes) and lets everything else through; replaces earlier cuts.
    pub fn cut(&self, pairs: &[(usize, usize)]) -> Result<(), String> {
        for i in 0..self.nodes {
            let ns = self.ns(i);
            let tc = |rest: &[&str]| {
                let mut args = vec!["ip", "netns", "exec", ns.as_str(), "tc"];
                args.extend_from_slice(rest);
                run(&args)
            };
            // No root qdisc yet is fine.
            let _ = tc(&["qdisc", "del", "dev", "eth0", "root"]);
            let blocked: Vec<Ipv4Addr> = pairs
                .iter()
                .filter(|(from, _)| *from == i)
                .map(|&(_, to)| self.addr(to))
                .collect();
            if blocked.is_empty() {
                continue;
            }
            tc(&[
                "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1",
                "r2q", "100000",
            ])?;
            tc(&[
                "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate",
                "10gbit",
            ])?;
            tc(&[
                "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:2", "htb", "rate",
                "10gbit",
            ])?;
            tc(&[
                "qdisc", "add", "dev", "eth0", "parent", "1:2", "handle", "20:", "pfifo", "limit",
                "0",
            ])?;
            for to in blocked {
                let dst = format!("{to}/32");
                tc(&[
                    "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1",
                    "u32", "match", "ip", "dst", &dst, "flowid", "1:2",
                ])?;
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&self) -> Result<(), String> {
        self.cut(&[])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created_ns.drain(..) {
            if let Err(e) = run(&["ip", "netns", "del", &ns]) {
                eprintln!("chaos: cleaning up: {e}");
            }
        }
        if self.created_bridge {
            if let Err(e) = run(&["ip", "link", "del", &self.bridge()]) {
                eprintln!("chaos: cleaning up: {e}");
            }
        }
    }
}

//! A network link a test can cut: a network namespace joined to this one by
//! a veth pair (`ip netns`, `ip link`), so that a server started inside it
//! is, to a process here, another machine across a network. Cutting the
//! link takes its far end down: packets to the namespace then vanish
//! without an answer (no reset, no refusal), as across a cut cable or a
//! partition, which a stopped server (connection refused) does not show.
//!
//! Needs root and iproute2 ([`Link::unavailable`] says which is missing).

use std::net::Ipv4Addr;
use std::process::Command;

/// A namespace and the veth pair that joins it to this one; deleted when
/// dropped (after whatever runs inside it: drop that first).
#[derive(Debug)]
pub struct Link {
    ns: String,
    host_if: String,
    ns_if: String,
    host_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
}

/// Runs `args` (`ip ...`, or any command); its error output if it failed.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("running {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Link {
    /// Why this machine cannot make a link (not root, no `ip`), if it
    /// cannot.
    pub fn unavailable() -> Option<String> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Some("network namespaces need root".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(o) if o.status.success() => None,
            _ => Some("no `ip` command (apt-get install iproute2)".into()),
        }
    }

    /// Makes a namespace with its loopback up, and a veth pair on a /30 of
    /// 10.213.0.0/16 (random, so links of tests running side by side do not
    /// meet) with both ends up.
    ///
    /// # Errors
    ///
    /// What `ip` said, if a step failed (what was made is deleted).
    pub fn new() -> Result<Self, String> {
        let mut bytes = [0u8; 3];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
        let tag: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let (a, b) = (bytes[0], bytes[1] & 0xfc);
        let link = Self {
            ns: format!("sosvault-{tag}"),
            host_if: format!("svh{tag}"),
            ns_if: format!("svn{tag}"),
            host_addr: Ipv4Addr::new(10, 213, a, b + 1),
            ns_addr: Ipv4Addr::new(10, 213, a, b + 2),
        };
        run(&["ip", "netns", "add", &link.ns])?;
        // From here on, dropping `link` deletes what was made.
        let host = format!("{}/30", link.host_addr);
        let far = format!("{}/30", link.ns_addr);
        run(&[
            "ip",
            "link",
            "add",
            &link.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &link.ns_if,
        ])?;
        run(&["ip", "link", "set", &link.ns_if, "netns", &link.ns])?;
        run(&["ip", "addr", "add", &host, "dev", &link.host_if])?;
        run(&["ip", "link", "set", &link.host_if, "up"])?;
        link.inside(&["ip", "addr", "add", &far, "dev", &link.ns_if])?;
        link.inside(&["ip", "link", "set", &link.ns_if, "up"])?;
        link.inside(&["ip", "link", "set", "lo", "up"])?;
        Ok(link)
    }

    /// Runs `args` inside the namespace.
    ///
    /// # Errors
    ///
    /// What the command said, if it failed.
    pub fn inside(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        run(&all)
    }

    /// The command that runs a program inside the namespace: `ip netns exec
    /// NAME`, to put before it.
    pub fn exec_prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.ns]
    }

    /// The far end's address (a server inside listens there).
    pub fn far(&self) -> Ipv4Addr {
        self.ns_addr
    }

    /// This end's network, as a CIDR (where a server inside takes
    /// connections from).
    pub fn near_network(&self) -> String {
        format!("{}/30", self.host_addr)
    }

    /// Cuts the link: its far end goes down, and what is sent to the
    /// namespace is dropped without a word.
    ///
    /// # Errors
    ///
    /// What `ip` said, if it failed.
    pub fn cut(&self) -> Result<(), String> {
        self.inside(&["ip", "link", "set", &self.ns_if, "down"])
    }

    /// Joins it again.
    ///
    /// # Errors
    ///
    /// What `ip` said, if it failed.
    pub fn heal(&self) -> Result<(), String> {
        self.inside(&["ip", "link", "set", &self.ns_if, "up"])
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and the pair
        // with it; the host end is deleted too in case the move never
        // happened.
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

//! The node's interfaces, for the policy manager: the workload dispatch maps are keyed by
//! interface index (a cheaper lookup for every new flow than a name), so the renderer needs
//! each workload interface's index, and needs it again whenever an interface appears, goes,
//! or is created again under its name (a pod's sandbox made again gets a new index while its
//! WorkloadEndpoint, and so its program, may stay the same).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gingham_net::{Netlink, NetnsRef};

use crate::Error;

/// The rtnetlink multicast group of link changes (`RTMGRP_LINK`).
const RTMGRP_LINK: u32 = 1;

/// Where the policy manager learns the node's interfaces.
pub trait Links {
    /// Every interface of the node: name to index.
    fn list(&mut self) -> Result<BTreeMap<String, u32>, String>;
    /// Whether any interface may have changed since the last call, without waiting: true
    /// when the kernel reported a change, or when reports were lost.
    fn changed(&mut self) -> bool;
}

/// The kernel's interfaces in the agent's network namespace: a listing, and a socket that
/// receives the kernel's link notifications (drained without blocking).
pub struct NetlinkLinks {
    nl: Netlink,
    socket: netlink_sys::Socket,
    buf: Vec<u8>,
}

impl NetlinkLinks {
    pub fn open() -> Result<Self, Error> {
        let nl = Netlink::open(&NetnsRef::Current).map_err(Error::Netlink)?;
        let open = || -> std::io::Result<netlink_sys::Socket> {
            let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
            socket.bind(&netlink_sys::SocketAddr::new(0, RTMGRP_LINK))?;
            socket.set_non_blocking(true)?;
            Ok(socket)
        };
        let socket = open().map_err(|e| Error::Io {
            what: "open the link notification socket",
            source: e,
        })?;
        Ok(NetlinkLinks {
            nl,
            socket,
            buf: Vec::with_capacity(1 << 16),
        })
    }
}

impl Links for NetlinkLinks {
    fn list(&mut self) -> Result<BTreeMap<String, u32>, String> {
        let interfaces = self.nl.interfaces().map_err(|e| e.to_string())?;
        Ok(interfaces.into_iter().map(|i| (i.name, i.index)).collect())
    }

    fn changed(&mut self) -> bool {
        let mut any = false;
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, 0) {
                Ok(0) => return any,
                Ok(_) => any = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return any,
                // ENOBUFS (reports lost) or anything else: list again to be sure.
                Err(_) => return true,
            }
        }
    }
}

/// Interfaces given by hand, for tests: a clone shares them.
#[derive(Clone, Debug, Default)]
pub struct StaticLinks(Arc<Mutex<StaticState>>);

#[derive(Debug, Default)]
struct StaticState {
    links: BTreeMap<String, u32>,
    reported: bool,
    /// Listings that fail before one succeeds.
    failures: usize,
}

impl StaticLinks {
    /// Sets the interfaces, reported as changed at the next [`Links::changed`].
    pub fn set(&self, links: BTreeMap<String, u32>) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.links = links;
        s.reported = true;
    }

    /// The next `n` listings fail.
    pub fn fail(&self, n: usize) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).failures = n;
    }
}

impl Links for StaticLinks {
    fn list(&mut self) -> Result<BTreeMap<String, u32>, String> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.failures > 0 {
            s.failures -= 1;
            return Err("listing failed (test)".into());
        }
        Ok(s.links.clone())
    }

    fn changed(&mut self) -> bool {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()).reported)
    }
}

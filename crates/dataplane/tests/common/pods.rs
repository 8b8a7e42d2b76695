//! Two pods' cluster and traffic, for the tests that build their own clusters (namespace ns0,
//! profile kns.ns0) and send real datagrams between the pods.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use gingham_net::netns::{NetnsRef, in_netns};
use gingham_testkit::netns::TestNetns;

/// Namespace ns0's profile, allowing everything both ways, as one YAML document ending with
/// `---`.
pub const ALLOW_ALL_PROFILE: &str = "apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.ns0}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
---
";

/// The WorkloadEndpoint of `pod` on `node` (interface `iface`, addresses `nets` as CIDRs,
/// `labels` as YAML flow-map entries), as one YAML document ending with `---`.
pub fn workload_yaml(node: &str, pod: &str, labels: &str, iface: &str, nets: &[&str]) -> String {
    let nets = nets
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-{pod}-eth0
  namespace: ns0
  labels: {{{labels}, projectcalico.org/namespace: ns0, projectcalico.org/orchestrator: k8s}}
spec:
  orchestrator: k8s
  node: {node}
  pod: {pod}
  endpoint: eth0
  interfaceName: {iface}
  ipNetworks: [{nets}]
  profiles: [kns.ns0]
---
"
    )
}

/// Whether a datagram carrying `tag`, sent from the `client` namespace to `to`, reaches the
/// `server` socket (which has a read timeout: a drop is a timeout).
pub fn udp_passes(client: &TestNetns, server: &UdpSocket, to: SocketAddr, tag: u32) -> bool {
    let payload = tag.to_be_bytes();
    in_netns(&NetnsRef::path(client.path()), || {
        let any: IpAddr = if to.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let s = UdpSocket::bind((any, 0)).unwrap();
        s.send_to(&payload, to).unwrap();
    })
    .unwrap();
    let mut buf = [0u8; 16];
    loop {
        match server.recv(&mut buf) {
            Ok(4) if buf[..4] == payload => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

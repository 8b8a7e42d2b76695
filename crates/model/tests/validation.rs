//! Table tests: every validation rule rejects what Calico rejects, naming the field path and
//! saying what is valid. Each case is one resource; the expected path and message fragment must
//! appear in one of the (single-line) errors.

use gingham_model::load;

const GNP: &str =
    "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\nspec:\n";
const NP: &str = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n";

fn gnp(spec: &str) -> String {
    format!("{GNP}{spec}")
}

fn rule(r: &str) -> String {
    gnp(&format!("  ingress:\n  - {r}\n"))
}

fn egress(r: &str) -> String {
    gnp(&format!("  egress:\n  - {r}\n"))
}

fn res(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

#[test]
fn invalid_resources_are_rejected_with_path_and_reason() {
    let cases: Vec<(String, &str, &str)> = vec![
        // Envelope.
        (
            "kind: GlobalNetworkPolicy\n".into(),
            "apiVersion",
            "missing apiVersion (valid:",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: globalNetworkPolicy\n".into(),
            "kind",
            "did you mean GlobalNetworkPolicy",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: policy\n".into(),
            "kind",
            "legacy v1 kind",
        ),
        (
            "apiVersion: projectcalico.org/v2\nkind: Tier\n".into(),
            "apiVersion",
            "unsupported apiVersion",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\n".into(),
            "kind",
            "valid: legacy Calico",
        ),
        ("- 1\n".into(), "", "found a number"),
        // Structure.
        (
            gnp("  selectr: all()\n"),
            "spec.selectr",
            "unknown field `selectr`, expected one of",
        ),
        (gnp("  order: high\n"), "spec.order", "invalid type"),
        (
            rule("action: allow"),
            "spec.ingress[0].action",
            "valid: Allow, Deny, Log, Pass",
        ),
        (
            rule("{action: Allow, protocol: tcpx}"),
            "spec.ingress[0].protocol",
            "\"tcpx\" is not a valid protocol (valid: TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255)",
        ),
        (
            rule("{action: Allow, protocol: 0}"),
            "spec.ingress[0].protocol",
            "out of range",
        ),
        (
            rule("{action: Allow, protocol: 256}"),
            "spec.ingress[0].protocol",
            "out of range",
        ),
        (
            rule("{action: Allow, protocol: TCP, destination: {ports: [22, \"90:80\"]}}"),
            "spec.ingress[0].destination.ports[1]",
            "greater than the maximum",
        ),
        (
            rule("{action: Allow, protocol: TCP, destination: {ports: [70000]}}"),
            "spec.ingress[0].destination.ports[0]",
            "out of range",
        ),
        (
            rule("{action: Allow, source: {nets: [10.0.0.300]}}"),
            "spec.ingress[0].source.nets[0]",
            "not a valid IP address or CIDR",
        ),
        (
            rule("{action: Allow, icmp: {type: 300}, protocol: ICMP}"),
            "spec.ingress[0].icmp.type",
            "valid: 0-254",
        ),
        // Names.
        (
            gnp("  selector: all()\n").replace("name: p", "name: Bad_Name"),
            "metadata.name",
            "not a valid policy name",
        ),
        (
            gnp("  selector: all()\n").replace("name: p", "name: a.b.c"),
            "metadata.name",
            "not a valid policy name",
        ),
        (
            NP.to_string().replace("name: p", "name: a.b.c"),
            "metadata.name",
            "knp.default",
        ),
        (
            NP.to_string().replace("namespace: ns", "namespace: Bad_NS"),
            "metadata.namespace",
            "not a valid namespace",
        ),
        (
            res("Tier", "a.b", "  order: 1\n"),
            "metadata.name",
            "not a valid tier name",
        ),
        (
            res("GlobalNetworkSet", "Upper", "  nets: [10.0.0.0/8]\n"),
            "metadata.name",
            "lower case alphanumeric",
        ),
        (
            res("GlobalNetworkSet", "\"\"", "  nets: [10.0.0.0/8]\n"),
            "metadata.name",
            "a name is required",
        ),
        (
            gnp("  selector: all()\n").replace("name: p", "name: p\n  labels:\n    bad key: v"),
            "metadata.labels.bad key",
            "invalid label key",
        ),
        (
            gnp("  selector: all()\n").replace("name: p", "name: p\n  labels:\n    ok: bad value"),
            "metadata.labels.ok",
            "invalid label value",
        ),
        (
            gnp("  selector: all()\n").replace("name: p", "name: p\n  annotations:\n    a b/c: v"),
            "metadata.annotations.a b/c",
            "invalid annotation key",
        ),
        // Policy spec.
        (
            gnp("  selector: a ==\n"),
            "spec.selector",
            "invalid selector",
        ),
        (gnp("  selector: global()\n"), "spec.selector", "global()"),
        (
            gnp("  namespaceSelector: global()\n"),
            "spec.namespaceSelector",
            "global()",
        ),
        (
            gnp("  serviceAccountSelector: global() && a == 'b'\n"),
            "spec.serviceAccountSelector",
            "global()",
        ),
        (
            gnp("  types: [Ingress, Ingress]\n"),
            "spec.types",
            "more than once",
        ),
        (
            gnp("  types: [ingress]\n"),
            "spec.types[0]",
            "did you mean Ingress",
        ),
        (
            gnp("  tier: Bad.Tier\n"),
            "spec.tier",
            "not a valid tier name",
        ),
        (
            gnp("  preDNAT: true\n  doNotTrack: true\n  applyOnForward: true\n"),
            "spec.preDNAT",
            "cannot both be true",
        ),
        (
            gnp("  preDNAT: true\n  applyOnForward: true\n  egress:\n  - action: Allow\n"),
            "spec.egress",
            "preDNAT policy cannot have egress rules",
        ),
        (
            gnp("  preDNAT: true\n  applyOnForward: true\n  types: [Ingress, Egress]\n"),
            "spec.types",
            "cannot have the Egress type",
        ),
        (
            gnp("  doNotTrack: true\n"),
            "spec.applyOnForward",
            "applyOnForward must be true",
        ),
        (
            gnp("  preDNAT: true\n"),
            "spec.applyOnForward",
            "applyOnForward must be true",
        ),
        // Rules.
        (
            rule("{action: Allow, destination: {ports: [80]}}"),
            "spec.ingress[0].destination.ports[0]",
            "must set protocol to TCP, UDP or SCTP",
        ),
        (
            rule("{action: Allow, protocol: ICMP, destination: {ports: [80]}}"),
            "spec.ingress[0].destination.ports",
            "rules that specify ports must set protocol to TCP, UDP or SCTP",
        ),
        (
            rule("{action: Allow, protocol: 1, source: {notPorts: [80]}}"),
            "spec.ingress[0].source.notPorts",
            "has no ports",
        ),
        (
            rule("{action: Allow, protocol: TCP, destination: {ports: [0]}}"),
            "spec.ingress[0].destination.ports[0]",
            "port 0 is invalid",
        ),
        (
            rule("{action: Allow, protocol: TCP, destination: {ports: [HTTP]}}"),
            "spec.ingress[0].destination.ports[0]",
            "not a valid port name",
        ),
        (
            rule("{action: Allow, icmp: {type: 8}}"),
            "spec.ingress[0].icmp",
            "require protocol ICMP or ICMPv6",
        ),
        (
            rule("{action: Allow, protocol: TCP, icmp: {type: 8}}"),
            "spec.ingress[0].icmp",
            "require protocol ICMP or ICMPv6",
        ),
        (
            rule("{action: Allow, protocol: ICMP, icmp: {code: 1}}"),
            "spec.ingress[0].icmp.code",
            "needs an ICMP type",
        ),
        (
            rule("{action: Allow, protocol: ICMP, notICMP: {code: 1}}"),
            "spec.ingress[0].notICMP.code",
            "needs an ICMP type",
        ),
        (
            rule("{action: Allow, protocol: ICMP, ipVersion: 6}"),
            "spec.ingress[0].ipVersion",
            "ICMP requires ipVersion 4",
        ),
        (
            rule("{action: Allow, protocol: ICMPv6, ipVersion: 4}"),
            "spec.ingress[0].ipVersion",
            "ICMPv6 requires ipVersion 6",
        ),
        (
            rule("{action: Allow, notProtocol: ICMPv6, ipVersion: 4}"),
            "spec.ingress[0].ipVersion",
            "ICMPv6 requires ipVersion 6",
        ),
        (
            rule("{action: Allow, ipVersion: 5}"),
            "spec.ingress[0].ipVersion",
            "valid: 4, 6",
        ),
        (
            rule("{action: Allow, source: {nets: [10.0.20.64/25]}}"),
            "spec.ingress[0].source.nets[0]",
            "host bits set (valid: a masked network such as 10.0.20.0/25)",
        ),
        (
            rule("{action: Allow, source: {notNets: [0.0.0.0/0]}}"),
            "spec.ingress[0].source.notNets[0]",
            "catch-all",
        ),
        (
            rule("{action: Allow, destination: {notNets: [\"::/0\"]}}"),
            "spec.ingress[0].destination.notNets[0]",
            "catch-all",
        ),
        (
            rule("{action: Allow, source: {nets: [10.0.0.0/8, \"fd00::/8\"]}}"),
            "spec.ingress[0].source.nets",
            "mixes IPv4 and IPv6",
        ),
        (
            rule(
                "{action: Allow, source: {nets: [10.0.0.0/8]}, destination: {nets: [\"fd00::/8\"]}}",
            ),
            "spec.ingress[0].destination.nets",
            "mixes IPv4 and IPv6",
        ),
        (
            rule("{action: Allow, ipVersion: 6, source: {nets: [10.0.0.0/8]}}"),
            "spec.ingress[0].source.nets",
            "does not match ipVersion 6",
        ),
        (
            rule("{action: Allow, source: {selector: \"a = 'b'\"}}"),
            "spec.ingress[0].source.selector",
            "invalid selector",
        ),
        (
            rule("{action: Allow, source: {selector: global()}}"),
            "spec.ingress[0].source.selector",
            "global()",
        ),
        (
            rule("{action: Allow, source: {namespaceSelector: global() && a == 'b'}}"),
            "spec.ingress[0].source.namespaceSelector",
            "cannot be combined",
        ),
        (
            rule("{action: Allow, source: {serviceAccounts: {selector: \"x ==\"}}}"),
            "spec.ingress[0].source.serviceAccounts.selector",
            "invalid selector",
        ),
        (
            rule("{action: Allow, source: {services: {name: web}}}"),
            "spec.ingress[0].source.services.namespace",
            "must specify a namespace",
        ),
        (
            rule("{action: Allow, source: {services: {namespace: a}}}"),
            "spec.ingress[0].source.services.name",
            "must specify a service name",
        ),
        (
            rule("{action: Allow, source: {services: {name: a, namespace: b}, selector: all()}}"),
            "spec.ingress[0].source.services",
            "cannot specify selector/notSelector and services",
        ),
        (
            rule(
                "{action: Allow, source: {services: {name: a, namespace: b}, nets: [10.0.0.0/8]}}",
            ),
            "spec.ingress[0].source.services",
            "nets/notNets",
        ),
        (
            rule("{action: Allow, destination: {services: {name: a, namespace: b}}}"),
            "spec.ingress[0].destination.services",
            "not allowed in an ingress rule's destination",
        ),
        (
            egress("{action: Allow, source: {services: {name: a, namespace: b}}}"),
            "spec.egress[0].source.services",
            "not allowed in an egress rule's source",
        ),
        (
            egress(
                "{action: Allow, protocol: TCP, destination: {services: {name: a, namespace: b}, ports: [80]}}",
            ),
            "spec.egress[0].destination",
            "ports and notPorts cannot be specified",
        ),
        (
            rule("{action: Deny, http: {methods: [GET]}}"),
            "spec.ingress[0].http",
            "only valid on Allow rules",
        ),
        (
            rule("{action: Allow, protocol: UDP, http: {methods: [GET]}}"),
            "spec.ingress[0].protocol",
            "protocol TCP",
        ),
        (
            rule("{action: Allow, http: {methods: [GET, GET]}}"),
            "spec.ingress[0].http.methods",
            "more than once",
        ),
        (
            rule("{action: Allow, http: {paths: [{exact: /a, prefix: /b}]}}"),
            "spec.ingress[0].http.paths[0]",
            "not both",
        ),
        (
            rule("{action: Allow, http: {paths: [{exact: \"a?b\"}]}}"),
            "spec.ingress[0].http.paths[0]",
            "starts with '/'",
        ),
        (
            egress("{action: Allow, http: {methods: [GET]}}"),
            "spec.egress[0].http",
            "not allowed in egress rules",
        ),
        // Tiers.
        (
            res("Tier", "default", "  order: 5\n"),
            "spec.order",
            "order must be 1000000",
        ),
        (
            res(
                "Tier",
                "default",
                "  order: 1000000\n  defaultAction: Pass\n",
            ),
            "spec.defaultAction",
            "must have default action Deny",
        ),
        (
            res("Tier", "kube-admin", "  order: 1000\n"),
            "spec.defaultAction",
            "must have default action Pass",
        ),
        (
            res("Tier", "t", "  defaultAction: Allow\n"),
            "spec.defaultAction",
            "valid: Deny, Pass",
        ),
        // Staged policies.
        (
            res(
                "StagedGlobalNetworkPolicy",
                "s",
                "  stagedAction: Delete\n  selector: all()\n",
            ),
            "spec",
            "stagedAction Delete",
        ),
        (
            res("StagedGlobalNetworkPolicy", "s", "  stagedAction: Remove\n"),
            "spec.stagedAction",
            "valid: Set, Delete, Learn, Ignore",
        ),
        // Host endpoints.
        (
            res("HostEndpoint", "h", "  interfaceName: eth0\n"),
            "spec.node",
            "node must be specified",
        ),
        (
            res("HostEndpoint", "h", "  node: n1\n"),
            "spec",
            "interfaceName or expectedIPs",
        ),
        (
            res(
                "HostEndpoint",
                "h",
                "  node: n1\n  interfaceName: averyveryverylongname\n",
            ),
            "spec.interfaceName",
            "not a valid interface name",
        ),
        (
            res(
                "HostEndpoint",
                "h",
                "  node: n1\n  expectedIPs: [10.0.0.0/8]\n",
            ),
            "spec.expectedIPs[0]",
            "not a valid IP address",
        ),
        (
            res(
                "HostEndpoint",
                "h",
                "  node: n1\n  interfaceName: eth0\n  profiles: [Bad_Profile]\n",
            ),
            "spec.profiles[0]",
            "not a valid profile name",
        ),
        (
            res(
                "HostEndpoint",
                "h",
                "  node: n1\n  interfaceName: eth0\n  ports: [{name: x, protocol: ICMP, port: 5}]\n",
            ),
            "spec.ports[0].protocol",
            "has no ports",
        ),
        // Workload endpoints.
        (
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: wrong\n  namespace: default\nspec:\n  node: n1\n  orchestrator: k8s\n  pod: p\n  endpoint: eth0\n  interfaceName: cali1\n".to_string(),
            "metadata.name",
            "valid: \"n1-k8s-p-eth0\"",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  namespace: default\nspec:\n  node: n1\n  orchestrator: k8s\n  pod: p\n  endpoint: eth0\n  interfaceName: cali1\n  ipNetworks: [10.0.0.0/24]\n".to_string(),
            "spec.ipNetworks[0]",
            "multiple addresses",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  namespace: default\nspec:\n  node: n1\n  orchestrator: k8s\n  endpoint: eth0\n  interfaceName: cali1\n".to_string(),
            "spec",
            "spec.pod must be set",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  namespace: default\nspec:\n  node: n1\n  orchestrator: k8s\n  pod: p\n  endpoint: eth0\n".to_string(),
            "spec.interfaceName",
            "not a valid interface name",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  namespace: default\nspec:\n  node: n1\n  orchestrator: k8s\n  pod: p\n  endpoint: eth0\n  interfaceName: cali1\n  mac: zz:zz\n".to_string(),
            "spec.mac",
            "not a valid MAC",
        ),
        // Network sets.
        (
            res("GlobalNetworkSet", "g", "  nets: [10.0.0.0/8]\n").replace(
                "name: g",
                "name: g\n  labels:\n    projectcalico.org/namespace: x",
            ),
            "metadata.labels.projectcalico.org/namespace",
            "not a valid label name here",
        ),
        // IP pools.
        (
            res("IPPool", "p", "  natOutgoing: true\n"),
            "spec.cidr",
            "must be specified",
        ),
        (
            res("IPPool", "p", "  cidr: 10.0.20.64/25\n"),
            "spec.cidr",
            "not strictly masked (valid: 10.0.20.0/25)",
        ),
        (
            res("IPPool", "p", "  cidr: 169.254.0.0/24\n"),
            "spec.cidr",
            "link-local",
        ),
        (
            res("IPPool", "p", "  cidr: 169.0.0.0/8\n"),
            "spec.cidr",
            "link-local",
        ),
        (
            res("IPPool", "p", "  cidr: fe80::/64\n"),
            "spec.cidr",
            "link-local",
        ),
        (
            res("IPPool", "p", "  cidr: 10.0.0.0/16\n  blockSize: 19\n"),
            "spec.blockSize",
            "valid: 20-32 for IPv4",
        ),
        (
            res("IPPool", "p", "  cidr: fd00::/64\n  blockSize: 100\n"),
            "spec.blockSize",
            "116-128 for IPv6",
        ),
        (
            res("IPPool", "p", "  cidr: 10.0.0.0/28\n"),
            "spec.cidr",
            "smaller than one block",
        ),
        (
            res(
                "IPPool",
                "p",
                "  cidr: 10.0.0.0/16\n  ipipMode: Always\n  vxlanMode: Always\n",
            ),
            "spec.ipipMode",
            "cannot both be enabled",
        ),
        (
            res(
                "IPPool",
                "p",
                "  cidr: fd00::/64\n  ipipMode: CrossSubnet\n",
            ),
            "spec.ipipMode",
            "not supported on IPv6",
        ),
        (
            res("IPPool", "p", "  cidr: 10.0.0.0/16\n  ipipMode: always\n"),
            "spec.ipipMode",
            "valid: Never, Always, CrossSubnet",
        ),
        (
            res(
                "IPPool",
                "p",
                "  cidr: 10.0.0.0/16\n  allowedUses: [LoadBalancer, Workload]\n",
            ),
            "spec.allowedUses",
            "cannot be combined",
        ),
        (
            res(
                "IPPool",
                "p",
                "  cidr: 10.0.0.0/16\n  allowedUses: [LoadBalancer]\n  vxlanMode: Always\n",
            ),
            "spec",
            "cannot have IPIP or VXLAN",
        ),
        (
            res(
                "IPPool",
                "p",
                "  cidr: 10.0.0.0/16\n  nodeSelector: global()\n",
            ),
            "spec.nodeSelector",
            "global()",
        ),
        (
            res(
                "IPPool",
                "p",
                "  cidr: 10.0.0.0/16\n  namespaceSelector: a == 'b'\n",
            ),
            "spec.namespaceSelector",
            "Tunnel cannot have a namespaceSelector",
        ),
        // Nodes, BGP, Felix.
        (
            res("Node", "n", "  bgp: {}\n"),
            "spec.bgp",
            "should not be empty",
        ),
        (
            res("Node", "n", "  bgp:\n    ipv4Address: fd00::1/64\n"),
            "spec.bgp.ipv4Address",
            "not an IPv4 address",
        ),
        (
            res(
                "BGPPeer",
                "b",
                "  node: n1\n  nodeSelector: all()\n  peerIP: 10.0.0.1\n",
            ),
            "spec.node",
            "cannot both be set",
        ),
        (
            res("BGPPeer", "b", "  peerIP: 10.0.0.1:0\n"),
            "spec.peerIP",
            "not valid",
        ),
        (
            res("BGPPeer", "b", "  peerSelector: all()\n  asNumber: 64512\n"),
            "spec.asNumber",
            "must be empty when peerSelector",
        ),
        (
            res(
                "BGPPeer",
                "b",
                "  peerIP: 10.0.0.1\n  asNumber: 99999999999\n",
            ),
            "spec.asNumber",
            "out of range",
        ),
        (
            res(
                "BGPConfiguration",
                "default",
                "  communities: [{name: c, value: \"1:2\"}]\n",
            ),
            "spec.communities",
            "not used in prefixAdvertisements",
        ),
        (
            res("BGPConfiguration", "default", "  logSeverityScreen: Loud\n"),
            "spec.logSeverityScreen",
            "valid: Trace",
        ),
        (
            res(
                "FelixConfiguration",
                "default",
                "  logSeverityScreen: Loud\n",
            ),
            "spec.logSeverityScreen",
            "valid: Trace, Debug, Info, Warning, Error, Fatal",
        ),
        (
            res(
                "FelixConfiguration",
                "default",
                "  defaultEndpointToHostAction: Reject\n",
            ),
            "spec.defaultEndpointToHostAction",
            "valid: Drop, Accept, Return",
        ),
        (
            res("FelixConfiguration", "default", "  nftablesMode: On\n"),
            "spec.nftablesMode",
            "valid: Disabled, Enabled, Auto",
        ),
        (
            res(
                "FelixConfiguration",
                "default",
                "  routeRefreshInterval: 90\n",
            ),
            "spec.routeRefreshInterval",
            "invalid type",
        ),
        (
            res(
                "FelixConfiguration",
                "default",
                "  routeRefreshInterval: 90x\n",
            ),
            "spec.routeRefreshInterval",
            "not a valid duration",
        ),
        (
            res("FelixConfiguration", "default", "  iptablesMarkMask: -1\n"),
            "spec.iptablesMarkMask",
            "out of range",
        ),
        (
            res(
                "FelixConfiguration",
                "default",
                "  failsafeInboundHostPorts: [{protocol: ICMP, port: 22}]\n",
            ),
            "spec.failsafeInboundHostPorts[0].protocol",
            "valid: TCP, UDP, SCTP",
        ),
        (
            res("FelixConfiguration", "default", "  healthPort: 70000\n"),
            "spec.healthPort",
            "valid: 1-65535",
        ),
        (
            res(
                "FelixConfiguration",
                "default",
                "  kubeNodePortRanges: [http]\n",
            ),
            "spec.kubeNodePortRanges[0]",
            "named ports",
        ),
        (
            res("FelixConfiguration", "default", "  interfacePrefx: cali\n"),
            "spec.interfacePrefx",
            "unknown field",
        ),
        // StagedKubernetesNetworkPolicy: as the Kubernetes NetworkPolicy it stages.
        (
            res(
                "StagedKubernetesNetworkPolicy",
                "s",
                "  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}\n",
            ),
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "must be a strict subset of cidr",
        ),
        (
            res(
                "StagedKubernetesNetworkPolicy",
                "s",
                "  podSelector: {matchLabels: {\"bad key!\": x}}\n",
            ),
            "spec.podSelector",
            "bad key!",
        ),
        (
            res("StagedKubernetesNetworkPolicy", "s", "  policyTypes: [Sideways]\n"),
            "spec.policyTypes[0]",
            "valid: Ingress, Egress",
        ),
        (
            res("StagedKubernetesNetworkPolicy", "s", "  stagedAction: Remove\n"),
            "spec.stagedAction",
            "valid: Set, Delete",
        ),
        (
            res("StagedKubernetesNetworkPolicy", "s", "  selector: all()\n"),
            "spec.selector",
            "unknown field",
        ),
        // Kubernetes: an exception must be a strict subset of its block.
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/24, except: [10.0.0.0/24]}\n".into(),
            "spec.egress[0].to[0].ipBlock.except[0]",
            "must be a strict subset of cidr",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/24, except: [\"fd00::/120\"]}\n".into(),
            "spec.egress[0].to[0].ipBlock.except[0]",
            "must be a strict subset of cidr",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (text, path, frag)) in cases.iter().enumerate() {
        match load("case.yaml", text) {
            Ok(_) => failures.push(format!("case {i}: loaded but should fail:\n{text}")),
            Err(e) => {
                for line in e.errors() {
                    assert!(
                        !line.to_string().contains('\n'),
                        "case {i}: multi-line error"
                    );
                }
                let hit = e
                    .errors()
                    .iter()
                    .any(|l| l.path == *path && l.message.contains(frag));
                if !hit {
                    failures.push(format!("case {i}: want path {path:?} containing {frag:?}, got:\n{e}\n--- input ---\n{text}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn error_line_format() {
    let text = format!(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: t}}\n---\n{}",
        gnp("  ingress:\n  - action: Allow\n    protocol: tcpx\n")
            .replace("name: p", "name: deny-ssh")
    );
    let e = load("policies.yaml", &text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "policies.yaml: document 2 (GlobalNetworkPolicy deny-ssh): spec.ingress[0].protocol: \"tcpx\" is not a valid protocol (valid: TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255)"
    );
}

#[test]
fn valid_edge_cases_are_accepted() {
    let ok = [
        rule("{action: Allow, destination: {ports: [http]}}"),
        rule("{action: Allow, protocol: 6, destination: {ports: [\"1:65535\"]}}"),
        rule("{action: Allow, source: {namespaceSelector: global()}}"),
        rule("{action: Allow, source: {nets: [10.0.0.1]}}"),
        rule("{action: Allow, protocol: ICMP, icmp: {type: 0, code: 0}}"),
        rule(
            "{action: Allow, source: {services: {name: a, namespace: b}}, protocol: TCP, destination: {ports: [80]}}",
        ),
        gnp("  selector: \"\"\n"),
        NP.to_string()
            .replace("name: p", "name: knp.default.some.k8s.name"),
        res("IPPool", "p", "  cidr: 10.0.0.0/28\n  disabled: true\n"),
        res("Tier", "default", "  order: 1000000\n"),
        res(
            "FelixConfiguration",
            "default",
            "  defaultEndpointToHostAction: ACCEPT\n",
        ),
    ];
    for text in ok {
        if let Err(e) = load("ok.yaml", &text) {
            panic!("should load:\n{text}\n{e}");
        }
    }
}

/// BGPFilter and BlockAffinity: each bad field is refused with its path and what is valid.
#[test]
fn bgp_filter_and_block_affinity_problems_name_the_field() {
    let f = |spec: &str| res("BGPFilter", "f", spec);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            f("  exportV4:\n  - {action: Drop}\n"),
            "spec.exportV4[0].action",
            "\"Drop\" is not a valid BGPFilter action (valid: Accept, Reject)",
        ),
        (
            f("  exportV4:\n  - {action: accept}\n"),
            "spec.exportV4[0].action",
            "did you mean Accept?",
        ),
        (
            f("  importV4:\n  - {}\n"),
            "spec.importV4[0]",
            "missing field `action`",
        ),
        (
            f("  exportV4:\n  - {action: Accept, cidr: 10.0.0.0/33, matchOperator: In}\n"),
            "spec.exportV4[0].cidr",
            "not an IPv4 CIDR (valid: e.g. 10.0.0.0/8)",
        ),
        (
            f("  exportV6:\n  - {action: Accept, cidr: 10.0.0.0/8, matchOperator: In}\n"),
            "spec.exportV6[0].cidr",
            "not an IPv6 CIDR",
        ),
        (
            f("  exportV4:\n  - {action: Accept, cidr: 10.0.0.0/8, matchOperator: Within}\n"),
            "spec.exportV4[0].matchOperator",
            "(valid: Equal, NotEqual, In, NotIn)",
        ),
        (
            f("  exportV4:\n  - {action: Accept, cidr: 10.0.0.0/8}\n"),
            "spec.exportV4[0].matchOperator",
            "must both be set or both be empty",
        ),
        (
            f("  exportV4:\n  - {action: Accept, matchOperator: Equal}\n"),
            "spec.exportV4[0].cidr",
            "must both be set or both be empty",
        ),
        (
            f("  exportV4:\n  - {action: Accept, prefixLength: {min: 8}}\n"),
            "spec.exportV4[0].prefixLength",
            "cidr is required",
        ),
        (
            f(
                "  importV6:\n  - {action: Accept, cidr: \"fd00::/8\", matchOperator: In, prefixLength: {max: 129}}\n",
            ),
            "spec.importV6[0].prefixLength.max",
            "valid: 0-128",
        ),
        (
            f(
                "  exportV4:\n  - {action: Accept, cidr: 10.0.0.0/8, matchOperator: In, prefixLength: {min: 33}}\n",
            ),
            "spec.exportV4[0].prefixLength.min",
            "33 is out of range (valid: 0-32)",
        ),
        (
            f(
                "  exportV4:\n  - {action: Reject, cidr: 10.0.0.0/8, matchOperator: In, prefixLength: {min: 30, max: 20}}\n",
            ),
            "spec.exportV4[0].prefixLength.min",
            "min 30 is greater than max 20 (valid: min <= max",
        ),
        (
            f(
                "  importV6:\n  - {action: Accept, cidr: \"fd00::/8\", matchOperator: In, prefixLength: {min: 64, max: 48}}\n",
            ),
            "spec.importV6[0].prefixLength.min",
            "min 64 is greater than max 48",
        ),
        (
            f("  exportV4:\n  - {action: Accept, source: Local}\n"),
            "spec.exportV4[0].source",
            "(valid: RemotePeers)",
        ),
        (
            f("  exportV4:\n  - {action: Accept, peerType: ebgp}\n"),
            "spec.exportV4[0].peerType",
            "did you mean eBGP?",
        ),
        (
            f("  exportV4:\n  - {action: Accept, interface: \"eth\\\"0\"}\n"),
            "spec.exportV4[0].interface",
            "'*' as a wildcard",
        ),
        (
            f("  exportV4:\n  - {action: Accept, communities: {values: [\"65536:1\"]}}\n"),
            "spec.exportV4[0].communities.values[0]",
            "not a valid community",
        ),
        (
            f("  exportV4:\n  - {action: Accept, priority: 0}\n"),
            "spec.exportV4[0].priority",
            "valid: 1-2147483646",
        ),
        (
            f("  exportV4:\n  - action: Reject\n    operations: [{setPriority: {value: 5}}]\n"),
            "spec.exportV4[0].operations",
            "only be used with action Accept",
        ),
        (
            f("  exportV4:\n  - action: Accept\n    operations: [{}]\n"),
            "spec.exportV4[0].operations[0]",
            "exactly one operation must be set",
        ),
        (
            f(
                "  exportV4:\n  - action: Accept\n    operations: [{addCommunity: {value: \"1:2:3:4\"}}]\n",
            ),
            "spec.exportV4[0].operations[0].addCommunity.value",
            "not a valid community",
        ),
        (
            f("  exportV4:\n  - {action: Accept, bogus: 1}\n"),
            "spec.exportV4[0].bogus",
            "unknown field `bogus`, expected one of `cidr`",
        ),
        (
            res(
                "BlockAffinity",
                "a",
                "  node: n1\n  cidr: nonsense\n  state: confirmed\n",
            ),
            "spec.cidr",
            "is not a CIDR (valid: e.g. 10.244.0.0/26)",
        ),
        (
            res(
                "BlockAffinity",
                "a",
                "  node: n1\n  cidr: 10.0.0.0/26\n  state: done\n",
            ),
            "spec.state",
            "(valid: confirmed, pending, pendingDeletion)",
        ),
        (
            res("BlockAffinity", "a", "  cidr: 10.0.0.0/26\n"),
            "spec.node",
            "required",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (text, path, frag)) in cases.iter().enumerate() {
        match load("filters.yaml", text) {
            Ok(_) => failures.push(format!("case {i}: loaded but should fail:\n{text}")),
            Err(e) => {
                let hit = e.errors().iter().any(|l| {
                    l.path == *path
                        && l.message.contains(frag)
                        && l.to_string().starts_with("filters.yaml: document 1 (")
                });
                if !hit {
                    failures.push(format!(
                        "case {i}: want path {path:?} containing {frag:?}, got:\n{e}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The documented example loads.
    let ok = f(
        "  exportV4:\n  - {action: Accept, cidr: 10.0.0.0/8, matchOperator: In, prefixLength: {min: 16, max: 24}, interface: \"cali*\"}\n  - action: Accept\n    operations: [{prependASPath: {prefix: [65000]}}]\n",
    );
    load("ok.yaml", &ok).expect("a valid BGPFilter loads");
}

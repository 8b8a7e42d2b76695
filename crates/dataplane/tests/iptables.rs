//! The Calico-style iptables rendering: its text has felix's layout (unit tests); its
//! incremental rendering equals a full one and the programmer sends only changed chains; and in
//! namespaces these tests make, real packets between two pods pass and drop through it exactly
//! as through the nft table and as the reference evaluator says (system tests: root, nft,
//! iptables-nft-restore, ipset).

mod common;
#[path = "common/pods.rs"]
mod pods;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use gingham_calc::Snapshot;
use gingham_calc::eval::Flow;
use gingham_calc::incremental::{Calculator, Update};
use gingham_dataplane::iptables::{
    self, CHAIN_FORWARD, CHAIN_FROM_WL_DISPATCH, CHAIN_TO_WL_DISPATCH, Flavour, IptProgrammer,
    IptRecording, IptRenderer, IptTable, Iptables, render_iptables,
};
use gingham_dataplane::table::IFACE_INDEX;
use gingham_dataplane::{
    Dataplane, IptDataplane, Nft, NftDataplane, Path, Programmer, Renderer, Settings, Touched,
    render,
};
use gingham_model::Resource;
use gingham_net::netns::{NetnsRef, in_netns};
use gingham_testkit::netns::{TestNetns, TwoPods};

const NODE: &str = "node0";
const CLIENT_IP: &str = "10.98.0.1";
const SERVER_IP: &str = "10.98.0.2";

fn endpoint(pod: &str, labels: &str, iface: &str, ip: &str) -> String {
    pods::workload_yaml(NODE, pod, labels, iface, &[&format!("{ip}/32")])
}

/// Two pods; the server (app web) lets the client (role client) in on TCP 8080 and UDP 8081 and
/// 5353 only; the client may not send UDP to 5353 (its egress policy); everything else falls to
/// the namespace profile (allow).
fn cluster() -> Vec<Resource> {
    cluster_with_port(8080)
}

fn cluster_with_port(port: u16) -> Vec<Resource> {
    let text = (String::from(pods::ALLOW_ALL_PROFILE)
        + "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: ns0}
spec:
  order: 10
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'client'}
    destination: {ports: [PORT]}
  - action: Allow
    protocol: UDP
    source: {selector: role == 'client'}
    destination: {ports: [8081, 5353]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: client-out, namespace: ns0}
spec:
  order: 20
  selector: role == 'client'
  types: [Egress]
  egress:
  - action: Deny
    protocol: UDP
    destination: {ports: [5353]}
  - action: Allow
---
")
    .replace("PORT", &port.to_string());
    with_two_pods("iptables-test.yaml", text)
}

/// `text` (YAML documents, each ending with `---`) with the two pods' endpoints (client
/// `role: client`, server `app: web`, namespace ns0), loaded as the file `file`.
fn with_two_pods(file: &str, mut text: String) -> Vec<Resource> {
    text.push_str(&endpoint(
        "client",
        "role: client",
        TwoPods::CLIENT_IF,
        CLIENT_IP,
    ));
    text.push_str(&endpoint(
        "server",
        "app: web",
        TwoPods::SERVER_IF,
        SERVER_IP,
    ));
    gingham_model::load_resources(file, &text).expect("valid test input")
}

fn program() -> gingham_calc::program::NodeProgram {
    let mut calc = Calculator::new(NODE);
    calc.load_all(cluster());
    calc.state()
}

fn rules<'a>(t: &'a IptTable, chain: &str) -> Vec<&'a str> {
    t.chains
        .get(chain)
        .unwrap_or_else(|| panic!("no chain {chain} in {:?}", t.chains.keys()))
        .iter()
        // Every rule carries felix's comment; what follows it is the rule.
        .map(|r| r.split_once("\" ").map_or(r.as_str(), |(_, spec)| spec))
        .collect()
}

#[test]
fn the_rendering_has_felix_s_chain_layout() {
    let t = render_iptables(&program(), &Settings::default());
    assert!(
        t.chains
            .values()
            .flatten()
            .all(|r| r.starts_with("-m comment --comment \"cali:")),
        "every rule has a cali: comment"
    );
    assert_eq!(
        rules(&t, CHAIN_FORWARD),
        [
            "-j MARK --set-xmark 0x0/0xe0000",
            "-m mark --mark 0x0/0x10000 -j cali-from-hep-forward",
            "-i cali+ -j cali-from-wl-dispatch",
            "-o cali+ -j cali-to-wl-dispatch",
            "-j cali-to-hep-forward",
            "-j cali-cidr-block",
        ]
    );
    // Dispatch: a shallow tree by the character after the common prefix `calib`.
    assert_eq!(
        rules(&t, CHAIN_FROM_WL_DISPATCH),
        [
            "-i caliX -g cali-fw-caliX".replace("caliX", TwoPods::CLIENT_IF),
            "-i caliX -g cali-fw-caliX".replace("caliX", TwoPods::SERVER_IF),
            "-j DROP".into(),
        ]
    );
    assert_eq!(
        rules(&t, CHAIN_TO_WL_DISPATCH)[1],
        "-o calibserver -g cali-tw-calibserver"
    );
    // The server's ingress: conntrack first, then marks cleared, the tier, the profile.
    let tw = rules(&t, "cali-tw-calibserver");
    assert_eq!(
        tw,
        [
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-m conntrack --ctstate INVALID -j DROP",
            "-j MARK --set-xmark 0x0/0x30000",
            "-j MARK --set-xmark 0x0/0x20000",
            "-m mark --mark 0x0/0x20000 -j cali-pi-np/ns0/web",
            "-m mark --mark 0x10000/0x10000 -j RETURN",
            "-m mark --mark 0x0/0x20000 -j DROP",
            "-j cali-pri-kns.ns0",
            "-m mark --mark 0x10000/0x10000 -j RETURN",
            "-j DROP",
        ]
    );
    // The client's egress drops workload-originated VXLAN and IPIP first.
    let fw = rules(&t, "cali-fw-calibclient");
    assert_eq!(
        fw[0],
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    assert_eq!(fw[3], "-p udp -m udp --dport 4789 -j DROP");
    assert_eq!(fw[4], "-p ipencap -j DROP");
    assert!(fw.contains(&"-m mark --mark 0x0/0x20000 -j cali-po-np/ns0/client-out"));
    // The policy: the client selector as an ipset holding the client's address.
    let pi = rules(&t, "cali-pi-np/ns0/web");
    assert_eq!(pi.len(), 4, "{pi:?}");
    let (set, _) = t
        .sets
        .iter()
        .find(|(_, s)| s.members.contains(&format!("{CLIENT_IP}/32")))
        .expect("a set holding the client");
    assert!(set.starts_with("cali40s:"), "{set}");
    assert_eq!(
        pi[0],
        format!(
            "-p tcp -m set --match-set {set} src -m multiport --dports 8080 -j MARK --set-xmark 0x10000/0x10000"
        )
    );
    assert_eq!(pi[1], "-m mark --mark 0x10000/0x10000 -j RETURN");
    assert_eq!(
        rules(&t, "cali-po-np/ns0/client-out"),
        [
            "-p udp -m multiport --dports 5353 -j DROP",
            "-j MARK --set-xmark 0x10000/0x10000",
            "-m mark --mark 0x10000/0x10000 -j RETURN",
        ]
    );
    // The restore input declares every chain before filling it.
    let text = t.restore_text();
    assert!(text.starts_with("*filter\n:"), "{text}");
    assert!(text.ends_with("COMMIT\n"));
    assert!(
        t.ipset_text()
            .contains(&format!("create {set} hash:net family inet"))
    );
}

#[test]
fn incremental_rendering_equals_a_full_one_and_only_changed_chains_are_sent() {
    let mut calc = Calculator::new(NODE);
    calc.load_all(cluster());
    let mut renderer = IptRenderer::new(calc.state(), Settings::default());
    let mut programmer = IptProgrammer::new(IptRecording::default());
    let all = renderer.take_touched();
    let first = programmer.sync_touched(renderer.table(), &all).unwrap();
    assert!(first.read_kernel && first.replaced);
    // The policy's port changes: one policy chain is rewritten, nothing else.
    let changed = cluster_with_port(9090).remove(1);
    let changes = calc.apply(Update::Upsert(Box::new(changed)));
    renderer.apply(&changes);
    let touched = renderer.take_touched();
    assert_eq!(
        renderer.table(),
        &render_iptables(renderer.program(), &Settings::default())
    );
    let applied = programmer.sync_touched(renderer.table(), &touched).unwrap();
    assert_eq!(applied.commands, 1, "{applied:?}");
    let sent = programmer.backend().restores.last().unwrap();
    assert!(sent.contains(":cali-pi-np/ns0/web - [0:0]"), "{sent}");
    assert!(!sent.contains("cali-tw-"), "{sent}");
    assert!(sent.contains("--dports 9090"), "{sent}");
    // The client goes: its chains, its dispatch entries and the selector's member go.
    let changes = calc.apply(Update::Delete {
        kind: gingham_model::Kind::WorkloadEndpoint,
        namespace: Some("ns0".into()),
        name: format!("{NODE}-k8s-client-eth0"),
    });
    renderer.apply(&changes);
    let touched = renderer.take_touched();
    assert_eq!(
        renderer.table(),
        &render_iptables(renderer.program(), &Settings::default())
    );
    programmer.sync_touched(renderer.table(), &touched).unwrap();
    let sent = programmer.backend().restores.last().unwrap();
    assert!(sent.contains("-X cali-fw-calibclient"), "{sent}");
    assert!(sent.contains(":cali-from-wl-dispatch - [0:0]"), "{sent}");
    let sets = programmer.backend().ipsets.join("");
    assert!(
        sets.lines()
            .any(|l| l.starts_with("del cali40s:") && l.ends_with(&format!(" {CLIENT_IP}/32"))),
        "{sets}"
    );
}

// ---- Real packets ----

/// What a flow did: passed (the connection or datagram arrived) or not.
fn tcp_passes(client: &TestNetns, port: u16) -> bool {
    let addr: SocketAddr = format!("{SERVER_IP}:{port}").parse().unwrap();
    in_netns(&NetnsRef::path(client.path()), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(700)).map(|mut s| {
            s.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.read_exact(&mut b).is_ok()
        })
    })
    .unwrap()
    .unwrap_or(false)
}

fn udp_passes(client: &TestNetns, server: &UdpSocket, port: u16, tag: u32) -> bool {
    let to = SocketAddr::new(SERVER_IP.parse().unwrap(), port);
    pods::udp_passes(client, server, to, tag)
}

/// The matrix's cells: (protocol, port).
const CELLS: [(u8, u16); 5] = [(6, 8080), (6, 8081), (17, 8080), (17, 5353), (17, 8081)];

/// Every cell of the matrix from the client to the server, with `dp` installed in the node.
fn matrix(pods: &TwoPods, servers: &[(u16, UdpSocket)], round: u32) -> Vec<bool> {
    CELLS
        .iter()
        .enumerate()
        .map(|(i, (proto, port))| {
            if *proto == 6 {
                tcp_passes(&pods.client, *port)
            } else {
                let sock = &servers.iter().find(|(p, _)| p == port).unwrap().1;
                udp_passes(&pods.client, sock, *port, round * 100 + i as u32)
            }
        })
        .collect()
}

fn serve(pods: &TwoPods) -> Vec<(u16, UdpSocket)> {
    let ns = NetnsRef::path(pods.server.path());
    for port in [8080u16, 8081] {
        let l = in_netns(&ns, move || TcpListener::bind(("0.0.0.0", port)).unwrap()).unwrap();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
            }
        });
    }
    [8080u16, 5353, 8081]
        .into_iter()
        .map(|port| {
            let s = in_netns(&ns, move || UdpSocket::bind(("0.0.0.0", port)).unwrap()).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(700)))
                .unwrap();
            (port, s)
        })
        .collect()
}

fn require_tools() {
    gingham_testkit::require_root();
    for t in [
        "ip",
        "nft",
        "iptables-nft-restore",
        "iptables-nft-save",
        "ipset",
    ] {
        gingham_testkit::require_tool(t);
    }
}

/// The reference evaluator's verdict for each of [`CELLS`], client to server.
fn reference_verdicts(resources: &[Resource]) -> Vec<bool> {
    let snapshot = Snapshot::build(resources);
    CELLS
        .iter()
        .map(|(proto, port)| {
            snapshot
                .verdict(&Flow::new(CLIENT_IP, SERVER_IP, *proto, Some(*port)))
                .unwrap()
                .allowed
        })
        .collect()
}

#[test]
fn sys_iptables_and_nft_pass_and_drop_the_same_packets_as_the_reference() {
    require_tools();
    let pods = TwoPods::new("ipt", CLIENT_IP, SERVER_IP);
    let servers = serve(&pods);
    let reference = reference_verdicts(&cluster());
    // The policies make both outcomes appear: the matrix tests something.
    assert_eq!(reference, [true, false, false, false, true]);
    // Without any rules everything passes (the plumbing works).
    assert_eq!(matrix(&pods, &servers, 1), [true; 5], "plumbing");

    let node = pods.node.name();
    let mut nft = NftDataplane::new(Nft::in_netns(node));
    nft.install(program(), Settings::default()).unwrap();
    let through_nft = matrix(&pods, &servers, 2);
    pods.node
        .exec_ok(&["nft", "delete", "table", "inet", gingham_dataplane::TABLE]);

    // The same table written by the netlink path (nl): the base chains and empty chains and
    // sets by nft, then every chain's rules and every set's members as one netlink batch.
    let table = render(&program(), &Settings::default()).table;
    let mut skeleton = table.clone();
    for set in skeleton.sets.values_mut() {
        set.elements.clear();
    }
    for chain in skeleton.chains.values_mut().filter(|c| c.base.is_none()) {
        chain.rules.clear();
    }
    let mut programmer = Programmer::new(Nft::in_netns(node));
    programmer.sync(skeleton).unwrap();
    let everything = Touched {
        all: false,
        chains: table.chains.keys().cloned().collect(),
        sets: table.sets.keys().cloned().collect(),
        ..Touched::default()
    };
    let applied = programmer.sync_touched(&table, &everything).unwrap();
    let unencodable: Vec<String> = table
        .chains
        .values()
        .flat_map(|c| &c.rules)
        .filter_map(|r| gingham_dataplane::nl::rule_encodes(&r.text).err())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(applied.path, Path::Netlink, "{applied:?}: {unencodable:?}");
    let through_netlink = matrix(&pods, &servers, 5);
    assert_eq!(through_netlink, reference, "nft table written by netlink");
    pods.node
        .exec_ok(&["nft", "delete", "table", "inet", gingham_dataplane::TABLE]);

    let mut ipt = IptDataplane::new(Iptables::in_netns(node, Flavour::Nft));
    ipt.install(program(), Settings::default()).unwrap();
    let through_ipt = matrix(&pods, &servers, 3);
    let saved = pods.node.exec_ok(&["iptables-nft-save", "-t", "filter"]);
    assert!(saved.contains("-A FORWARD -m comment --comment"), "{saved}");
    assert!(saved.contains(":cali-tw-calibserver"), "{saved}");
    for (i, cell) in CELLS.iter().enumerate() {
        assert_eq!(
            (through_ipt[i], through_nft[i]),
            (reference[i], reference[i]),
            "cell {cell:?}: iptables {} nft {} reference {}",
            through_ipt[i],
            through_nft[i],
            reference[i]
        );
    }
    // A fresh programmer finds its chains in the kernel and rewrites them in place (no
    // duplicate hooks); the removal input takes everything out again.
    let table = ipt.renderer().unwrap().table().clone();
    let mut fresh = IptProgrammer::new(Iptables::in_netns(node, Flavour::Nft));
    let applied = fresh.sync(&table).unwrap();
    assert!(applied.read_kernel);
    let saved = pods.node.exec_ok(&["iptables-nft-save", "-t", "filter"]);
    assert_eq!(saved.matches("-j cali-FORWARD").count(), 1, "{saved}");
    assert_eq!(matrix(&pods, &servers, 4), reference, "after a resync");
    let (restore, sets) = iptables::removal(&table);
    let mut backend = Iptables::in_netns(node, Flavour::Nft);
    use gingham_dataplane::iptables::IptBackend;
    backend.restore(&restore).unwrap();
    backend.ipset(&sets).unwrap();
    let saved = pods.node.exec_ok(&["iptables-nft-save", "-t", "filter"]);
    assert!(!saved.contains("cali"), "{saved}");
    assert!(
        pods.node
            .exec_ok(&["ipset", "list", "-n"])
            .trim()
            .is_empty()
    );
}

#[test]
fn sys_the_legacy_flavour_programs_the_same_chains() {
    require_tools();
    gingham_testkit::require_tool("iptables-legacy-restore");
    let ns = TestNetns::new("iptleg");
    let mut ipt = IptDataplane::new(Iptables::in_netns(ns.name(), Flavour::Legacy));
    ipt.install(program(), Settings::default()).unwrap();
    let saved = ns.exec_ok(&["iptables-legacy-save", "-t", "filter"]);
    for chain in ["cali-FORWARD", "cali-tw-calibserver", "cali-pi-np/ns0/web"] {
        assert!(
            saved.contains(&format!(":{chain} ")),
            "{chain} missing:\n{saved}"
        );
    }
}

/// Every chain of `table` holds exactly its rules in the kernel (`iptables-save`), the hooks are
/// there once, and no other `cali-*` chain is.
fn assert_installed(ns: &TestNetns, table: &IptTable, case: &str) {
    let saved = ns.exec_ok(&["iptables-nft-save", "-t", "filter"]);
    let mut in_kernel: std::collections::BTreeMap<&str, usize> = Default::default();
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix(':').and_then(|l| l.split(' ').next())
            && name.starts_with("cali-")
        {
            in_kernel.entry(name).or_default();
        } else if let Some(rest) = line.strip_prefix("-A ")
            && let Some((chain, _)) = rest.split_once(' ')
            && chain.starts_with("cali-")
        {
            *in_kernel.entry(chain).or_default() += 1;
        }
    }
    let desired: std::collections::BTreeMap<&str, usize> = table
        .chains
        .iter()
        .map(|(n, r)| (n.as_str(), r.len()))
        .collect();
    assert_eq!(in_kernel, desired, "{case}:\n{saved}");
    assert_eq!(saved.matches("-j cali-FORWARD").count(), 1, "{case}");
    let sets = ns.exec_ok(&["ipset", "list", "-n"]);
    let sets: std::collections::BTreeSet<&str> = sets.lines().collect();
    let wanted: std::collections::BTreeSet<&str> = table.sets.keys().map(String::as_str).collect();
    assert_eq!(sets, wanted, "{case}");
}

#[test]
fn sys_every_case_renders_to_rules_iptables_and_ipset_accept() {
    require_tools();
    let ns = TestNetns::new("iptcase");
    // One programmer going from case to case by difference (chains and sets come and go), and
    // after each a fresh one rewriting everything from what it reads.
    let mut programmer = IptProgrammer::new(Iptables::in_netns(ns.name(), Flavour::Nft));
    for (dir, program, settings) in common::case_programs() {
        let case = dir.display().to_string();
        let table = render_iptables(&program, &settings);
        programmer
            .sync(&table)
            .unwrap_or_else(|e| panic!("{case}: {e}\n{}", table.restore_text()));
        assert_installed(&ns, &table, &case);
        IptProgrammer::new(Iptables::in_netns(ns.name(), Flavour::Nft))
            .check(&table)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_installed(&ns, &table, &case);
    }
}

/// For every policy case: rendering incrementally (from nothing, the case's sets and programs
/// arriving as the calculator's changes; then all of them leaving) equals rendering in full.
#[test]
fn incremental_rendering_equals_a_full_one_for_every_case() {
    use gingham_calc::incremental::Change;
    use gingham_calc::program::NodeProgram;
    for (dir, program, settings) in common::case_programs() {
        let mut r = IptRenderer::new(NodeProgram::default(), settings.clone());
        r.take_touched();
        let mut arrive: Vec<Change> = program
            .sets
            .iter()
            .map(|(id, members)| Change::SetAdded {
                id: id.clone(),
                members: members.clone(),
            })
            .collect();
        arrive.extend(program.endpoints.iter().map(|(k, p)| Change::ProgramSet {
            endpoint: k.clone(),
            program: Box::new(p.clone()),
        }));
        r.apply(&arrive);
        let touched = r.take_touched();
        assert!(!touched.all);
        assert_eq!(
            r.table(),
            &render_iptables(&program, &settings),
            "{}",
            dir.display()
        );
        let mut leave: Vec<Change> = program
            .endpoints
            .keys()
            .map(|k| Change::ProgramRemoved {
                endpoint: k.clone(),
            })
            .collect();
        leave.extend(
            program
                .sets
                .keys()
                .map(|id| Change::SetRemoved { id: id.clone() }),
        );
        r.apply(&leave);
        assert_eq!(
            r.table(),
            &render_iptables(&NodeProgram::default(), &settings),
            "{}",
            dir.display()
        );
    }
}

/// The two pods with a tier that has a Pass rule: `security` (before the default tier) denies
/// UDP 5353 to the server, allows TCP 8081 and passes the rest to the default tier, where the
/// server's policy allows TCP 8080 and UDP 8081 from the client; the client's egress policy
/// allows everything (inlined: its Allow must go on to the server's ingress, not accept).
fn pass_tier_cluster() -> Vec<Resource> {
    security_tier_cluster(
        "pass-tier.yaml",
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.gate}
spec:
  tier: security
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: UDP
    destination: {ports: [5353]}
  - action: Allow
    protocol: TCP
    destination: {ports: [8081]}
  - action: Pass
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: ns0}
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'client'}
    destination: {ports: [8080]}
  - action: Allow
    protocol: UDP
    source: {selector: role == 'client'}
    destination: {ports: [8081]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: client-out, namespace: ns0}
spec:
  selector: role == 'client'
  types: [Egress]
  egress:
  - action: Allow
---
",
    )
}

/// A tier with a Pass rule keeps its tier chain (a jump per policy, mark bits) in the server's
/// stage chain, the default tier after it is inlined, the client's egress stage is all inline;
/// and real packets pass and drop as the reference evaluator says.
#[test]
fn sys_a_pass_tier_keeps_its_chain_and_packets_agree_with_the_reference() {
    require_tools();
    let reference = reference_verdicts(&pass_tier_cluster());
    // Allowed in the Pass tier, passed then allowed, passed then dropped at the end of the
    // default tier, denied in the Pass tier, passed then allowed.
    assert_eq!(reference, [true, true, false, false, true]);

    let mut calc = Calculator::new(NODE);
    calc.load_all(pass_tier_cluster());
    let program = calc.state();
    let table = render(&program, &Settings::default()).table;
    let pods = TwoPods::new("pass", CLIENT_IP, SERVER_IP);
    let servers = serve(&pods);
    assert_eq!(matrix(&pods, &servers, 1), [true; 5], "plumbing");
    let node = pods.node.name();
    let mut nft = NftDataplane::new(Nft::in_netns(node));
    nft.install(program, Settings::default()).unwrap();
    assert_eq!(matrix(&pods, &servers, 2), reference, "through nft");

    let stage_of = |map: &str, iface: &str| -> String {
        let prefix = format!("\"{iface}\" : ");
        let element = table.sets[map]
            .elements
            .iter()
            .find_map(|e| e.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{map}: no element for {iface}"));
        element.rsplit(' ').next().unwrap().to_owned()
    };
    let texts = |chain: &str| -> Vec<String> {
        table.chains[chain]
            .rules
            .iter()
            .map(|r| r.text.clone())
            .collect()
    };
    let server = stage_of("wl-ingress", TwoPods::SERVER_IF);
    let server_rules = texts(&server);
    assert!(
        server_rules[0].starts_with("meta mark set"),
        "marks cleared first: {server_rules:#?}"
    );
    assert_eq!(
        server_rules[1],
        format!("jump {server}0"),
        "{server_rules:#?}"
    );
    assert!(
        server_rules.iter().any(|r| r.ends_with("counter accept")),
        "the default tier inlined: {server_rules:#?}"
    );
    assert!(
        texts(&format!("{server}0"))
            .iter()
            .any(|r| r.starts_with("jump p")),
        "the Pass tier jumps to its policy's chain"
    );
    let client = stage_of("wl-egress", TwoPods::CLIENT_IF);
    let client_rules = texts(&client);
    assert!(
        client_rules
            .iter()
            .all(|r| !r.contains("meta mark") && !r.contains("jump ")),
        "{client_rules:#?}"
    );
    assert!(client_rules.iter().any(|r| r.ends_with("counter return")));
}

/// The client's egress goes through a tier with a Pass rule (`security`: Allow UDP 8081, Pass
/// the rest), so its stage sets and tests our mark bits; nothing selects the server, whose
/// profile allows everything (its ingress is the dispatch map's `accept`).
fn marking_cluster() -> Vec<Resource> {
    security_tier_cluster(
        "marking.yaml",
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.client-out}
spec:
  tier: security
  selector: role == 'client'
  types: [Egress]
  egress:
  - action: Allow
    protocol: UDP
    destination: {ports: [8081]}
  - action: Pass
---
",
    )
}

/// The two pods in namespace ns0, whose profile allows everything, a tier `security` (order 10)
/// and `policies` (YAML documents, each ending with `---`), loaded as the file `file`.
fn security_tier_cluster(file: &str, policies: &str) -> Vec<Resource> {
    let text = String::from(pods::ALLOW_ALL_PROFILE)
        + "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 10}
---
" + policies;
    with_two_pods(file, text)
}

/// Counts, at the end of the client's node (postrouting), the packets to the server's UDP
/// ports that still carry one of our mark bits, and all of them; and sets kube-proxy's
/// masquerade bit (0x4000) on them on the way in, which must come out untouched.
const MARK_PROBE: &str = "table inet probe {
 chain pre {
  type filter hook prerouting priority -200; policy accept;
  udp dport { 8080, 8081 } meta mark set meta mark | 0x00004000
 }
 chain post {
  type filter hook postrouting priority 200; policy accept;
  udp dport { 8080, 8081 } meta mark & 0x00030000 != 0 counter
  udp dport { 8080, 8081 } meta mark & 0x00004000 != 0 counter
  udp dport { 8080, 8081 } counter
 }
}
";

/// The packet counts of the probe's postrouting rules, in order.
fn probe_counts(node: &TestNetns) -> Vec<u64> {
    let listing = node.exec_ok(&["nft", "list", "chain", "inet", "probe", "post"]);
    listing
        .lines()
        .filter_map(|l| l.split_once("counter packets ").map(|(_, rest)| rest))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// Our mark bits (accept, pass) are scratch bits of a stage that walks tier or policy chains:
/// they never leave the table, whether the flow then goes to a workload on the same node (whose
/// ingress accepts at once) or out of the node; other bits of the mark (kube-proxy's 0x4000)
/// pass through untouched.
#[test]
fn sys_our_mark_bits_never_leave_the_table() {
    require_tools();
    let mut calc = Calculator::new(NODE);
    calc.load_all(marking_cluster());
    let program = calc.state();
    // The premise: the client's egress stage uses the mark bits.
    let table = render(&program, &Settings::default()).table;
    let egress = table.sets["wl-egress"]
        .elements
        .iter()
        .find_map(|e| e.strip_prefix(&format!("\"{}\" : ", TwoPods::CLIENT_IF)))
        .and_then(|verdict| verdict.split(' ').nth(1))
        .expect("the client's egress has a stage chain")
        .to_owned();
    assert!(
        table.chains[&egress]
            .rules
            .iter()
            .any(|r| r.text.contains("meta mark set")),
        "{:#?}",
        table.chains[&egress]
    );
    // And its rules go by netlink too (the netlink tests hold that encoding equal to nft's).
    for r in &table.chains[&egress].rules {
        gingham_dataplane::nl::rule_encodes(&r.text).unwrap();
    }
    let mut seen = Vec::new();
    for pods in [
        TwoPods::new("mk1", CLIENT_IP, SERVER_IP),
        TwoPods::across_nodes("mk2", CLIENT_IP, SERVER_IP),
    ] {
        let servers = serve(&pods);
        let topology = if pods.server_node.is_some() {
            "two nodes"
        } else {
            "one node"
        };
        for node in pods.nodes() {
            let mut nft = NftDataplane::new(Nft::in_netns(node.name()));
            nft.install(program.clone(), Settings::default()).unwrap();
        }
        pods.node.exec_ok(&["nft", MARK_PROBE]);
        // 8081: allowed in the Pass tier (the accept bit was set); 8080: passed, then allowed by
        // the profile (the pass bit was set).
        for (i, port) in [8081u16, 8080].into_iter().enumerate() {
            let sock = &servers.iter().find(|(p, _)| *p == port).unwrap().1;
            assert!(
                udp_passes(&pods.client, sock, port, 900 + i as u32),
                "{topology}: UDP {port}"
            );
        }
        seen.push((topology, probe_counts(&pods.node)));
    }
    // Per topology: packets with our bits, with 0x4000, all.
    assert_eq!(
        seen,
        [("one node", vec![0, 2, 2]), ("two nodes", vec![0, 2, 2])]
    );
}

/// The pods' interfaces in `node` (name to index), as the agent gives them to the renderer.
fn pod_links(node: &TestNetns) -> BTreeMap<String, u32> {
    let nl = gingham_net::Netlink::open(&NetnsRef::named(node.name())).unwrap();
    [TwoPods::CLIENT_IF, TwoPods::SERVER_IF]
        .into_iter()
        .map(|name| (name.to_owned(), nl.link_index(name).unwrap().unwrap()))
        .collect()
}

/// Dispatch maps keyed by interface index pass and drop the packets the reference says, on
/// the text path (a full load) and the netlink path. A pod's interface created again under its
/// name has a new index: until the renderer is given it, the pod's packets miss the index map
/// and are looked up by name behind its catch-all, so they still meet the pod's own verdicts
/// (the agent's window between a WorkloadEndpoint and its interface); given it, one netlink
/// transaction moves the elements to the new index.
#[test]
fn sys_dispatch_maps_keyed_by_interface_index_pass_and_drop_as_the_reference() {
    require_tools();
    let pods = TwoPods::new("ixm", CLIENT_IP, SERVER_IP);
    let servers = serve(&pods);
    let reference = reference_verdicts(&cluster());
    assert_eq!(reference, [true, false, false, false, true]);
    let links = pod_links(&pods.node);
    let mut renderer = Renderer::with_links(program(), Settings::default(), Some(links.clone()));
    let table = renderer.table().clone();
    assert_eq!(table.sets["wl-ingress"].key, IFACE_INDEX);
    let server = links[TwoPods::SERVER_IF];
    assert!(
        table.sets["wl-ingress"]
            .elements
            .iter()
            .any(|e| e.starts_with(&format!("{server} : goto "))),
        "{:?}",
        table.sets["wl-ingress"]
    );
    let mut programmer = Programmer::new(Nft::in_netns(pods.node.name()));
    programmer.sync(table).unwrap();
    assert_eq!(matrix(&pods, &servers, 1), reference, "loaded by nft");
    let listed = pods
        .node
        .exec_ok(&["nft", "list", "map", "inet", "gingham", "wl-ingress"]);
    assert!(listed.contains("type iface_index : verdict"), "{listed}");
    assert!(listed.contains("\"calibserver\" : goto"), "{listed}");

    pods.recreate_server_interface(SERVER_IP);
    let moved = pod_links(&pods.node);
    assert_ne!(moved[TwoPods::SERVER_IF], server, "a new index");
    assert_eq!(
        matrix(&pods, &servers, 2),
        reference,
        "an index the map does not hold: looked up by name"
    );
    let listed = pods
        .node
        .exec_ok(&["nft", "list", "map", "inet", "gingham", "wl-ingress"]);
    assert!(
        !listed.contains("\"calibserver\" :"),
        "the new index is not in the map yet: {listed}"
    );
    renderer.take_touched();
    let new_index = moved[TwoPods::SERVER_IF];
    renderer.set_links(Some(moved));
    let touched = renderer.take_touched();
    // Only the server's elements move, from the old index to the new one.
    assert!(!touched.all && touched.chains.is_empty(), "{touched:?}");
    let keys = |set: &BTreeSet<String>| -> Vec<String> {
        set.iter()
            .map(|e| e.split(" : ").next().unwrap().to_owned())
            .collect()
    };
    for map in ["wl-egress", "wl-ingress"] {
        let edit = &touched.edits[map];
        assert_eq!(
            (keys(&edit.removed), keys(&edit.added)),
            (vec![server.to_string()], vec![new_index.to_string()]),
            "{map}"
        );
    }
    let applied = programmer.sync_touched(renderer.table(), &touched).unwrap();
    assert_eq!(applied.path, Path::Netlink, "{applied:?}");
    assert_eq!(
        matrix(&pods, &servers, 3),
        reference,
        "the new index, by netlink"
    );
    // The consistency check finds the kernel as recorded (names listed, indexes recorded).
    let checked = programmer.check(renderer.table().clone()).unwrap();
    assert_eq!(checked.commands, 0, "{checked:?}");
}

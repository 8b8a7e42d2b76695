//! How long plumbing one workload takes, setup plus teardown, in private namespaces (root
//! needed): the veth created in place (peer born in the pod namespace) against the naive way
//! (both ends created in the host namespace, then the peer moved into the pod).
//!
//! After criterion's runs, an interleaved sample of each way is timed again and the p50/p90
//! figures and the naive/in-place ratio are printed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::Criterion;
use gingham_net::{
    Netlink, NetnsRef, VethPlacement, VethSpec, WorkloadPlumbing, WorkloadSpec, create_netns,
    delete_netns, setup_workload, teardown_workload,
};

/// The namespaces of one bench run, deleted on drop.
struct Lab {
    names: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = delete_netns(n);
        }
    }
}

fn build_lab() -> (Lab, NetnsRef, PathBuf) {
    let pid = std::process::id();
    let names = vec![
        format!("gh-b-node-{pid}"),
        format!("gh-b-peer-{pid}"),
        format!("gh-b-pod-{pid}"),
    ];
    let lab = Lab {
        names: names.clone(),
    };
    let node = create_netns(&names[0]).expect("create node namespace (are you root?)");
    let peer = create_netns(&names[1]).unwrap();
    let pod = create_netns(&names[2]).unwrap();
    // An uplink with a default route, as on a real node.
    let nl = Netlink::open(&node).unwrap();
    let mut veth = VethSpec::new("uplink", "down");
    veth.up = true;
    veth.peer_up = true;
    veth.peer_netns = Some(peer.clone());
    nl.add_veth(&veth).unwrap();
    nl.add_address("uplink", "192.0.2.2/24".parse().unwrap())
        .unwrap();
    nl.replace_route_via(
        "0.0.0.0/0".parse().unwrap(),
        "192.0.2.1".parse().unwrap(),
        "uplink",
        false,
    )
    .unwrap();
    let pod_path = match pod {
        NetnsRef::Path(p) => p,
        NetnsRef::Current => unreachable!("create_netns returns a path"),
    };
    (lab, node, pod_path)
}

fn spec() -> WorkloadSpec {
    WorkloadSpec::new("calibench000001")
        .with_ipv4("10.65.0.2".parse().unwrap())
        .with_ipv6("fd00:65::2".parse().unwrap())
}

fn cycle(p: &WorkloadPlumbing, pod: &std::path::Path, s: &WorkloadSpec, how: VethPlacement) {
    p.setup_with(pod, s, how).unwrap();
    assert!(p.teardown(&s.host_ifname).unwrap());
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn main() {
    gingham_testkit::require_root();
    let (_lab, node, pod) = build_lab();
    let plumbing = WorkloadPlumbing::new(&node).unwrap();
    let s = spec();

    let mut c = Criterion::default().configure_from_args().sample_size(30);
    {
        let mut g = c.benchmark_group("workload setup+teardown");
        g.bench_function("in-place veth (session reused)", |b| {
            b.iter(|| cycle(&plumbing, &pod, &s, VethPlacement::InPlace))
        });
        g.bench_function("move-after-create veth (session reused)", |b| {
            b.iter(|| cycle(&plumbing, &pod, &s, VethPlacement::MoveAfterCreate))
        });
        g.bench_function("in-place veth (fresh session, as a CNI call)", |b| {
            b.iter(|| {
                setup_workload(&node, &pod, &s).unwrap();
                teardown_workload(&node, &s.host_ifname).unwrap();
            })
        });
        g.finish();
    }
    c.final_summary();

    // Interleaved samples of both ways, for a direct p50 comparison in the same run; setup is
    // also timed on its own, since teardown (the kernel unregistering the pair) is the same for
    // both and dominates the total.
    let n = 60;
    let mut rows: Vec<(&str, Vec<Duration>, Vec<Duration>)> = vec![
        (
            "in-place veth",
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        ),
        (
            "move-after-create veth",
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        ),
    ];
    for _ in 0..n {
        for (row, how) in rows
            .iter_mut()
            .zip([VethPlacement::InPlace, VethPlacement::MoveAfterCreate])
        {
            let t = Instant::now();
            plumbing.setup_with(&pod, &s, how).unwrap();
            let setup = t.elapsed();
            assert!(plumbing.teardown(&s.host_ifname).unwrap());
            row.1.push(setup);
            row.2.push(t.elapsed());
        }
    }
    println!("per pod, {n} interleaved samples each (p50 / p90):");
    let mut p50s = Vec::new();
    for (label, setup, total) in &mut rows {
        setup.sort();
        total.sort();
        println!(
            "  {label:<24} setup {:>10.3?} / {:>10.3?}   setup+teardown {:>10.3?} / {:>10.3?}",
            percentile(setup, 0.5),
            percentile(setup, 0.9),
            percentile(total, 0.5),
            percentile(total, 0.9)
        );
        p50s.push((percentile(setup, 0.5), percentile(total, 0.5)));
    }
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
    println!(
        "  ratio move/in-place at p50: setup {:.2}x, setup+teardown {:.2}x",
        ratio(p50s[0].0, p50s[1].0),
        ratio(p50s[0].1, p50s[1].1)
    );
}

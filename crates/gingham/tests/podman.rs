//! A real container runtime: podman (CNI backend) runs busybox containers on a network whose
//! conflist uses the `gingham` plugin, inside a test-made node namespace. The containers get
//! addresses from our IPAM, reach each other, and `podman rm` releases the address.
//! A system test: root, podman, runc and busybox (`scripts/setup` installs them).

use std::path::Path;
use std::process::{Command, Output};

use gingham_testkit::netns::TestNetns;
use gingham_testkit::{require_root, require_tool};

struct Podman<'a> {
    node: &'a TestNetns,
    dir: &'a Path,
}

impl Podman<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let dir = self.dir.display().to_string();
        Command::new(require_tool("nsenter"))
            .arg(format!("--net={}", self.node.path().display()))
            .arg(require_tool("podman"))
            .args([
                "--root",
                &format!("{dir}/storage"),
                "--runroot",
                &format!("{dir}/run"),
                "--storage-driver",
                "vfs",
            ])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn gingham(node: &TestNetns, args: &[&str]) -> String {
    let mut full = vec![env!("CARGO_BIN_EXE_gingham")];
    full.extend_from_slice(args);
    node.exec_ok(&full)
}

#[test]
fn sys_podman_runs_containers_on_the_gingham_network() {
    require_root();
    require_tool("podman");
    require_tool("runc");
    let busybox = require_tool("busybox");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // A root filesystem of busybox, no image registry needed.
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "ip", "ping", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    // The plugin directory holds `gingham`; the network uses it.
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gingham"), plugins.join("gingham")).unwrap();
    let netd = dir.join("net.d");
    std::fs::create_dir_all(&netd).unwrap();
    let ds = format!("sqlite:{}", dir.join("g.db").display());
    std::fs::write(
        netd.join("gnet.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "gnet",
            "plugins": [{
                "type": "gingham",
                "nodename": "node-a",
                "datastore": ds,
                "ipam": {"type": "gingham-ipam"}
            }]
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\nevents_logger = \"file\"\n[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{}\"\n",
            plugins.display(),
            netd.display()
        ),
    )
    .unwrap();

    // The node: its namespace, with a default route into an underlay namespace.
    let node = TestNetns::new("pmn");
    let underlay = TestNetns::new("pmu");
    gingham_testkit::netns::wire_to_underlay(
        &node,
        &underlay,
        "dn0",
        "192.168.230.1/24",
        "192.168.230.254/24",
    );
    let resources = dir.join("cluster.yaml");
    std::fs::write(
        &resources,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.95.0.0/24, blockSize: 28}\n---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-a}\n",
    )
    .unwrap();
    gingham(
        &node,
        &[
            "apply",
            "-f",
            resources.to_str().unwrap(),
            "--datastore",
            &ds,
        ],
    );

    let podman = Podman { node: &node, dir };
    let rootfs = rootfs.to_str().unwrap();
    // A container sees the address our IPAM gave it.
    let addr = podman.ok(&[
        "run",
        "--rm",
        "--network",
        "gnet",
        "--rootfs",
        rootfs,
        "/bin/ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(addr.contains("inet 10.95.0."), "{addr}");
    // One container reaches another.
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "server",
        "--network",
        "gnet",
        "--rootfs",
        rootfs,
        "/bin/sleep",
        "300",
    ]);
    let result = std::panic::catch_unwind(|| {
        let ip = podman.ok(&[
            "inspect",
            "server",
            "--format",
            "{{.NetworkSettings.Networks.gnet.IPAddress}}",
        ]);
        assert!(ip.starts_with("10.95.0."), "{ip}");
        let ping = podman.ok(&[
            "run",
            "--rm",
            "--network",
            "gnet",
            "--rootfs",
            rootfs,
            "/bin/ping",
            "-c",
            "2",
            "-W",
            "2",
            &ip,
        ]);
        assert!(ping.contains("2 packets received"), "{ping}");
        let check = gingham(&node, &["ipam", "check", "--datastore", &ds]);
        assert!(
            check.contains(" 1 allocations"),
            "only the running container holds one: {check}"
        );
        let weps = gingham(&node, &["get", "wep", "-A", "--datastore", &ds]);
        assert!(weps.contains(&ip), "{weps}");
    });
    // `podman rm` releases the address (also when an assertion above failed).
    podman.ok(&["rm", "-f", "-t", "0", "server"]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    let check = gingham(&node, &["ipam", "check", "--datastore", &ds]);
    assert!(check.contains(" 0 allocations"), "{check}");
    assert!(check.contains("no problems found"), "{check}");
}

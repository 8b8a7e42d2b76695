//! `gingham lab apiserver`: the Kubernetes API double in the foreground over a datastore,
//! driven by the real kubectl; what it stores survives a restart on SQLite.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `gingham lab apiserver` on a free port; returns it once it printed its URL.
fn start(db: &Path, kubeconfig: &Path) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args(["lab", "apiserver", "--listen", "127.0.0.1:0"])
        .arg("--datastore")
        .arg(format!("sqlite:{}", db.display()))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_remove("GINGHAM_DATASTORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = Server(child);
    assert!(
        line.starts_with("http://127.0.0.1:"),
        "the URL first: {line:?}"
    );
    (server, line.trim().to_owned())
}

fn kubectl(dir: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(gingham_testkit::require_tool("kubectl"))
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sys_lab_apiserver_serves_kubectl_and_keeps_objects_in_sqlite() {
    gingham_testkit::require_tool("kubectl");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gingham.db");
    let kc = dir.path().join("kubeconfig");
    let file = dir.path().join("np.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny-all\n  namespace: default\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    )
    .unwrap();
    let rv = {
        let (_server, url) = start(&db, &kc);
        assert!(std::fs::read_to_string(&kc).unwrap().contains(&url));
        let (ok, out, err) = kubectl(dir.path(), &kc, &["apply", "-f", file.to_str().unwrap()]);
        assert!(ok, "{out}{err}");
        let (ok, out, err) = kubectl(
            dir.path(),
            &kc,
            &[
                "get",
                "netpol",
                "deny-all",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ],
        );
        assert!(ok, "{err}");
        out
    };
    // Stopped and started again on the same file: the same object at the same version.
    let (_server, _) = start(&db, &kc);
    let (ok, out, err) = kubectl(
        dir.path(),
        &kc,
        &[
            "get",
            "netpol",
            "deny-all",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, rv);
    let (ok, out, err) = kubectl(dir.path(), &kc, &["delete", "netpol", "deny-all"]);
    assert!(ok, "{out}{err}");
}

#[test]
fn lab_apiserver_names_a_bad_datastore() {
    let out = Command::new(env!("CARGO_BIN_EXE_gingham"))
        .args([
            "lab",
            "apiserver",
            "--datastore",
            "nosuch:x",
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("GINGHAM_DATASTORE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown datastore \"nosuch:x\""), "{err}");
}

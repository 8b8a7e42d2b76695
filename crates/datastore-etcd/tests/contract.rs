//! The contract suite against a real etcd 3.4 started on a loopback port (a system test: it
//! needs the `etcd` binary, from Debian's etcd-server).

use gingham_datastore::Datastore;
use gingham_datastore::contract::Harness;
use gingham_datastore_etcd::{EtcdConfig, EtcdStore};
use gingham_testkit::etcd::EtcdServer;

struct EtcdHarness {
    server: EtcdServer,
}

impl EtcdHarness {
    fn new() -> Self {
        Self {
            server: EtcdServer::start(),
        }
    }

    /// The child process reaches the server through Calico's own variable.
    fn from_env() -> Box<dyn Datastore> {
        Box::new(EtcdStore::connect(EtcdConfig::from_env()).expect("connect to the parent's etcd"))
    }
}

impl Harness for EtcdHarness {
    fn connect(&self) -> Box<dyn Datastore> {
        let cfg = EtcdConfig {
            endpoints: vec![self.server.endpoint()],
            ..EtcdConfig::default()
        };
        Box::new(EtcdStore::connect(cfg).expect("connect to etcd"))
    }
    fn restart(&mut self) {
        self.server.restart();
    }
    fn child_env(&self) -> Option<Vec<(String, String)>> {
        Some(vec![("ETCD_ENDPOINTS".into(), self.server.endpoint())])
    }
}

gingham_datastore::contract_tests!(sys_etcd, EtcdHarness::new(), child: EtcdHarness::from_env);

/// What gingham uses: etcd behind the layer that makes large writes all-or-nothing.
struct AtomicEtcdHarness(EtcdHarness);

impl AtomicEtcdHarness {
    fn from_env() -> Box<dyn Datastore> {
        Box::new(gingham_datastore::atomic::Atomic::new(
            EtcdHarness::from_env().into(),
            Default::default(),
        ))
    }
}

impl Harness for AtomicEtcdHarness {
    fn connect(&self) -> Box<dyn Datastore> {
        Box::new(gingham_datastore::atomic::Atomic::new(
            self.0.connect().into(),
            Default::default(),
        ))
    }
    fn restart(&mut self) {
        self.0.restart();
    }
    fn child_env(&self) -> Option<Vec<(String, String)>> {
        self.0.child_env()
    }
}

gingham_datastore::contract_tests!(
    sys_etcd_atomic,
    AtomicEtcdHarness(EtcdHarness::new()),
    child: AtomicEtcdHarness::from_env
);

/// TLS with client certificates, configured through Calico's variables.
#[test]
fn sys_etcd_tls_with_client_certificates() {
    let server = EtcdServer::start_tls();
    let tls = server.tls().expect("a TLS server").clone();
    let vars = [
        ("ETCD_ENDPOINTS", server.endpoint()),
        ("ETCD_CA_CERT_FILE", tls.ca.display().to_string()),
        ("ETCD_CERT_FILE", tls.client_cert.display().to_string()),
        ("ETCD_KEY_FILE", tls.client_key.display().to_string()),
    ];
    let lookup = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let store = EtcdStore::connect(EtcdConfig::from_lookup(lookup)).expect("connect over TLS");
    let rev = store.create("/tls/a", b"1").unwrap();
    assert_eq!(store.get("/tls/a").unwrap().unwrap().mod_revision, rev);

    // Without a client certificate the server refuses us, and we say so.
    let no_cert = EtcdConfig {
        cert_file: None,
        key_file: None,
        ..EtcdConfig::from_lookup(lookup)
    };
    let err = match EtcdStore::connect(no_cert) {
        Ok(s) => s
            .get("/tls/a")
            .expect_err("a client without a certificate is refused"),
        Err(e) => e,
    };
    assert!(
        matches!(err, gingham_datastore::Error::Unavailable(_)),
        "{err}"
    );
    // In words, naming the server, without the client library's debug output.
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot reach etcd at {}", server.endpoint())),
        "{text}"
    );
    assert!(
        !text.contains("Error {") && !text.contains("source:"),
        "{text}"
    );
}

/// Nothing listens: "connection refused", in words.
#[test]
fn sys_etcd_unreachable_is_said_in_words() {
    gingham_testkit::require_tool("etcd");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = EtcdConfig {
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        ..EtcdConfig::default()
    };
    let err = EtcdStore::connect(cfg)
        .err()
        .expect("nothing listens there");
    assert_eq!(
        err.to_string(),
        format!("cannot reach etcd at http://127.0.0.1:{port}: connection refused")
    );
}

/// A listing larger than gRPC's default 4 MiB answer (10,000 policies take about 5 MiB).
#[test]
fn sys_etcd_lists_more_than_four_mebibytes() {
    let server = EtcdServer::start();
    let store = EtcdStore::connect(EtcdConfig {
        endpoints: vec![server.endpoint()],
        ..EtcdConfig::default()
    })
    .expect("connect to etcd");
    let value = vec![b'x'; 64 * 1024];
    for i in 0..96 {
        store.put(&format!("/big/{i:03}"), &value).unwrap();
    }
    let listing = store.list("/big/").expect("a 6 MiB listing");
    assert_eq!(listing.kvs.len(), 96);
    assert!(listing.kvs.iter().all(|kv| kv.value == value));
}

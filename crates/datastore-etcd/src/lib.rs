//! The etcd v3 backend of the [`Datastore`] contract.
//!
//! Configuration follows Calico's environment: `ETCD_ENDPOINTS` (comma-separated URLs),
//! `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`. Keys are stored as given, so the
//! resource layout above (`/calico/resources/v3/projectcalico.org/...`, `/calico/ipam/v2/...`)
//! is Calico's own and tools such as `etcdctl` see what they would see with Calico.
//!
//! The contract is synchronous; the store owns a small tokio runtime and every call waits at
//! most [`EtcdConfig::timeout`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, CompareOp, ConnectOptions, EventType, GetOptions, Identity, TlsOptions,
    TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use gingham_datastore::{
    Compare, Datastore, Error, Event, EventKind, KeyValue, Listing, Op, Result, Revision, Txn,
    TxnLimits, TxnOutcome, Watch, compare_holds,
};
use tokio::runtime::Runtime;

/// Calico's default endpoint when `ETCD_ENDPOINTS` is unset.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// etcd's default `--max-txn-ops`.
pub const ETCD_MAX_TXN_OPS: usize = 128;
/// A little under etcd's default `--max-request-bytes` (1.5 MiB).
pub const ETCD_MAX_TXN_BYTES: usize = 1024 * 1024;

/// The largest answer taken from etcd (a listing of many resources): its default gRPC limit is
/// 4 MiB, 10,000 policies take about 5.
pub const MAX_ANSWER_BYTES: usize = 1 << 30;

/// Where etcd is and how to authenticate to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub ca_cert_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// Upper bound on every request, connection included.
    pub timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec![DEFAULT_ENDPOINT.to_owned()],
            ca_cert_file: None,
            cert_file: None,
            key_file: None,
            timeout: Duration::from_secs(3),
        }
    }
}

impl EtcdConfig {
    /// Reads Calico's variables from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads Calico's variables through `lookup` (testable without touching the environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let non_empty = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut cfg = Self::default();
        if let Some(eps) = non_empty("ETCD_ENDPOINTS") {
            cfg.endpoints = eps
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
        }
        cfg.ca_cert_file = non_empty("ETCD_CA_CERT_FILE");
        cfg.cert_file = non_empty("ETCD_CERT_FILE");
        cfg.key_file = non_empty("ETCD_KEY_FILE");
        cfg
    }

    fn connect_options(&self) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.timeout);
        let tls_wanted = self.endpoints.iter().any(|e| e.starts_with("https://"))
            || self.ca_cert_file.is_some()
            || self.cert_file.is_some();
        if tls_wanted {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_cert_file {
                tls =
                    tls.ca_certificate(Certificate::from_pem(read_file("ETCD_CA_CERT_FILE", ca)?));
            }
            match (&self.cert_file, &self.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(
                        read_file("ETCD_CERT_FILE", cert)?,
                        read_file("ETCD_KEY_FILE", key)?,
                    ));
                }
                (None, None) => {}
                (Some(_), None) => {
                    return Err(Error::Config(
                        "ETCD_CERT_FILE is set but ETCD_KEY_FILE is not; set both or neither"
                            .into(),
                    ));
                }
                (None, Some(_)) => {
                    return Err(Error::Config(
                        "ETCD_KEY_FILE is set but ETCD_CERT_FILE is not; set both or neither"
                            .into(),
                    ));
                }
            }
            opts = opts.with_tls(tls);
        }
        Ok(opts)
    }

    fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::Config(
                "ETCD_ENDPOINTS lists no endpoint (expected e.g. http://127.0.0.1:2379)".into(),
            ));
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "etcd endpoint {e:?} must start with http:// or https:// (e.g. http://127.0.0.1:2379)"
                )));
            }
        }
        Ok(())
    }
}

fn read_file(var: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("{var}={path} cannot be read: {e}")))
}

/// A connected etcd client.
pub struct EtcdStore {
    rt: Arc<Runtime>,
    client: Client,
    config: EtcdConfig,
}

impl EtcdStore {
    /// Connects and checks that the cluster answers (within the configured timeout).
    pub fn connect(config: EtcdConfig) -> Result<Self> {
        config.validate()?;
        let opts = config.connect_options()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gingham-etcd")
            .enable_all()
            .build()
            .map_err(|e| Error::Backend(format!("cannot start the etcd client runtime: {e}")))?;
        let timeout = config.timeout;
        let endpoints = config.endpoints.clone();
        let shown = endpoints.join(",");
        let no_answer = || {
            Error::Unavailable(format!(
                "cannot reach etcd at {shown}: no answer within {}s",
                timeout.as_secs_f32()
            ))
        };
        let client = rt.block_on(async {
            let connect = Client::connect(&endpoints, Some(opts));
            let mut client = tokio::time::timeout(timeout, connect)
                .await
                .map_err(|_| no_answer())?
                .map_err(|e| unreachable(&shown, e))?;
            // `connect` is lazy about the network; ask for something to be sure.
            tokio::time::timeout(timeout, client.status())
                .await
                .map_err(|_| no_answer())?
                .map_err(|e| unreachable(&shown, e))?;
            Ok::<_, Error>(client)
        })?;
        Ok(Self {
            rt: Arc::new(rt),
            client,
            config,
        })
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// Runs one request on the store's runtime with the configured timeout.
    fn call<T, F>(&self, what: &str, f: impl FnOnce(Client) -> F) -> Result<T>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let timeout = self.config.timeout;
        let fut = f(self.client.clone());
        self.rt.block_on(async {
            match tokio::time::timeout(timeout, fut).await {
                Err(_) => Err(Error::Unavailable(format!(
                    "etcd at {} did not answer ({what}) within {}s",
                    self.config.endpoints.join(","),
                    timeout.as_secs_f32()
                ))),
                Ok(r) => r.map_err(|e| classify(&self.config.endpoints.join(","), e)),
            }
        })
    }
}

/// A failure to connect, in words.
fn unreachable(endpoints: &str, e: etcd_client::Error) -> Error {
    Error::Unavailable(format!(
        "cannot reach etcd at {endpoints}: {}",
        root_cause(&e)
    ))
}

/// Maps client errors to words: transport problems are "unavailable" ("cannot reach etcd at
/// URL: connection refused"), the rest are what etcd answered, without the client library's
/// debug output.
fn classify(endpoints: &str, e: etcd_client::Error) -> Error {
    let unreachable =
        |reason: String| Error::Unavailable(format!("cannot reach etcd at {endpoints}: {reason}"));
    match &e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            unreachable(root_cause(&e))
        }
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                unreachable("no answer in time".into())
            }
            _ if s.message().contains("Timeout expired") => unreachable("no answer in time".into()),
            // The request never got an answer: the connection failed under it.
            tonic::Code::Unavailable | tonic::Code::Unknown
                if std::error::Error::source(s).is_some() =>
            {
                unreachable(root_cause(&e))
            }
            tonic::Code::Unavailable => unreachable(root_cause(&e)),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Error::Backend(
                format!("etcd at {endpoints} refused access: {}", s.message()),
            ),
            _ => Error::Backend(format!("etcd at {endpoints} answered: {}", s.message())),
        },
        _ => Error::Backend(format!("etcd at {endpoints}: {}", root_cause(&e))),
    }
}

/// The innermost cause of an error, in words: an OS error's description (without its number),
/// else etcd's message, else the innermost error's.
fn root_cause(e: &etcd_client::Error) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
                std::io::ErrorKind::TimedOut => "connection timed out".to_owned(),
                std::io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
                std::io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
                _ => io.to_string(),
            };
        }
        match cur.source() {
            Some(next) => cur = next,
            None => break,
        }
    }
    // Some layers keep the OS or TLS error only in their debug output.
    let debug = format!("{e:?}");
    for (kind, words) in [
        (
            "BadCertificate",
            "the server refused this client's TLS certificate (ETCD_CERT_FILE, ETCD_KEY_FILE)",
        ),
        (
            "CertificateRequired",
            "the server requires a client TLS certificate (set ETCD_CERT_FILE and ETCD_KEY_FILE)",
        ),
        (
            "UnknownIssuer",
            "the server's TLS certificate is not signed by a trusted CA (ETCD_CA_CERT_FILE)",
        ),
        ("ConnectionRefused", "connection refused"),
        ("ConnectionReset", "connection reset"),
        ("BrokenPipe", "the server closed the connection"),
        ("TimedOut", "connection timed out"),
        ("HostUnreachable", "host unreachable"),
        ("NetworkUnreachable", "network unreachable"),
        ("AddrNotAvailable", "address not available"),
        (
            "failed to lookup address",
            "the host name cannot be resolved",
        ),
    ] {
        if debug.contains(kind) {
            return words.to_owned();
        }
    }
    let innermost = cur.to_string();
    match e {
        etcd_client::Error::GRpcStatus(s)
            if !s.message().is_empty() && (innermost.is_empty() || innermost == e.to_string()) =>
        {
            s.message().to_owned()
        }
        _ => innermost,
    }
}

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn to_etcd_compare(c: &Compare) -> etcd_client::Compare {
    match c {
        Compare::ModRevision { key, revision } => {
            etcd_client::Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision)
        }
        Compare::Absent { key } => etcd_client::Compare::version(key.as_str(), CompareOp::Equal, 0),
        Compare::Exists { key } => {
            etcd_client::Compare::version(key.as_str(), CompareOp::Greater, 0)
        }
    }
}

impl Datastore for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd:{}", self.config.endpoints.join(","))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        let resp = self.call("get", |mut c| async move { c.get(key, None).await })?;
        Ok(resp.kvs().first().map(convert_kv))
    }

    fn list(&self, prefix: &str) -> Result<Listing> {
        let prefix = prefix.to_owned();
        let resp = self.call("list", |c| async move {
            // A listing may be larger than gRPC's default 4 MiB answer.
            let mut c = c.kv_client().max_decoding_message_size(MAX_ANSWER_BYTES);
            let opts = if prefix.is_empty() {
                GetOptions::new().with_all_keys()
            } else {
                GetOptions::new().with_prefix()
            };
            c.get(prefix, Some(opts)).await
        })?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(Listing {
            kvs: resp.kvs().iter().map(convert_kv).collect(),
            revision,
        })
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let compares: Vec<etcd_client::Compare> =
            txn.compares.iter().map(to_etcd_compare).collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(key.as_str(), value.clone(), None),
                Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        // On failure, read every compared key in the same transaction to say which failed.
        let reads: Vec<TxnOp> = txn
            .compares
            .iter()
            .map(|c| TxnOp::get(c.key(), None))
            .collect();
        let request = etcd_client::Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else(reads);
        let resp = self.call("transaction", |mut c| async move { c.txn(request).await })?;
        if resp.succeeded() {
            return Ok(TxnOutcome::Committed {
                revision: resp.header().map_or(0, |h| h.revision()),
            });
        }
        let mut failed_keys = Vec::new();
        for (c, r) in txn.compares.iter().zip(resp.op_responses()) {
            let current = match &r {
                TxnOpResponse::Get(g) => g.kvs().first().map(convert_kv),
                _ => None,
            };
            if !compare_holds(c, current.as_ref()) {
                failed_keys.push(c.key().to_owned());
            }
        }
        if failed_keys.is_empty() {
            // A comparison failed at commit time; name them all rather than none.
            failed_keys = txn.compares.iter().map(|c| c.key().to_owned()).collect();
        }
        Ok(TxnOutcome::Failed { failed_keys })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        let prefix_owned = prefix.to_owned();
        let opts = {
            let o = WatchOptions::new()
                .with_start_revision(after + 1)
                .with_prev_key();
            if prefix.is_empty() {
                o.with_all_keys()
            } else {
                o.with_prefix()
            }
        };
        let stream = self.call("watch", |mut c| async move {
            c.watch(prefix_owned, Some(opts)).await
        })?;
        Ok(Box::new(EtcdWatch {
            rt: self.rt.clone(),
            stream,
            after,
            pending: VecDeque::new(),
            done: false,
        }))
    }

    fn revision(&self) -> Result<Revision> {
        // A count-only read of a key that never exists returns the header cheaply.
        let resp = self.call("revision", |mut c| async move {
            c.get(
                "\0gingham-revision-probe",
                Some(GetOptions::new().with_count_only()),
            )
            .await
        })?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        match self.call(
            "compact",
            |mut c| async move { c.compact(revision, None).await },
        ) {
            Ok(_) => Ok(()),
            // Already compacted at or past this revision: nothing to do.
            Err(Error::Backend(m)) if m.contains("has been compacted") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn txn_limits(&self) -> TxnLimits {
        TxnLimits {
            max_ops: ETCD_MAX_TXN_OPS,
            max_bytes: ETCD_MAX_TXN_BYTES,
        }
    }
}

struct EtcdWatch {
    rt: Arc<Runtime>,
    stream: WatchStream,
    after: Revision,
    pending: VecDeque<Event>,
    done: bool,
}

impl Watch for EtcdWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.after = e.revision();
                return Ok(Some(e));
            }
            if self.done {
                return Err(Error::Unavailable("the watch has ended".into()));
            }
            let stream = &mut self.stream;
            let msg = self
                .rt
                .block_on(async { tokio::time::timeout_at(deadline, stream.message()).await });
            let resp = match msg {
                Err(_) => return Ok(None),
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(Error::Unavailable(format!(
                        "the etcd watch broke after revision {}: {}; watch again from there",
                        self.after,
                        root_cause(&e)
                    )));
                }
                Ok(Ok(None)) => {
                    self.done = true;
                    return Err(Error::Unavailable(format!(
                        "etcd closed the watch after revision {}; watch again from there",
                        self.after
                    )));
                }
                Ok(Ok(Some(resp))) => resp,
            };
            if resp.canceled() {
                self.done = true;
                if resp.compact_revision() > 0 {
                    return Err(Error::Compacted {
                        requested: self.after,
                        compacted: resp.compact_revision(),
                    });
                }
                return Err(Error::Unavailable(format!(
                    "etcd cancelled the watch: {}",
                    resp.cancel_reason()
                )));
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let kind = match ev.event_type() {
                    EventType::Put => EventKind::Put,
                    EventType::Delete => EventKind::Delete,
                };
                self.pending.push_back(Event {
                    kind,
                    kv: convert_kv(kv),
                    prev: ev.prev_kv().map(convert_kv),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_calicos_variables() {
        let cfg = EtcdConfig::from_lookup(|name| match name {
            "ETCD_ENDPOINTS" => Some("https://10.0.0.1:2379, https://10.0.0.2:2379".into()),
            "ETCD_CA_CERT_FILE" => Some("/etc/calico/ca.pem".into()),
            "ETCD_CERT_FILE" => Some("/etc/calico/cert.pem".into()),
            "ETCD_KEY_FILE" => Some("".into()),
            _ => None,
        });
        assert_eq!(
            cfg.endpoints,
            ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
        );
        assert_eq!(cfg.ca_cert_file.as_deref(), Some("/etc/calico/ca.pem"));
        assert_eq!(cfg.key_file, None, "empty variables count as unset");
        let Err(err) = cfg.connect_options() else {
            panic!("missing files are errors")
        };
        assert!(
            err.to_string()
                .contains("ETCD_CA_CERT_FILE=/etc/calico/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn defaults_to_calicos_endpoint() {
        let cfg = EtcdConfig::from_lookup(|_| None);
        assert_eq!(cfg.endpoints, [DEFAULT_ENDPOINT]);
    }

    #[test]
    fn rejects_endpoints_without_scheme() {
        let cfg = EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".into()],
            ..EtcdConfig::default()
        };
        let err = EtcdStore::connect(cfg).err().unwrap();
        assert!(err.to_string().contains("http://"), "{err}");
    }
}

//! `gingham kube-controllers`: the arguments of calico-kube-controllers (etcd mode); the
//! controllers themselves are `gingham-kubecontrollers`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use gingham_datastore::Datastore;
use gingham_kubecontrollers::{Config, Health};

use crate::Exit;

#[derive(Debug, Args)]
pub struct KubeControllersArgs {
    /// The kubeconfig of the Kubernetes API server to watch (its current context).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Serve /liveness, /readiness and /metrics on this address (port 0: any free port); the
    /// address is printed first on standard output (`health: http://ADDR`).
    #[arg(long, default_value = "127.0.0.1:9094")]
    pub health_listen: SocketAddr,
    /// Seconds between full resyncs of every controller (orphans removed, missing ones
    /// written; Calico's reconcilerPeriod).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_interval: u64,
    /// Seconds an address of a missing pod on a live node waits before it is released
    /// (Calico's leakGracePeriod).
    #[arg(long, default_value_t = 900)]
    pub leak_grace_period: u64,
}

pub fn run(args: &KubeControllersArgs, store: Arc<dyn Datastore>) -> Result<Exit> {
    let config = Config {
        resync: Duration::from_secs(args.resync_interval),
        leak_grace: Duration::from_secs(args.leak_grace_period),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let kube = gingham_kubecontrollers::kube_client(&args.kubeconfig).await?;
        let health = Health::default();
        let bound = gingham_health::serve(args.health_listen, health.clone())?;
        // The health address first (port 0 picks one): whoever started us can find it.
        println!("health: http://{bound}");
        tracing::info!(%bound, datastore = %store.describe(), "kube-controllers running");
        gingham_kubecontrollers::run(kube, store, config, health, shutdown()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Exit::Ok)
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

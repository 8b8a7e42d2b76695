//! `gingham lab apiserver`: the Kubernetes API test double (`gingham-kubeapi`) in the
//! foreground, over a Gingham datastore, for kubectl and kube-rs clients in labs and tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gingham_kubeapi::ApiServer;

use crate::Exit;
use crate::datastore::DatastoreUrl;

#[derive(Debug, Args)]
pub struct ApiserverArgs {
    /// Where to listen: plain HTTP without authentication, so keep it on loopback (port 0:
    /// any free port; the URL is printed on standard output).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Write a kubeconfig for this server here (cluster, user and context `gingham`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// Serves until SIGINT or SIGTERM.
pub fn run(args: &ApiserverArgs, datastore: Option<&str>) -> Result<Exit> {
    let url = DatastoreUrl::resolve(datastore)?;
    let store = url.open()?;
    let described = store.describe();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let server = ApiServer::start(store, args.listen)
            .await
            .with_context(|| format!("cannot start the Kubernetes API double on {described}"))?;
        if let Some(path) = &args.kubeconfig {
            server.write_kubeconfig(path)?;
        }
        println!("{}", server.url());
        tracing::info!(url = %server.url(), datastore = %described, "serving the Kubernetes API double");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch for SIGTERM")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        server.shutdown().await;
        Ok(Exit::Ok)
    })
}

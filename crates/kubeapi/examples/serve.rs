//! Serves the API double over an in-memory datastore: `cargo run -p gingham-kubeapi --example
//! serve -- 127.0.0.1:6443 /tmp/kubeconfig`.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()?;
    let kubeconfig = args.next().unwrap_or_else(|| "kubeconfig".into());
    let store = Arc::new(gingham_datastore::mem::MemStore::new());
    let server = gingham_kubeapi::ApiServer::start(store, listen).await?;
    server.write_kubeconfig(std::path::Path::new(&kubeconfig))?;
    eprintln!("{} (kubeconfig {kubeconfig})", server.url());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

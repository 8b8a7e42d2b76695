//! The dataplane: the policy engine's desired state made real in the kernel.
//!
//! [`render`] turns a node's programs and IP sets into one nftables table (pure); a
//! [`Dataplane`] applies it. [`Nft`] applies with one atomic `nft -f` transaction;
//! [`Recording`] keeps what it was given, for tests of the agent's logic.

pub mod render;

use std::io::Write;
use std::process::{Command, Stdio};

pub use render::{Rendered, Settings, TABLE, render};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run nft: {0} (install nftables)")]
    Spawn(std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// Somewhere to install a rendered table.
pub trait Dataplane {
    fn apply(&mut self, rendered: &Rendered) -> Result<(), Error>;
}

/// The kernel, through `nft -f -`, in the network namespace of the calling process.
#[derive(Debug, Default)]
pub struct Nft;

impl Dataplane for Nft {
    fn apply(&mut self, rendered: &Rendered) -> Result<(), Error> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::Spawn)?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(rendered.script.as_bytes())
            .map_err(Error::Spawn)?;
        let out = child.wait_with_output().map_err(Error::Spawn)?;
        if !out.status.success() {
            return Err(Error::Refused(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(())
    }
}

/// Records every table it is given (for tests).
#[derive(Debug, Default)]
pub struct Recording {
    pub applied: Vec<Rendered>,
}

impl Dataplane for Recording {
    fn apply(&mut self, rendered: &Rendered) -> Result<(), Error> {
        self.applied.push(rendered.clone());
        Ok(())
    }
}

//! Network namespaces: create and delete named ones (as `ip netns add/del` does), open them,
//! and run code inside one on a dedicated thread.
//!
//! Namespace membership belongs to a thread, not to the process. Two ways to run code in
//! another namespace are offered:
//! - [`in_netns`] runs it on a short-lived thread that enters the namespace, so the caller never
//!   moves. Safe for any closure.
//! - [`in_netns_same_thread`] switches the calling thread in and back out around the closure
//!   (also when it panics). Starting a thread can take milliseconds on a busy machine while
//!   two `setns` calls take microseconds, so the hot paths (opening netlink sockets, writing
//!   sysctls) use this one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{NetError, Result, invalid};

/// Where named namespaces live, as with iproute2.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A network namespace to operate in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NetnsRef {
    /// The namespace of the calling thread. For a CNI plugin this is the host's namespace.
    Current,
    /// A namespace file: a bind mount such as `/run/netns/NAME` or `/proc/PID/ns/net`.
    Path(PathBuf),
}

impl NetnsRef {
    /// The namespace named `name` under [`NETNS_RUN_DIR`] (it need not exist yet).
    pub fn named(name: &str) -> NetnsRef {
        NetnsRef::Path(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// The namespace whose file is `path`.
    pub fn path(path: impl Into<PathBuf>) -> NetnsRef {
        NetnsRef::Path(path.into())
    }

    /// Opens the namespace file. For [`NetnsRef::Current`] this is the calling thread's own.
    pub fn open(&self) -> Result<File> {
        let path = match self {
            NetnsRef::Current => Path::new("/proc/thread-self/ns/net"),
            NetnsRef::Path(p) => p.as_path(),
        };
        File::open(path).map_err(|source| NetError::Netns {
            path: path.to_path_buf(),
            action: "open",
            source,
        })
    }

    /// Whether this is the calling thread's own namespace by construction.
    pub fn is_current(&self) -> bool {
        matches!(self, NetnsRef::Current)
    }
}

impl std::fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetnsRef::Current => f.write_str("the current network namespace"),
            NetnsRef::Path(p) => write!(f, "network namespace {}", p.display()),
        }
    }
}

/// Checks that `name` can be a file name under /run/netns.
pub fn validate_netns_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(invalid("network namespace name", name, reason));
    if name.is_empty() || name.len() > 255 {
        return bad("it must be 1 to 255 bytes long");
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return bad("it must be a plain file name: no '/', NUL, '.' or '..'");
    }
    Ok(())
}

/// Serialises the one-off preparation of /run/netns within this process.
static RUN_DIR_LOCK: Mutex<()> = Mutex::new(());

/// Makes /run/netns a mount point with shared propagation, as iproute2 does, so that namespace
/// bind mounts made later are visible in other mount namespaces too.
fn prepare_run_dir() -> Result<()> {
    let _guard = RUN_DIR_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(NETNS_RUN_DIR);
    let err = |action, source: io::Error| NetError::Netns {
        path: dir.to_path_buf(),
        action,
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| err("create directory", e))?;
    let shared = || {
        nix::mount::mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then mark it shared.
            nix::mount::mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| err("bind-mount onto itself", e.into()))?;
            shared().map_err(|e| err("mark shared", e.into()))
        }
        Err(e) => Err(err("mark shared", e.into())),
    }
}

/// Creates a persistent named namespace `/run/netns/NAME`, like `ip netns add NAME`, without
/// moving the calling thread. Fails with [`NetError::NetnsExists`] if the name is taken.
pub fn create_netns(name: &str) -> Result<NetnsRef> {
    validate_netns_name(name)?;
    prepare_run_dir()?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    let err = |action, source: io::Error| NetError::Netns {
        path: path.clone(),
        action,
        source,
    };
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(NetError::NetnsExists(name.to_owned()));
        }
        Err(e) => return Err(err("create mount point", e)),
    }
    // A fresh thread unshares its network namespace and pins it with a bind mount; when the
    // thread ends, the mount keeps the namespace alive.
    let pinned = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| err("unshare", e.into()))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| err("bind mount", e.into()))
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    if let Err(e) = pinned {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    tracing::debug!(netns = name, "created network namespace");
    Ok(NetnsRef::Path(path))
}

/// Deletes the named namespace, like `ip netns del NAME`. Deleting one that does not exist is
/// not an error. The kernel frees the namespace (and the interfaces in it) once nothing else
/// holds it.
pub fn delete_netns(name: &str) -> Result<()> {
    validate_netns_name(name)?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetError::Netns {
                path,
                action: "unmount",
                source: e.into(),
            });
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(NetError::Netns {
                path,
                action: "remove",
                source,
            });
        }
    }
    tracing::debug!(netns = name, "deleted network namespace");
    Ok(())
}

/// Whether `/run/netns/NAME` exists.
pub fn netns_exists(name: &str) -> bool {
    validate_netns_name(name).is_ok() && Path::new(NETNS_RUN_DIR).join(name).exists()
}

/// Runs `f` inside the namespace `ns` and returns its result.
///
/// For [`NetnsRef::Current`], `f` runs on the calling thread. Otherwise it runs on a dedicated
/// thread that enters `ns` first and ends afterwards, so the calling thread never changes
/// namespace. Sockets (netlink included) opened inside `f` stay bound to `ns` after it returns,
/// and `/proc/sys/net` paths opened inside `f` resolve against `ns`. A panic in `f` is
/// propagated to the caller.
pub fn in_netns<F, R>(ns: &NetnsRef, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    if ns.is_current() {
        return Ok(f());
    }
    let file = ns.open()?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Netns {
                path: match ns {
                    NetnsRef::Path(p) => p.clone(),
                    NetnsRef::Current => PathBuf::from("/proc/thread-self/ns/net"),
                },
                action: "setns",
                source: e.into(),
            })?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Switches the calling thread back to its own namespace when dropped.
struct Restore {
    home: File,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.home, CloneFlags::CLONE_NEWNET) {
            // Carrying on in the wrong namespace could plumb the wrong network; stop instead.
            tracing::error!(error = %e, "could not return to the original network namespace; aborting");
            std::process::abort();
        }
    }
}

/// Runs `f` on the calling thread while it is switched into `ns`, then switches it back (also
/// if `f` panics). For [`NetnsRef::Current`] no switch happens.
///
/// `f` must not change the thread's namespaces itself. Sockets opened inside `f` stay bound to
/// `ns`, threads started inside it start in `ns`, and `/proc/sys/net` paths opened inside it
/// resolve against `ns`.
pub fn in_netns_same_thread<F, R>(ns: &NetnsRef, f: F) -> Result<R>
where
    F: FnOnce() -> R,
{
    if ns.is_current() {
        return Ok(f());
    }
    let target = ns.open()?;
    let home = NetnsRef::Current.open()?;
    nix::sched::setns(&target, CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Netns {
        path: match ns {
            NetnsRef::Path(p) => p.clone(),
            NetnsRef::Current => PathBuf::from("/proc/thread-self/ns/net"),
        },
        action: "setns",
        source: e.into(),
    })?;
    let _restore = Restore { home };
    Ok(f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_names_are_validated() {
        for (name, ok) in [
            ("gh-a", true),
            ("node1", true),
            ("a.b", true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("x\0y", false),
        ] {
            assert_eq!(validate_netns_name(name).is_ok(), ok, "{name:?}");
        }
        assert!(validate_netns_name(&"n".repeat(256)).is_err());
    }

    #[test]
    fn named_refs_live_under_run_netns() {
        assert_eq!(
            NetnsRef::named("n1"),
            NetnsRef::Path(PathBuf::from("/run/netns/n1"))
        );
        assert_eq!(
            NetnsRef::named("n1").to_string(),
            "network namespace /run/netns/n1"
        );
    }

    #[test]
    fn current_runs_on_the_calling_thread() {
        let me = std::thread::current().id();
        let there = in_netns(&NetnsRef::Current, || std::thread::current().id()).unwrap();
        assert_eq!(me, there);
    }
}

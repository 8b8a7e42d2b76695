//! Opening a file that is not a Gingham store, or a store that cannot be written.

use std::path::Path;
use std::process::Command;

use gingham_datastore::{Datastore, Error};
use gingham_datastore_sqlite::SqliteStore;

/// Every file in `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn someone_elses_database_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO users (name) VALUES ('ada');",
        )
        .unwrap();
    }
    let before = snapshot(dir.path());
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("is not a Gingham datastore")
            && text.contains("users")
            && text.contains("left unchanged"),
        "{text}"
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "the file is exactly as it was"
    );

    // A file that is not a database at all.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a database, just words\n".repeat(100)).unwrap();
    let before = snapshot(dir.path());
    let err = SqliteStore::open(&notes).err().expect("refused");
    assert!(err.to_string().contains("not a SQLite database"), "{err}");
    assert_eq!(snapshot(dir.path()), before);

    // A Gingham store, and an empty file, open as before.
    let ours = dir.path().join("ours.db");
    SqliteStore::open(&ours).unwrap().put("/a", b"1").unwrap();
    assert_eq!(
        SqliteStore::open(&ours)
            .unwrap()
            .get("/a")
            .unwrap()
            .unwrap()
            .value,
        b"1"
    );
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    SqliteStore::open(&empty).unwrap();
}

const CHILD_ENV: &str = "GINGHAM_READ_ONLY_STORE";

/// Run by the parent inside a mount namespace where the store's directory is read-only.
#[test]
fn read_only_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    for p in [path.clone(), format!("{path}.new")] {
        let err = SqliteStore::open(&p)
            .err()
            .expect("a read-only store is refused");
        assert!(matches!(err, Error::ReadOnly(_)), "{p}: {err:?}");
        assert!(err.to_string().contains("read-only"), "{err}");
        println!("{p}: {err}");
    }
}

/// A store on a read-only file system says so (root ignores file permissions, so the test
/// mounts the directory read-only in a mount namespace of its own).
#[test]
fn sys_read_only_store_says_read_only() {
    gingham_testkit::require_root();
    let unshare = gingham_testkit::require_tool("unshare");
    let mount = gingham_testkit::require_tool("mount");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    SqliteStore::open(&path).unwrap().put("/a", b"1").unwrap();
    let d = dir.path().display().to_string();
    let script = format!(
        "{m} --bind {d} {d} && {m} -o remount,bind,ro {d} && exec \"$0\" --exact read_only_child --nocapture",
        m = mount.display()
    );
    let out = Command::new(unshare)
        .args(["-m", "sh", "-c", &script])
        .arg(std::env::current_exe().unwrap())
        .env(CHILD_ENV, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("read-only file system"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

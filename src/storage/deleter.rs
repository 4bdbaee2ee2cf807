//! Unlinks the files of deleted segments on a helper thread, so that a shard never waits for
//! the file system to free a large file's blocks.
//!
//! A shard first renames a segment's files to `<name>.deleted` (a metadata change, quick) and
//! drops its descriptors; only then are the renamed paths queued here. The helper thread thus
//! only ever touches files that no shard reads or writes any more. A fetch still sending from a
//! dup'ed descriptor of such a file keeps working: unlinking frees the blocks at its last close.
//! Files left `.deleted` by a crash are queued again when their log is next opened.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, OnceLock};

use super::fs::FileSystem;

/// Suffix of a file that belongs to a deleted segment and waits to be unlinked.
pub const DELETED_SUFFIX: &str = ".deleted";

/// A file to unlink, and the file system it is on.
type Unlink = (Arc<dyn FileSystem>, PathBuf);

static QUEUE: OnceLock<Option<Sender<Unlink>>> = OnceLock::new();

/// The helper thread's queue, started on first use; `None` if no thread could be started.
fn queue() -> Option<&'static Sender<Unlink>> {
    QUEUE
        .get_or_init(|| {
            let (sender, receiver) = channel::<Unlink>();
            let started = std::thread::Builder::new().name("sluice-deleter".into()).spawn(move || {
                for (fs, path) in receiver {
                    if let Err(e) = fs.remove_file(&path)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::error!(path = %path.display(), error = %e, "unlinking a deleted segment file");
                    }
                }
            });
            match started {
                Ok(_) => Some(sender),
                Err(e) => {
                    tracing::warn!(error = %e, "no deleter thread: deleted segment files are unlinked inline");
                    None
                }
            }
        })
        .as_ref()
}

/// Renames `path` to `<path>.deleted` and queues it for unlinking; a missing file is fine.
pub fn delete_later(fs: &Arc<dyn FileSystem>, path: &Path) -> std::io::Result<()> {
    let mut renamed = path.as_os_str().to_owned();
    renamed.push(DELETED_SUFFIX);
    let renamed = PathBuf::from(renamed);
    match fs.rename(path, &renamed) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    }
    unlink_later(fs, renamed);
    Ok(())
}

/// Queues a file already renamed to `.deleted` for unlinking.
pub fn unlink_later(fs: &Arc<dyn FileSystem>, path: PathBuf) {
    let inline = match queue() {
        Some(sender) => sender.send((fs.clone(), path)).err().map(|e| e.0),
        None => Some((fs.clone(), path)),
    };
    if let Some((fs, path)) = inline {
        let _ = fs.remove_file(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_at_once_and_unlinked_soon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        std::fs::write(&path, b"data").unwrap();
        let fs = crate::storage::fs::os();
        delete_later(&fs, &path).unwrap();
        assert!(!path.exists());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_dir(dir.path()).unwrap().next().is_some() {
            assert!(std::time::Instant::now() < deadline, "the renamed file was never unlinked");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // A file that is already gone is not an error.
        delete_later(&fs, &path).unwrap();
    }
}

//! Unlinks the files of deleted segments, and removes the directories of deleted partitions,
//! on a helper thread, so that a shard never waits for the file system to free a large file's
//! blocks.
//!
//! A shard first drops a segment's descriptors and has its files renamed to `<name>.deleted`
//! on its blocking pool (a metadata change, quick; [`delete_later`]); only then are the renamed
//! paths queued here. The helper thread thus
//! only ever touches files that no shard reads or writes any more. A fetch still sending from a
//! dup'ed descriptor of such a file keeps working: unlinking frees the blocks at its last close.
//! Files left `.deleted` by a crash are queued again when their log is next opened.
//!
//! A deleted partition's directory is renamed to `<name>.<unique>-delete` (Kafka's
//! convention; a partition directory always ends in its number, so no live one ends so) on
//! the shard's blocking pool, before the install that deleted it opens any partition: its name
//! is free for a topic created again under it, and the helper removes the old one. Directories a crash left behind are queued at startup ([`remove_leftovers`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, OnceLock};

use super::fs::FileSystem;

/// Suffix of a file that belongs to a deleted segment and waits to be unlinked.
pub const DELETED_SUFFIX: &str = ".deleted";

/// Suffix of a deleted partition's directory that waits to be removed.
pub const DELETED_DIR_SUFFIX: &str = "-delete";

/// What the helper removes.
enum Doomed {
    File,
    Dir,
}

/// A file or directory to remove, and the file system it is on.
type Unlink = (Arc<dyn FileSystem>, PathBuf, Doomed);

static QUEUE: OnceLock<Option<Sender<Unlink>>> = OnceLock::new();

/// The helper thread's queue, started on first use; `None` if no thread could be started.
fn queue() -> Option<&'static Sender<Unlink>> {
    QUEUE
        .get_or_init(|| {
            let (sender, receiver) = channel::<Unlink>();
            let started = std::thread::Builder::new().name("sluice-deleter".into()).spawn(move || {
                for (fs, path, doomed) in receiver {
                    remove(&*fs, &path, doomed);
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
    remove_later(fs, path, Doomed::File);
}

/// Renames the directory `dir` (a deleted partition's) out of the way and queues it for
/// removal; a missing directory is fine.
pub fn delete_dir_later(fs: &Arc<dyn FileSystem>, dir: &Path) -> std::io::Result<()> {
    static DELETIONS: AtomicU64 = AtomicU64::new(0);
    let unique = format!("{:x}{:x}", crate::runtime::now_ms(), DELETIONS.fetch_add(1, Ordering::Relaxed));
    let mut renamed = dir.as_os_str().to_owned();
    renamed.push(format!(".{unique}{DELETED_DIR_SUFFIX}"));
    let renamed = PathBuf::from(renamed);
    match fs.rename(dir, &renamed) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    }
    remove_later(fs, renamed, Doomed::Dir);
    Ok(())
}

/// Queues the directories of deleted partitions that a crash left in `data_dir`.
pub fn remove_leftovers(fs: &Arc<dyn FileSystem>, data_dir: &Path) -> std::io::Result<()> {
    for name in fs.list_dir(data_dir)? {
        if name.ends_with(DELETED_DIR_SUFFIX) {
            remove_later(fs, data_dir.join(name), Doomed::Dir);
        }
    }
    Ok(())
}

fn remove_later(fs: &Arc<dyn FileSystem>, path: PathBuf, doomed: Doomed) {
    let inline = match queue() {
        Some(sender) => sender.send((fs.clone(), path, doomed)).err().map(|e| e.0),
        None => Some((fs.clone(), path, doomed)),
    };
    if let Some((fs, path, doomed)) = inline {
        remove(&*fs, &path, doomed);
    }
}

fn remove(fs: &dyn FileSystem, path: &Path, doomed: Doomed) {
    let removed = match doomed {
        Doomed::File => fs.remove_file(path),
        Doomed::Dir => fs.remove_dir_all(path),
    };
    if let Err(e) = removed
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(path = %path.display(), error = %e, "removing what a deletion left");
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

    /// Polls until `dir` holds exactly `names`.
    fn wait_for_entries(dir: &Path, names: &[&str]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut found: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            found.sort();
            if found == names {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{found:?} never became {names:?}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_deleted_partition_directory_frees_its_name_at_once_and_goes_soon() {
        let data = tempfile::tempdir().unwrap();
        let partition = data.path().join("t-0");
        std::fs::create_dir(&partition).unwrap();
        std::fs::write(partition.join("00000000000000000000.log"), b"data").unwrap();
        let fs = crate::storage::fs::os();
        delete_dir_later(&fs, &partition).unwrap();
        // The topic is created again at once: its new directory is not the one removed.
        std::fs::create_dir(&partition).unwrap();
        wait_for_entries(data.path(), &["t-0"]);
        assert_eq!(std::fs::read_dir(&partition).unwrap().count(), 0);
        delete_dir_later(&fs, &data.path().join("gone-0")).unwrap();

        // What a crash left behind goes at the next start.
        std::fs::create_dir_all(data.path().join("t-1.1a2b-delete/inner")).unwrap();
        remove_leftovers(&fs, data.path()).unwrap();
        wait_for_entries(data.path(), &["t-0"]);
    }
}

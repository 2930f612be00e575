//! What only the embedded outbox has: records in queueing order, the id map rebuilt from
//! them when the database is opened again, and the import of an earlier version's file.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use redb::TableDefinition;

use super::tables::{split, value_of};
use super::{legacy, EmbeddedOutbox};
use crate::conversation::conformance::fresh_key;
use crate::outbox::{Delivery, DeliveryId, Failure, NewDelivery, Outbox, Status};

const T0: u64 = 1_700_000_000_000;

fn new(upstream: &str, now_ms: u64) -> NewDelivery {
    NewDelivery {
        upstream: upstream.to_owned(),
        event: "completeSession".into(),
        key: fresh_key(),
        subscription: "shop".into(),
        body: Bytes::from_static(b"{}"),
        now_ms,
    }
}

/// The ids of the records, in key order.
fn stored_ids(outbox: &EmbeddedOutbox) -> Vec<DeliveryId> {
    outbox
        .inner
        .records
        .get()
        .unwrap()
        .iter()
        .map(|e| split(&e.into_inner().unwrap().1).unwrap().0)
        .collect()
}

/// The ids `erp`'s claim at `T0 + 10` takes, in the order it takes them.
async fn due_ids(outbox: &EmbeddedOutbox) -> Vec<DeliveryId> {
    outbox
        .claim("erp", T0 + 10, 1000, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect()
}

/// Opens `path`, waiting for the last handle's writer to let go of the database.
async fn reopen(path: &std::path::Path) -> EmbeddedOutbox {
    for _ in 0..200 {
        if let Ok(outbox) = EmbeddedOutbox::open(path) {
            return outbox;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    EmbeddedOutbox::open(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_stored_in_queueing_order_whatever_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = EmbeddedOutbox::open(dir.path()).unwrap();
    let mut queued = Vec::new();
    for i in 0..50 {
        let d = new("erp", T0 + 100 - i);
        queued.push(d.id());
        assert!(outbox.enqueue(d).await.unwrap());
    }
    assert_eq!(stored_ids(&outbox), queued);
    // A change keeps a delivery's place; a new one goes after every other.
    let claimed = outbox.claim("erp", T0 + 100, 1000, 1).await.unwrap();
    let retry = Failure::Retry {
        next_ms: T0 + 500,
        error: "503".into(),
    };
    outbox.failed("erp", claimed[0].id, retry).await.unwrap();
    outbox.delivered("erp", queued[10]).await.unwrap();
    let last = new("erp", T0);
    outbox.enqueue(last.clone()).await.unwrap();
    queued.remove(10);
    queued.push(last.id());
    assert_eq!(stored_ids(&outbox), queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_outbox_knows_every_delivery_by_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let (a, b, c) = (new("erp", T0), new("erp", T0 + 1), new("crm", T0 + 2));
    {
        let outbox = EmbeddedOutbox::open(&path).unwrap();
        for d in [&a, &b, &c] {
            assert!(outbox.enqueue(d.clone()).await.unwrap());
        }
        outbox.delivered("erp", a.id()).await.unwrap();
        let claimed = outbox.claim("crm", T0 + 2, 1000, 10).await.unwrap();
        let dead = Failure::Dead {
            error: "422".into(),
        };
        outbox.failed("crm", claimed[0].id, dead).await.unwrap();
    }
    let outbox = reopen(&path).await;
    assert!(outbox.get("erp", a.id()).await.unwrap().is_none());
    assert_eq!(
        outbox.get("erp", b.id()).await.unwrap().unwrap().status,
        Status::Pending
    );
    assert_eq!(
        outbox.get("crm", c.id()).await.unwrap().unwrap().status,
        Status::Dead
    );
    // Idempotence survives the restart, and new records never take an old one's place.
    assert!(!outbox.enqueue(b.clone()).await.unwrap());
    assert!(!outbox.enqueue(c.clone()).await.unwrap());
    assert!(
        outbox.enqueue(a.clone()).await.unwrap(),
        "delivered, so new"
    );
    let d = new("erp", T0 + 3);
    assert!(outbox.enqueue(d.clone()).await.unwrap());
    assert_eq!(stored_ids(&outbox), [b.id(), c.id(), a.id(), d.id()]);
    let due = due_ids(&outbox).await;
    assert_eq!(due, [a.id(), b.id(), d.id()], "oldest due first");
    assert!(outbox.delete("crm", c.id()).await.unwrap());
    assert_eq!(outbox.counts("crm").await.unwrap().dead, 0);
}

#[tokio::test]
async fn a_file_of_the_unreleased_id_keyed_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outbox.redb");
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        let old: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("deliveries");
        txn.open_table(old).unwrap();
        txn.commit().unwrap();
    }
    let Err(e) = EmbeddedOutbox::open(dir.path()) else {
        panic!("opened a file of the old layout");
    };
    assert_eq!(
        e.to_string(),
        format!(
            "outbox unavailable: {} has the outbox layout of an unreleased development build; move it away",
            file.display()
        )
    );
    assert!(file.exists(), "left where it was");
}

#[tokio::test]
async fn a_folder_another_outbox_has_open_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedOutbox::open(dir.path()).unwrap();
    let Err(e) = EmbeddedOutbox::open(dir.path()) else {
        panic!("opened one database twice");
    };
    assert_eq!(
        e.to_string(),
        format!(
            "outbox unavailable: cannot open {}: the folder is in use by another process",
            dir.path().join(super::FOLDER).display()
        )
    );
}

/// Writes `deliveries` into `dir/outbox.redb` as the redb outbox of earlier versions had
/// them (sequence numbers from 0), with the index tables of the layout before that.
fn write_redb_outbox(dir: &std::path::Path, deliveries: &[&NewDelivery]) {
    let db = redb::Database::create(dir.join(legacy::FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let records: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("queue");
        let mut table = txn.open_table(records).unwrap();
        for (seq, new) in deliveries.iter().enumerate() {
            let value = value_of(&Delivery::new((*new).clone()));
            table.insert(seq as u64, &value[..]).unwrap();
        }
        for name in ["due:erp", "age:erp", "dead:erp"] {
            let table: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new(name);
            txn.open_table(table).unwrap().insert((T0, 0), ()).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redb_file_of_an_earlier_version_is_imported_once_and_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (new("erp", T0 + 5), new("erp", T0), new("crm", T0 + 1));
    write_redb_outbox(dir.path(), &[&a, &b, &c]);
    {
        let outbox = EmbeddedOutbox::open(dir.path()).unwrap();
        assert_eq!(
            stored_ids(&outbox),
            [a.id(), b.id(), c.id()],
            "in their order"
        );
        let counts = outbox.counts("erp").await.unwrap();
        assert_eq!((counts.pending, counts.dead), (2, 0));
        assert_eq!(counts.oldest_queued_ms, Some(T0));
        assert_eq!(due_ids(&outbox).await, [b.id(), a.id()], "oldest due first");
        assert!(!outbox.enqueue(a.clone()).await.unwrap(), "known by its id");
    }
    assert!(!dir.path().join(legacy::FILE).exists());
    assert!(dir.path().join(legacy::IMPORTED).exists());

    // A crash after the import's commit and before the rename: the file is there again,
    // and its deliveries are not queued twice.
    std::fs::rename(
        dir.path().join(legacy::IMPORTED),
        dir.path().join(legacy::FILE),
    )
    .unwrap();
    let outbox = reopen(dir.path()).await;
    assert_eq!(stored_ids(&outbox), [a.id(), b.id(), c.id()]);
    assert!(dir.path().join(legacy::IMPORTED).exists());
}

/// A tmpfs of 2 MiB mounted on a temporary folder, unmounted when dropped: a disk that
/// fills up. `None` where this process may not mount (not root).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Self { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_loudly_and_the_outbox_recovers_once_there_is_room() {
    let Some(disk) = SmallDisk::mount() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root): the full-disk test");
        return;
    };
    let path = disk.path().join("outbox");
    let filler = disk.path().join("filler");
    {
        let outbox = EmbeddedOutbox::open(&path).unwrap();
        let first = new("erp", T0);
        assert!(outbox.enqueue(first.clone()).await.unwrap());
        // The disk fills up: the filler takes what is left, and the journal's next pages
        // cannot be had.
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
        drop(file);
        let mut queued = vec![first.id()];
        let error = loop {
            let mut d = new("erp", T0 + 1);
            d.body = Bytes::from(vec![b'x'; 16 * 1024]);
            match outbox.enqueue(d.clone()).await {
                Ok(true) => queued.push(d.id()),
                Ok(false) => panic!("a new delivery was taken for a duplicate"),
                Err(e) => break e,
            }
            assert!(queued.len() < 200, "the disk never filled up");
        };
        assert_eq!(
            error.to_string(),
            "outbox unavailable: No space left on device (os error 28)"
        );
        // Said by the readiness check, the same way; writes keep failing while it is full.
        assert_eq!(
            outbox.ping().await.unwrap_err().to_string(),
            error.to_string()
        );
        let mut big = new("erp", T0 + 2);
        big.body = Bytes::from(vec![b'x'; 256 * 1024]);
        let again = outbox.enqueue(big).await.unwrap_err();
        assert_eq!(again.to_string(), error.to_string());

        // Room again: the next write opens the database again and goes through, and
        // nothing queued before was lost.
        std::fs::remove_file(&filler).unwrap();
        let last = new("erp", T0 + 3);
        let mut answer = outbox.enqueue(last.clone()).await;
        for _ in 0..40 {
            if answer.is_ok() {
                break;
            }
            // Reopened at most once a second.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            answer = outbox.enqueue(last.clone()).await;
        }
        assert!(answer.unwrap(), "queued once there is room");
        outbox.ping().await.unwrap();
        queued.push(last.id());
        for id in &queued {
            assert!(outbox.get("erp", *id).await.unwrap().is_some(), "{id}");
        }
    }
    // And they are all there after a restart.
    let outbox = reopen(&path).await;
    assert!(outbox.counts("erp").await.unwrap().pending >= 2);
}

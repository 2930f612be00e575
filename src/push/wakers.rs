//! The wakers of held calls: one [`Notify`] per till with calls held on this process,
//! there only while a call holds, so a thousand idle tills cost nothing and a push wakes
//! exactly the calls of its till. No call polls: it sleeps until its till's waker fires,
//! its hold ends, or held calls are released (a reload, shutdown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{watch, Notify};

/// Per-till wakers and the release of every held call; cheap to clone.
///
/// A std lock: it is held for a map lookup, never across `.await`.
#[derive(Clone)]
pub struct Wakers {
    inner: Arc<Inner>,
}

struct Inner {
    tills: Mutex<HashMap<String, Entry>>,
    /// Bumped to end every held call (a reload); `closed` ends them and every later one.
    release: watch::Sender<Release>,
    held: Gauge,
}

struct Entry {
    notify: Arc<Notify>,
    holders: usize,
}

/// What a release says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Release {
    round: u64,
    closed: bool,
}

/// A call's hold on its till's waker; dropping it (an answer, or a till gone mid-hold)
/// forgets the waker once no other call of the till holds.
pub struct Hold {
    wakers: Wakers,
    tag: String,
    pub(super) notify: Arc<Notify>,
    release: watch::Receiver<Release>,
}

impl Wakers {
    /// Wakers counting held calls in `held` (`pollgate_push_held_calls`).
    pub fn new(held: Gauge) -> Self {
        Self {
            inner: Arc::new(Inner {
                tills: Mutex::new(HashMap::new()),
                release: watch::Sender::new(Release::default()),
                held,
            }),
        }
    }

    /// Registers a held call of the till tagged `tag`.
    pub fn hold(&self, tag: &str) -> Hold {
        let mut tills = self.lock();
        let entry = tills.entry(tag.to_owned()).or_insert_with(|| Entry {
            notify: Arc::new(Notify::new()),
            holders: 0,
        });
        entry.holders += 1;
        let notify = entry.notify.clone();
        drop(tills);
        self.inner.held.inc();
        Hold {
            wakers: self.clone(),
            tag: tag.to_owned(),
            notify,
            release: self.inner.release.subscribe(),
        }
    }

    /// Wakes every call held for the till tagged `tag` (on this process).
    pub fn wake(&self, tag: &str) {
        if let Some(entry) = self.lock().get(tag) {
            entry.notify.notify_waiters();
        }
    }

    /// Wakes every held call, to look again (after a lost wake-up channel came back).
    pub fn wake_all(&self) {
        for entry in self.lock().values() {
            entry.notify.notify_waiters();
        }
    }

    /// Ends every call held now (a reload: the next calls use the new generation).
    pub fn release(&self) {
        self.inner.release.send_modify(|r| r.round += 1);
    }

    /// Ends every held call and holds none from now on (shutdown).
    pub fn close(&self) {
        self.inner.release.send_modify(|r| {
            r.round += 1;
            r.closed = true;
        });
    }

    pub fn is_closed(&self) -> bool {
        self.inner.release.borrow().closed
    }

    /// Calls held now.
    pub fn held(&self) -> i64 {
        self.inner.held.get()
    }

    /// Tills with a held call now.
    pub fn tills(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner
            .tills
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Hold {
    /// Resolves when held calls are released (reload, shutdown).
    pub(super) async fn released(&mut self) {
        let _ = self.release.changed().await;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut tills = self.wakers.lock();
        if let Some(entry) = tills.get_mut(&self.tag) {
            entry.holders -= 1;
            if entry.holders == 0 {
                tills.remove(&self.tag);
            }
        }
        drop(tills);
        self.wakers.inner.held.dec();
    }
}

//! `outbox:`: the folder of the memory store's durable queue, required (and checked
//! writable) when an event is durable and conversations live in memory (GATEWAY.md 8).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Validator;
use crate::config::raw::{RawOutbox, StoreKind};
use crate::config::Event;

impl Validator<'_> {
    pub(super) fn outbox(
        &mut self,
        raw: RawOutbox,
        store: StoreKind,
        events: &BTreeMap<String, Event>,
    ) -> Option<PathBuf> {
        let Some(path) = raw.path else {
            let durable = events.values().find(|e| e.is_durable());
            if let (Some(event), StoreKind::Memory) = (durable, store) {
                self.problem(
                    "outbox.path",
                    format!(
                        "is required: events.{}.delivery is `durable` and state.store is memory (give a folder, like data/outbox)",
                        event.name
                    ),
                );
            }
            return None;
        };
        let path = self.dir.join(path.trim());
        if let Err(why) = writable(&path) {
            self.problem(
                "outbox.path",
                format!("cannot write to {}: {why}", path.display()),
            );
        }
        Some(path)
    }
}

/// Whether pollgate can keep its queue at `path`: a folder it can write in, or one it can
/// create (its nearest existing ancestor is a folder it can write in). Checked by
/// creating and removing a probe file, which is what matters (permissions, read-only
/// mounts and ownership all show).
fn writable(path: &Path) -> Result<(), String> {
    let mut at = path;
    loop {
        match std::fs::metadata(at) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) if at == path => return Err("it is a file, not a folder".into()),
            Ok(_) => return Err(format!("{} is a file, not a folder", at.display())),
            Err(_) => match at.parent() {
                Some(parent) if parent.as_os_str().is_empty() => at = Path::new("."),
                Some(parent) => at = parent,
                None => return Err("no folder of it exists".into()),
            },
        }
    }
    let probe = at.join(format!(".pollgate-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

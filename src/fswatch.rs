//! Which file-system events mean that watched files changed.
//!
//! `notify`'s inotify backend also reports opens and reads (`IN_OPEN`, `IN_CLOSE_NOWRITE`),
//! including sluice's own: a watcher that rescans on every event reads the directories and files
//! again, which reports more opens, and so on: an idle agent kept a core busy that way. Watchers
//! act only on the events that [`is_change`] keeps.

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind};

/// Whether `event` may mean a file was created, written, renamed, removed or had its metadata
/// changed (a file closed after writing counts); opens and reads do not.
pub fn is_change(event: &Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Other => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

    #[test]
    fn opens_and_reads_are_not_changes() {
        let kind = |k| Event::new(k);
        assert!(!is_change(&kind(EventKind::Access(AccessKind::Open(AccessMode::Any)))));
        assert!(!is_change(&kind(EventKind::Access(AccessKind::Close(AccessMode::Read)))));
        assert!(!is_change(&kind(EventKind::Access(AccessKind::Read))));
        assert!(is_change(&kind(EventKind::Access(AccessKind::Close(AccessMode::Write)))));
        assert!(is_change(&kind(EventKind::Create(CreateKind::File))));
        assert!(is_change(&kind(EventKind::Modify(ModifyKind::Name(RenameMode::To)))));
        assert!(is_change(&kind(EventKind::Remove(RemoveKind::File))));
    }
}

//! `state.key`: the parts of a call that identify its conversation (GATEWAY.md 3), by the
//! names the config writes them with. The key itself is derived in `conversation`.

/// One part of a call that identifies its conversation.
///
/// The variants' order is part of every conversation key (`ConversationKey::derive` feeds
/// each part's number): reordering them would change every key, and replicas of another
/// version, or conversations already stored, would stop matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    Subscription,
    Event,
    Branch,
    Workplace,
    Instance,
    Session,
    Timestamp,
    /// The event-specific object, e.g. `addSessionLine: {...}`.
    Object,
    /// The till's `dialog` answer, so a re-sent event with a chosen option is a new call.
    Dialog,
}

impl KeyPart {
    pub const ALL: [Self; 9] = [
        Self::Subscription,
        Self::Event,
        Self::Branch,
        Self::Workplace,
        Self::Instance,
        Self::Session,
        Self::Timestamp,
        Self::Object,
        Self::Dialog,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Event => "event",
            Self::Branch => "branch",
            Self::Workplace => "workplace",
            Self::Instance => "instance",
            Self::Session => "session",
            Self::Timestamp => "timestamp",
            Self::Object => "object",
            Self::Dialog => "dialog",
        }
    }

    /// The part named as in `state.key`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// All names, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

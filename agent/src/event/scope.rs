//! Scopes: the host, or one container. Every event belongs to one;
//! [`crate::attribution`] finds it from the event's cgroup.

use std::sync::Arc;

/// Where an event happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Host,
    /// A container, by runtime id.
    Container(Arc<str>),
}

impl Scope {
    /// `host` or `container:<id>`.
    pub fn key(&self) -> String {
        match self {
            Scope::Host => "host".into(),
            Scope::Container(id) => format!("container:{id}"),
        }
    }

    pub fn from_key(s: &str) -> Option<Scope> {
        match s {
            "host" => Some(Scope::Host),
            _ => s
                .strip_prefix("container:")
                .filter(|id| !id.is_empty())
                .map(|id| Scope::Container(Arc::from(id))),
        }
    }

    pub fn container_id(&self) -> Option<&str> {
        match self {
            Scope::Host => None,
            Scope::Container(id) => Some(id),
        }
    }
}

//! Stage 4, attribution: which scope an event belongs to (the host, or a
//! container found from the cgroup id), and what the container runtimes
//! say about each container (pod, namespace, image), polled off the event
//! path.
//!
//! Takes: records with their cgroup ids. Gives: the event's
//! [`crate::event::scope::Scope`] and unit, container metadata and
//! container start/stop notices. Imports: the foundation, `pipeline`,
//! `process`.

pub mod containers;
pub mod scope;

//! The client side of fdr, used by `fdrctl` and the tests: [`client`]
//! connects to an agent (unix socket, or TCP with TLS and a token), and
//! [`ctl`] holds the subcommands (requests, and their tables, JSON lines
//! and YAML). It depends only on the wire types (`fdr-proto`), whose
//! `render` module it shares with the agent.

pub mod client;
pub mod ctl;

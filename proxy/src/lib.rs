//! carbide-proxy: the connector.
//!
//! Client connections enter through the listeners ([`listener`]), which ask
//! the [`routing::Router`] where a session goes and whether the router lets
//! it in; each [`session`] connects to a datasource (`connect`: a read-only
//! session tries the next one when it cannot, and the router passes over one
//! that just failed: [`avoid`]), relays the greeting and authentication byte for
//! byte, then pumps packets both ways, following the conversation with a
//! [`tracker::Tracker`] over the [`packet::Framer`]'s message starts
//! (inflated first by [`compress`] for a compressed session);
//! sessions of the read-only listener are made read-only on the server by
//! [`read_only`].
//! Counters leave through [`metrics`], served with `/status` and the router
//! controls by [`admin`]. Sessions run on the [`workers`] (one
//! single-threaded runtime per thread). The only input from outside the proxy is the
//! routing table and router state stored into the `Router`.

pub mod admin;
pub mod avoid;
pub mod compress;
mod connect;
pub mod listener;
pub mod metrics;
pub mod packet;
pub mod protocol;
mod pump_wait;
pub mod read_only;
mod reader;
pub mod routing;
pub mod session;
pub mod stream;
pub mod tls;
pub mod tracker;
pub mod workers;

//! vhost-user-ccw frontend: connects to a backend socket the way QEMU's
//! passthrough-subchannel device does, and runs channel-program scripts
//! through it. It is both a debugging tool for users and the harness of the
//! integration tests.

pub mod connection;
pub mod runner;
pub mod script;
pub mod sys;
pub mod vring;

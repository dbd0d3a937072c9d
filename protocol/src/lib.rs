//! vhost-user-ccw protocol: the wire format spoken between a frontend (QEMU's
//! passthrough-subchannel device, or the frontend tool) and the backend, and
//! the architected s390 channel-I/O structures both sides exchange.
//!
//! Nothing in this crate performs I/O. `arch` holds the big-endian structures
//! exactly as the z/Architecture Principles of Operation define them; `wire`
//! holds protocol v1 (feature bits, virtqueue element layouts, config space),
//! normatively described in `docs/protocol.md`.

pub mod arch;
pub mod wire;

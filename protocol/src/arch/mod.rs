//! Architected s390 channel-I/O structures.
//!
//! This module owns the single definition of every channel-subsystem
//! structure the project exchanges with guests, the host and devices: the
//! operation request block ([`Orb`]), channel command words ([`Ccw0`],
//! [`Ccw1`], [`Ccw`]) and indirect-data-address words ([`Idaw1`], [`Idaw2`]),
//! the subchannel-status word ([`Scsw`]), the format-0 extended-status word
//! ([`Esw`]) and the interruption-response block ([`Irb`]), the path-management
//! control word ([`Pmcw`]) and subchannel-information block ([`Schib`]), the
//! channel-report word ([`Crw`]), SENSE ID data ([`SenseId`], [`Ciw`]) and
//! 32-byte sense data ([`Sense`]).
//!
//! Field and bit names follow the z/Architecture Principles of Operation
//! (POPs); bit numbers in the documentation count from the leftmost (most
//! significant) bit of the word named, as POPs does. Every structure is
//! big-endian, exactly as it appears in storage.
//!
//! Each structure is a plain struct with typed fields, a `SIZE`, an infallible
//! `encode` and a validating `decode`. `decode` checks the length and the bits
//! that POPs requires to be zero and reports violations as [`ArchError`].
//! `encode` writes every field at its architected width; a field value wider
//! than its architected width (say a key above 15) is truncated to that width.

mod be;

/// Defines a set of single-bit flags packed into one integer field.
///
/// The generated type keeps only the bits of `mask`, so every value it holds
/// encodes exactly.
macro_rules! flag_set {
    (
        $(#[$outer:meta])*
        pub struct $name:ident($ty:ty);
        mask = $mask:expr;
        $(
            $(#[$inner:meta])*
            const $flag:ident = $value:expr;
        )+
    ) => {
        $(#[$outer])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name($ty);

        impl $name {
            $(
                $(#[$inner])*
                pub const $flag: Self = Self($value);
            )+

            /// Every bit this field defines.
            pub const MASK: $ty = $mask;

            const NAMES: &'static [(&'static str, $ty)] = &[$((stringify!($flag), $value)),+];

            /// The set with no flag.
            #[must_use]
            pub const fn empty() -> Self {
                Self(0)
            }

            /// The set with every defined flag.
            #[must_use]
            pub const fn all() -> Self {
                Self(Self::MASK)
            }

            /// The raw bits, positioned as in the architected field.
            #[must_use]
            pub const fn bits(self) -> $ty {
                self.0
            }

            /// The set with these bits, or `None` if a bit outside
            /// [`Self::MASK`] is set.
            #[must_use]
            pub const fn from_bits(bits: $ty) -> Option<Self> {
                if bits & Self::MASK == bits {
                    Some(Self(bits))
                } else {
                    None
                }
            }

            /// The set with these bits, dropping bits outside [`Self::MASK`].
            #[must_use]
            pub const fn from_bits_truncate(bits: $ty) -> Self {
                Self(bits & Self::MASK)
            }

            /// Whether every flag of `other` is set in `self`.
            #[must_use]
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any flag of `other` is set in `self`.
            #[must_use]
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// Whether no flag is set.
            #[must_use]
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// The flags set in `self` or in `other`.
            #[must_use]
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            /// The flags set in both `self` and `other`.
            #[must_use]
            pub const fn intersection(self, other: Self) -> Self {
                Self(self.0 & other.0)
            }

            /// The flags of `self` that are not in `other`.
            #[must_use]
            pub const fn difference(self, other: Self) -> Self {
                Self(self.0 & !other.0)
            }

            /// Sets the flags of `other`.
            pub fn insert(&mut self, other: Self) {
                self.0 |= other.0;
            }

            /// Clears the flags of `other`.
            pub fn remove(&mut self, other: Self) {
                self.0 &= !other.0;
            }

            /// Sets (`value == true`) or clears the flags of `other`.
            pub fn set(&mut self, other: Self, value: bool) {
                if value {
                    self.insert(other);
                } else {
                    self.remove(other);
                }
            }
        }

        impl ::core::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                self.union(rhs)
            }
        }

        impl ::core::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                self.insert(rhs);
            }
        }

        impl ::core::ops::BitAnd for $name {
            type Output = Self;
            fn bitand(self, rhs: Self) -> Self {
                self.intersection(rhs)
            }
        }

        impl ::core::ops::BitAndAssign for $name {
            fn bitand_assign(&mut self, rhs: Self) {
                self.0 &= rhs.0;
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(concat!(stringify!($name), "("))?;
                let mut first = true;
                for &(name, bits) in Self::NAMES {
                    if self.0 & bits == bits && bits != 0 {
                        if !first {
                            f.write_str(" | ")?;
                        }
                        f.write_str(name)?;
                        first = false;
                    }
                }
                if first {
                    f.write_str("empty")?;
                }
                f.write_str(")")
            }
        }
    };
}

mod ccw;
mod crw;
mod orb;
mod schib;
mod scsw;
mod sense;
mod senseid;

pub use ccw::{CCW_CMD_TIC, Ccw, Ccw0, Ccw1, CcwFlags, Idaw1, Idaw2};
pub use crw::Crw;
pub use orb::Orb;
pub use schib::{Pmcw, Schib};
pub use scsw::{
    ActivityControl, DeviceStatus, Erw, Esw, FunctionControl, Irb, Scsw, StatusControl,
    SubchannelLogout, SubchannelStatus,
};
pub use sense::Sense;
pub use senseid::{Ciw, SenseId};

/// Why bytes do not form a valid architected structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArchError {
    /// The byte slice does not have the structure's fixed length.
    #[error("{what}: expected {expected} bytes, got {actual}")]
    Length {
        /// The structure being decoded.
        what: &'static str,
        /// The required length in bytes.
        expected: usize,
        /// The length that was supplied.
        actual: usize,
    },
    /// The byte slice is outside the structure's permitted length range.
    #[error("{what}: expected {min} to {max} bytes, got {actual}")]
    LengthRange {
        /// The structure being decoded.
        what: &'static str,
        /// The shortest permitted length in bytes.
        min: usize,
        /// The longest permitted length in bytes.
        max: usize,
        /// The length that was supplied.
        actual: usize,
    },
    /// A reserved field that POPs requires to be zero is not zero.
    #[error("{what}: reserved {field} is not zero")]
    Reserved {
        /// The structure being decoded.
        what: &'static str,
        /// The reserved field, named by its bit positions.
        field: &'static str,
    },
    /// A field holds a value the architecture does not permit.
    #[error("{what}: {reason}")]
    Invalid {
        /// The structure being decoded or encoded.
        what: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_name_structure_and_field() {
        let e = ArchError::Length {
            what: "ORB",
            expected: 12,
            actual: 11,
        };
        assert_eq!(e.to_string(), "ORB: expected 12 bytes, got 11");
        let e = ArchError::LengthRange {
            what: "SENSE ID data",
            min: 7,
            max: 40,
            actual: 41,
        };
        assert_eq!(
            e.to_string(),
            "SENSE ID data: expected 7 to 40 bytes, got 41"
        );
        let e = ArchError::Reserved {
            what: "CRW",
            field: "bit 0",
        };
        assert_eq!(e.to_string(), "CRW: reserved bit 0 is not zero");
        let e = ArchError::Invalid {
            what: "IDAW",
            reason: "bit 0 is set",
        };
        assert_eq!(e.to_string(), "IDAW: bit 0 is set");
    }

    #[test]
    fn flag_set_operations() {
        let mut f = CcwFlags::CC | CcwFlags::SLI;
        assert_eq!(f.bits(), 0x60);
        assert!(f.contains(CcwFlags::CC));
        assert!(!f.contains(CcwFlags::CC | CcwFlags::IDA));
        assert!(f.intersects(CcwFlags::CC | CcwFlags::IDA));
        f.insert(CcwFlags::IDA);
        assert_eq!(f.bits(), 0x64);
        f.remove(CcwFlags::CC);
        assert_eq!(f.bits(), 0x24);
        f.set(CcwFlags::CD, true);
        assert_eq!(f.bits(), 0xA4);
        f.set(CcwFlags::CD, false);
        assert_eq!(f.bits(), 0x24);
        f &= CcwFlags::IDA;
        assert_eq!(f, CcwFlags::IDA);
        f |= CcwFlags::S;
        assert_eq!(f.bits(), 0x06);
        assert_eq!(f.difference(CcwFlags::S), CcwFlags::IDA);
        assert!(CcwFlags::empty().is_empty());
        assert_eq!(CcwFlags::all().bits(), 0xFF);
        assert_eq!(
            format!("{:?}", CcwFlags::CC | CcwFlags::SLI),
            "CcwFlags(CC | SLI)"
        );
        assert_eq!(format!("{:?}", CcwFlags::empty()), "CcwFlags(empty)");
    }

    #[test]
    fn flag_set_masks_undefined_bits() {
        assert_eq!(FunctionControl::MASK, 0x7000);
        assert_eq!(FunctionControl::from_bits(0x8000), None);
        assert_eq!(
            FunctionControl::from_bits(0x4000),
            Some(FunctionControl::START)
        );
        assert_eq!(
            FunctionControl::from_bits_truncate(0xC000),
            FunctionControl::START
        );
        assert_eq!(StatusControl::from_bits(0x20), None);
        assert_eq!(StatusControl::all().bits(), 0x1F);
    }
}

//! What the emulated 3990/3390 says about itself: SENSE ID, READ DEVICE
//! CHARACTERISTICS, READ CONFIGURATION DATA, the PSF/RSSD answers, and the
//! 3390 track-capacity formula (shared/reference/eckd.md §1d).
//!
//! Every optional facility (Prefix, PAV, zHPF, read-track, XRC, PPRC,
//! extended address volumes) is reported absent, so Linux stays in plain
//! command mode: Define Extent, Locate Record, READ/WRITE DATA.

use vhost_user_ccw_protocol::arch::{Ciw, SenseId};

use super::track::R0_DATA_LEN;
use super::{DEVICE_TYPE, Geometry, HEADS};

/// Control-unit type reported (a 3990 model 6, ECKD).
pub const CU_TYPE: u16 = 0x3990;
/// Control-unit model (bits 0–1 = 11: ECKD).
pub const CU_MODEL: u8 = 0xE9;
/// READ CONFIGURATION DATA command code (named by the SENSE ID CIW).
pub const CMD_RCD: u8 = 0xFA;
/// Length of READ DEVICE CHARACTERISTICS data.
pub const RDC_LEN: usize = 64;
/// Length of READ CONFIGURATION DATA.
pub const RCD_LEN: usize = 256;
/// Length of the RSSD feature-codes answer (suborder 0x41).
pub const FEATURES_LEN: usize = 256;
/// Length of the RSSD unit-address-configuration answer (suborder 0x0E).
pub const UA_CONFIG_LEN: usize = 512;
/// Track length of a 3390 in bytes (1729 cells of 34 bytes).
pub const TRACK_LENGTH: u32 = 58_786;
/// Cells of one track available to records R1…Rn.
const TRACK_CELLS: u32 = 1729;
/// Bytes per cell.
const CELL: u32 = 34;
/// Largest R0 data length.
pub const MAX_R0_LEN: u16 = 57_326;

/// Device model byte (SENSE ID byte 6, RDC byte 5) and unit type (RDC
/// byte 11) for a volume of `cylinders`: the smallest 3390 model holding it.
fn model_bytes(cylinders: u16) -> (u8, u8) {
    match cylinders {
        0..=1113 => (0x02, 0x26),
        1114..=2226 => (0x06, 0x27),
        2227..=3339 => (0x0A, 0x24),
        _ => (0x0C, 0x32),
    }
}

/// The identity of one emulated volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DasdIdentity {
    /// Geometry of the volume.
    pub geometry: Geometry,
    /// Device number: its low byte is the unit address, its high byte the
    /// logical subsystem, as configuration data reports them.
    pub devno: u16,
    /// A number distinguishing this volume from others (the serial number
    /// in the configuration data, from which Linux builds the device UID).
    pub serial: u32,
}

impl DasdIdentity {
    /// SENSE ID: 3990-E9 / 3390 with one CIW naming READ CONFIGURATION
    /// DATA (Linux takes the first type-0 CIW).
    pub fn sense_id(&self) -> SenseId {
        SenseId {
            cu_type: CU_TYPE,
            cu_model: CU_MODEL,
            dev_type: DEVICE_TYPE,
            dev_model: model_bytes(self.geometry.cylinders()).0,
            ciws: vec![Ciw {
                command_type: Ciw::TYPE_RCD,
                command: CMD_RCD,
                count: 256,
            }],
        }
    }

    /// Unit address.
    pub fn unit_address(&self) -> u8 {
        self.devno.to_be_bytes()[1]
    }

    /// READ DEVICE CHARACTERISTICS (64 bytes).
    pub fn rdc(&self) -> [u8; RDC_LEN] {
        let cylinders = self.geometry.cylinders();
        let (model, unit_type) = model_bytes(cylinders);
        let mut r = [0u8; RDC_LEN];
        r[0..2].copy_from_slice(&CU_TYPE.to_be_bytes());
        r[2] = CU_MODEL;
        r[3..5].copy_from_slice(&DEVICE_TYPE.to_be_bytes());
        r[5] = model;
        // Facilities as a 3990 reports them, minus read-track in Locate
        // Record (byte 6 bit 0x40), XRC and PPRC (byte 8 bits 0x40/0x20).
        r[6..10].copy_from_slice(&[0x10, 0x00, 0x10, 0x96]);
        r[10] = 0x20; // device class: DASD
        r[11] = unit_type;
        r[12..14].copy_from_slice(&cylinders.to_be_bytes());
        r[14..16].copy_from_slice(&HEADS.to_be_bytes());
        r[16] = 224; // sectors
        r[17..20].copy_from_slice(&TRACK_LENGTH.to_be_bytes()[1..4]);
        r[20..22].copy_from_slice(&1428u16.to_be_bytes()); // HA + R0 overhead
        r[22] = 2; // track-capacity formula 2
        r[23..28].copy_from_slice(&[34, 19, 9, 6, 116]);
        r[44..46].copy_from_slice(&MAX_R0_LEN.to_be_bytes());
        r[60..64].copy_from_slice(&u32::from(cylinders).to_be_bytes());
        r
    }

    /// READ CONFIGURATION DATA (256 bytes): a device NED (identifier 3,
    /// byte 1 = 1) in slot 0 and a general NEQ (identifier 2) in slot 7,
    /// as Linux requires; the other slots are empty.
    pub fn rcd(&self) -> [u8; RCD_LEN] {
        let mut r = [0u8; RCD_LEN];
        let ned = &mut r[0..32];
        ned[0] = 0xC4; // NED, serial number valid
        ned[1] = 0x01; // device NED
        ned[2] = 0x01; // class: DASD
        ebcdic_into(&mut ned[4..10], "003390");
        let model = match self.geometry.model_number() {
            0 => String::from("000"),
            m => format!("{m:03}"),
        };
        ebcdic_into(&mut ned[10..13], &model);
        ebcdic_into(&mut ned[13..16], "VUC");
        ebcdic_into(&mut ned[16..18], "01");
        ebcdic_into(
            &mut ned[18..30],
            &format!("{:08X}{:04X}", self.serial, self.devno),
        );
        ned[30] = self.devno.to_be_bytes()[0];
        ned[31] = self.unit_address();
        let gneq = &mut r[224..256];
        gneq[0] = 0x80; // general NEQ
        gneq[6] = 0x1E; // missing-interrupt timeout: 30 s
        gneq[8..10]
            .copy_from_slice(&(0x0100 | u16::from(self.devno.to_be_bytes()[0])).to_be_bytes());
        r
    }

    /// RSSD suborder 0x0E: the unit-address configuration of the logical
    /// subsystem: our unit address is a base device, nothing else exists.
    pub fn unit_address_config(&self) -> [u8; UA_CONFIG_LEN] {
        let mut r = [0u8; UA_CONFIG_LEN];
        let ua = usize::from(self.unit_address());
        r[2 * ua] = 0x01; // base device
        r[2 * ua + 1] = self.unit_address();
        r
    }
}

/// EBCDIC of upper-case letters and digits, into `out` (blank padded).
fn ebcdic_into(out: &mut [u8], text: &str) {
    out.fill(0x40);
    for (o, c) in out.iter_mut().zip(text.bytes()) {
        *o = match c {
            b'A'..=b'I' => 0xC1 + (c - b'A'),
            b'J'..=b'R' => 0xD1 + (c - b'J'),
            b'S'..=b'Z' => 0xE2 + (c - b'S'),
            b'0'..=b'9' => 0xF0 + (c - b'0'),
            _ => 0x40,
        };
    }
}

/// Cells a record with key length `kl` and data length `dl` takes on a
/// 3390 track (formula 2 with the RDC factors: the same arithmetic as
/// Linux's records-per-track computation).
pub fn record_cells(kl: usize, dl: usize) -> u32 {
    let cells = |len: usize| -> u32 {
        let len = u32::try_from(len).unwrap_or(u32::MAX / 2);
        let n = (len + 6).div_ceil(232) + 1;
        (len + 6 * n).div_ceil(CELL)
    };
    let key = if kl == 0 { 0 } else { 9 + cells(kl) };
    10 + 9 + cells(dl) + key
}

/// Whether records R1… with these (key length, data length) pairs fit on
/// one 3390 track after the standard R0 (the capacity tests' wording).
#[cfg(test)]
fn records_fit(records: impl IntoIterator<Item = (usize, usize)>) -> bool {
    track_fits((0, R0_DATA_LEN), records)
}

/// Whether a track of these records, R0 first, fits on one 3390 track: an
/// R0 with a key or more than the standard 8 data bytes takes its extra
/// cells from the records after it.
pub fn track_fits(r0: (usize, usize), records: impl IntoIterator<Item = (usize, usize)>) -> bool {
    let excess = record_cells(r0.0, r0.1).saturating_sub(record_cells(0, R0_DATA_LEN));
    let mut used = excess;
    for (kl, dl) in records {
        used = used.saturating_add(record_cells(kl, dl));
    }
    used <= TRACK_CELLS
}

/// Records of `kl`/`dl` that fit on one track.
pub fn records_per_track(kl: usize, dl: usize) -> u32 {
    TRACK_CELLS / record_cells(kl, dl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(cylinders: u32) -> DasdIdentity {
        DasdIdentity {
            geometry: Geometry::with_cylinders(cylinders).unwrap(),
            devno: 0x1234,
            serial: 0xABCD_0001,
        }
    }

    #[test]
    fn records_per_track_match_the_3390_tables() {
        // 3390 reference: 512 → 49, 1024 → 33, 2048 → 21, 4096 → 12,
        // one record of 56664 bytes fills the track.
        assert_eq!(records_per_track(0, 512), 49);
        assert_eq!(records_per_track(0, 1024), 33);
        assert_eq!(records_per_track(0, 2048), 21);
        assert_eq!(records_per_track(0, 4096), 12);
        assert_eq!(records_per_track(0, 56_664), 1);
        assert!(records_fit([(0, 56_664)]));
        assert!(!records_fit([(0, 56_665)]));
        assert!(records_fit(vec![(0, 4096); 12]));
        assert!(!records_fit(vec![(0, 4096); 13]));
        // CDL track 0 and the VTOC track fit.
        let mut track0 = vec![(4, 24), (4, 144), (4, 80)];
        track0.extend(vec![(0, 4096); 9]);
        assert!(records_fit(track0));
        assert!(records_fit(vec![(44, 96); 12]));
    }

    #[test]
    fn rdc_bytes() {
        let rdc = identity(10_017).rdc();
        assert_eq!(&rdc[0..6], &[0x39, 0x90, 0xE9, 0x33, 0x90, 0x0C]);
        assert_eq!(rdc[6] & 0x40, 0, "no read-track in LR");
        assert_eq!(rdc[8] & 0x60, 0, "no XRC, no PPRC");
        assert_eq!(&rdc[12..17], &[0x27, 0x21, 0x00, 0x0F, 224]);
        assert_eq!(&rdc[17..20], &[0x00, 0xE5, 0xA2]);
        assert_eq!(rdc[22], 2);
        assert_eq!(&rdc[60..64], &10_017u32.to_be_bytes());
        assert_eq!(identity(3339).rdc()[5], 0x0A);
    }

    #[test]
    fn rcd_has_a_device_ned_and_a_gneq() {
        let rcd = identity(100).rcd();
        assert_eq!(rcd[0] >> 6, 3);
        assert_eq!(rcd[1], 1);
        assert_eq!(&rcd[4..10], &[0xF0, 0xF0, 0xF3, 0xF3, 0xF9, 0xF0]);
        assert_eq!(rcd[30], 0x12, "LSS");
        assert_eq!(rcd[31], 0x34, "unit address");
        assert_eq!(rcd[224] >> 6, 2);
        assert_eq!(rcd[224 + 17] & 0x04, 0, "no zHPF");
        for slot in 1..7 {
            assert!(rcd[slot * 32..slot * 32 + 32].iter().all(|&b| b == 0));
        }
        let other = DasdIdentity {
            serial: 2,
            ..identity(100)
        };
        assert_ne!(rcd[18..30], other.rcd()[18..30], "serials differ");
    }

    #[test]
    fn sense_id_names_rcd_first() {
        let id = identity(3339).sense_id().encode();
        assert_eq!(
            &id[..],
            &[
                0xFF, 0x39, 0x90, 0xE9, 0x33, 0x90, 0x0A, 0x00, 0x40, 0xFA, 0x01, 0x00
            ]
        );
    }

    #[test]
    fn unit_address_configuration_lists_our_base() {
        let ua = identity(100).unit_address_config();
        assert_eq!(&ua[0x68..0x6A], &[0x01, 0x34]);
        assert_eq!(ua.iter().filter(|&&b| b != 0).count(), 2);
    }
}

//! Validated configuration built from the command line and environment.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::args::Args;
use crate::host::sim::SimConfig;

/// Where the backend listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Create and listen on a socket path.
    Path(PathBuf),
    /// An inherited listening socket (`--fd`, or systemd's fd 3).
    Fd(i32),
}

/// Which host subchannel to mediate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// An emulated subchannel with a buffer device of `size` bytes.
    Sim {
        /// Subchannel parameters.
        config: SimConfig,
        /// Size of the device's buffer.
        size: usize,
    },
    /// A Linux vfio-ccw mediated device.
    Vfio(String),
}

/// Configuration errors: each says what to fix.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// No listening socket was named.
    #[error(
        "no socket: pass --socket-path PATH or --fd N, or start the backend through socket activation"
    )]
    NoSocket,
    /// `--device` did not parse.
    #[error("--device {spec}: {reason}")]
    Device {
        /// The argument given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host kind exists in the syntax but not in this build.
    #[error("--device {0}: the vfio host subchannel is not available in this version")]
    VfioUnavailable(String),
}

/// Default size of the sim buffer device.
pub const DEFAULT_SIM_SIZE: usize = 1 << 20;

/// The backend's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen.
    pub listen: Listen,
    /// What to mediate.
    pub device: DeviceSpec,
}

impl Config {
    /// Build from parsed arguments and the process environment (for
    /// systemd socket activation: LISTEN_PID / LISTEN_FDS).
    pub fn from_args(
        args: &Args,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let listen = match (&args.socket_path, args.fd) {
            (Some(path), _) => Listen::Path(path.clone()),
            (None, Some(fd)) => Listen::Fd(fd),
            (None, None) => activated_fd(&env).ok_or(ConfigError::NoSocket)?,
        };
        Ok(Self {
            listen,
            device: parse_device(&args.device)?,
        })
    }
}

/// systemd passes listening sockets from fd 3 when LISTEN_PID is our pid.
fn activated_fd(env: &impl Fn(&str) -> Option<String>) -> Option<Listen> {
    let pid: u32 = env("LISTEN_PID")?.parse().ok()?;
    let fds: u32 = env("LISTEN_FDS")?.parse().ok()?;
    (pid == crate::sys::getpid() && fds >= 1).then_some(Listen::Fd(3))
}

fn parse_number(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        return u64::from_str_radix(hex, 16).ok();
    }
    let (digits, shift) = match value.chars().last()? {
        'K' | 'k' => (&value[..value.len() - 1], 10),
        'M' | 'm' => (&value[..value.len() - 1], 20),
        'G' | 'g' => (&value[..value.len() - 1], 30),
        _ => (value, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Parse `--device`.
pub fn parse_device(spec: &str) -> Result<DeviceSpec, ConfigError> {
    let err = |reason: String| ConfigError::Device {
        spec: spec.to_owned(),
        reason,
    };
    if let Some(target) = spec.strip_prefix("vfio:") {
        return Err(ConfigError::VfioUnavailable(target.to_owned()));
    }
    let mut parts = spec.split(',');
    let kind = parts.next().unwrap_or_default();
    if kind != "sim" {
        return Err(err(format!(
            "unknown host subchannel kind '{kind}' (expected sim or vfio:…)"
        )));
    }
    let mut config = SimConfig::default();
    let mut size = DEFAULT_SIM_SIZE;
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| err(format!("'{part}' is not key=value")))?;
        let number =
            parse_number(value).ok_or_else(|| err(format!("{key}: '{value}' is not a number")))?;
        let out_of_range = || err(format!("{key}: {value} is out of range"));
        match key {
            "devno" => config.devno = u16::try_from(number).map_err(|_| out_of_range())?,
            "schno" => config.schno = u16::try_from(number).map_err(|_| out_of_range())?,
            "chpid" => config.chpid = u8::try_from(number).map_err(|_| out_of_range())?,
            "latency-us" => config.latency = Duration::from_micros(number),
            "size" => {
                size = usize::try_from(number)
                    .ok()
                    .filter(|s| (1..=1 << 30).contains(s))
                    .ok_or_else(out_of_range)?;
            }
            _ => return Err(err(format!("unknown option '{key}'"))),
        }
    }
    Ok(DeviceSpec::Sim { config, size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("vhost-user-ccw").chain(argv.iter().copied())).unwrap()
    }

    #[test]
    fn socket_path_and_defaults() {
        let config = Config::from_args(&args(&["--socket-path", "/tmp/s"]), |_| None).unwrap();
        assert_eq!(config.listen, Listen::Path("/tmp/s".into()));
        assert_eq!(
            config.device,
            DeviceSpec::Sim {
                config: SimConfig::default(),
                size: DEFAULT_SIM_SIZE
            }
        );
    }

    #[test]
    fn socket_path_and_fd_conflict() {
        let r = Args::try_parse_from(["x", "--socket-path", "/tmp/s", "--fd", "3"]);
        assert!(r.is_err());
    }

    #[test]
    fn socket_activation_needs_our_pid() {
        let pid = crate::sys::getpid().to_string();
        let env = |k: &str| match k {
            "LISTEN_PID" => Some(pid.clone()),
            "LISTEN_FDS" => Some("1".to_owned()),
            _ => None,
        };
        assert_eq!(
            Config::from_args(&args(&[]), env).unwrap().listen,
            Listen::Fd(3)
        );
        let other = |k: &str| match k {
            "LISTEN_PID" => Some("1".to_owned()),
            "LISTEN_FDS" => Some("1".to_owned()),
            _ => None,
        };
        assert_eq!(
            Config::from_args(&args(&[]), other),
            Err(ConfigError::NoSocket)
        );
    }

    #[test]
    fn device_specs() {
        let DeviceSpec::Sim { config, size } =
            parse_device("sim,devno=0x1234,schno=3,chpid=0x2a,size=64K,latency-us=500").unwrap()
        else {
            panic!("sim expected");
        };
        assert_eq!(config.devno, 0x1234);
        assert_eq!(config.schno, 3);
        assert_eq!(config.chpid, 0x2a);
        assert_eq!(config.latency, Duration::from_micros(500));
        assert_eq!(size, 64 * 1024);
        assert!(matches!(
            parse_device("sim,devno=0x12345"),
            Err(ConfigError::Device { .. })
        ));
        assert!(matches!(
            parse_device("sim,colour=red"),
            Err(ConfigError::Device { .. })
        ));
        assert!(matches!(
            parse_device("sim,size=0"),
            Err(ConfigError::Device { .. })
        ));
        assert!(matches!(
            parse_device("disk"),
            Err(ConfigError::Device { .. })
        ));
        assert_eq!(
            parse_device("vfio:0b5f1c27-1a8c-4b0e-9d10-2f0b3e1c5a77"),
            Err(ConfigError::VfioUnavailable(
                "0b5f1c27-1a8c-4b0e-9d10-2f0b3e1c5a77".into()
            ))
        );
    }
}

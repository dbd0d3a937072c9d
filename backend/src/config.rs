//! Validated configuration built from the command line and environment.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::args::Args;
use crate::host::sim::SimConfig;
use crate::host::sim::ckd::Geometry;
use crate::host::sim::ckd::dasd::FlushPolicy;
use crate::sandbox::Confinement;

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
    /// An emulated subchannel in front of an emulated device.
    Sim {
        /// Subchannel parameters.
        config: SimConfig,
        /// The device behind it.
        device: SimDevice,
    },
    /// A Linux vfio-ccw mediated device: its UUID or sysfs path
    /// ([`crate::host::vfio::VfioTarget`]).
    Vfio(String),
}

/// The device model behind a `sim` subchannel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimDevice {
    /// A 3390 DASD (`sim`, the default).
    Dasd {
        /// The image file; `None` runs on a scratch CDL-formatted image
        /// that is removed at exit.
        image: Option<PathBuf>,
        /// Geometry of the scratch image (with `image`, the image's
        /// header decides and this is `None`).
        geometry: Option<Geometry>,
        /// When writes are synced to the image (`flush=program|none`).
        flush: FlushPolicy,
    },
    /// The sequential buffer device of `size` bytes (`sim,device=buffer`).
    Buffer {
        /// Size of the buffer.
        size: usize,
    },
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
    /// Sockets and devices do not pair up.
    #[error("{sockets} sockets but {devices} --device options: give one --device per socket")]
    Pairing {
        /// Sockets named (paths, an fd, or activated fds).
        sockets: usize,
        /// `--device` options given.
        devices: usize,
    },
}

/// Default size of the sim buffer device.
pub const DEFAULT_SIM_SIZE: usize = 1 << 20;
/// Cylinders of the scratch DASD image when neither `model` nor
/// `cylinders` is given (1500 tracks, about 70 MiB of 4 KiB blocks:
/// quick to format, as it is at every start).
pub const DEFAULT_SCRATCH_CYLINDERS: u32 = 100;

/// One socket and the subchannel it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubchannelConfig {
    /// Where to listen.
    pub listen: Listen,
    /// What to mediate.
    pub device: DeviceSpec,
}

/// The backend's configuration: one or more socket/subchannel pairs, each
/// with its own sessions and state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The subchannels to serve.
    pub subchannels: Vec<SubchannelConfig>,
    /// Operational settings: socket ownership, control socket, sandbox.
    pub operations: Operations,
}

/// How the backend is run, apart from what it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operations {
    /// Group (name or number) for the sockets the backend creates.
    pub socket_group: Option<String>,
    /// Where to answer `stats`.
    pub control_socket: Option<PathBuf>,
    /// Namespace sandbox and seccomp filter.
    pub confinement: Confinement,
    /// Test hook: a forbidden system call after setup.
    pub test_forbidden_syscall: bool,
}

impl Operations {
    fn from_args(args: &Args) -> Self {
        Self {
            socket_group: args.socket_group.clone(),
            control_socket: args.control_socket.clone(),
            confinement: Confinement {
                sandbox: args.sandbox,
                seccomp: args.seccomp,
            },
            test_forbidden_syscall: args.test_forbidden_syscall,
        }
    }
}

impl Config {
    /// Build from parsed arguments and the process environment (for
    /// systemd socket activation: LISTEN_PID / LISTEN_FDS).
    pub fn from_args(
        args: &Args,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let sockets: Vec<Listen> = if !args.socket_path.is_empty() {
            args.socket_path.iter().cloned().map(Listen::Path).collect()
        } else if let Some(fd) = args.fd {
            vec![Listen::Fd(fd)]
        } else {
            activated_fds(&env).ok_or(ConfigError::NoSocket)?
        };
        let default = [String::from("sim")];
        let devices: &[String] = if args.device.is_empty() {
            &default
        } else {
            &args.device
        };
        if devices.len() != sockets.len() {
            return Err(ConfigError::Pairing {
                sockets: sockets.len(),
                devices: devices.len(),
            });
        }
        let subchannels = sockets
            .into_iter()
            .zip(devices)
            .map(|(listen, spec)| {
                Ok(SubchannelConfig {
                    listen,
                    device: parse_device(spec)?,
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self {
            subchannels,
            operations: Operations::from_args(args),
        })
    }
}

/// systemd passes listening sockets from fd 3 on when LISTEN_PID is our
/// pid, LISTEN_FDS of them.
fn activated_fds(env: &impl Fn(&str) -> Option<String>) -> Option<Vec<Listen>> {
    const SD_LISTEN_FDS_START: i32 = 3;
    let pid: u32 = env("LISTEN_PID")?.parse().ok()?;
    let fds: i32 = env("LISTEN_FDS")?.parse().ok()?;
    (pid == crate::sys::getpid() && (1..=256).contains(&fds)).then(|| {
        (SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + fds)
            .map(Listen::Fd)
            .collect()
    })
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

/// Parse `--device`:
/// `sim[,image=PATH][,model=3390-3|3390-9|3390-27][,cylinders=N][,flush=program|none]`
/// (the 3390 DASD), `sim,device=buffer[,size=BYTES]` (the buffer device), each with
/// `devno`, `schno`, `chpid` and `latency-us`.
pub fn parse_device(spec: &str) -> Result<DeviceSpec, ConfigError> {
    let err = |reason: String| ConfigError::Device {
        spec: spec.to_owned(),
        reason,
    };
    if let Some(target) = spec.strip_prefix("vfio:") {
        // Checked here for its form; whether the mdev exists is for the
        // host to find out when it opens it.
        crate::host::vfio::VfioTarget::parse(target).map_err(|e| err(e.to_string()))?;
        return Ok(DeviceSpec::Vfio(target.to_owned()));
    }
    let mut parts = spec.split(',');
    let kind = parts.next().unwrap_or_default();
    if kind != "sim" {
        return Err(err(format!(
            "unknown host subchannel kind '{kind}' (expected sim or vfio:…)"
        )));
    }
    let mut config = SimConfig::default();
    let mut size = None;
    let mut image = None;
    let mut geometry = None;
    let mut flush = None;
    let mut device = "dasd";
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| err(format!("'{part}' is not key=value")))?;
        let number =
            || parse_number(value).ok_or_else(|| err(format!("{key}: '{value}' is not a number")));
        let out_of_range = || err(format!("{key}: {value} is out of range"));
        match key {
            "devno" => config.devno = u16::try_from(number()?).map_err(|_| out_of_range())?,
            "schno" => config.schno = u16::try_from(number()?).map_err(|_| out_of_range())?,
            "chpid" => config.chpid = u8::try_from(number()?).map_err(|_| out_of_range())?,
            "latency-us" => config.latency = Duration::from_micros(number()?),
            "device" => {
                device = match value {
                    "dasd" => "dasd",
                    "buffer" => "buffer",
                    _ => return Err(err(format!("device: '{value}' (expected dasd or buffer)"))),
                }
            }
            "size" => {
                size = Some(
                    usize::try_from(number()?)
                        .ok()
                        .filter(|s| (1..=1 << 30).contains(s))
                        .ok_or_else(out_of_range)?,
                );
            }
            "image" if !value.is_empty() => image = Some(PathBuf::from(value)),
            "model" => {
                let n = value
                    .strip_prefix("3390-")
                    .and_then(|m| m.parse::<u32>().ok())
                    .ok_or_else(|| {
                        err(format!(
                            "model: '{value}' (expected 3390-3, 3390-9 or 3390-27)"
                        ))
                    })?;
                geometry = Some(Geometry::model(n).map_err(|e| err(format!("model: {e}")))?);
            }
            "flush" => {
                flush = Some(match value {
                    "program" => FlushPolicy::Program,
                    "none" => FlushPolicy::None,
                    _ => return Err(err(format!("flush: '{value}' (expected program or none)"))),
                });
            }
            "cylinders" => {
                let n = u32::try_from(number()?).map_err(|_| out_of_range())?;
                geometry =
                    Some(Geometry::with_cylinders(n).map_err(|e| err(format!("cylinders: {e}")))?);
            }
            _ => return Err(err(format!("unknown option '{key}'"))),
        }
    }
    let device = if device == "buffer" {
        if image.is_some() || geometry.is_some() || flush.is_some() {
            return Err(err(
                "image, model, cylinders and flush are DASD options".into()
            ));
        }
        SimDevice::Buffer {
            size: size.unwrap_or(DEFAULT_SIM_SIZE),
        }
    } else {
        if size.is_some() {
            return Err(err(
                "size is a buffer-device option (sim,device=buffer,size=…)".into(),
            ));
        }
        if image.is_some() && geometry.is_some() {
            return Err(err(
                "model and cylinders size a scratch image; an image's header holds its geometry"
                    .into(),
            ));
        }
        SimDevice::Dasd {
            image,
            geometry,
            flush: flush.unwrap_or_default(),
        }
    };
    Ok(DeviceSpec::Sim { config, device })
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
        assert_eq!(config.subchannels.len(), 1);
        let config = &config.subchannels[0];
        assert_eq!(config.listen, Listen::Path("/tmp/s".into()));
        assert_eq!(
            config.device,
            DeviceSpec::Sim {
                config: SimConfig::default(),
                device: SimDevice::Dasd {
                    image: None,
                    geometry: None,
                    flush: FlushPolicy::Program
                }
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
            Config::from_args(&args(&[]), env).unwrap().subchannels[0].listen,
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
        let DeviceSpec::Sim { config, device } = parse_device(
            "sim,device=buffer,devno=0x1234,schno=3,chpid=0x2a,size=64K,latency-us=500",
        )
        .unwrap() else {
            panic!("sim expected");
        };
        assert_eq!(config.devno, 0x1234);
        assert_eq!(config.schno, 3);
        assert_eq!(config.chpid, 0x2a);
        assert_eq!(config.latency, Duration::from_micros(500));
        assert_eq!(device, SimDevice::Buffer { size: 64 * 1024 });
        let dasd = |spec: &str| match parse_device(spec) {
            Ok(DeviceSpec::Sim { device, .. }) => Ok(device),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(
            dasd("sim,image=/var/disk.img,devno=0x190"),
            Ok(SimDevice::Dasd {
                image: Some("/var/disk.img".into()),
                geometry: None,
                flush: FlushPolicy::Program
            })
        );
        assert_eq!(
            dasd("sim,model=3390-9"),
            Ok(SimDevice::Dasd {
                image: None,
                geometry: Some(Geometry::model(9).unwrap()),
                flush: FlushPolicy::Program
            })
        );
        assert_eq!(
            dasd("sim,cylinders=20"),
            Ok(SimDevice::Dasd {
                image: None,
                geometry: Some(Geometry::with_cylinders(20).unwrap()),
                flush: FlushPolicy::Program
            })
        );
        assert_eq!(
            dasd("sim,image=/d.img,flush=none"),
            Ok(SimDevice::Dasd {
                image: Some("/d.img".into()),
                geometry: None,
                flush: FlushPolicy::None
            })
        );
        assert_eq!(
            dasd("sim,flush=program"),
            Ok(SimDevice::Dasd {
                image: None,
                geometry: None,
                flush: FlushPolicy::Program
            })
        );
        for bad in [
            "sim,flush=always",
            "sim,flush=",
            "sim,device=buffer,flush=none",
            "sim,model=3390-4",
            "sim,model=3380-3",
            "sim,cylinders=0",
            "sim,cylinders=70000",
            "sim,image=/x,model=3390-3",
            "sim,size=4K",
            "sim,device=buffer,image=/x",
            "sim,device=tape",
        ] {
            assert!(
                matches!(dasd(bad), Err(ConfigError::Device { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_device("sim,devno=0x12345"),
            Err(ConfigError::Device { .. })
        ));
        assert!(matches!(
            parse_device("sim,colour=red"),
            Err(ConfigError::Device { .. })
        ));
        assert!(matches!(
            parse_device("sim,device=buffer,size=0"),
            Err(ConfigError::Device { .. })
        ));
        assert!(matches!(
            parse_device("disk"),
            Err(ConfigError::Device { .. })
        ));
        assert_eq!(
            parse_device("vfio:0b5f1c27-1a8c-4b0e-9d10-2f0b3e1c5a77"),
            Ok(DeviceSpec::Vfio(
                "0b5f1c27-1a8c-4b0e-9d10-2f0b3e1c5a77".into()
            ))
        );
        assert_eq!(
            parse_device("vfio:/sys/bus/mdev/devices/0b5f1c27-1a8c-4b0e-9d10-2f0b3e1c5a77"),
            Ok(DeviceSpec::Vfio(
                "/sys/bus/mdev/devices/0b5f1c27-1a8c-4b0e-9d10-2f0b3e1c5a77".into()
            ))
        );
        match parse_device("vfio:0.0.0005") {
            Err(ConfigError::Device { spec, reason }) => {
                assert_eq!(spec, "vfio:0.0.0005");
                assert!(reason.contains("neither an mdev UUID"), "{reason}");
            }
            other => panic!("vfio:0.0.0005 gave {other:?}"),
        }
    }

    #[test]
    fn several_sockets_pair_with_their_devices() {
        let config = Config::from_args(
            &args(&[
                "--socket-path",
                "/tmp/a",
                "--device",
                "sim,devno=0x100",
                "--socket-path",
                "/tmp/b",
                "--device",
                "sim,devno=0x200",
            ]),
            |_| None,
        )
        .unwrap();
        let devnos: Vec<_> = config
            .subchannels
            .iter()
            .map(|s| match &s.device {
                DeviceSpec::Sim { config, .. } => (s.listen.clone(), config.devno),
                DeviceSpec::Vfio(_) => panic!("sim expected"),
            })
            .collect();
        assert_eq!(
            devnos,
            [
                (Listen::Path("/tmp/a".into()), 0x100),
                (Listen::Path("/tmp/b".into()), 0x200)
            ]
        );
        assert_eq!(
            Config::from_args(
                &args(&["--socket-path", "/tmp/a", "--socket-path", "/tmp/b"]),
                |_| None
            ),
            Err(ConfigError::Pairing {
                sockets: 2,
                devices: 1
            })
        );
        let pid = crate::sys::getpid().to_string();
        let env = |k: &str| match k {
            "LISTEN_PID" => Some(pid.clone()),
            "LISTEN_FDS" => Some("2".to_owned()),
            _ => None,
        };
        let config =
            Config::from_args(&args(&["--device", "sim", "--device", "sim"]), env).unwrap();
        assert_eq!(config.subchannels[1].listen, Listen::Fd(4));
    }
}

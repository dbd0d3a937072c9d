//! The per-instance configuration file (`--config FILE`, e.g.
//! `/etc/vhost-user-ccw/VM.conf` for the systemd unit `vhost-user-ccw@VM`).
//!
//! The format is the command line written down: one `key = value` per
//! line, keys are the long option names, `#` starts a comment line, and a
//! key that takes several values (`device`, `socket-path`) is repeated, in
//! order. The file becomes arguments placed before the real command line,
//! so clap validates both the same way and the command line wins.

use std::path::Path;

use thiserror::Error;

/// Keys a file may set: the daemon's settings, not one-shot actions.
const KEYS: &[&str] = &[
    "socket-path",
    "fd",
    "device",
    "log-level",
    "socket-group",
    "control-socket",
    "seccomp",
    "sandbox",
];

/// A configuration file that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InstanceError {
    /// The file could not be read.
    #[error("--config {file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A line is not `key = value` with a known key.
    #[error("{file}:{line}: {reason}")]
    Line {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Parse the text of a configuration file into command-line arguments.
pub fn parse(file: &str, text: &str) -> Result<Vec<String>, InstanceError> {
    let mut args = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |reason: String| InstanceError::Line {
            file: file.to_owned(),
            line: number + 1,
            reason,
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| error(format!("'{line}' is not key = value")))?;
        let (key, value) = (key.trim(), value.trim());
        if !KEYS.contains(&key) {
            return Err(error(format!(
                "unknown key '{key}' (known: {})",
                KEYS.join(", ")
            )));
        }
        if value.is_empty() {
            return Err(error(format!("{key} has no value")));
        }
        args.push(format!("--{key}"));
        args.push(value.to_owned());
    }
    Ok(args)
}

/// Read a configuration file into command-line arguments.
pub fn read(path: &Path) -> Result<Vec<String>, InstanceError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| InstanceError::Read {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    parse(&file, &text)
}

/// The full argument list: the program name, the file's settings (when the
/// command line names one with `--config`), then the command line.
pub fn expand(argv: Vec<String>, config: Option<&Path>) -> Result<Vec<String>, InstanceError> {
    let Some(path) = config else {
        return Ok(argv);
    };
    let mut args = argv.into_iter();
    let mut out: Vec<String> = args.next().into_iter().collect();
    out.extend(read(path)?);
    out.extend(args);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Args;
    use crate::config::{Config, Listen};
    use clap::Parser;

    const EXAMPLE: &str = "\
# two subchannels for guest vm1
socket-path = /run/a.sock
device = sim,devno=0x0100
socket-path = /run/b.sock
device = sim,devno=0x0200
socket-group = kvm
log-level = debug
";

    #[test]
    fn a_file_can_name_several_subchannels_and_the_command_line_wins() {
        let mut argv = vec!["vhost-user-ccw".to_owned()];
        argv.extend(parse("vm1.conf", EXAMPLE).unwrap());
        argv.extend(["--log-level".to_owned(), "warn".to_owned()]);
        let args = Args::try_parse_from(argv).unwrap();
        assert_eq!(args.log_level, "warn");
        assert_eq!(args.socket_group.as_deref(), Some("kvm"));
        let config = Config::from_args(&args, |_| None).unwrap();
        let sockets: Vec<_> = config
            .subchannels
            .iter()
            .map(|s| s.listen.clone())
            .collect();
        assert_eq!(
            sockets,
            [
                Listen::Path("/run/a.sock".into()),
                Listen::Path("/run/b.sock".into())
            ]
        );
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        assert_eq!(
            parse("x.conf", "device = sim\n\nprint-capabilities = yes\n"),
            Err(InstanceError::Line {
                file: "x.conf".into(),
                line: 3,
                reason: "unknown key 'print-capabilities' (known: socket-path, fd, device, log-level, socket-group, control-socket, seccomp, sandbox)".into()
            })
        );
        assert!(matches!(
            parse("x.conf", "device sim\n"),
            Err(InstanceError::Line { line: 1, .. })
        ));
        assert!(matches!(
            parse("x.conf", "device =\n"),
            Err(InstanceError::Line { line: 1, .. })
        ));
        assert!(matches!(
            read(Path::new("/nonexistent/x.conf")),
            Err(InstanceError::Read { .. })
        ));
    }
}

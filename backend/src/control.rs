//! The control socket (`--control-socket PATH`): a line-based UNIX socket
//! for the operator. `stats` answers one line of JSON with the counters of
//! every subchannel; `help` lists the commands; `vary-path` and
//! `remove-device` make a simulated subchannel report a path event or the
//! loss of its device, as a real one would (for testing guests and
//! frontends). One client at a time, each bounded by a timeout, so a stuck
//! client cannot stall the others for long.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use serde_json::{Value, json};

use crate::host::SimulatedFault;
use crate::session::{SharedSubchannel, lock};
use crate::stats::SubchannelStats;

/// What the control socket reports on for one subchannel.
#[derive(Clone)]
pub struct Watched {
    /// Where its frontend connects (a path, or `fd N`).
    pub socket: String,
    /// The subchannel.
    pub subchannel: SharedSubchannel,
    /// Its counters.
    pub stats: Arc<SubchannelStats>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// How long one client may take to send a command.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The commands, as `help` lists them.
const COMMANDS: [&str; 4] = [
    "stats",
    "help",
    "vary-path online|offline [N]",
    "remove-device [N]",
];

/// The answer to one command line. `N` is the subchannel's place in the
/// `stats` list (0, the first, by default).
pub fn answer(command: &str, watched: &[Watched]) -> Value {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["stats"] => {
            let subchannels: Vec<Value> = watched.iter().map(stats_of).collect();
            json!({ "subchannels": subchannels })
        }
        ["help"] => json!({ "commands": COMMANDS }),
        ["vary-path", state, rest @ ..] => match *state {
            "online" => inject(watched, rest, SimulatedFault::Path { online: true }),
            "offline" => inject(watched, rest, SimulatedFault::Path { online: false }),
            other => json!({ "error": format!("vary-path: '{other}' is not online or offline") }),
        },
        ["remove-device", rest @ ..] => inject(watched, rest, SimulatedFault::DeviceGone),
        _ => json!({
            "error": format!("unknown command '{}' (commands: {})", command.trim(), COMMANDS.join(", "))
        }),
    }
}

/// Make subchannel `index` (`[N]`, 0 by default) report `fault`.
fn inject(watched: &[Watched], index: &[&str], fault: SimulatedFault) -> Value {
    let n = match index {
        [] => 0,
        [n] => match n.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return json!({ "error": format!("'{n}' is not a subchannel number") }),
        },
        _ => return json!({ "error": "too many words" }),
    };
    let Some(target) = watched.get(n) else {
        return json!({ "error": format!("no subchannel {n} (there are {})", watched.len()) });
    };
    if lock(&target.subchannel).host_mut().inject(fault) {
        json!({ "ok": true })
    } else {
        json!({ "error": format!("subchannel {n} is not simulated: only sim devices take faults") })
    }
}

fn stats_of(watched: &Watched) -> Value {
    let (devno, bytes_moved) = {
        let mut sch = lock(&watched.subchannel);
        let devno = sch.host_schib().map(|s| s.pmcw.devno).ok();
        (devno, sch.host().bytes_moved())
    };
    let mut value = watched.stats.snapshot(bytes_moved);
    value["socket"] = json!(watched.socket);
    value["devno"] = match devno {
        Some(devno) => json!(format!("0x{devno:04x}")),
        None => Value::Null,
    };
    value
}

/// Serve the control socket for ever (run on its own thread).
pub fn serve(listener: &UnixListener, watched: &[Watched]) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(e) = serve_client(stream, watched) {
                    debug!("control client: {e}");
                }
            }
            Err(e) => {
                warn!("control socket accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_client(stream: UnixStream, watched: &[Watched]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        writeln!(writer, "{}", answer(&line, watched))?;
    }
    Ok(())
}

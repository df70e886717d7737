//! Container logs through the Docker API: stdout and stderr demultiplexed (bollard
//! reads Docker's stream framing), split into whole lines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::config::values;
use crate::error::UserError;

/// Which of the container's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stdout,
    Stderr,
}

/// One line of one container's output, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub service: String,
    pub source: Source,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub follow: bool,
    /// A number of lines or `all`.
    pub tail: String,
    /// Unix seconds; 0 means from the beginning.
    pub since: i64,
    /// Keep Docker's time at the start of each line.
    pub timestamps: bool,
    /// Skip lines Docker received at or before this time: for a log read again after
    /// its container restarted, what was shown already.
    pub after: Option<SystemTime>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            follow: false,
            tail: "all".into(),
            since: 0,
            timestamps: false,
            after: None,
        }
    }
}

/// `--tail`: a number or `all`.
pub fn parse_tail(s: &str) -> anyhow::Result<String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("all") {
        return Ok("all".into());
    }
    t.parse::<u64>().map(|n| n.to_string()).map_err(|_| {
        UserError::new(format!(
            "--tail `{s}` is not a number of lines; write e.g. --tail 100 or --tail all"
        ))
        .into()
    })
}

/// `--since`: a duration back from `now` (`10m`, `2h`) or a time
/// (`2024-05-01T12:00:00Z`, `2024-05-01 12:00:00`), as unix seconds.
pub fn parse_since(s: &str, now: SystemTime) -> anyhow::Result<i64> {
    let t = s.trim();
    let when = if let Ok(d) = values::duration("--since", t) {
        now.checked_sub(d).unwrap_or(UNIX_EPOCH)
    } else if let Ok(at) = humantime::parse_rfc3339_weak(t) {
        at
    } else {
        return Err(UserError::new(format!(
            "--since `{s}` is neither a duration nor a time; write e.g. --since 10m or --since 2024-05-01T12:00:00Z"
        ))
        .into());
    };
    Ok(when
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64)
}

/// Cuts a byte stream into lines; keeps a partial line until its end arrives.
#[derive(Debug, Default)]
pub struct Splitter {
    partial: Vec<u8>,
}

impl Splitter {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            out.push(text.trim_end_matches('\r').to_string());
        }
        out
    }

    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            None
        } else {
            let text = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            Some(text)
        }
    }
}

/// Docker's times are always asked for (they say where a log read again resumes);
/// [`stream_target`] takes them off unless `timestamps` is set.
fn options(o: &Options) -> bollard::query_parameters::LogsOptions {
    let after = o.after.map_or(0, |at| {
        at.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(o.follow)
        .tail(&o.tail)
        .since(o.since.max(after).clamp(0, i32::MAX as i64) as i32)
        .timestamps(true)
        .build()
}

/// Splits Docker's time (RFC 3339 with nanoseconds, then a space) off the start of
/// one log message; a message without one is returned whole.
pub fn split_stamp(message: &[u8]) -> (Option<SystemTime>, &[u8]) {
    let head = &message[..message.len().min(40)];
    if let Some(i) = head.iter().position(|&b| b == b' ')
        && let Ok(text) = std::str::from_utf8(&message[..i])
        && let Ok(at) = humantime::parse_rfc3339(text)
    {
        return (Some(at), &message[i + 1..]);
    }
    (None, message)
}

/// Whose log: a container's, or a swarm task's (on whichever node it runs; the
/// manager's engine fetches it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Container(String),
    Task(String),
}

/// Streams `container`'s lines into `tx` until the log ends (the container stopped,
/// or without `follow`, the end of what was logged) or the receiver is gone.
pub async fn stream_lines(
    docker: Docker,
    service: String,
    container: String,
    opts: Options,
    tx: mpsc::Sender<Line>,
) -> anyhow::Result<()> {
    stream_target(docker, service, Target::Container(container), opts, tx).await?;
    Ok(())
}

/// [`stream_lines`] for either kind of [`Target`]; returns the time of the last
/// line it passed on (where a later read of the same log resumes).
pub async fn stream_target(
    docker: Docker,
    service: String,
    target: Target,
    opts: Options,
    tx: mpsc::Sender<Line>,
) -> anyhow::Result<Option<SystemTime>> {
    let mut stream = match &target {
        Target::Container(name) => docker.logs(name, Some(options(&opts))).boxed(),
        Target::Task(id) => docker.task_logs(id, Some(options(&opts))).boxed(),
    };
    let mut out = Splitter::default();
    let mut err = Splitter::default();
    // The time of the message that ended the line, and of the last line sent.
    let mut at = None;
    let mut last = None;
    let shown =
        |at: Option<SystemTime>| opts.after.is_none_or(|after| at.is_none_or(|t| t > after));
    while let Some(item) = stream.next().await {
        let (source, message) = match item? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (Source::Stdout, message)
            }
            LogOutput::StdErr { message } => (Source::Stderr, message),
            LogOutput::StdIn { .. } => continue,
        };
        let (stamp, body) = split_stamp(&message);
        at = stamp.or(at);
        let body = if opts.timestamps { &message[..] } else { body };
        let lines = match source {
            Source::Stdout => out.push(body),
            Source::Stderr => err.push(body),
        };
        for text in lines {
            if !shown(at) {
                continue;
            }
            let line = Line {
                service: service.clone(),
                source,
                text,
            };
            if tx.send(line).await.is_err() {
                return Ok(last);
            }
            last = at.or(last);
        }
    }
    for (source, splitter) in [(Source::Stdout, &mut out), (Source::Stderr, &mut err)] {
        if let Some(text) = splitter.finish()
            && shown(at)
        {
            let _ = tx
                .send(Line {
                    service: service.clone(),
                    source,
                    text,
                })
                .await;
            last = at.or(last);
        }
    }
    Ok(last)
}

/// The last `n` lines (stdout and stderr) of `container`.
pub async fn tail_lines(docker: &Docker, container: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let (tx, mut rx) = mpsc::channel(n.max(1) * 2 + 16);
    let opts = Options {
        tail: n.to_string(),
        ..Default::default()
    };
    let task = tokio::spawn(stream_lines(
        docker.clone(),
        String::new(),
        container.to_string(),
        opts,
        tx,
    ));
    let mut lines = Vec::new();
    while let Some(l) = rx.recv().await {
        lines.push(l.text);
    }
    task.await??;
    let skip = lines.len().saturating_sub(n);
    Ok(lines.split_off(skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_chunks() {
        let mut s = Splitter::default();
        assert_eq!(s.push(b"a\nb"), vec!["a"]);
        assert_eq!(s.push(b"c\r\n\nd"), vec!["bc", ""]);
        assert_eq!(s.finish().as_deref(), Some("d"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn docker_times_are_split_off() {
        let (at, body) = split_stamp(b"2024-05-01T12:00:00.123456789Z hello world\n");
        assert_eq!(body, b"hello world\n");
        let at = at.unwrap().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(
            (at.as_secs(), at.subsec_nanos()),
            (1_714_564_800, 123_456_789)
        );
        // Docker drops trailing zeros of the fraction; order still holds.
        let (a, _) = split_stamp(b"2024-05-01T12:00:00.1234Z a");
        let (b, _) = split_stamp(b"2024-05-01T12:00:00.12345Z b");
        assert!(a.unwrap() < b.unwrap());
        assert_eq!(split_stamp(b"no time here"), (None, &b"no time here"[..]));
        assert_eq!(split_stamp(b""), (None, &b""[..]));
    }

    #[test]
    fn tails() {
        assert_eq!(parse_tail("5").unwrap(), "5");
        assert_eq!(parse_tail("ALL").unwrap(), "all");
        assert!(parse_tail("-1").is_err());
    }

    #[test]
    fn since_durations_and_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_since("10m", now).unwrap(), 1_700_000_000 - 600);
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000
        );
        assert_eq!(
            parse_since("2023-11-14 22:13:20", now).unwrap(),
            1_700_000_000
        );
        let e = parse_since("yesterday", now).unwrap_err();
        assert!(crate::error::render(&e).contains("--since 10m"));
    }
}

//! The beanstalk protocol, both directions: requests and replies as
//! values, a server codec (requests in, replies out) and a client codec
//! (requests out, replies in), every length bounded.
//!
//! The parsing rules are beanstalkd 1.12's, byte for byte where a client
//! can see the difference: a line is at most [`LINE_MAX`] bytes with its
//! `\r\n`; numbers are decimal with leading spaces allowed; a tube name is
//! 1 to [`TUBE_NAME_MAX`] of `A-Za-z0-9-+/;.$_()`, not starting with `-`.

use bytes::Bytes;

/// The longest request line beanstalkd accepts, `\r\n` included.
pub const LINE_MAX: usize = 224;
/// The longest tube name.
pub const TUBE_NAME_MAX: usize = 200;
/// beanstalkd's default `max-job-size` (`-z`).
pub const DEFAULT_MAX_JOB_SIZE: u32 = 65_535;

/// One beanstalk request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// `put <pri> <delay> <ttr> <bytes>\r\n<body>\r\n`
    Put {
        /// Priority, 0 most urgent.
        priority: u32,
        /// Seconds before the job is ready.
        delay: u32,
        /// Seconds a reservation lasts (the server raises 0 to 1).
        ttr: u32,
        /// The body.
        body: Bytes,
    },
    /// `use <tube>`
    Use(String),
    /// `reserve`
    Reserve,
    /// `reserve-with-timeout <seconds>` (beanstalkd reads it with `strtol`
    /// into an `int`: a negative timeout waits for ever).
    ReserveWithTimeout(i32),
    /// `reserve-job <id>`
    ReserveJob(u64),
    /// `delete <id>`
    Delete(u64),
    /// `release <id> <pri> <delay>`
    Release {
        /// The job.
        id: u64,
        /// Its new priority.
        priority: u32,
        /// Seconds before it is ready again.
        delay: u32,
    },
    /// `bury <id> <pri>`
    Bury {
        /// The job.
        id: u64,
        /// Its new priority.
        priority: u32,
    },
    /// `touch <id>`
    Touch(u64),
    /// `watch <tube>`
    Watch(String),
    /// `ignore <tube>`
    Ignore(String),
    /// `peek <id>`
    Peek(u64),
    /// `peek-ready`
    PeekReady,
    /// `peek-delayed`
    PeekDelayed,
    /// `peek-buried`
    PeekBuried,
    /// `kick <bound>`
    Kick(u32),
    /// `kick-job <id>`
    KickJob(u64),
    /// `stats-job <id>`
    StatsJob(u64),
    /// `stats-tube <tube>`
    StatsTube(String),
    /// `stats`
    Stats,
    /// `list-tubes`
    ListTubes,
    /// `list-tube-used`
    ListTubeUsed,
    /// `list-tubes-watched`
    ListTubesWatched,
    /// `pause-tube <tube> <delay>`
    PauseTube {
        /// The tube. The server codec gives any run of name characters
        /// (beanstalkd counts the command before it checks the name): one
        /// too long or starting with `-` is answered `BAD_FORMAT` by the engine.
        tube: String,
        /// Seconds (the server raises 0 to 1).
        delay: u32,
    },
    /// `quit`: the server closes the connection, no reply.
    Quit,
}

/// One beanstalk reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// `INSERTED <id>`
    Inserted(u64),
    /// `BURIED <id>`: a put buried for lack of memory.
    BuriedId(u64),
    /// `BURIED`: to `bury`, or to a `release` buried for lack of memory.
    Buried,
    /// `EXPECTED_CRLF`
    ExpectedCrlf,
    /// `JOB_TOO_BIG`
    JobTooBig,
    /// `DRAINING`
    Draining,
    /// `USING <tube>`
    Using(String),
    /// `DEADLINE_SOON`
    DeadlineSoon,
    /// `TIMED_OUT`
    TimedOut,
    /// `RESERVED <id> <bytes>\r\n<body>\r\n`
    Reserved {
        /// The job.
        id: u64,
        /// Its body.
        body: Bytes,
    },
    /// `DELETED`
    Deleted,
    /// `NOT_FOUND`
    NotFound,
    /// `RELEASED`
    Released,
    /// `TOUCHED`
    Touched,
    /// `WATCHING <count>`
    Watching(u64),
    /// `NOT_IGNORED`
    NotIgnored,
    /// `FOUND <id> <bytes>\r\n<body>\r\n`
    Found {
        /// The job.
        id: u64,
        /// Its body.
        body: Bytes,
    },
    /// `KICKED <count>`: to `kick`.
    Kicked(u64),
    /// `KICKED`: to `kick-job`.
    KickedJob,
    /// `OK <bytes>\r\n<yaml>\r\n`: to `stats*` and `list-*`.
    Ok(Bytes),
    /// `PAUSED`
    Paused,
    /// `OUT_OF_MEMORY`
    OutOfMemory,
    /// `INTERNAL_ERROR`
    InternalError,
    /// `BAD_FORMAT`
    BadFormat,
    /// `UNKNOWN_COMMAND`
    UnknownCommand,
}

/// What the server decoder yields: a request for the engine, or a reply
/// the connection writes at once because the request was malformed
/// (`BAD_FORMAT`, `UNKNOWN_COMMAND`, `EXPECTED_CRLF`, `JOB_TOO_BIG`), as
/// beanstalkd answers them without closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A well-formed request.
    Request(Request),
    /// The reply to a malformed request.
    Refused(Response),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ServerState {
    /// Waiting for a command line.
    Line,
    /// A `put` line was read: its body and `\r\n` (`len` bytes) come next.
    Body {
        priority: u32,
        delay: u32,
        ttr: u32,
        len: usize,
    },
    /// Throwing away a body too big (or after a failed put), then `reply`.
    Skip { remaining: u64, reply: Response },
    /// A line over [`LINE_MAX`]: thrown away up to its `\r\n`, then `BAD_FORMAT`.
    DiscardLine,
}

/// The server side of the protocol: decodes requests (bounded by
/// [`LINE_MAX`] per line and the `max_job_size` per body; a body over it is
/// skipped as it arrives, never buffered) and encodes replies.
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
/// use miller_core::proto::{Incoming, Request, Response, ServerCodec};
/// let mut codec = ServerCodec::new();
/// let mut buf = BytesMut::from(&b"put 0 0 60 5\r\nhello\r\nuse x y\r\n"[..]);
/// let Some(Incoming::Request(Request::Put { body, .. })) = codec.decode(&mut buf).unwrap() else { panic!() };
/// assert_eq!(&body[..], b"hello");
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Incoming::Refused(Response::BadFormat)));
/// let mut out = BytesMut::new();
/// Response::Inserted(1).encode(&mut out);
/// assert_eq!(&out[..], b"INSERTED 1\r\n");
/// ```
#[derive(Debug, Clone)]
pub struct ServerCodec {
    max_job_size: u32,
    state: ServerState,
}

impl Default for ServerCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCodec {
    /// A codec with beanstalkd's default `max-job-size` of 65,535 bytes.
    pub fn new() -> Self {
        Self::with_max_job_size(DEFAULT_MAX_JOB_SIZE)
    }

    /// A codec that takes bodies of at most `max` bytes (beanstalkd's `-z`);
    /// a longer one is skipped and answered `JOB_TOO_BIG`.
    pub fn with_max_job_size(max: u32) -> Self {
        Self {
            max_job_size: max,
            state: ServerState::Line,
        }
    }

    /// The largest body taken.
    pub fn max_job_size(&self) -> u32 {
        self.max_job_size
    }

    fn decode_line(&mut self, line: &[u8]) -> Option<Incoming> {
        match parse_request_line(line, self.max_job_size) {
            Line::Request(r) => Some(Incoming::Request(r)),
            Line::Refused(r) => Some(Incoming::Refused(r)),
            Line::PutBody {
                priority,
                delay,
                ttr,
                size,
            } => {
                self.state = ServerState::Body {
                    priority,
                    delay,
                    ttr,
                    len: size as usize + 2,
                };
                None
            }
            Line::Skip { size } => {
                self.state = ServerState::Skip {
                    remaining: u64::from(size) + 2,
                    reply: Response::JobTooBig,
                };
                None
            }
        }
    }
}

/// Where a command line ends, by beanstalkd's rule: the first `\r` must be
/// followed by `\n`; otherwise no line ends in this buffer.
enum LineEnd {
    /// The line's length without its `\r\n`.
    At(usize),
    /// More bytes may end it.
    NeedMore,
    /// No line can end within [`LINE_MAX`] bytes.
    TooLong,
}

fn find_line_end(buf: &[u8]) -> LineEnd {
    let window = &buf[..buf.len().min(LINE_MAX)];
    let scan = window.len().saturating_sub(1);
    match window[..scan].iter().position(|&b| b == b'\r') {
        Some(i) if window[i + 1] == b'\n' => LineEnd::At(i),
        _ if window.len() == LINE_MAX => LineEnd::TooLong,
        _ => LineEnd::NeedMore,
    }
}

impl tokio_util::codec::Decoder for ServerCodec {
    type Item = Incoming;
    type Error = crate::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Incoming>, crate::Error> {
        use bytes::Buf;
        loop {
            match &mut self.state {
                ServerState::Line => match find_line_end(src) {
                    LineEnd::At(n) => {
                        let line = src.split_to(n + 2);
                        if let Some(item) = self.decode_line(&line[..n]) {
                            return Ok(Some(item));
                        }
                    }
                    LineEnd::NeedMore => return Ok(None),
                    LineEnd::TooLong => {
                        src.advance(LINE_MAX);
                        self.state = ServerState::DiscardLine;
                    }
                },
                ServerState::DiscardLine => match find_line_end(src) {
                    LineEnd::At(n) => {
                        src.advance(n + 2);
                        self.state = ServerState::Line;
                        return Ok(Some(Incoming::Refused(Response::BadFormat)));
                    }
                    LineEnd::NeedMore => return Ok(None),
                    LineEnd::TooLong => src.advance(LINE_MAX),
                },
                ServerState::Body {
                    priority,
                    delay,
                    ttr,
                    len,
                } => {
                    if src.len() < *len {
                        src.reserve(*len - src.len());
                        return Ok(None);
                    }
                    let (priority, delay, ttr, len) = (*priority, *delay, *ttr, *len);
                    self.state = ServerState::Line;
                    let mut body = src.split_to(len);
                    if &body[len - 2..] != b"\r\n" {
                        return Ok(Some(Incoming::Refused(Response::ExpectedCrlf)));
                    }
                    body.truncate(len - 2);
                    return Ok(Some(Incoming::Request(Request::Put {
                        priority,
                        delay,
                        ttr,
                        body: body.freeze(),
                    })));
                }
                ServerState::Skip { remaining, reply } => {
                    let n = (*remaining).min(src.len() as u64);
                    src.advance(n as usize);
                    *remaining -= n;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    let reply = std::mem::replace(reply, Response::BadFormat);
                    self.state = ServerState::Line;
                    return Ok(Some(Incoming::Refused(reply)));
                }
            }
        }
    }
}

impl kids_core::server::RequestCodec for ServerCodec {
    fn is_mid_request(&self) -> bool {
        self.state != ServerState::Line
    }
}

impl tokio_util::codec::Encoder<Response> for ServerCodec {
    type Error = crate::Error;

    fn encode(&mut self, item: Response, dst: &mut bytes::BytesMut) -> Result<(), crate::Error> {
        item.encode(dst);
        Ok(())
    }
}

/// A parsed command line.
enum Line {
    Request(Request),
    Refused(Response),
    /// A valid `put` line: its body comes next.
    PutBody {
        priority: u32,
        delay: u32,
        ttr: u32,
        size: u32,
    },
    /// A `put` over the size bound: skip `size + 2` bytes, then `JOB_TOO_BIG`.
    Skip {
        size: u32,
    },
}

/// The request prefixes in beanstalkd's `which_cmd` order: the first that
/// the line starts with decides the command.
const COMMANDS: &[&[u8]] = &[
    b"put ",
    b"peek ",
    b"peek-ready",
    b"peek-delayed",
    b"peek-buried",
    b"reserve-with-timeout ",
    b"reserve-job ",
    b"reserve",
    b"delete ",
    b"release ",
    b"bury ",
    b"kick ",
    b"kick-job ",
    b"touch ",
    b"stats-job ",
    b"stats-tube ",
    b"stats",
    b"use ",
    b"watch ",
    b"ignore ",
    b"list-tubes-watched",
    b"list-tube-used",
    b"list-tubes",
    b"quit",
    b"pause-tube",
];

fn parse_request_line(line: &[u8], max_job_size: u32) -> Line {
    use Line::{Refused, Request as Req};
    use Request as R;
    const BAD: Line = Line::Refused(Response::BadFormat);
    // beanstalkd NUL-terminates the line and refuses one with a NUL inside.
    if line.contains(&0) {
        return BAD;
    }
    let Some(cmd) = COMMANDS.iter().find(|c| line.starts_with(c)) else {
        return Refused(Response::UnknownCommand);
    };
    let rest = &line[cmd.len()..];
    let exact = |r: Request| if rest.is_empty() { Req(r) } else { BAD };
    let id_only = |f: fn(u64) -> Request| match read_u64(rest).and_then(whole) {
        Some(id) => Req(f(id)),
        None => BAD,
    };
    let tube = |f: fn(String) -> Request| match valid_tube(rest) {
        Some(name) => Req(f(name)),
        None => BAD,
    };
    match *cmd {
        b"put " => {
            let parsed = (|| {
                let (priority, r) = read_u32(rest)?;
                let (delay, r) = read_u32(r)?;
                let (ttr, r) = read_u32(r)?;
                let (size, r) = read_u32(r)?;
                Some((priority, delay, ttr, size, r))
            })();
            match parsed {
                None => BAD,
                Some((.., size, _)) if size > max_job_size => Line::Skip { size },
                Some((.., r)) if !r.is_empty() => BAD,
                Some((priority, delay, ttr, size, _)) => Line::PutBody {
                    priority,
                    delay,
                    ttr,
                    size,
                },
            }
        }
        b"peek " => id_only(R::Peek),
        b"peek-ready" => exact(R::PeekReady),
        b"peek-delayed" => exact(R::PeekDelayed),
        b"peek-buried" => exact(R::PeekBuried),
        b"reserve-with-timeout " => match strtol(rest) {
            Some(t) => Req(R::ReserveWithTimeout(t as i32)),
            None => BAD,
        },
        b"reserve-job " => id_only(R::ReserveJob),
        b"reserve" => exact(R::Reserve),
        b"delete " => id_only(R::Delete),
        b"release " => {
            let parsed = (|| {
                let (id, r) = read_u64(rest)?;
                let (priority, r) = read_u32(r)?;
                let delay = whole(read_u32(r)?)?;
                Some(R::Release {
                    id,
                    priority,
                    delay,
                })
            })();
            parsed.map_or(BAD, Req)
        }
        b"bury " => {
            let parsed = (|| {
                let (id, r) = read_u64(rest)?;
                let priority = whole(read_u32(r)?)?;
                Some(R::Bury { id, priority })
            })();
            parsed.map_or(BAD, Req)
        }
        b"kick " => match strtoul(rest) {
            Some(bound) => Req(R::Kick(bound as u32)),
            None => BAD,
        },
        b"kick-job " => id_only(R::KickJob),
        b"touch " => id_only(R::Touch),
        b"stats-job " => id_only(R::StatsJob),
        b"stats-tube " => tube(R::StatsTube),
        b"stats" => exact(R::Stats),
        b"use " => tube(R::Use),
        b"watch " => tube(R::Watch),
        b"ignore " => tube(R::Ignore),
        b"list-tubes-watched" => exact(R::ListTubesWatched),
        b"list-tube-used" => exact(R::ListTubeUsed),
        b"list-tubes" => exact(R::ListTubes),
        b"quit" => Req(R::Quit),
        b"pause-tube" => {
            // beanstalkd reads a run of name characters after optional
            // spaces (no space needed after the command), then the delay.
            let r = skip_spaces(rest);
            let n = r.iter().take_while(|&&b| is_name_char(b)).count();
            let (name, r) = r.split_at(n);
            // A name too long or starting with `-` is counted as a
            // `pause-tube` before it is refused (`BAD_FORMAT`): the engine
            // refuses it. Name characters are ASCII.
            match (n, read_u32(r).and_then(whole)) {
                (1.., Some(delay)) => Req(R::PauseTube {
                    tube: String::from_utf8_lossy(name).into_owned(),
                    delay,
                }),
                _ => BAD,
            }
        }
        _ => Refused(Response::UnknownCommand),
    }
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b)
}

/// A tube name by beanstalkd's `is_valid_tube`.
fn valid_tube(name: &[u8]) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= TUBE_NAME_MAX
        && name.iter().all(|&b| is_name_char(b))
        && name[0] != b'-';
    // Name characters are ASCII.
    ok.then(|| String::from_utf8_lossy(name).into_owned())
}

/// True when `name` is a valid tube name.
pub fn is_valid_tube(name: &str) -> bool {
    valid_tube(name.as_bytes()).is_some()
}

fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    &s[n..]
}

/// beanstalkd's `read_u64`: spaces, then at least one digit; the number
/// must fit; returns the rest after the digits.
fn read_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let s = skip_spaces(s);
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in &s[..n] {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((v, &s[n..]))
}

fn read_u32(s: &[u8]) -> Option<(u32, &[u8])> {
    let (v, r) = read_u64(s)?;
    Some((u32::try_from(v).ok()?, r))
}

/// The value when nothing follows it (beanstalkd's `end == NULL` form).
fn whole<T>((v, rest): (T, &[u8])) -> Option<T> {
    rest.is_empty().then_some(v)
}

/// C's whitespace, as `strtol` skips it.
fn skip_c_space(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
        .count();
    &s[n..]
}

/// An optional sign and the magnitude of the digits after it, as C's
/// `strto*` read them; `None` on overflow of `u64`; `Some((neg, 0, false))`
/// when there are no digits.
fn c_digits(s: &[u8]) -> Option<(bool, u64, bool)> {
    let s = skip_c_space(s);
    let (neg, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: u64 = 0;
    let mut any = false;
    for &d in s.iter().take_while(|b| b.is_ascii_digit()) {
        any = true;
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((neg, v, any))
}

/// glibc's `strtol` (base 10, trailing bytes ignored): `None` when it
/// sets `errno` (overflow); no digits read as 0.
fn strtol(s: &[u8]) -> Option<i64> {
    let (neg, v, _) = c_digits(s)?;
    if neg {
        if v > 1 << 63 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// glibc's `strtoul` as beanstalkd's `kick` uses it: `None` on overflow or
/// when no digits were read; a minus sign negates modulo 2^64.
fn strtoul(s: &[u8]) -> Option<u64> {
    let (neg, v, any) = c_digits(s)?;
    if !any {
        return None;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

impl Request {
    /// Appends the request's bytes, as a client sends it.
    pub fn encode(&self, dst: &mut bytes::BytesMut) {
        use std::fmt::Write as _;
        let mut w = Fmt(dst);
        let _ = match self {
            Request::Put {
                priority,
                delay,
                ttr,
                body,
            } => {
                let _ = write!(w, "put {priority} {delay} {ttr} {}\r\n", body.len());
                w.0.extend_from_slice(body);
                w.write_str("\r\n")
            }
            Request::Use(t) => write!(w, "use {t}\r\n"),
            Request::Reserve => w.write_str("reserve\r\n"),
            Request::ReserveWithTimeout(t) => write!(w, "reserve-with-timeout {t}\r\n"),
            Request::ReserveJob(id) => write!(w, "reserve-job {id}\r\n"),
            Request::Delete(id) => write!(w, "delete {id}\r\n"),
            Request::Release {
                id,
                priority,
                delay,
            } => write!(w, "release {id} {priority} {delay}\r\n"),
            Request::Bury { id, priority } => write!(w, "bury {id} {priority}\r\n"),
            Request::Touch(id) => write!(w, "touch {id}\r\n"),
            Request::Watch(t) => write!(w, "watch {t}\r\n"),
            Request::Ignore(t) => write!(w, "ignore {t}\r\n"),
            Request::Peek(id) => write!(w, "peek {id}\r\n"),
            Request::PeekReady => w.write_str("peek-ready\r\n"),
            Request::PeekDelayed => w.write_str("peek-delayed\r\n"),
            Request::PeekBuried => w.write_str("peek-buried\r\n"),
            Request::Kick(n) => write!(w, "kick {n}\r\n"),
            Request::KickJob(id) => write!(w, "kick-job {id}\r\n"),
            Request::StatsJob(id) => write!(w, "stats-job {id}\r\n"),
            Request::StatsTube(t) => write!(w, "stats-tube {t}\r\n"),
            Request::Stats => w.write_str("stats\r\n"),
            Request::ListTubes => w.write_str("list-tubes\r\n"),
            Request::ListTubeUsed => w.write_str("list-tube-used\r\n"),
            Request::ListTubesWatched => w.write_str("list-tubes-watched\r\n"),
            Request::PauseTube { tube, delay } => write!(w, "pause-tube {tube} {delay}\r\n"),
            Request::Quit => w.write_str("quit\r\n"),
        };
    }
}

impl Response {
    /// Appends the reply's bytes, as a server sends it. Bodies
    /// ([`Response::Reserved`], [`Response::Found`], [`Response::Ok`]) are
    /// given without their trailing `\r\n`, which this adds.
    pub fn encode(&self, dst: &mut bytes::BytesMut) {
        use std::fmt::Write as _;
        let mut w = Fmt(dst);
        let word = |w: &mut Fmt<'_>, s: &str| {
            w.0.extend_from_slice(s.as_bytes());
            w.0.extend_from_slice(b"\r\n");
        };
        let with_body = |w: &mut Fmt<'_>, head: std::fmt::Arguments<'_>, body: &[u8]| {
            let _ = w.write_fmt(head);
            w.0.extend_from_slice(body);
            w.0.extend_from_slice(b"\r\n");
        };
        match self {
            Response::Inserted(id) => {
                let _ = write!(w, "INSERTED {id}\r\n");
            }
            Response::BuriedId(id) => {
                let _ = write!(w, "BURIED {id}\r\n");
            }
            Response::Buried => word(&mut w, "BURIED"),
            Response::ExpectedCrlf => word(&mut w, "EXPECTED_CRLF"),
            Response::JobTooBig => word(&mut w, "JOB_TOO_BIG"),
            Response::Draining => word(&mut w, "DRAINING"),
            Response::Using(t) => {
                let _ = write!(w, "USING {t}\r\n");
            }
            Response::DeadlineSoon => word(&mut w, "DEADLINE_SOON"),
            Response::TimedOut => word(&mut w, "TIMED_OUT"),
            Response::Reserved { id, body } => with_body(
                &mut w,
                format_args!("RESERVED {id} {}\r\n", body.len()),
                body,
            ),
            Response::Deleted => word(&mut w, "DELETED"),
            Response::NotFound => word(&mut w, "NOT_FOUND"),
            Response::Released => word(&mut w, "RELEASED"),
            Response::Touched => word(&mut w, "TOUCHED"),
            Response::Watching(n) => {
                let _ = write!(w, "WATCHING {n}\r\n");
            }
            Response::NotIgnored => word(&mut w, "NOT_IGNORED"),
            Response::Found { id, body } => {
                with_body(&mut w, format_args!("FOUND {id} {}\r\n", body.len()), body)
            }
            Response::Kicked(n) => {
                let _ = write!(w, "KICKED {n}\r\n");
            }
            Response::KickedJob => word(&mut w, "KICKED"),
            Response::Ok(body) => with_body(&mut w, format_args!("OK {}\r\n", body.len()), body),
            Response::Paused => word(&mut w, "PAUSED"),
            Response::OutOfMemory => word(&mut w, "OUT_OF_MEMORY"),
            Response::InternalError => word(&mut w, "INTERNAL_ERROR"),
            Response::BadFormat => word(&mut w, "BAD_FORMAT"),
            Response::UnknownCommand => word(&mut w, "UNKNOWN_COMMAND"),
        }
    }

    /// The error this reply stands for, when it is one of beanstalk's
    /// error replies.
    pub fn as_error(&self) -> Option<crate::QueueError> {
        use crate::QueueError as E;
        Some(match self {
            Response::BuriedId(id) => E::Buried(Some(*id)),
            Response::Buried => E::Buried(None),
            Response::ExpectedCrlf => E::ExpectedCrlf,
            Response::JobTooBig => E::JobTooBig,
            Response::Draining => E::Draining,
            Response::DeadlineSoon => E::DeadlineSoon,
            Response::NotFound => E::NotFound,
            Response::NotIgnored => E::NotIgnored,
            Response::OutOfMemory => E::OutOfMemory,
            Response::InternalError => E::InternalError,
            Response::BadFormat => E::BadFormat,
            Response::UnknownCommand => E::UnknownCommand,
            _ => return None,
        })
    }
}

/// `fmt::Write` into a `BytesMut`.
struct Fmt<'a>(&'a mut bytes::BytesMut);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The default bound on a reply body a client takes (`RESERVED`, `FOUND`,
/// `OK`): 64 MiB.
pub const DEFAULT_MAX_REPLY_BODY: usize = 64 << 20;

/// The client side of the protocol: encodes requests, decodes replies
/// (a reply line of at most [`LINE_MAX`] bytes, a body of at most the
/// configured bound; anything else is a [`crate::ProtocolError`], after
/// which the connection cannot be trusted).
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
/// use miller_core::proto::{ClientCodec, Response};
/// let mut codec = ClientCodec::new();
/// let mut buf = BytesMut::from(&b"RESERVED 7 2\r\nhi\r\nKICKED\r\n"[..]);
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Response::Reserved { id: 7, body: "hi".into() }));
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(Response::KickedJob));
/// ```
#[derive(Debug, Clone)]
pub struct ClientCodec {
    max_body: usize,
    /// A reply line with a body was read: its kind and the body's length with `\r\n`.
    pending: Option<(BodyKind, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Reserved(u64),
    Found(u64),
    Ok,
}

impl Default for ClientCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientCodec {
    /// A codec taking reply bodies up to [`DEFAULT_MAX_REPLY_BODY`].
    pub fn new() -> Self {
        Self::with_max_body(DEFAULT_MAX_REPLY_BODY)
    }

    /// A codec taking reply bodies up to `max` bytes.
    pub fn with_max_body(max: usize) -> Self {
        Self {
            max_body: max,
            pending: None,
        }
    }
}

fn parse_reply_line(
    line: &[u8],
    max_body: usize,
) -> Result<Result<Response, (BodyKind, usize)>, crate::ProtocolError> {
    let bad = || crate::ProtocolError::UnexpectedReply(String::from_utf8_lossy(line).into_owned());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut words = text.split(' ');
    let head = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let num = |i: usize| -> Result<u64, crate::ProtocolError> {
        args.get(i)
            .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|a| a.parse().ok())
            .ok_or_else(bad)
    };
    let body = |kind: BodyKind,
                i: usize|
     -> Result<Result<Response, (BodyKind, usize)>, crate::ProtocolError> {
        let len = num(i)?;
        if len > max_body as u64 {
            return Err(crate::ProtocolError::BodyTooLong {
                len,
                max: max_body as u64,
            });
        }
        Ok(Err((kind, len as usize + 2)))
    };
    let plain = |r: Response| {
        if args.is_empty() {
            Ok(Ok(r))
        } else {
            Err(bad())
        }
    };
    match (head, args.len()) {
        ("INSERTED", 1) => Ok(Ok(Response::Inserted(num(0)?))),
        ("BURIED", 1) => Ok(Ok(Response::BuriedId(num(0)?))),
        ("BURIED", 0) => Ok(Ok(Response::Buried)),
        ("KICKED", 1) => Ok(Ok(Response::Kicked(num(0)?))),
        ("KICKED", 0) => Ok(Ok(Response::KickedJob)),
        ("WATCHING", 1) => Ok(Ok(Response::Watching(num(0)?))),
        ("USING", 1) if is_valid_tube(args[0]) => Ok(Ok(Response::Using(args[0].to_owned()))),
        ("RESERVED", 2) => body(BodyKind::Reserved(num(0)?), 1),
        ("FOUND", 2) => body(BodyKind::Found(num(0)?), 1),
        ("OK", 1) => body(BodyKind::Ok, 0),
        ("EXPECTED_CRLF", _) => plain(Response::ExpectedCrlf),
        ("JOB_TOO_BIG", _) => plain(Response::JobTooBig),
        ("DRAINING", _) => plain(Response::Draining),
        ("DEADLINE_SOON", _) => plain(Response::DeadlineSoon),
        ("TIMED_OUT", _) => plain(Response::TimedOut),
        ("DELETED", _) => plain(Response::Deleted),
        ("NOT_FOUND", _) => plain(Response::NotFound),
        ("RELEASED", _) => plain(Response::Released),
        ("TOUCHED", _) => plain(Response::Touched),
        ("NOT_IGNORED", _) => plain(Response::NotIgnored),
        ("PAUSED", _) => plain(Response::Paused),
        ("OUT_OF_MEMORY", _) => plain(Response::OutOfMemory),
        ("INTERNAL_ERROR", _) => plain(Response::InternalError),
        ("BAD_FORMAT", _) => plain(Response::BadFormat),
        ("UNKNOWN_COMMAND", _) => plain(Response::UnknownCommand),
        _ => Err(bad()),
    }
}

impl tokio_util::codec::Decoder for ClientCodec {
    type Item = Response;
    type Error = crate::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Response>, crate::Error> {
        loop {
            if let Some((kind, len)) = self.pending {
                if src.len() < len {
                    src.reserve(len - src.len());
                    return Ok(None);
                }
                self.pending = None;
                let mut body = src.split_to(len);
                if &body[len - 2..] != b"\r\n" {
                    return Err(crate::ProtocolError::ExpectedCrlf.into());
                }
                body.truncate(len - 2);
                let body = body.freeze();
                return Ok(Some(match kind {
                    BodyKind::Reserved(id) => Response::Reserved { id, body },
                    BodyKind::Found(id) => Response::Found { id, body },
                    BodyKind::Ok => Response::Ok(body),
                }));
            }
            let n = match find_line_end(src) {
                LineEnd::At(n) => n,
                LineEnd::NeedMore => return Ok(None),
                LineEnd::TooLong => {
                    return Err(crate::ProtocolError::LineTooLong { max: LINE_MAX }.into());
                }
            };
            let line = src.split_to(n + 2);
            match parse_reply_line(&line[..n], self.max_body)? {
                Ok(reply) => return Ok(Some(reply)),
                Err(pending) => self.pending = Some(pending),
            }
        }
    }
}

impl tokio_util::codec::Encoder<Request> for ClientCodec {
    type Error = crate::Error;

    fn encode(&mut self, item: Request, dst: &mut bytes::BytesMut) -> Result<(), crate::Error> {
        item.encode(dst);
        Ok(())
    }
}

/// Parses the YAML mapping of a `stats*` body (`---\nkey: value\n…`);
/// quoted values lose their quotes.
///
/// # Errors
/// A line that is not `key: value`.
pub fn parse_stats(body: &[u8]) -> Result<crate::Stats, crate::ProtocolError> {
    let text = std::str::from_utf8(body).map_err(|e| crate::ProtocolError::Yaml(e.to_string()))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && *l != "---") {
        let (k, v) = line
            .split_once(": ")
            .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
            .ok_or_else(|| crate::ProtocolError::Yaml(format!("not a mapping line: {line:?}")))?;
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(crate::Stats(out))
}

/// Parses the YAML list of a `list-tubes*` body (`---\n- name\n…`).
///
/// # Errors
/// A line that is not `- item`.
pub fn parse_list(body: &[u8]) -> Result<Vec<String>, crate::ProtocolError> {
    let text = std::str::from_utf8(body).map_err(|e| crate::ProtocolError::Yaml(e.to_string()))?;
    text.lines()
        .filter(|l| !l.is_empty() && *l != "---")
        .map(|l| {
            l.strip_prefix("- ")
                .map(|v| {
                    v.strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v)
                        .to_owned()
                })
                .ok_or_else(|| crate::ProtocolError::Yaml(format!("not a list line: {l:?}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use proptest::prelude::*;
    use tokio_util::codec::Decoder;

    use super::*;

    fn server_items(codec: &mut ServerCodec, input: &[u8]) -> Vec<Incoming> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    /// Feeds `input` split at `at`, as two reads.
    fn server_split(input: &[u8], at: usize, max: u32) -> (Vec<Incoming>, usize) {
        let mut codec = ServerCodec::with_max_job_size(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in [&input[..at], &input[at..]] {
            buf.extend_from_slice(part);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                out.push(item);
            }
        }
        (out, buf.len())
    }

    fn req(r: Request) -> Incoming {
        Incoming::Request(r)
    }
    fn refused(r: Response) -> Incoming {
        Incoming::Refused(r)
    }

    /// Lines and what beanstalkd 1.12 makes of them.
    fn vectors() -> Vec<(&'static [u8], Vec<Incoming>)> {
        use Request as R;
        use Response::{BadFormat, UnknownCommand};
        vec![
            (
                b"put 1 2 3 5\r\nhello\r\n",
                vec![req(R::Put {
                    priority: 1,
                    delay: 2,
                    ttr: 3,
                    body: "hello".into(),
                })],
            ),
            (
                b"put   1  2 3 0\r\n\r\n",
                vec![req(R::Put {
                    priority: 1,
                    delay: 2,
                    ttr: 3,
                    body: "".into(),
                })],
            ),
            (b"put 1 2 3 5 \r\n", vec![refused(BadFormat)]),
            (b"put 1 2 3\r\n", vec![refused(BadFormat)]),
            (b"put 4294967296 0 1 1\r\n", vec![refused(BadFormat)]),
            (b"put -1 0 1 1\r\n", vec![refused(BadFormat)]),
            (
                b"put 1 2 3 5\r\nhelloXY",
                vec![refused(Response::ExpectedCrlf)],
            ),
            (b"put 1 2 3 70000 x\r\n", vec![]), // skipping 70,002 bytes
            (b"put\r\n", vec![refused(UnknownCommand)]),
            (b"\r\n", vec![refused(UnknownCommand)]),
            (b"PUT 1 2 3 4\r\n", vec![refused(UnknownCommand)]),
            (b"reserve\r\n", vec![req(R::Reserve)]),
            (b"reserve \r\n", vec![refused(BadFormat)]),
            (b"reserves\r\n", vec![refused(BadFormat)]),
            (
                b"reserve-with-timeout 5\r\n",
                vec![req(R::ReserveWithTimeout(5))],
            ),
            (
                b"reserve-with-timeout -1\r\n",
                vec![req(R::ReserveWithTimeout(-1))],
            ),
            (
                b"reserve-with-timeout 7abc\r\n",
                vec![req(R::ReserveWithTimeout(7))],
            ),
            (
                b"reserve-with-timeout \r\n",
                vec![req(R::ReserveWithTimeout(0))],
            ),
            (
                b"reserve-with-timeout 4294967297\r\n",
                vec![req(R::ReserveWithTimeout(1))],
            ),
            (
                b"reserve-with-timeout 99999999999999999999\r\n",
                vec![refused(BadFormat)],
            ),
            (b"reserve-job 3\r\n", vec![req(R::ReserveJob(3))]),
            (
                b"delete 18446744073709551615\r\n",
                vec![req(R::Delete(u64::MAX))],
            ),
            (b"delete 18446744073709551616\r\n", vec![refused(BadFormat)]),
            (b"delete   9\r\n", vec![req(R::Delete(9))]),
            (b"delete 9 \r\n", vec![refused(BadFormat)]),
            (b"delete x\r\n", vec![refused(BadFormat)]),
            (
                b"release 1 2 3\r\n",
                vec![req(R::Release {
                    id: 1,
                    priority: 2,
                    delay: 3,
                })],
            ),
            (b"release 1 2\r\n", vec![refused(BadFormat)]),
            (b"bury 1 2\r\n", vec![req(R::Bury { id: 1, priority: 2 })]),
            (b"bury 1\r\n", vec![refused(BadFormat)]),
            (b"touch 4\r\n", vec![req(R::Touch(4))]),
            (b"watch foo\r\n", vec![req(R::Watch("foo".into()))]),
            (b"watch -foo\r\n", vec![refused(BadFormat)]),
            (b"watch foo bar\r\n", vec![refused(BadFormat)]),
            (b"watch f*o\r\n", vec![refused(BadFormat)]),
            (
                b"ignore a+/;.$_()b\r\n",
                vec![req(R::Ignore("a+/;.$_()b".into()))],
            ),
            (b"use default\r\n", vec![req(R::Use("default".into()))]),
            (b"use \r\n", vec![refused(BadFormat)]),
            (b"peek 1\r\n", vec![req(R::Peek(1))]),
            (b"peek-ready\r\n", vec![req(R::PeekReady)]),
            (b"peek-readyx\r\n", vec![refused(BadFormat)]),
            (b"peek-delayed\r\n", vec![req(R::PeekDelayed)]),
            (b"peek-buried\r\n", vec![req(R::PeekBuried)]),
            (b"kick 10\r\n", vec![req(R::Kick(10))]),
            (b"kick 10x\r\n", vec![req(R::Kick(10))]),
            (b"kick -1\r\n", vec![req(R::Kick(u32::MAX))]),
            (b"kick x\r\n", vec![refused(BadFormat)]),
            (b"kick 4294967296\r\n", vec![req(R::Kick(0))]),
            (b"kick-job 3\r\n", vec![req(R::KickJob(3))]),
            (b"stats\r\n", vec![req(R::Stats)]),
            (b"stats-jobx\r\n", vec![refused(BadFormat)]),
            (b"stats-job 2\r\n", vec![req(R::StatsJob(2))]),
            (
                b"stats-tube default\r\n",
                vec![req(R::StatsTube("default".into()))],
            ),
            (b"list-tubes\r\n", vec![req(R::ListTubes)]),
            (b"list-tubesx\r\n", vec![refused(BadFormat)]),
            (b"list-tube-used\r\n", vec![req(R::ListTubeUsed)]),
            (b"list-tubes-watched\r\n", vec![req(R::ListTubesWatched)]),
            (
                b"pause-tube foo 10\r\n",
                vec![req(R::PauseTube {
                    tube: "foo".into(),
                    delay: 10,
                })],
            ),
            (
                b"pause-tubefoo 10\r\n",
                vec![req(R::PauseTube {
                    tube: "foo".into(),
                    delay: 10,
                })],
            ),
            (b"pause-tube foo\r\n", vec![refused(BadFormat)]),
            // beanstalkd counts it before it checks the name: the engine refuses it
            (
                b"pause-tube -foo 1\r\n",
                vec![req(R::PauseTube {
                    tube: "-foo".into(),
                    delay: 1,
                })],
            ),
            (b"pause-tube  \r\n", vec![refused(BadFormat)]),
            (b"pause-tube ab 1x\r\n", vec![refused(BadFormat)]),
            (b"quit\r\n", vec![req(R::Quit)]),
            (b"quitnow\r\n", vec![req(R::Quit)]),
            (b"stats\0\r\n", vec![refused(BadFormat)]),
            (b"frob\r\n", vec![refused(UnknownCommand)]),
            (b"stats\rx\r\nstats\r\n", vec![]), // the first \r is not followed by \n: no line yet
        ]
    }

    #[test]
    fn lines_decode_as_beanstalkd_reads_them() {
        for (input, want) in vectors() {
            let mut codec = ServerCodec::new();
            assert_eq!(
                server_items(&mut codec, input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn every_vector_split_at_every_byte() {
        for (input, want) in vectors() {
            for at in 0..=input.len() {
                let (got, _) = server_split(input, at, DEFAULT_MAX_JOB_SIZE);
                assert_eq!(
                    got,
                    want,
                    "{:?} split at {at}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn a_body_too_big_is_skipped_as_it_arrives_then_refused() {
        let mut codec = ServerCodec::with_max_job_size(10);
        let mut buf = BytesMut::from(&b"put 0 0 1 11\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(kids_core::server::RequestCodec::is_mid_request(&codec));
        buf.extend_from_slice(b"0123456789a");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "skipped bytes are not kept");
        buf.extend_from_slice(b"\r\nuse t\r\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(refused(Response::JobTooBig))
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(req(Request::Use("t".into())))
        );
        // A body of exactly the bound is taken.
        let mut buf = BytesMut::from(&b"put 0 0 1 10\r\n0123456789\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf).unwrap(),
            Some(Incoming::Request(Request::Put { .. }))
        ));
    }

    #[test]
    fn a_line_over_the_bound_is_discarded_to_its_end_then_refused() {
        let mut input = vec![b'x'; 500];
        input.extend_from_slice(b"\r\nstats\r\n");
        for at in 0..=input.len() {
            let (got, left) = server_split(&input, at, DEFAULT_MAX_JOB_SIZE);
            assert_eq!(
                got,
                vec![refused(Response::BadFormat), req(Request::Stats)],
                "split at {at}"
            );
            assert_eq!(left, 0);
        }
        // 224 bytes with CRLF is a line; 225 is not.
        let mut ok = b"use ".to_vec();
        ok.extend(std::iter::repeat_n(b'a', LINE_MAX - 6));
        ok.extend_from_slice(b"\r\n");
        assert_eq!(ok.len(), LINE_MAX);
        let mut codec = ServerCodec::new();
        assert_eq!(
            server_items(&mut codec, &ok),
            vec![refused(Response::BadFormat)],
            "name over 200 bytes"
        );
        let mut name = b"use ".to_vec();
        name.extend(std::iter::repeat_n(b'a', TUBE_NAME_MAX));
        name.extend_from_slice(b"\r\n");
        let mut codec = ServerCodec::new();
        assert_eq!(
            server_items(&mut codec, &name),
            vec![req(Request::Use("a".repeat(TUBE_NAME_MAX)))]
        );
    }

    #[test]
    fn buffered_input_stays_bounded_while_a_line_never_ends() {
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::new();
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'y'; 100]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.len() < LINE_MAX, "{}", buf.len());
        }
    }

    fn reply_vectors() -> Vec<Response> {
        use Response as P;
        vec![
            P::Inserted(3),
            P::BuriedId(u64::MAX),
            P::Buried,
            P::ExpectedCrlf,
            P::JobTooBig,
            P::Draining,
            P::Using("default".into()),
            P::DeadlineSoon,
            P::TimedOut,
            P::Reserved {
                id: 9,
                body: "a\r\nb".into(),
            },
            P::Reserved {
                id: 9,
                body: "".into(),
            },
            P::Deleted,
            P::NotFound,
            P::Released,
            P::Touched,
            P::Watching(2),
            P::NotIgnored,
            P::Found {
                id: 1,
                body: "x".into(),
            },
            P::Kicked(0),
            P::KickedJob,
            P::Ok("---\ncurrent-jobs-ready: 0\n".into()),
            P::Paused,
            P::OutOfMemory,
            P::InternalError,
            P::BadFormat,
            P::UnknownCommand,
        ]
    }

    #[test]
    fn replies_round_trip_split_at_every_byte() {
        let mut wire = BytesMut::new();
        let want = reply_vectors();
        for r in &want {
            r.encode(&mut wire);
        }
        for at in 0..=wire.len() {
            let mut codec = ClientCodec::new();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&wire[..at], &wire[at..]] {
                buf.extend_from_slice(part);
                while let Some(r) = codec.decode(&mut buf).unwrap() {
                    got.push(r);
                }
            }
            assert_eq!(got, want, "split at {at}");
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [
            &b"INSERTED\r\n"[..],
            b"INSERTED x\r\n",
            b"INSERTED 1 2\r\n",
            b"RESERVED 1\r\n",
            b"DELETED now\r\n",
            b"HELLO\r\n",
            b"RESERVED 1 1\r\nxyz",
            b"USING -x\r\n",
            b"OK 100000000000000000000\r\n",
        ] {
            let mut codec = ClientCodec::new();
            let mut buf = BytesMut::from(bad);
            assert!(
                codec.decode(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut codec = ClientCodec::with_max_body(4);
        let mut buf = BytesMut::from(&b"OK 5\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(crate::Error::Protocol(crate::ProtocolError::BodyTooLong {
                len: 5,
                max: 4
            }))
        ));
        let mut codec = ClientCodec::new();
        let mut buf = BytesMut::from(&[b'A'; LINE_MAX][..]);
        assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn yaml_bodies_parse() {
        let s = parse_stats(b"---\nname: \"default\"\ncurrent-jobs-ready: 3\n").unwrap();
        assert_eq!(s.get("name"), Some("default"));
        assert_eq!(s.number("current-jobs-ready"), Some(3));
        assert_eq!(
            parse_list(b"---\n- default\n- a\n").unwrap(),
            vec!["default", "a"]
        );
        assert!(parse_list(b"---\nx\n").is_err());
        assert!(parse_stats(b"---\nnot yaml\n").is_err());
    }

    fn tube() -> impl Strategy<Value = String> {
        "[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()-]{0,199}"
    }

    fn request() -> impl Strategy<Value = Request> {
        use Request as R;
        prop_oneof![
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(priority, delay, ttr, body)| R::Put {
                    priority,
                    delay,
                    ttr,
                    body: body.into()
                }),
            tube().prop_map(R::Use),
            tube().prop_map(R::Watch),
            tube().prop_map(R::Ignore),
            tube().prop_map(R::StatsTube),
            (tube(), any::<u32>()).prop_map(|(tube, delay)| R::PauseTube { tube, delay }),
            Just(R::Reserve),
            any::<i32>().prop_map(R::ReserveWithTimeout),
            any::<u64>().prop_map(R::ReserveJob),
            any::<u64>().prop_map(R::Delete),
            (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(id, priority, delay)| {
                R::Release {
                    id,
                    priority,
                    delay,
                }
            }),
            (any::<u64>(), any::<u32>()).prop_map(|(id, priority)| R::Bury { id, priority }),
            any::<u64>().prop_map(R::Touch),
            any::<u64>().prop_map(R::Peek),
            Just(R::PeekReady),
            Just(R::PeekDelayed),
            Just(R::PeekBuried),
            any::<u32>().prop_map(R::Kick),
            any::<u64>().prop_map(R::KickJob),
            any::<u64>().prop_map(R::StatsJob),
            Just(R::Stats),
            Just(R::ListTubes),
            Just(R::ListTubeUsed),
            Just(R::ListTubesWatched),
            Just(R::Quit),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(reqs in proptest::collection::vec(request(), 1..8), cut in any::<usize>()) {
            let mut wire = BytesMut::new();
            for r in &reqs {
                r.encode(&mut wire);
            }
            let at = cut % (wire.len() + 1);
            let (got, left) = server_split(&wire, at, u32::MAX);
            let want: Vec<Incoming> = reqs.into_iter().map(Incoming::Request).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(left, 0);
        }

        #[test]
        fn any_bytes_decode_without_panic_and_stay_bounded(input in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut codec = ServerCodec::with_max_job_size(100);
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            prop_assert!(buf.len() < LINE_MAX + 102);
            let mut client = ClientCodec::with_max_body(100);
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(_)) = client.decode(&mut buf) {}
        }
    }
}

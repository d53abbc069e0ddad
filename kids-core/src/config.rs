//! The kids configuration language: `key value+;` directives and nested blocks.
//!
//! ```text
//! # an agent
//! log { level info; file /data/log/kids/kids.log; }
//! listen { host 127.0.0.1; port 3388; }
//! store buffer {
//!   store network primary { host kids; port 3388; }
//!   store file secondary { path /data/data/kidsbuf; rotate 5min; }
//! }
//! ```
//! Keywords are case-insensitive; `#` starts a comment; values may be quoted
//! with `"` or `'` (the quotes are not part of the value). Sizes take a unit
//! (`b k kb m mb g gb`, 1024-based), durations too (`s sec m min h hour d
//! day`); `rotate` also takes `hourly` and `daily`. Every error names the
//! file, line and column and what was expected; an unknown key is an error
//! everywhere, with a suggestion when one is close.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ClientClass, Fsync};

/// A parsed kids configuration.
///
/// ```
/// use kids_core::Config;
/// let config = Config::parse("server.conf", "listen { port 3388; } store file { path /tmp/logs; rotate 1hour; }").unwrap();
/// assert_eq!(config.listen.port, Some(3388));
/// assert_eq!(config.store.unwrap().rotate_secs, Some(3600));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Config {
    /// `worker_threads N;`: threads serving connections (default one; see
    /// `net::runtime`, feature `tokio`).
    pub worker_threads: Option<usize>,
    /// `ignore_case on|off;`: match patterns ignoring case.
    pub ignore_case: bool,
    /// `max_clients N;`
    pub max_clients: Option<usize>,
    /// `timeout DURATION;`: close a client idle this long (not a
    /// subscriber); `0` turns it off, as Redis's `timeout 0` (the default).
    pub timeout_secs: Option<u64>,
    /// `request_timeout DURATION;`: close a client that left a request
    /// half-sent this long (default 60 s); `0` turns it off.
    pub request_timeout_secs: Option<u64>,
    /// `max_buffered SIZE;`: bytes all connections together may buffer
    /// before they stop reading new requests (default 4 GB); `0` turns the
    /// bound off.
    pub max_buffered: Option<u64>,
    /// `query_buffer SIZE;`: most bytes one client's unfinished request
    /// may hold, each argument counted with what it costs in memory
    /// (Redis's `client-query-buffer-limit`; default 1 GB).
    pub query_buffer: Option<u64>,
    /// `max_channel_len SIZE;`: longest channel name a client may publish
    /// or subscribe to (default 4 KB).
    pub max_channel_len: Option<u64>,
    /// `max_pattern_len SIZE;`: longest pattern (default 256 bytes).
    pub max_pattern_len: Option<u64>,
    /// `max_patterns N;`: most patterns one client may subscribe to
    /// (default 10000); a PSUBSCRIBE that would pass it is refused whole.
    pub max_patterns: Option<usize>,
    /// `nlimit CLASS HARD SOFT SECONDS;` lines.
    pub nlimits: Vec<NLimitLine>,
    /// `queue SIZE block|error;` or `queue SIZE spool DIR;`: the queue between the router and the stores.
    pub queue: Option<QueueConfig>,
    /// `log { level L; file F; }`
    pub log: LogConfig,
    /// `listen { host H; port P; socket S; }`
    pub listen: ListenConfig,
    /// The top-level `store TYPE { ... }`.
    pub store: Option<StoreConfig>,
    /// `http { port P; token T; }`: the explorer page, on the `listen` host.
    pub http: HttpConfig,
}

/// The `http { port P; token T; }` block: where the explorer page is served
/// (on the `listen` host) and the token it asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HttpConfig {
    /// `port P;` (0 picks a free port). Without it, no page is served.
    pub port: Option<u16>,
    /// `token T;`: every request must carry it.
    pub token: Option<String>,
}

/// One `nlimit` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NLimitLine {
    /// `normal` or `pubsub`.
    pub class: ClientClass,
    /// Hard bound in bytes (0: none).
    pub hard: u64,
    /// Soft bound in bytes (0: none).
    pub soft: u64,
    /// Seconds the soft bound may be exceeded.
    pub soft_secs: u64,
}

/// What a full store queue does to a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueFull {
    /// PUBLISH waits until there is room.
    Block,
    /// PUBLISH gets an error it can retry on.
    Error,
    /// The message goes to the spool.
    Spool,
}

/// `queue SIZE block|error;` or `queue SIZE spool DIR;`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Messages the queue holds.
    pub size: usize,
    /// What happens when it is full.
    pub when_full: QueueFull,
    /// Where the `spool` policy keeps the overflow.
    pub spool_dir: Option<String>,
}

/// `level trace|debug|info|warn|error;` (`warning` is `warn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Problems kids works around.
    Warn,
    /// Problems it cannot.
    Error,
}

impl LogLevel {
    fn from_name(name: &str) -> Option<LogLevel> {
        Some(match name.to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => return None,
        })
    }
}

/// `log { ... }`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogConfig {
    /// `level trace|debug|info|warn|error;`
    pub level: Option<LogLevel>,
    /// `file PATH;`
    pub file: Option<String>,
}

/// `listen { ... }`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ListenConfig {
    /// `host H;`
    pub host: Option<String>,
    /// `port P;`
    pub port: Option<u16>,
    /// `socket PATH;`
    pub socket: Option<String>,
}

/// The kind of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Topic files with rotation.
    File,
    /// Forwarding to another kids.
    Network,
    /// A primary, and a secondary spool while the primary fails.
    Buffer,
    /// The first child that accepts.
    Priority,
    /// Every child (`success any|all`).
    Multiple,
    /// Discards.
    Null,
}

impl StoreKind {
    /// Every kind, in the order error messages list them.
    const ALL: [StoreKind; 6] = [
        StoreKind::File,
        StoreKind::Network,
        StoreKind::Buffer,
        StoreKind::Priority,
        StoreKind::Multiple,
        StoreKind::Null,
    ];

    /// The kind's name in the config language.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::Network => "network",
            StoreKind::Buffer => "buffer",
            StoreKind::Priority => "priority",
            StoreKind::Multiple => "multiple",
            StoreKind::Null => "null",
        }
    }

    fn from_name(name: &str) -> Option<StoreKind> {
        Self::ALL
            .into_iter()
            .find(|k| name.eq_ignore_ascii_case(k.name()))
    }
}

/// A store's role inside `store buffer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreRole {
    /// Where messages go while it works.
    Primary,
    /// Where they wait while it does not.
    Secondary,
}

/// `success any|all;` of `store multiple`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Success {
    /// A message is stored once any child took it.
    Any,
    /// Only once every child took it.
    All,
}

/// `store TYPE [primary|secondary] { ... }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The store's kind.
    pub kind: StoreKind,
    /// Its role inside a buffer.
    pub role: Option<StoreRole>,
    /// `topic GLOB...;` lines (all of them count); empty: every topic.
    pub topics: Vec<String>,
    /// `path TEMPLATE;` (file)
    pub path: Option<String>,
    /// `name TEMPLATE;` (file)
    pub name: Option<String>,
    /// `rotate 5min|hourly|daily;` (file), in seconds.
    pub rotate_secs: Option<u64>,
    /// `flush DURATION;` (file), in seconds.
    pub flush_secs: Option<u64>,
    /// `fsync never|rotate|N;` (file)
    pub fsync: Option<Fsync>,
    /// `utc_offset [-]DURATION;` (file): offset from UTC for names and buckets, in seconds.
    pub utc_offset_secs: Option<i64>,
    /// `host H;` (network)
    pub host: Option<String>,
    /// `port P;` (network)
    pub port: Option<u16>,
    /// `socket PATH;` (network)
    pub socket: Option<String>,
    /// `window N;` (network): messages sent but not yet acknowledged.
    pub window: Option<usize>,
    /// `timeout DURATION;` (network), in seconds.
    pub timeout_secs: Option<u64>,
    /// `replay_rate N;` (buffer): spooled messages replayed per second.
    pub replay_rate: Option<u64>,
    /// `success any|all;` (multiple)
    pub success: Option<Success>,
    /// Nested stores (buffer, priority, multiple).
    pub stores: Vec<StoreConfig>,
}

impl StoreConfig {
    /// Why this store (with the stores inside it) cannot work, if it cannot:
    /// what is wrong, and which nested store it is about (`None`: this one).
    /// The parser reports it with its line and column; `build_store` checks
    /// a deserialized config the same way.
    ///
    /// ```
    /// use kids_core::Config;
    /// let err = Config::parse("a.conf", "store buffer { store null primary {} }").unwrap_err();
    /// assert_eq!(err.to_string(), "a.conf:1:1: `store buffer` needs exactly one `primary` and one `secondary` store");
    /// ```
    pub fn problem(&self) -> Option<(Option<usize>, StoreProblem)> {
        let own = |why| Some((None, why));
        match self.kind {
            StoreKind::File if self.path.is_none() => return own(StoreProblem::FileWithoutPath),
            StoreKind::Network if self.host.is_none() && self.socket.is_none() => {
                return own(StoreProblem::NetworkWithoutTarget);
            }
            StoreKind::Priority | StoreKind::Multiple if self.stores.is_empty() => {
                return own(StoreProblem::NothingInside { kind: self.kind });
            }
            _ => {}
        }
        if self.kind != StoreKind::Buffer {
            let child = self.stores.iter().position(|c| c.role.is_some())?;
            return Some((Some(child), StoreProblem::RoleOutsideBuffer));
        }
        let with = |r| self.stores.iter().filter(|c| c.role == Some(r)).count();
        if self.stores.len() != 2
            || with(StoreRole::Primary) != 1
            || with(StoreRole::Secondary) != 1
        {
            return own(StoreProblem::BufferRoles);
        }
        let i = self
            .stores
            .iter()
            .position(|c| c.role == Some(StoreRole::Secondary))?;
        let spool = &self.stores[i];
        let why = if spool.kind != StoreKind::File {
            StoreProblem::SpoolNotFile
        } else if spool.path.as_deref().is_some_and(|p| p.contains('[')) {
            StoreProblem::SpoolPathTemplate
        } else if spool.name.is_some()
            || spool.flush_secs.is_some()
            || spool.utc_offset_secs.is_some()
        {
            StoreProblem::SpoolOptions
        } else {
            return None;
        };
        Some((Some(i), why))
    }

    fn new(kind: StoreKind, role: Option<StoreRole>) -> Self {
        Self {
            kind,
            role,
            topics: Vec::new(),
            path: None,
            name: None,
            rotate_secs: None,
            flush_secs: None,
            fsync: None,
            utc_offset_secs: None,
            host: None,
            port: None,
            socket: None,
            window: None,
            timeout_secs: None,
            replay_rate: None,
            success: None,
            stores: Vec::new(),
        }
    }
}

/// Why a store (with the stores inside it) cannot work: what
/// [`StoreConfig::problem`] finds. The parser reports it in a
/// [`ConfigError`] with its line; `build_store` as
/// [`Error::StoreConfig`](crate::Error::StoreConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreProblem {
    /// A `store file` without a `path`.
    #[error("`store file` needs a `path`")]
    FileWithoutPath,
    /// A `store network` with neither a `host` nor a `socket`.
    #[error("`store network` needs a `host` (and `port`) or a `socket`")]
    NetworkWithoutTarget,
    /// A `store priority` or `store multiple` with no store inside.
    #[error("`store {}` needs at least one store inside", .kind.name())]
    NothingInside {
        /// The store's kind.
        kind: StoreKind,
    },
    /// A `primary` or `secondary` store outside a `store buffer`.
    #[error("primary/secondary only apply to the stores inside `store buffer`")]
    RoleOutsideBuffer,
    /// A `store buffer` without exactly one `primary` and one `secondary`.
    #[error("`store buffer` needs exactly one `primary` and one `secondary` store")]
    BufferRoles,
    /// A buffer's `secondary` that is not a `store file`.
    #[error("the `secondary` of a buffer is its spool: a `store file secondary {{ path DIR; }}`")]
    SpoolNotFile,
    /// A buffer's spool `path` with a template such as `[topic]`.
    #[error(
        "the `secondary` of a buffer is its spool: its `path` is one directory, templates such as `[topic]` are not allowed"
    )]
    SpoolPathTemplate,
    /// A buffer's spool with settings that only apply to topic files.
    #[error(
        "the `secondary` of a buffer is its spool: `name`, `flush` and `utc_offset` do not apply to it (`path`, `rotate` and `fsync` do)"
    )]
    SpoolOptions,
}

/// A configuration error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct ConfigError {
    /// The file name given to [`Config::parse`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What was wrong and what was expected.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Semi,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "`{w}`"),
            Tok::Quoted(q) => write!(f, "\"{q}\""),
            Tok::Open => f.write_str("`{`"),
            Tok::Close => f.write_str("`}`"),
            Tok::Semi => f.write_str("`;`"),
            Tok::Eof => f.write_str("end of file"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) col: usize,
}

struct Parser<'a> {
    file: &'a str,
    toks: Vec<(Tok, Pos)>,
    i: usize,
}

const TOP_KEYS: &[&str] = &[
    "worker_threads",
    "ignore_case",
    "max_clients",
    "timeout",
    "request_timeout",
    "max_buffered",
    "query_buffer",
    "max_channel_len",
    "max_pattern_len",
    "max_patterns",
    "nlimit",
    "queue",
    "log",
    "listen",
    "store",
    "http",
];
const LOG_KEYS: &[&str] = &["level", "file"];
const LISTEN_KEYS: &[&str] = &["host", "port", "socket"];
const HTTP_KEYS: &[&str] = &["port", "token"];
const STORE_KEYS: &[&str] = &[
    "store",
    "topic",
    "path",
    "name",
    "rotate",
    "flush",
    "fsync",
    "utc_offset",
    "host",
    "port",
    "socket",
    "window",
    "timeout",
    "replay_rate",
    "success",
];

pub(crate) fn tokenize(file: &str, src: &str) -> Result<Vec<(Tok, Pos)>, ConfigError> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let err = |line, col, message: String| ConfigError {
        file: file.to_string(),
        line,
        col,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        let step = |i: &mut usize, col: &mut usize| {
            *i += 1;
            *col += 1;
        };
        match c {
            '\n' => {
                i += 1;
                line += 1;
                col = 1;
            }
            c if c.is_whitespace() => step(&mut i, &mut col),
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '{' | '}' | ';' => {
                out.push((
                    match c {
                        '{' => Tok::Open,
                        '}' => Tok::Close,
                        _ => Tok::Semi,
                    },
                    pos,
                ));
                step(&mut i, &mut col);
            }
            '"' | '\'' => {
                let quote = c;
                step(&mut i, &mut col);
                let mut value = String::new();
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(err(
                            pos.line,
                            pos.col,
                            format!("unterminated {quote}-quoted value"),
                        ));
                    };
                    if d == '\n' {
                        return Err(err(
                            pos.line,
                            pos.col,
                            format!(
                                "unterminated {quote}-quoted value (newline before closing {quote})"
                            ),
                        ));
                    }
                    step(&mut i, &mut col);
                    if d == quote {
                        break;
                    }
                    // `\\` and a backslashed quote are the only escapes; any
                    // other backslash stays, so glob escapes such as `\*` mean
                    // the same quoted or not.
                    match (d, chars.get(i)) {
                        ('\\', Some(&e)) if e == quote || e == '\\' => {
                            step(&mut i, &mut col);
                            value.push(e);
                        }
                        _ => value.push(d),
                    }
                }
                out.push((Tok::Quoted(value), pos));
            }
            _ => {
                let mut word = String::new();
                while let Some(&d) = chars.get(i) {
                    if d.is_whitespace() || matches!(d, '{' | '}' | ';' | '#' | '"' | '\'') {
                        break;
                    }
                    word.push(d);
                    step(&mut i, &mut col);
                }
                out.push((Tok::Word(word), pos));
            }
        }
    }
    out.push((Tok::Eof, Pos { line, col }));
    Ok(out)
}

/// Levenshtein distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// ` (did you mean `x`?)` when `word` is within two edits of one of
/// `candidates` (the closest), else nothing: how every configuration of
/// the SDK answers an unknown key.
pub fn suggest(word: &str, candidates: &[&str]) -> String {
    let len = word.chars().count();
    candidates
        .iter()
        // The distance is at least the difference in length: a word far
        // longer than every candidate costs no distance table at all.
        .filter(|c| c.chars().count().abs_diff(len) <= 2)
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2 && *d < c.len())
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// One directive's values with their positions.
type Values = Vec<(String, Pos)>;

impl<'a> Parser<'a> {
    fn err(&self, pos: Pos, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
        }
    }

    fn next(&mut self) -> (Tok, Pos) {
        let t = self.toks[self.i.min(self.toks.len() - 1)].clone();
        self.i += 1;
        t
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].0
    }

    fn expect_open(&mut self, what: &str) -> Result<(), ConfigError> {
        match self.next() {
            (Tok::Open, _) => Ok(()),
            (t, pos) => Err(self.err(pos, format!("expected `{{` after {what}, found {t}"))),
        }
    }

    /// Values up to `;`.
    fn values(&mut self, key: &str) -> Result<Values, ConfigError> {
        let mut vals = Vec::new();
        loop {
            match self.next() {
                (Tok::Semi, pos) if vals.is_empty() => {
                    return Err(self.err(pos, format!("`{key}` needs a value")));
                }
                (Tok::Semi, _) => return Ok(vals),
                (Tok::Word(w) | Tok::Quoted(w), pos) => vals.push((w, pos)),
                (t, pos) => {
                    return Err(self.err(
                        pos,
                        format!("expected `;` after the value of `{key}`, found {t}"),
                    ));
                }
            }
        }
    }

    fn one(&self, key: &str, vals: &Values) -> Result<(String, Pos), ConfigError> {
        match vals.as_slice() {
            [v] => Ok(v.clone()),
            [_, extra, ..] => Err(self.err(extra.1, format!("`{key}` takes one value"))),
            [] => unreachable_values(),
        }
    }

    fn number<T: std::str::FromStr>(
        &self,
        key: &str,
        (v, pos): &(String, Pos),
    ) -> Result<T, ConfigError> {
        v.parse()
            .map_err(|_| self.err(*pos, format!("`{key}` expects a whole number, found `{v}`")))
    }

    fn parse(mut self) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        loop {
            let (tok, pos) = self.next();
            let key = match tok {
                Tok::Eof => break,
                Tok::Word(w) => w.to_ascii_lowercase(),
                t => return Err(self.err(pos, format!("expected a directive, found {t}"))),
            };
            match key.as_str() {
                "log" => {
                    self.expect_open("`log`")?;
                    self.block(LOG_KEYS, "log", |p, key, vals| {
                        let (v, vpos) = p.one(key, &vals)?;
                        match key {
                            "level" => {
                                let Some(level) = LogLevel::from_name(&v) else {
                                    return Err(p.err(vpos, format!("`level` expects trace, debug, info, warn or error, found `{v}`")));
                                };
                                config.log.level = Some(level);
                            }
                            _ => config.log.file = Some(v),
                        }
                        Ok(())
                    })?;
                }
                "listen" => {
                    self.expect_open("`listen`")?;
                    self.block(LISTEN_KEYS, "listen", |p, key, vals| {
                        let v = p.one(key, &vals)?;
                        match key {
                            "host" => config.listen.host = Some(v.0),
                            "port" => config.listen.port = Some(p.port(&v)?),
                            _ => config.listen.socket = Some(v.0),
                        }
                        Ok(())
                    })?;
                }
                "http" => {
                    self.expect_open("`http`")?;
                    self.block(HTTP_KEYS, "http", |p, key, vals| {
                        let v = p.one(key, &vals)?;
                        match key {
                            "port" => config.http.port = Some(p.port(&v)?),
                            _ => config.http.token = Some(v.0),
                        }
                        Ok(())
                    })?;
                }
                "store" => {
                    if config.store.is_some() {
                        return Err(self.err(pos, "a second top-level store: put several stores inside `store multiple` or `store priority`"));
                    }
                    config.store = Some(self.store(pos, false)?);
                }
                "query_buffer" | "max_channel_len" | "max_pattern_len" => {
                    let vals = self.values(&key)?;
                    let v = self.one(&key, &vals)?;
                    let bytes = Some(self.size(&v, false)?);
                    match key.as_str() {
                        "query_buffer" => config.query_buffer = bytes,
                        "max_channel_len" => config.max_channel_len = bytes,
                        _ => config.max_pattern_len = bytes,
                    }
                }
                "worker_threads" | "max_clients" | "max_patterns" => {
                    let vals = self.values(&key)?;
                    let v = self.one(&key, &vals)?;
                    let n: usize = self.number(&key, &v)?;
                    if n == 0 {
                        return Err(self.err(v.1, format!("`{key}` must be at least 1")));
                    }
                    match key.as_str() {
                        "worker_threads" => config.worker_threads = Some(n),
                        "max_patterns" => config.max_patterns = Some(n),
                        _ => config.max_clients = Some(n),
                    }
                }
                "timeout" | "request_timeout" => {
                    let vals = self.values(&key)?;
                    let v = self.one(&key, &vals)?;
                    let secs = self.duration(&v, true)?;
                    if key == "timeout" {
                        config.timeout_secs = Some(secs);
                    } else {
                        config.request_timeout_secs = Some(secs);
                    }
                }
                "max_buffered" => {
                    let vals = self.values(&key)?;
                    let v = self.one(&key, &vals)?;
                    config.max_buffered = Some(self.size(&v, true)?);
                }
                "ignore_case" => {
                    let vals = self.values(&key)?;
                    let (v, vpos) = self.one(&key, &vals)?;
                    config.ignore_case = match v.to_ascii_lowercase().as_str() {
                        "on" | "yes" | "true" => true,
                        "off" | "no" | "false" => false,
                        _ => {
                            return Err(self.err(
                                vpos,
                                format!("`ignore_case` expects on or off, found `{v}`"),
                            ));
                        }
                    };
                }
                "nlimit" => {
                    let vals = self.values(&key)?;
                    let [class, hard, soft, secs] = vals.as_slice() else {
                        return Err(self.err(pos, "`nlimit` expects CLASS HARD SOFT SECONDS, as in `nlimit pubsub 32MB 16MB 10min;`"));
                    };
                    let class = match class.0.to_ascii_lowercase().as_str() {
                        "normal" => ClientClass::Normal,
                        "pubsub" => ClientClass::Pubsub,
                        _ => {
                            return Err(self.err(
                                class.1,
                                format!("`nlimit` class is normal or pubsub, found `{}`", class.0),
                            ));
                        }
                    };
                    config.nlimits.push(NLimitLine {
                        class,
                        hard: self.size(hard, true)?,
                        soft: self.size(soft, true)?,
                        soft_secs: self.duration(secs, true)?,
                    });
                }
                "queue" => {
                    let vals = self.values(&key)?;
                    let (size, policy, dir) = match vals.as_slice() {
                        [size, policy] => (size, policy, None),
                        [size, policy, dir] => (size, policy, Some(dir)),
                        _ => return Err(self.err(pos, "`queue` expects SIZE and block, error or spool DIR, as in `queue 65536 block;`")),
                    };
                    let size: usize = self.number("queue", size)?;
                    let when_full = match policy.0.to_ascii_lowercase().as_str() {
                        "block" => QueueFull::Block,
                        "error" => QueueFull::Error,
                        "spool" => QueueFull::Spool,
                        _ => {
                            return Err(self.err(
                                policy.1,
                                format!(
                                    "`queue` policy is block, error or spool, found `{}`",
                                    policy.0
                                ),
                            ));
                        }
                    };
                    let spool_dir = match (when_full, dir) {
                        (QueueFull::Spool, Some(d)) => Some(d.0.clone()),
                        (QueueFull::Spool, None) => {
                            return Err(self.err(policy.1, "`queue SIZE spool` needs the spool's directory, as in `queue 65536 spool /data/kids/overflow;`"));
                        }
                        (_, Some(d)) => {
                            return Err(self.err(d.1, "only the `spool` policy takes a directory"));
                        }
                        (_, None) => None,
                    };
                    config.queue = Some(QueueConfig {
                        size,
                        when_full,
                        spool_dir,
                    });
                }
                other => {
                    return Err(self.err(
                        pos,
                        format!("unknown directive `{other}`{}", suggest(other, TOP_KEYS)),
                    ));
                }
            }
        }
        Ok(config)
    }

    /// Directives until `}`; `apply` handles each known key.
    fn block(
        &mut self,
        keys: &[&str],
        what: &str,
        mut apply: impl FnMut(&Self, &str, Values) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        loop {
            match self.next() {
                (Tok::Close, _) => return Ok(()),
                (Tok::Word(w), pos) => {
                    let key = w.to_ascii_lowercase();
                    if !keys.contains(&key.as_str()) {
                        return Err(self.err(
                            pos,
                            format!("unknown key `{w}` in `{what}`{}", suggest(&key, keys)),
                        ));
                    }
                    let vals = self.values(&key)?;
                    apply(self, &key, vals)?;
                }
                (t, pos) => {
                    return Err(self.err(
                        pos,
                        format!("expected a key or `}}` in `{what}`, found {t}"),
                    ));
                }
            }
        }
    }

    fn store(&mut self, at: Pos, nested: bool) -> Result<StoreConfig, ConfigError> {
        let (kind, kpos) = match self.next() {
            (Tok::Word(w), pos) => (w, pos),
            (t, pos) => {
                return Err(self.err(
                    pos,
                    format!("expected a store type after `store`, found {t}"),
                ));
            }
        };
        let Some(kind) = StoreKind::from_name(&kind) else {
            let names: Vec<&str> = StoreKind::ALL.map(StoreKind::name).to_vec();
            return Err(self.err(
                kpos,
                format!(
                    "unknown store type `{kind}`{}; expected one of {}",
                    suggest(&kind.to_ascii_lowercase(), &names),
                    names.join(", ")
                ),
            ));
        };
        let role = match self.peek().clone() {
            Tok::Word(w) => {
                let (_, rpos) = self.next();
                match w.to_ascii_lowercase().as_str() {
                    "primary" => Some(StoreRole::Primary),
                    "secondary" => Some(StoreRole::Secondary),
                    _ => return Err(self.err(
                        rpos,
                        format!(
                            "expected primary, secondary or `{{` after the store type, found `{w}`"
                        ),
                    )),
                }
            }
            _ => None,
        };
        if role.is_some() && !nested {
            return Err(self.err(
                at,
                "primary/secondary only apply to the stores inside `store buffer`",
            ));
        }
        self.expect_open("the store type")?;
        let mut store = StoreConfig::new(kind, role);
        let mut children_at = Vec::new();
        loop {
            let (tok, pos) = self.next();
            let w = match tok {
                Tok::Close => break,
                Tok::Word(w) => w,
                t => {
                    return Err(self.err(
                        pos,
                        format!("expected a key, `store` or `}}` in the store, found {t}"),
                    ));
                }
            };
            let key = w.to_ascii_lowercase();
            if key == "store" {
                if !matches!(
                    kind,
                    StoreKind::Buffer | StoreKind::Priority | StoreKind::Multiple
                ) {
                    return Err(self.err(
                        pos,
                        format!("a `store {}` holds no other stores", kind.name()),
                    ));
                }
                let child = self.store(pos, true)?;
                children_at.push(pos);
                store.stores.push(child);
                continue;
            }
            if !STORE_KEYS.contains(&key.as_str()) {
                return Err(self.err(
                    pos,
                    format!(
                        "unknown key `{w}` in the store{}",
                        suggest(&key, STORE_KEYS)
                    ),
                ));
            }
            let allowed = match key.as_str() {
                "topic" => true,
                "path" | "name" | "rotate" | "flush" | "fsync" | "utc_offset" => {
                    kind == StoreKind::File
                }
                "host" | "port" | "socket" | "window" | "timeout" => kind == StoreKind::Network,
                "replay_rate" => kind == StoreKind::Buffer,
                _ => kind == StoreKind::Multiple,
            };
            if !allowed {
                return Err(self.err(
                    pos,
                    format!("`{key}` does not apply to a `store {}`", kind.name()),
                ));
            }
            let vals = self.values(&key)?;
            if key == "topic" {
                store.topics.extend(vals.into_iter().map(|(v, _)| v));
                continue;
            }
            let v = self.one(&key, &vals)?;
            match key.as_str() {
                "path" => store.path = Some(v.0),
                "name" => store.name = Some(v.0),
                "rotate" => {
                    store.rotate_secs = Some(match v.0.to_ascii_lowercase().as_str() {
                        "hourly" => 3600,
                        "daily" => 86_400,
                        _ => self.duration(&v, false)?,
                    });
                }
                "flush" => store.flush_secs = Some(self.duration(&v, false)?),
                "fsync" => {
                    store.fsync = Some(match v.0.to_ascii_lowercase().as_str() {
                        "never" => Fsync::Never,
                        "rotate" => Fsync::OnRotate,
                        _ => Fsync::Every(v.0.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            self.err(v.1, format!("`fsync` expects never, rotate or a number of messages, found `{}`", v.0))
                        })?),
                    });
                }
                "utc_offset" => {
                    let (neg, rest) = match v.0.strip_prefix('-') {
                        Some(r) => (true, r),
                        None => (false, v.0.strip_prefix('+').unwrap_or(&v.0)),
                    };
                    let secs = self.duration(&(rest.to_string(), v.1), true)? as i64;
                    store.utc_offset_secs = Some(if neg { -secs } else { secs });
                }
                "host" => store.host = Some(v.0),
                "port" => store.port = Some(self.port(&v)?),
                "socket" => store.socket = Some(v.0),
                "window" => store.window = Some(self.number("window", &v)?),
                "timeout" => store.timeout_secs = Some(self.duration(&v, false)?),
                "replay_rate" => store.replay_rate = Some(self.number("replay_rate", &v)?),
                _ => {
                    store.success = Some(match v.0.to_ascii_lowercase().as_str() {
                        "any" => Success::Any,
                        "all" => Success::All,
                        _ => {
                            return Err(self.err(
                                v.1,
                                format!("`success` expects any or all, found `{}`", v.0),
                            ));
                        }
                    });
                }
            }
        }
        self.validate(&store, at, &children_at)?;
        Ok(store)
    }

    fn validate(&self, s: &StoreConfig, at: Pos, children_at: &[Pos]) -> Result<(), ConfigError> {
        match s.problem() {
            None => Ok(()),
            Some((child, why)) => {
                let pos = child
                    .and_then(|i| children_at.get(i))
                    .copied()
                    .unwrap_or(at);
                Err(self.err(pos, why.to_string()))
            }
        }
    }

    fn port(&self, (v, pos): &(String, Pos)) -> Result<u16, ConfigError> {
        v.parse().map_err(|_| {
            self.err(
                *pos,
                format!("expected a port number (0-65535), found `{v}`"),
            )
        })
    }

    /// A size with a unit, in bytes; `zero_ok` accepts a bare `0`.
    fn size(&self, v: &(String, Pos), zero_ok: bool) -> Result<u64, ConfigError> {
        self.with_unit(v, zero_ok, "size", "b, k, kb, m, mb, g or gb", SIZE_UNITS)
    }

    /// A duration with a unit, in seconds; `zero_ok` accepts a bare `0`.
    fn duration(&self, v: &(String, Pos), zero_ok: bool) -> Result<u64, ConfigError> {
        self.with_unit(
            v,
            zero_ok,
            "time",
            "s, sec, m, min, h, hour, d or day",
            TIME_UNITS,
        )
    }

    /// A number followed by one of `units` (case-insensitive), times its multiplier.
    fn with_unit(
        &self,
        (v, pos): &(String, Pos),
        zero_ok: bool,
        what: &str,
        expected: &str,
        units: &[(&str, u64)],
    ) -> Result<u64, ConfigError> {
        let (n, unit) = split_unit(v);
        if n.is_empty() {
            return Err(self.err(
                *pos,
                format!("expected a number and a {what} unit ({expected}), found `{v}`"),
            ));
        }
        let unit = unit.to_ascii_lowercase();
        if unit.is_empty() {
            return if zero_ok && n == "0" {
                Ok(0)
            } else {
                Err(self.err(*pos, format!("`{v}` needs a {what} unit: {expected}")))
            };
        }
        let Some(&(_, mult)) = units.iter().find(|(name, _)| *name == unit) else {
            return Err(self.err(
                *pos,
                format!("unknown {what} unit in `{v}`: expected {expected}"),
            ));
        };
        n.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .ok_or_else(|| self.err(*pos, format!("`{v}` is not a {what} that fits 64 bits")))
    }
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("k", 1 << 10),
    ("kb", 1 << 10),
    ("m", 1 << 20),
    ("mb", 1 << 20),
    ("g", 1 << 30),
    ("gb", 1 << 30),
];
const TIME_UNITS: &[(&str, u64)] = &[
    ("s", 1),
    ("sec", 1),
    ("secs", 1),
    ("m", 60),
    ("min", 60),
    ("mins", 60),
    ("h", 3600),
    ("hour", 3600),
    ("hours", 3600),
    ("d", 86_400),
    ("day", 86_400),
    ("days", 86_400),
];

fn unreachable_values<T>() -> Result<T, ConfigError> {
    // `values` never returns an empty list.
    Err(ConfigError {
        file: String::new(),
        line: 0,
        col: 0,
        message: "internal: directive without values".into(),
    })
}

/// A duration as the configuration language writes it: digits and a time
/// unit (`ms`, `s`/`sec`/`secs`, `m`/`min`/`mins`, `h`/`hour`/`hours`,
/// `d`/`day`/`days`, any case), or a bare `0`; `None` for anything else
/// or a value that does not fit.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(kids_core::parse_duration("5min"), Some(Duration::from_secs(300)));
/// assert_eq!(kids_core::parse_duration("250ms"), Some(Duration::from_millis(250)));
/// assert_eq!(kids_core::parse_duration("5"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    if text == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let (n, unit) = split_unit(text);
    let n: u64 = n.parse().ok()?;
    let unit = unit.to_ascii_lowercase();
    if unit == "ms" {
        return Some(std::time::Duration::from_millis(n));
    }
    let (_, mult) = TIME_UNITS.iter().find(|(name, _)| *name == unit)?;
    Some(std::time::Duration::from_secs(n.checked_mul(*mult)?))
}

/// The leading digits of `v` and the rest (the unit).
fn split_unit(v: &str) -> (&str, &str) {
    v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()))
}

impl Config {
    /// The router settings this config describes: `ignore_case`, the
    /// name bounds (`max_channel_len`, `max_pattern_len`, `max_patterns`)
    /// and the `nlimit` lines (the last line of a class wins; other classes
    /// keep their defaults).
    ///
    /// ```
    /// use kids_core::{ClientClass, Config};
    /// let config = Config::parse(
    ///     "server.conf",
    ///     "ignore_case on; nlimit pubsub 32mb 16mb 10min; max_patterns 100; max_channel_len 1kb;
    ///      max_pattern_len 64b;",
    /// )
    /// .unwrap();
    /// let router = config.router_config();
    /// assert!(router.is_ignore_case());
    /// assert_eq!(router.limits().of(ClientClass::Pubsub).soft, 16 << 20);
    /// assert_eq!(router.patterns_per_client(), 100);
    /// assert_eq!(router.channel_len(), 1024);
    /// assert_eq!(router.pattern_len(), 64);
    /// ```
    pub fn router_config(&self) -> crate::RouterConfig {
        let mut limits = crate::NLimits::default();
        for line in &self.nlimits {
            let limit = crate::NLimit::new(
                line.hard,
                line.soft,
                std::time::Duration::from_secs(line.soft_secs),
            );
            match line.class {
                ClientClass::Normal => limits.normal = limit,
                ClientClass::Pubsub => limits.pubsub = limit,
            }
        }
        let mut router = crate::RouterConfig::default()
            .ignore_case(self.ignore_case)
            .nlimits(limits);
        let clamp = |bytes: u64| usize::try_from(bytes).unwrap_or(usize::MAX);
        if let Some(bytes) = self.max_channel_len {
            router = router.max_channel_len(clamp(bytes));
        }
        if let Some(bytes) = self.max_pattern_len {
            router = router.max_pattern_len(clamp(bytes));
        }
        if let Some(n) = self.max_patterns {
            router = router.max_patterns_per_client(n);
        }
        router
    }

    /// The request decoder's bounds: the defaults, with `query_buffer`.
    ///
    /// ```
    /// use kids_core::Config;
    /// let config = Config::parse("server.conf", "query_buffer 64mb;").unwrap();
    /// assert_eq!(config.limits().query_buffer(), 64 << 20);
    /// ```
    pub fn limits(&self) -> crate::Limits {
        let limits = crate::Limits::default();
        match self.query_buffer {
            Some(bytes) => limits.max_query_buffer(usize::try_from(bytes).unwrap_or(usize::MAX)),
            None => limits,
        }
    }

    /// The connection policy of the `timeout` and `request_timeout` lines
    /// (the toolkit's defaults otherwise; `0` turns a timeout off).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kids_core::Config;
    /// let config = Config::parse("server.conf", "timeout 5min; request_timeout 0;").unwrap();
    /// let conn = config.conn_config();
    /// assert_eq!(conn.idle_timeout_value(), Some(Duration::from_secs(300)));
    /// assert_eq!(conn.request_timeout_value(), None);
    /// ```
    pub fn conn_config(&self) -> crate::server::ConnConfig {
        let mut conn = crate::server::ConnConfig::default();
        let after = |secs: u64| (secs > 0).then(|| std::time::Duration::from_secs(secs));
        if let Some(secs) = self.timeout_secs {
            conn = conn.idle_timeout(after(secs));
        }
        if let Some(secs) = self.request_timeout_secs {
            conn = conn.request_timeout(after(secs));
        }
        conn
    }

    /// The store pipeline settings of the `queue` line (default: 65536
    /// messages, `block`).
    pub fn pipeline_config(&self) -> crate::PipelineConfig {
        match &self.queue {
            None => crate::PipelineConfig::default(),
            Some(q) => {
                let config = crate::PipelineConfig::new(q.size, q.when_full);
                match &q.spool_dir {
                    Some(dir) => config.spool_dir(dir),
                    None => config,
                }
            }
        }
    }

    /// Parses `src`; `file` names it in errors.
    ///
    /// # Errors
    /// A [`ConfigError`] with the file, line and column of the first problem.
    pub fn parse(file: &str, src: &str) -> Result<Config, ConfigError> {
        let toks = tokenize(file, src)?;
        Parser { file, toks, i: 0 }.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_suggestions() {
        assert_eq!(distance("rotae", "rotate"), 1);
        assert_eq!(suggest("rotae", STORE_KEYS), " (did you mean `rotate`?)");
        assert_eq!(suggest("zzzzzz", STORE_KEYS), "");
        // Two letters longer is still within reach; a huge word is not.
        assert_eq!(suggest("rotatexx", STORE_KEYS), " (did you mean `rotate`?)");
        assert_eq!(suggest(&"r".repeat(10_000), STORE_KEYS), "");
    }

    #[test]
    fn units() {
        let p = Parser {
            file: "t",
            toks: vec![],
            i: 0,
        };
        let at = Pos { line: 1, col: 1 };
        let v = |s: &str| (s.to_string(), at);
        assert_eq!(p.size(&v("32MB"), false).unwrap(), 32 << 20);
        assert_eq!(p.size(&v("1k"), false).unwrap(), 1024);
        assert_eq!(p.size(&v("3gb"), false).unwrap(), 3 << 30);
        assert_eq!(
            p.size(&v("17179869183g"), false).unwrap(),
            17_179_869_183 << 30
        );
        assert!(
            p.size(&v("17179869184g"), false).is_err(),
            "2^64 does not fit"
        );
        assert!(p.size(&v("12"), false).is_err());
        assert!(p.size(&v("12tb"), false).is_err());
        assert_eq!(p.duration(&v("10min"), false).unwrap(), 600);
        assert_eq!(p.duration(&v("1hour"), false).unwrap(), 3600);
        assert_eq!(p.duration(&v("2d"), false).unwrap(), 172_800);
        assert_eq!(p.duration(&v("0"), true).unwrap(), 0);
        assert!(p.duration(&v("0"), false).is_err());
        assert!(p.duration(&v("5"), false).is_err());
    }
}

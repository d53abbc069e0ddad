//! miller's configuration file: the kids configuration language, read with `kids_core::parse_directives`.
//!
//! ```text
//! # where jobs go
//! beanstalk { host 127.0.0.1; port 11300; }
//!
//! # where events come from (any number of sources)
//! source sink {                  # a sink session: at least once
//!     host 127.0.0.1; port 3390;
//!     session miller-zhihu;      # the session's name on the sink
//!     filter activity.*;         # topics or globs, one or more values, repeatable
//!     app zhihu;                 # the application its events belong to
//! }
//! source kids {                  # a kids subscription: at most once while the master is down
//!     host 127.0.0.1; port 3388;
//!     psubscribe activity.*;     # patterns
//!     subscribe news;            # channels
//!     app zhihu;
//! }
//!
//! tube zhihu zhihu-jobs;         # an app's tube when it is not the app's name
//! job { priority 1024; ttr 60s; }
//! master { batch 256; max_job_size 65535; dedupe_keys 100000; }
//! worker { tubes zhihu; concurrency 4; grace 30s; run_limit 5min; reserve_timeout 1s; }
//! retry { base 1s; factor 2; max_delay 1h; max_attempts 5; jitter 0.2; seed 0; }
//! dedupe zhihu send_invitation_mail { field MemberId; window 60s; }   # or `data;` for the whole data
//! set demo_output /tmp/miller-demo.log;   # free settings for the program's handlers
//! ```
//!
//! Every directive is optional; defaults are those of [`MasterConfig`],
//! [`WorkerConfig`] and [`RetryPolicy`], beanstalk at 127.0.0.1:11300.
//! Durations are kids' ([`kids_core::parse_duration`]): a unit `ms`,
//! `s`/`sec`/`secs`, `m`/`min`/`mins`, `h`/`hour`/`hours`, `d`/`day`/`days`
//! (a bare `0` is zero), at most 100 years. Keys are case-insensitive. An unknown key, a
//! missing value or a bad number is an error naming file, line and column.

use std::collections::BTreeMap;
use std::time::Duration;

use kids_core::{ConfigError, Directive, Value, parse_directives, parse_duration, suggest};

use super::envelope::DEFAULT_MAX_ENVELOPE;
use super::master::MasterConfig;
use super::registry::{DedupeKey, Registry};
use super::retry::RetryPolicy;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The tubes it watches (it ignores `default` unless listed).
    pub tubes: Vec<String>,
    /// Jobs run at once: one slot, and one queue connection, each.
    pub concurrency: usize,
    /// Backoff and the number of tries.
    pub retry: RetryPolicy,
    /// The time-to-run of a job whose envelope does not say.
    pub default_ttr: Duration,
    /// How long a handler may run before its try fails; `None`: the job's
    /// time-to-run (the worker touches the job while it runs either way).
    pub run_limit: Option<Duration>,
    /// At shutdown, how long jobs in flight may still run before they are
    /// released.
    pub grace: Duration,
    /// How long one `reserve-with-timeout` waits (how soon a slot sees a
    /// shutdown when the tubes are empty).
    pub reserve_timeout: Duration,
    /// The seed of the jitter (slot `i` uses `seed + i`).
    pub seed: u64,
    /// The bound of a job body.
    pub max_envelope: usize,
    /// The delay of the copy put to carry `last_error` before it is
    /// reserved and buried (see the module doc): far, so a copy left by a
    /// worker killed in between stays out of the way; when it comes due a
    /// worker buries it again without running it (it was never kicked).
    pub bury_copy_delay: Duration,
    /// The longest `last_error` kept, in bytes.
    pub max_error: usize,
}

impl Default for WorkerConfig {
    /// Tube `default`, 1 slot, [`RetryPolicy::default`], TTR 60 s, run
    /// limit = TTR, 30 s grace, 1 s reserve timeout, seed 0, beanstalkd's
    /// default job size, copies delayed a year, errors of at most 4 KiB.
    fn default() -> Self {
        Self {
            tubes: vec!["default".into()],
            concurrency: 1,
            retry: RetryPolicy::default(),
            default_ttr: Duration::from_secs(60),
            run_limit: None,
            grace: Duration::from_secs(30),
            reserve_timeout: Duration::from_secs(1),
            seed: 0,
            max_envelope: DEFAULT_MAX_ENVELOPE,
            bury_copy_delay: Duration::from_secs(365 * 24 * 3600),
            max_error: 4096,
        }
    }
}

/// Where a master reads events.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceConfig {
    /// A sink session.
    Sink(SinkSourceConfig),
    /// A kids subscription.
    Kids(KidsSourceConfig),
}

/// A `source sink { … }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSourceConfig {
    /// `host:port` of the sink.
    pub addr: String,
    /// The session's name.
    pub session: String,
    /// Its filters (topics or globs).
    pub filters: Vec<String>,
    /// The application of its events.
    pub app: String,
}

/// A `source kids { … }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KidsSourceConfig {
    /// `host:port` of the kids server.
    pub addr: String,
    /// `SUBSCRIBE` channels.
    pub channels: Vec<String>,
    /// `PSUBSCRIBE` patterns.
    pub patterns: Vec<String>,
    /// The application of its events.
    pub app: String,
}

/// A `dedupe app handler { … }` block.
#[derive(Debug, Clone)]
struct DedupeRule {
    app: String,
    handler: String,
    key: DedupeKey,
    window: Duration,
    at: (usize, usize),
}

/// A parsed miller configuration: what `miller-master` and `miller-slave` run.
#[derive(Debug, Clone)]
pub struct MillerConfig {
    /// The file name it was parsed from (for errors found later).
    pub file: String,
    /// `host:port` of beanstalk.
    pub beanstalk: String,
    /// The master's sources.
    pub sources: Vec<SourceConfig>,
    /// How the master puts jobs.
    pub master: MasterConfig,
    /// How workers run them.
    pub worker: WorkerConfig,
    /// `set key value;` settings, for the program's own handlers.
    pub settings: BTreeMap<String, String>,
    dedupe: Vec<DedupeRule>,
}

const TOP: &[&str] = &[
    "beanstalk",
    "source",
    "tube",
    "job",
    "master",
    "worker",
    "retry",
    "dedupe",
    "set",
];

impl MillerConfig {
    /// Parses `src`; `file` names it in errors.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, line and column of the first problem.
    pub fn parse(file: &str, src: &str) -> Result<MillerConfig, ConfigError> {
        let tree = parse_directives(file, src)?;
        let mut c = MillerConfig {
            file: file.to_string(),
            beanstalk: "127.0.0.1:11300".into(),
            sources: Vec::new(),
            master: MasterConfig::default(),
            worker: WorkerConfig::default(),
            settings: BTreeMap::new(),
            dedupe: Vec::new(),
        };
        let p = P { file };
        for d in &tree {
            match d.name.to_ascii_lowercase().as_str() {
                "beanstalk" => {
                    let (mut host, mut port) = ("127.0.0.1".to_string(), 11300u16);
                    for k in p.block(d, 0, &["host", "port"])? {
                        match p.key(k).as_str() {
                            "host" => host = p.one(k)?.text.clone(),
                            _ => port = p.number(p.one(k)?)?,
                        }
                    }
                    c.beanstalk = format!("{host}:{port}");
                }
                "source" => c.sources.push(p.source(d)?),
                "tube" => {
                    let [app, tube] = p.values::<2>(d)?;
                    c.master.tubes.insert(app.text.clone(), tube.text.clone());
                }
                "job" => {
                    for k in p.block(d, 0, &["priority", "ttr", "delay"])? {
                        match p.key(k).as_str() {
                            "priority" => c.master.put.priority = p.number(p.one(k)?)?,
                            "ttr" => {
                                let ttr = p.duration(p.one(k)?)?;
                                c.master.put.ttr = ttr;
                                c.worker.default_ttr = ttr;
                            }
                            _ => c.master.put.delay = p.duration(p.one(k)?)?,
                        }
                    }
                }
                "master" => {
                    for k in p.block(d, 0, &["batch", "max_job_size", "dedupe_keys"])? {
                        let n: usize = p.number(p.one(k)?)?;
                        match p.key(k).as_str() {
                            "batch" => c.master.batch = n.max(1),
                            "max_job_size" => c.master.max_envelope = n,
                            _ => c.master.dedupe_max_keys = n.max(1),
                        }
                    }
                }
                "worker" => {
                    let keys = [
                        "tubes",
                        "concurrency",
                        "grace",
                        "run_limit",
                        "reserve_timeout",
                        "max_job_size",
                    ];
                    for k in p.block(d, 0, &keys)? {
                        match p.key(k).as_str() {
                            "tubes" => c.worker.tubes = p.many(k)?,
                            "concurrency" => {
                                c.worker.concurrency = p.number::<usize>(p.one(k)?)?.max(1)
                            }
                            "grace" => c.worker.grace = p.duration(p.one(k)?)?,
                            "run_limit" => c.worker.run_limit = Some(p.duration(p.one(k)?)?),
                            "reserve_timeout" => {
                                c.worker.reserve_timeout = p.duration(p.one(k)?)?
                            }
                            _ => c.worker.max_envelope = p.number(p.one(k)?)?,
                        }
                    }
                }
                "retry" => {
                    let keys = [
                        "base",
                        "factor",
                        "max_delay",
                        "max_attempts",
                        "jitter",
                        "seed",
                    ];
                    let r = &mut c.worker.retry;
                    for k in p.block(d, 0, &keys)? {
                        let v = p.one(k)?;
                        match p.key(k).as_str() {
                            "base" => r.base = p.duration(v)?,
                            "factor" => r.factor = p.fraction(v, 1.0, 1e6)?,
                            "max_delay" => r.max_delay = p.duration(v)?,
                            "max_attempts" => r.max_attempts = p.number::<u32>(v)?.max(1),
                            "jitter" => r.jitter = p.fraction(v, 0.0, 1.0)?,
                            _ => c.worker.seed = p.number(v)?,
                        }
                    }
                }
                "dedupe" => {
                    let mut key = None;
                    let mut window = None;
                    for k in p.block(d, 2, &["field", "data", "window"])? {
                        match p.key(k).as_str() {
                            "field" => key = Some(DedupeKey::Field(p.one(k)?.text.clone())),
                            "data" => key = Some(DedupeKey::Data),
                            _ => window = Some(p.duration(p.one(k)?)?),
                        }
                    }
                    let (Some(key), Some(window)) = (key, window) else {
                        return Err(d.error(
                            file,
                            "`dedupe` needs a key (`field PATH;` or `data;`) and a `window`",
                        ));
                    };
                    c.dedupe.push(DedupeRule {
                        app: d.values[0].text.clone(),
                        handler: d.values[1].text.clone(),
                        key,
                        window,
                        at: (d.line, d.col),
                    });
                }
                "set" => {
                    let [k, v] = p.values::<2>(d)?;
                    c.settings.insert(k.text.clone(), v.text.clone());
                }
                other => {
                    return Err(d.error(
                        file,
                        format!("unknown directive `{other}`{}", suggest(other, TOP)),
                    ));
                }
            }
        }
        Ok(c)
    }

    /// Reads and parses the file at `path`.
    ///
    /// # Errors
    /// The file cannot be read, or [`MillerConfig::parse`] fails.
    pub fn load(path: &str) -> Result<MillerConfig, crate::Error> {
        let src = std::fs::read_to_string(path)?;
        Ok(Self::parse(path, &src)?)
    }

    /// Gives the handlers of `registry` the dedupe rules of the file.
    ///
    /// # Errors
    /// A rule names a handler the registry does not have (the error names
    /// the rule's line).
    pub fn apply_dedupe(&self, registry: &mut Registry) -> Result<(), ConfigError> {
        for r in &self.dedupe {
            let Some(reg) = registry.handler_mut(&r.app, &r.handler) else {
                return Err(ConfigError {
                    file: self.file.clone(),
                    line: r.at.0,
                    col: r.at.1,
                    message: format!(
                        "`dedupe`: no handler {:?} registered for app {:?}",
                        r.handler, r.app
                    ),
                });
            };
            reg.dedupe(r.key.clone(), r.window);
        }
        Ok(())
    }

    /// A `set` setting.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }
}

struct P<'a> {
    file: &'a str,
}

impl P<'_> {
    fn key(&self, d: &Directive) -> String {
        d.name.to_ascii_lowercase()
    }

    /// The children of block `d` (which takes `nvalues` values), each key checked against `keys`.
    fn block<'d>(
        &self,
        d: &'d Directive,
        nvalues: usize,
        keys: &[&str],
    ) -> Result<&'d [Directive], ConfigError> {
        if d.values.len() != nvalues {
            let at = d
                .values
                .get(nvalues)
                .map_or_else(|| d.error(self.file, ""), |v| v.error(self.file, ""));
            return Err(ConfigError {
                message: format!("`{}` takes {nvalues} value(s) before its block", d.name),
                ..at
            });
        }
        let Some(children) = d.children() else {
            return Err(d.error(
                self.file,
                format!("`{}` needs a block: {} {{ … }}", d.name, d.name),
            ));
        };
        for k in children {
            let name = self.key(k);
            if !keys.contains(&name.as_str()) {
                return Err(k.error(
                    self.file,
                    format!(
                        "unknown key `{}` in `{}`{} (expected one of: {})",
                        k.name,
                        d.name,
                        suggest(&name, keys),
                        keys.join(", ")
                    ),
                ));
            }
            if k.block.is_some() {
                return Err(k.error(self.file, format!("`{}` takes values, not a block", k.name)));
            }
            if k.values.is_empty() && !(d.name.eq_ignore_ascii_case("dedupe") && name == "data") {
                return Err(k.error(self.file, format!("`{}` needs a value", k.name)));
            }
        }
        Ok(children)
    }

    fn one<'d>(&self, d: &'d Directive) -> Result<&'d Value, ConfigError> {
        match d.values.as_slice() {
            [v] => Ok(v),
            [_, extra, ..] => Err(extra.error(self.file, format!("`{}` takes one value", d.name))),
            [] => Err(d.error(self.file, format!("`{}` needs a value", d.name))),
        }
    }

    fn many(&self, d: &Directive) -> Result<Vec<String>, ConfigError> {
        if d.values.is_empty() {
            return Err(d.error(self.file, format!("`{}` needs a value", d.name)));
        }
        Ok(d.values.iter().map(|v| v.text.clone()).collect())
    }

    fn values<'d, const N: usize>(&self, d: &'d Directive) -> Result<[&'d Value; N], ConfigError> {
        if d.block.is_some() || d.values.len() != N {
            return Err(d.error(
                self.file,
                format!("`{}` takes {N} values and no block", d.name),
            ));
        }
        Ok(std::array::from_fn(|i| &d.values[i]))
    }

    fn number<T: std::str::FromStr>(&self, v: &Value) -> Result<T, ConfigError> {
        v.text.parse().map_err(|_| {
            v.error(
                self.file,
                format!("expected a whole number in range, found `{}`", v.text),
            )
        })
    }

    fn fraction(&self, v: &Value, min: f64, max: f64) -> Result<f64, ConfigError> {
        match v.text.parse::<f64>() {
            Ok(x) if (min..=max).contains(&x) => Ok(x),
            _ => Err(v.error(
                self.file,
                format!("expected a number from {min} to {max}, found `{}`", v.text),
            )),
        }
    }

    fn duration(&self, v: &Value) -> Result<Duration, ConfigError> {
        let d = parse_duration(&v.text).ok_or_else(|| {
            v.error(
                self.file,
                format!(
                    "expected a duration with a unit (ms, s, min, h, d), found `{}`",
                    v.text
                ),
            )
        })?;
        if d > MAX_DURATION {
            return Err(v.error(
                self.file,
                format!("duration `{}` is over the bound of 100 years", v.text),
            ));
        }
        Ok(d)
    }

    fn source(&self, d: &Directive) -> Result<SourceConfig, ConfigError> {
        let kind = d.values.first().map(|v| v.text.to_ascii_lowercase());
        let (mut host, mut port, mut app) = ("127.0.0.1".to_string(), None, None);
        let (mut session, mut filters, mut channels, mut patterns) =
            (None, Vec::new(), Vec::new(), Vec::new());
        let keys: &[&str] = match kind.as_deref() {
            Some("sink") => &["host", "port", "session", "filter", "app"],
            Some("kids") => &["host", "port", "subscribe", "psubscribe", "app"],
            _ => {
                return Err(d.error(
                    self.file,
                    "`source` is `source sink { … }` or `source kids { … }`",
                ));
            }
        };
        for k in self.block(d, 1, keys)? {
            match self.key(k).as_str() {
                "host" => host = self.one(k)?.text.clone(),
                "port" => port = Some(self.number::<u16>(self.one(k)?)?),
                "session" => session = Some(self.one(k)?.text.clone()),
                "filter" => filters.extend(self.many(k)?),
                "subscribe" => channels.extend(self.many(k)?),
                "psubscribe" => patterns.extend(self.many(k)?),
                _ => app = Some(self.one(k)?.text.clone()),
            }
        }
        let Some(app) = app else {
            return Err(d.error(
                self.file,
                "a source needs `app NAME;` (the application of its events)",
            ));
        };
        if kind.as_deref() == Some("sink") {
            let (Some(session), false) = (session, filters.is_empty()) else {
                return Err(d.error(
                    self.file,
                    "`source sink` needs `session NAME;` and at least one `filter`",
                ));
            };
            Ok(SourceConfig::Sink(SinkSourceConfig {
                addr: format!("{host}:{}", port.unwrap_or(3390)),
                session,
                filters,
                app,
            }))
        } else {
            if channels.is_empty() && patterns.is_empty() {
                return Err(d.error(self.file, "`source kids` needs `subscribe` or `psubscribe`"));
            }
            Ok(SourceConfig::Kids(KidsSourceConfig {
                addr: format!("{host}:{}", port.unwrap_or(3388)),
                channels,
                patterns,
                app,
            }))
        }
    }
}

/// The longest duration a configuration may give (100 years): time
/// arithmetic on it cannot overflow, and in whole seconds it fits
/// beanstalk's 32-bit delays and TTRs.
const MAX_DURATION: Duration = Duration::from_secs(100 * 36525 * 864);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses() {
        let src = include_str!("../../../examples/conf/miller.conf");
        let c = MillerConfig::parse("miller.conf", src).unwrap();
        assert_eq!(c.beanstalk, "127.0.0.1:11300");
        assert_eq!(c.sources.len(), 2);
        assert_eq!(
            c.sources[0],
            SourceConfig::Sink(SinkSourceConfig {
                addr: "127.0.0.1:3390".into(),
                session: "miller-zhihu".into(),
                filters: vec!["activity.*".into()],
                app: "zhihu".into(),
            })
        );
        assert_eq!(c.worker.tubes, ["zhihu"]);
        assert_eq!(c.worker.concurrency, 4);
        assert_eq!(c.master.put.ttr, Duration::from_secs(60));
        assert_eq!(c.setting("demo_output"), Some("/tmp/miller-demo.log"));
    }

    #[test]
    fn every_key() {
        let src = "tube a b; job { priority 5; ttr 2s; delay 0; }\n\
                   master { batch 7; max_job_size 100; dedupe_keys 9; }\n\
                   worker { tubes a c; concurrency 3; grace 500ms; run_limit 5min; reserve_timeout 1s; max_job_size 200; }\n\
                   retry { base 2s; factor 3; max_delay 1h; max_attempts 4; jitter 0.5; seed 11; }\n\
                   source kids { port 1; subscribe x y; psubscribe 'p.*'; app a; }\n\
                   dedupe a h { field MemberId; window 1min; }";
        let c = MillerConfig::parse("t", src).unwrap();
        assert_eq!(c.master.tube("a"), "b");
        assert_eq!(
            (c.master.put.priority, c.worker.default_ttr),
            (5, Duration::from_secs(2))
        );
        assert_eq!(
            (
                c.master.batch,
                c.master.max_envelope,
                c.master.dedupe_max_keys
            ),
            (7, 100, 9)
        );
        assert_eq!(c.worker.tubes, ["a", "c"]);
        assert_eq!(
            (c.worker.grace, c.worker.run_limit),
            (Duration::from_millis(500), Some(Duration::from_secs(300)))
        );
        let r = c.worker.retry;
        assert_eq!(
            (r.base, r.factor, r.max_attempts, r.jitter, c.worker.seed),
            (Duration::from_secs(2), 3.0, 4, 0.5, 11)
        );
        assert_eq!(
            c.sources[0],
            SourceConfig::Kids(KidsSourceConfig {
                addr: "127.0.0.1:1".into(),
                channels: vec!["x".into(), "y".into()],
                patterns: vec!["p.*".into()],
                app: "a".into(),
            })
        );
        let mut reg = Registry::new();
        reg.on("e", "a", "h", |_, _| async { Ok(()) });
        c.apply_dedupe(&mut reg).unwrap();
        assert!(reg.handler("a", "h").unwrap().dedupe.is_some());
        let e = c.apply_dedupe(&mut Registry::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t:6:1: `dedupe`: no handler \"h\" registered for app \"a\""
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "beanstalk { prot 1; }",
                "m.conf:1:13: unknown key `prot` in `beanstalk` (did you mean `port`?) (expected one of: host, port)",
            ),
            (
                "\nworker { grace 5; }",
                "m.conf:2:16: expected a duration with a unit (ms, s, min, h, d), found `5`",
            ),
            (
                "retry { jitter 2; }",
                "m.conf:1:16: expected a number from 0 to 1, found `2`",
            ),
            (
                "source sink { app a; }",
                "m.conf:1:1: `source sink` needs `session NAME;` and at least one `filter`",
            ),
            (
                "source redis { app a; }",
                "m.conf:1:1: `source` is `source sink { … }` or `source kids { … }`",
            ),
            ("bogus 1;", "m.conf:1:1: unknown directive `bogus`"),
            (
                "beanstalk { port 70000; }",
                "m.conf:1:18: expected a whole number in range, found `70000`",
            ),
            (
                "dedupe a h { window 1s; }",
                "m.conf:1:1: `dedupe` needs a key (`field PATH;` or `data;`) and a `window`",
            ),
            ("set a;", "m.conf:1:1: `set` takes 2 values and no block"),
            (
                "worker { grace 36526d; }",
                "m.conf:1:16: duration `36526d` is over the bound of 100 years",
            ),
            (
                "retry { max_delay 18446744073709551s; }",
                "m.conf:1:19: duration `18446744073709551s` is over the bound of 100 years",
            ),
        ];
        for (src, want) in cases {
            let e = MillerConfig::parse("m.conf", src).unwrap_err();
            assert_eq!(e.to_string(), want, "{src}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1day"), Some(Duration::from_secs(86400)));
        for bad in ["", "5", "s", "1.5s", "1w", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}

//! The statsd line protocol: parsing (bounded, allocation-free), key sanitising, encoding, and a TCP line decoder.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::error::{Error, LineError};

/// The type of a statsd metric, the field after the first `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `c`: a counter, summed over the flush interval.
    Counter,
    /// `g`: a gauge, the last value; `+N`/`-N` change it.
    Gauge,
    /// `ms`: a timer, every sample kept for percentiles.
    Timer,
    /// `h`: a histogram, aggregated as a timer.
    Histogram,
    /// `d`: a distribution, aggregated as a timer.
    Distribution,
    /// `s`: a set, its unique members counted.
    Set,
    /// `kv`: a key/value pair, passed through unaggregated (statsite).
    KeyValue,
}

impl Kind {
    /// The type as written on the wire (`c`, `g`, `ms`, `h`, `d`, `s`, `kv`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "c",
            Kind::Gauge => "g",
            Kind::Timer => "ms",
            Kind::Histogram => "h",
            Kind::Distribution => "d",
            Kind::Set => "s",
            Kind::KeyValue => "kv",
        }
    }

    fn parse(bytes: &[u8]) -> Option<Kind> {
        Some(match bytes {
            b"c" => Kind::Counter,
            b"g" => Kind::Gauge,
            b"ms" => Kind::Timer,
            b"h" => Kind::Histogram,
            b"d" => Kind::Distribution,
            b"s" => Kind::Set,
            b"kv" => Kind::KeyValue,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds on what one line may hold. Going over any of them makes the line bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line, in bytes, without its newline. Default 8192.
    pub max_line: usize,
    /// Longest metric name, in bytes, before sanitising. Default 512.
    pub max_name: usize,
    /// Most values on one line (`name:1:2:3|ms` has three). Default 512.
    pub max_values: usize,
    /// Most tags on one line. Default 64.
    pub max_tags: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 8192,
            max_name: 512,
            max_values: 512,
            max_tags: 64,
        }
    }
}

/// One parsed statsd line. It borrows the packet it came from.
///
/// Its values were all checked when it was parsed; [`Line::values`] reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    name: Cow<'a, str>,
    kind: Kind,
    /// The first value, read once by the parser.
    first: Value<'a>,
    /// The values after the first, as sent (`2:3` of `name:1:2:3|ms`).
    more: Option<&'a [u8]>,
    rate: f64,
    tags: Option<&'a [u8]>,
    container: Option<&'a [u8]>,
    timestamp: Option<u64>,
}

/// One value of a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A number: a counter increment, a gauge's new value, a timer sample, a kv value.
    Number(f64),
    /// A gauge change, written with a leading `+` or `-`; the sign is kept.
    Delta(f64),
    /// A set member, as sent.
    Member(&'a [u8]),
}

impl<'a> Line<'a> {
    /// The metric name, sanitised by [`sanitize`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The metric type.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The sample rate (`@0.1`), 1 when absent. Always in (0, 1].
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The raw tags (`#a:b,c`), as sent, without the `#`.
    pub fn tags(&self) -> Option<&'a [u8]> {
        self.tags
    }

    /// The tags, split: `(key, value)`, value `None` for a tag without `:`.
    pub fn tag_pairs(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        self.tags
            .into_iter()
            .flat_map(|t| t.split(|&b| b == b','))
            .filter(|t| !t.is_empty())
            .map(|t| match t.iter().position(|&b| b == b':') {
                Some(i) => (&t[..i], Some(&t[i + 1..])),
                None => (t, None),
            })
    }

    /// The container id (`c:abc`), as sent.
    pub fn container(&self) -> Option<&'a [u8]> {
        self.container
    }

    /// The client's timestamp (`T1700000000`), in Unix seconds.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }
}

impl<'a> Line<'a> {
    /// The values, in the order sent. They were checked when the line was
    /// parsed, so every one of them is here.
    pub fn values(&self) -> Values<'a> {
        Values {
            first: Some(self.first),
            rest: self.more,
            kind: self.kind,
        }
    }

    /// How many values the line holds.
    pub fn value_count(&self) -> usize {
        self.more
            .map_or(0, |m| m.iter().filter(|&&b| b == b':').count() + 1)
            + 1
    }
}

/// The values of a [`Line`], from [`Line::values`].
#[derive(Debug, Clone)]
pub struct Values<'a> {
    first: Option<Value<'a>>,
    rest: Option<&'a [u8]>,
    kind: Kind,
}

impl<'a> Iterator for Values<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            let rest = self.rest?;
            let (one, tail) = match memchr::memchr(b':', rest) {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            self.rest = tail;
            // Values were checked by the parser; one that does not read here
            // cannot occur, and is skipped rather than trusted.
            if let Ok(v) = value(self.kind, one) {
                return Some(v);
            }
        }
    }
}

/// Parses statsd lines under a set of [`Limits`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parser {
    limits: Limits,
}

impl Parser {
    /// A parser with these bounds.
    pub fn new(limits: Limits) -> Self {
        Parser { limits }
    }

    /// The bounds in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Parses one line, without its newline.
    ///
    /// The grammar is `name:value[:value...]|type[|@rate][|#tag[:v],...][|c:container][|T<unix seconds>]`;
    /// the optional fields may come in any order, each at most once.
    ///
    /// # Errors
    /// A [`LineError`] naming what is wrong; nothing of a bad line counts.
    pub fn parse_line<'a>(&self, line: &'a [u8]) -> Result<Line<'a>, LineError> {
        if memchr::memchr(b'\n', line).is_some() {
            return Err(LineError::BadField);
        }
        match self.scan(line, 0, std::str::from_utf8(line).ok()) {
            (Some(parsed), _) => parsed,
            (None, _) => Err(LineError::NoValue),
        }
    }

    /// Reads the line that starts at `start` in `p` (it ends at `\n`, a `\r`
    /// before it dropped, or at the end of `p`) in one pass over its bytes:
    /// the line, or `None` when it is empty, and where the next one starts.
    /// `text` is `p` when `p` is valid UTF-8, so a clean name is borrowed
    /// without a second check.
    #[inline]
    pub(crate) fn scan<'a>(
        &self,
        p: &'a [u8],
        start: usize,
        text: Option<&'a str>,
    ) -> (Option<Result<Line<'a>, LineError>>, usize) {
        let len = p.len();
        // The name ends at `:`, `|` or `\n`; note whether it is clean.
        let mut colon = start;
        let mut clean = true;
        while colon < len {
            let b = p[colon];
            if !name_byte(b) {
                if b == b':' || b == b'|' || b == b'\n' {
                    break;
                }
                clean = false;
            }
            colon += 1;
        }
        // The values end at `|` or `\n`.
        let mut bar = if colon < len && p[colon] == b':' {
            colon + 1
        } else {
            colon
        };
        while bar < len && p[bar] != b'|' && p[bar] != b'\n' {
            bar += 1;
        }
        // The type and fields end at `\n`.
        let mut end = bar;
        while end < len && p[end] != b'\n' {
            end += 1;
        }
        let next = end + 1;
        let line_end = if end > start && p[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        if line_end == start {
            return (None, next);
        }
        let result = if line_end - start > self.limits.max_line {
            Err(LineError::TooLong)
        } else if colon >= line_end || p[colon] != b':' {
            Err(LineError::NoValue)
        } else if bar >= line_end || p[bar] != b'|' {
            Err(LineError::NoType)
        } else {
            let name_text = if clean {
                text.and_then(|t| t.get(start..colon))
            } else {
                None
            };
            self.finish(
                &p[start..colon],
                name_text,
                &p[colon + 1..bar],
                &p[bar + 1..line_end],
            )
        };
        (Some(result), next)
    }

    /// The rest of a line, once split: name (and its text when clean),
    /// values, and type with fields.
    fn finish<'a>(
        &self,
        raw_name: &'a [u8],
        name_text: Option<&'a str>,
        values: &'a [u8],
        fields: &'a [u8],
    ) -> Result<Line<'a>, LineError> {
        let limits = &self.limits;
        if raw_name.len() > limits.max_name {
            return Err(LineError::NameTooLong);
        }
        let name = match name_text {
            Some(clean) => Cow::Borrowed(clean),
            None => sanitize(raw_name),
        };
        if name.is_empty() {
            return Err(LineError::EmptyName);
        }
        let mut fields = fields.split(|&b| b == b'|');
        let kind = fields
            .next()
            .and_then(Kind::parse)
            .ok_or(LineError::UnknownType)?;
        let (first, more) = match values.iter().position(|&b| b == b':') {
            None => (value(kind, values)?, None),
            Some(i) => {
                let more = &values[i + 1..];
                let mut count = 1;
                for one in more.split(|&b| b == b':') {
                    count += 1;
                    if count > limits.max_values {
                        return Err(LineError::TooManyValues);
                    }
                    value(kind, one)?;
                }
                (value(kind, &values[..i])?, Some(more))
            }
        };
        let mut out = Line {
            name,
            kind,
            first,
            more,
            rate: 1.0,
            tags: None,
            container: None,
            timestamp: None,
        };
        let mut seen_rate = false;
        for field in fields {
            match field {
                [b'@', rate @ ..] if !seen_rate => {
                    seen_rate = true;
                    out.rate = number(rate)
                        .filter(|r| *r > 0.0 && *r <= 1.0 && (1.0 / r).is_finite())
                        .ok_or(LineError::BadSampleRate)?;
                }
                [b'#', tags @ ..] if out.tags.is_none() => {
                    let n = tags.split(|&b| b == b',').filter(|t| !t.is_empty()).count();
                    if n > limits.max_tags {
                        return Err(LineError::TooManyTags);
                    }
                    out.tags = Some(tags);
                }
                [b'c', b':', id @ ..] if out.container.is_none() => out.container = Some(id),
                [b'T', ts @ ..] if out.timestamp.is_none() => {
                    out.timestamp = Some(unsigned(ts).ok_or(LineError::BadTimestamp)?);
                }
                _ => return Err(LineError::BadField),
            }
        }
        Ok(out)
    }

    /// The lines of a packet (a UDP datagram, or a chunk from [`LineDecoder`]),
    /// split on `\n`; a `\r` before the newline is dropped and empty lines are skipped.
    pub fn lines<'a>(&self, packet: &'a [u8]) -> Lines<'a> {
        Lines {
            parser: *self,
            packet,
            // Checked once here, so clean names need no check of their own.
            text: std::str::from_utf8(packet).ok(),
            at: 0,
        }
    }
}

/// The lines of a packet, from [`Parser::lines`]: each parsed, or why not.
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    parser: Parser,
    packet: &'a [u8],
    text: Option<&'a str>,
    at: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<Line<'a>, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.at < self.packet.len() {
            let (line, next) = self.parser.scan(self.packet, self.at, self.text);
            self.at = next;
            if line.is_some() {
                return line;
            }
        }
        None
    }
}

/// Reads one value of a line of this kind.
#[inline]
fn value(kind: Kind, raw: &[u8]) -> Result<Value<'_>, LineError> {
    match kind {
        Kind::Set => {
            if raw.is_empty() {
                Err(LineError::BadValue)
            } else {
                Ok(Value::Member(raw))
            }
        }
        Kind::Gauge if matches!(raw.first(), Some(b'+' | b'-')) => {
            number(raw).map(Value::Delta).ok_or(LineError::BadValue)
        }
        _ => number(raw).map(Value::Number).ok_or(LineError::BadValue),
    }
}

/// A finite decimal number: optional sign, digits with an optional fraction,
/// an optional exponent. `inf`, `nan`, hex and empty strings are not numbers.
#[inline]
fn number(raw: &[u8]) -> Option<f64> {
    let (negative, digits) = match raw {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, raw),
    };
    // The common case, a short integer, without the general parser.
    if !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_digit) {
        let n = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')) as f64;
        return Some(if negative { -n } else { n });
    }
    match digits.first() {
        Some(b) if b.is_ascii_digit() || *b == b'.' => {}
        _ => return None,
    }
    if !digits
        .iter()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A decimal integer without sign, at most 19 digits.
fn unsigned(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 19 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(raw.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The bytes a sanitised name keeps as they are.
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b';' | b'=');
        b += 1;
    }
    table
};

fn name_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)]
}

/// A counter line of the simplest and commonest form, `name:123|c`: found by
/// [`simple_counter`] without building a [`Line`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SimpleCounter {
    /// Where the name ends (it starts where the scan started).
    pub(crate) name_end: usize,
    /// The value, a whole number.
    pub(crate) value: f64,
    /// Where the next line starts.
    pub(crate) next: usize,
}

/// Eight copies of a byte.
const fn rep(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// High bit of each byte of `w` (all bytes below 0x80) set when the byte is in `lo..=hi`.
const fn in_range(w: u64, lo: u8, hi: u8) -> u64 {
    let at_least_lo = w.wrapping_add(rep(0x80 - lo));
    let above_hi = w.wrapping_add(rep(0x7f - hi));
    at_least_lo & !above_hi & rep(0x80)
}

/// High bit of each byte of `w` set when that byte is an ASCII letter, a
/// digit, `-`, `.` or `_` (a name byte that needs no sanitising).
const fn clean8(w: u64) -> u64 {
    let ascii = !w & rep(0x80);
    let w = w & !rep(0x80);
    let m = in_range(w, b'a', b'z')
        | in_range(w, b'A', b'Z')
        | in_range(w, b'0', b'9')
        | in_range(w, b'-', b'.')
        | in_range(w, b'_', b'_');
    m & ascii
}

/// Reads `p[start..]` as `name:digits|c` followed by `\n`, `\r\n` or the end,
/// with a name that needs no sanitising, at most 15 digits, and within the
/// limits: the one shape of line that most traffic has. Anything else
/// (`None`) goes through [`Parser::scan`], which gives the same result for
/// these lines; this only skips building a [`Line`].
#[inline]
pub(crate) fn simple_counter(p: &[u8], start: usize, limits: &Limits) -> Option<SimpleCounter> {
    let len = p.len();
    let mut i = start;
    // Eight name bytes at a time.
    while let Some(chunk) = p.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let bad = !clean8(w) & rep(0x80);
        if bad != 0 {
            i += (bad.trailing_zeros() / 8) as usize;
            break;
        }
        i += 8;
    }
    while i < len && name_byte(p[i]) {
        i += 1;
    }
    let name_end = i;
    if name_end == start || name_end - start > limits.max_name || p.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    let digits = i;
    let mut n = 0u64;
    while i < len && p[i].is_ascii_digit() {
        if i - digits == 15 {
            return None;
        }
        n = n * 10 + u64::from(p[i] - b'0');
        i += 1;
    }
    if i == digits || p.get(i..i + 2) != Some(b"|c") {
        return None;
    }
    i += 2;
    let next = match p.get(i) {
        None => i,
        Some(b'\n') => i + 1,
        Some(b'\r') if p.get(i + 1) == Some(&b'\n') => i + 2,
        Some(_) => return None,
    };
    if i - start > limits.max_line {
        return None;
    }
    Some(SimpleCounter {
        name_end,
        value: n as f64,
        next,
    })
}

/// Sanitises a metric name as Etsy statsd does, so that no name can break a
/// carbon line: each run of whitespace becomes `_`, `/` becomes `-`, and every
/// byte that is not an ASCII letter, digit, `_`, `-`, `.`, `;` or `=` is
/// removed (`;` and `=` are kept for graphite tags: `name;tag=value`).
///
/// Borrows when the name is already clean.
///
/// ```
/// use stats_core::sanitize;
/// assert_eq!(sanitize(b"api.hits"), "api.hits");
/// assert_eq!(sanitize(b"my  key/with:odd*chars"), "my_key-withoddchars");
/// ```
pub fn sanitize(raw: &[u8]) -> Cow<'_, str> {
    if raw.iter().all(|&b| name_byte(b)) {
        // Only ASCII bytes: always UTF-8.
        if let Ok(clean) = std::str::from_utf8(raw) {
            return Cow::Borrowed(clean);
        }
    }
    let mut out = String::with_capacity(raw.len());
    let mut in_space = false;
    for &b in raw {
        if b.is_ascii_whitespace() || b == 0x0b {
            if !in_space {
                out.push('_');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        if b == b'/' {
            out.push('-');
        } else if name_byte(b) {
            out.push(char::from(b));
        }
    }
    Cow::Owned(out)
}

/// A metric to write as one statsd line: the client side of [`Parser`].
///
/// ```
/// use bytes::BytesMut;
/// use stats_core::{Kind, Metric, Parser, Value};
///
/// let mut out = BytesMut::new();
/// Metric::new("api.latency", Kind::Timer, &[Value::Number(12.5), Value::Number(7.0)])
///     .rate(0.5)
///     .encode(&mut out)
///     .unwrap();
/// assert_eq!(&out[..], b"api.latency:12.5:7|ms|@0.5\n");
/// let line = Parser::default().parse_line(&out[..out.len() - 1]).unwrap();
/// assert_eq!(line.values().collect::<Vec<_>>(), [Value::Number(12.5), Value::Number(7.0)]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Metric<'a> {
    name: &'a str,
    kind: Kind,
    values: &'a [Value<'a>],
    rate: Option<f64>,
    tags: &'a [(&'a str, Option<&'a str>)],
    container: Option<&'a str>,
    timestamp: Option<u64>,
}

impl<'a> Metric<'a> {
    /// A metric of these values, without sample rate, tags or timestamp.
    pub fn new(name: &'a str, kind: Kind, values: &'a [Value<'a>]) -> Self {
        Metric {
            name,
            kind,
            values,
            rate: None,
            tags: &[],
            container: None,
            timestamp: None,
        }
    }

    /// Sets the sample rate, written as `|@rate`.
    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Sets the tags, written as `|#k:v,k2`.
    pub fn tags(mut self, tags: &'a [(&'a str, Option<&'a str>)]) -> Self {
        self.tags = tags;
        self
    }

    /// Sets the container id, written as `|c:id`.
    pub fn container(mut self, id: &'a str) -> Self {
        self.container = Some(id);
        self
    }

    /// Sets the timestamp, in Unix seconds, written as `|T<ts>`.
    pub fn timestamp(mut self, ts: u64) -> Self {
        self.timestamp = Some(ts);
        self
    }

    /// Appends the line, with its newline, to `dst`. The name is written sanitised.
    ///
    /// # Errors
    /// Nothing is written when the metric cannot be one line that parses back
    /// to it: no values, an empty name, a value that does not suit the kind (a
    /// gauge's absolute value must not be negative: `-5` is a change), a set
    /// member or tag holding a separator, a sample rate outside (0, 1].
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), LineError> {
        let name = sanitize(self.name.as_bytes());
        if name.is_empty() {
            return Err(LineError::EmptyName);
        }
        if self.values.is_empty() {
            return Err(LineError::NoValue);
        }
        let start = dst.len();
        let result = self.write(&name, dst);
        if result.is_err() {
            dst.truncate(start);
        }
        result
    }

    fn write(&self, name: &str, dst: &mut BytesMut) -> Result<(), LineError> {
        use std::fmt::Write as _;
        let clean = |s: &str| !s.is_empty() && !s.bytes().any(|b| b"|:,\n\r#".contains(&b));
        dst.put_slice(name.as_bytes());
        for v in self.values {
            dst.put_u8(b':');
            match (*v, self.kind) {
                (Value::Member(m), Kind::Set)
                    if !m.is_empty() && !m.iter().any(|b| b"|:\n\r".contains(b)) =>
                {
                    dst.put_slice(m)
                }
                (Value::Delta(d), Kind::Gauge) if d.is_finite() => {
                    let _ = write!(
                        dst,
                        "{}{}",
                        if d.is_sign_negative() { "-" } else { "+" },
                        d.abs()
                    );
                }
                (Value::Number(n), kind) if n.is_finite() && kind != Kind::Set => {
                    if kind == Kind::Gauge && n.is_sign_negative() {
                        return Err(LineError::BadValue);
                    }
                    let _ = write!(dst, "{n}");
                }
                _ => return Err(LineError::BadValue),
            }
        }
        dst.put_u8(b'|');
        dst.put_slice(self.kind.as_str().as_bytes());
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(LineError::BadSampleRate);
            }
            let _ = write!(dst, "|@{rate}");
        }
        if !self.tags.is_empty() {
            dst.put_slice(b"|#");
            for (i, (key, value)) in self.tags.iter().enumerate() {
                if !clean(key) || value.is_some_and(|v| !clean(v)) {
                    return Err(LineError::BadField);
                }
                if i > 0 {
                    dst.put_u8(b',');
                }
                dst.put_slice(key.as_bytes());
                if let Some(value) = value {
                    dst.put_u8(b':');
                    dst.put_slice(value.as_bytes());
                }
            }
        }
        if let Some(id) = self.container {
            if id.bytes().any(|b| b"|\n\r".contains(&b)) {
                return Err(LineError::BadField);
            }
            dst.put_slice(b"|c:");
            dst.put_slice(id.as_bytes());
        }
        if let Some(ts) = self.timestamp {
            let _ = write!(dst, "|T{ts}");
        }
        dst.put_u8(b'\n');
        Ok(())
    }
}

/// Frames newline-separated statsd lines on a stream (TCP).
///
/// Each decoded item is a chunk of whole lines, newlines included, to read
/// with [`Parser::lines`], which refuses a line in it longer than the bound
/// ([`LineError::TooLong`]). The part of a line still waiting for its
/// newline is bounded here: once it is longer than the bound (its `\r`
/// aside) it is an error ([`LineError::TooLong`]), the decoder drops it, up
/// to its newline even if that comes later, and carries on, so the caller
/// may keep decoding. Either way each longer line is refused once. After
/// `Ok(None)` the buffer holds part of one line: at most the bound and a `\r`.
///
/// ```
/// use bytes::BytesMut;
/// use stats_core::{Error, LineDecoder, LineError};
/// use tokio_util::codec::Decoder;
///
/// let mut decoder = LineDecoder::new(8);
/// let mut buf = BytesMut::from(&b"a:1|c\nb:2|c\nway.too.lo"[..]);
/// assert_eq!(decoder.decode(&mut buf)?.as_deref(), Some(&b"a:1|c\nb:2|c\n"[..]));
/// assert!(matches!(decoder.decode(&mut buf), Err(Error::Line(LineError::TooLong))));
/// buf.extend_from_slice(b"ng:1|c\nc:");
/// assert_eq!(decoder.decode(&mut buf)?, None, "the rest of the long line is dropped");
/// assert_eq!(&buf[..], b"c:");
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max_line: usize,
    discarding: bool,
}

impl LineDecoder {
    /// A decoder that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineDecoder {
            max_line,
            discarding: false,
        }
    }

    /// True while the rest of an overlong line is being dropped.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }
}

impl Default for LineDecoder {
    /// Bounded by [`Limits::default`]'s `max_line`.
    fn default() -> Self {
        LineDecoder::new(Limits::default().max_line)
    }
}

impl Decoder for LineDecoder {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        if self.discarding {
            match memchr::memchr(b'\n', src) {
                Some(i) => {
                    let _ = src.split_to(i + 1);
                    self.discarding = false;
                }
                None => {
                    src.clear();
                    return Ok(None);
                }
            }
        }
        // The whole lines: a line over the bound among them is the
        // parser's to refuse (`Parser::lines`), with the same rule.
        if let Some(i) = memchr::memrchr(b'\n', src) {
            return Ok(Some(src.split_to(i + 1).freeze()));
        }
        // Part of a line: over the bound already, unless its last byte is a
        // `\r` that the newline still to come would leave out.
        let over = match src.len().checked_sub(self.max_line) {
            None | Some(0) => false,
            Some(1) => src.last() != Some(&b'\r'),
            Some(_) => true,
        };
        if over {
            src.clear();
            self.discarding = true;
            return Err(Error::Line(LineError::TooLong));
        }
        Ok(None)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(src)? {
            Some(chunk) => Ok(Some(chunk)),
            None if src.is_empty() || self.discarding => {
                src.clear();
                Ok(None)
            }
            None => Ok(Some(src.split().freeze())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean8_matches_the_byte_table_for_every_byte() {
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b, b'a', b'Z', b'0', b'.', b'-', b'_', b]);
            let m = clean8(w);
            let want = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
            assert_eq!(m & 0x80 != 0, want, "byte {b:#x}");
            assert_eq!(m >> 56 & 0x80 != 0, want, "byte {b:#x} last");
            assert_eq!(
                m & 0x00ff_ffff_ffff_ff00,
                0x0080_8080_8080_8000,
                "neighbours of {b:#x}"
            );
        }
    }

    #[test]
    fn simple_counters_and_what_they_leave_to_the_parser() {
        let l = Limits::default();
        let p = b"app.web42.requests:17|c\nb:1|c\r\nc:2|c";
        let a = simple_counter(p, 0, &l).unwrap();
        assert_eq!(
            (&p[..a.name_end], a.value, a.next),
            (&b"app.web42.requests"[..], 17.0, 24)
        );
        let b = simple_counter(p, a.next, &l).unwrap();
        assert_eq!((b.value, b.next), (1.0, 31));
        let c = simple_counter(p, b.next, &l).unwrap();
        assert_eq!((c.value, c.next), (2.0, p.len()));
        for other in [
            &b"a:1|c|@0.5"[..],
            b"a:1|g",
            b"a:-1|c",
            b"a:1.5|c",
            b"a:1:2|c",
            b"a b:1|c",
            b":1|c",
            b"a:|c",
            b"a:1|cc",
            b"a:1|c\r",
            b"a:1234567890123456|c",
            b"a:99999999999999999999999999999|c",
        ] {
            assert_eq!(
                simple_counter(other, 0, &l),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        let small = Limits {
            max_name: 3,
            max_line: 8,
            ..Limits::default()
        };
        assert_eq!(simple_counter(b"abcd:1|c", 0, &small), None);
        assert_eq!(simple_counter(b"abc:123|c", 0, &small), None);
    }
}

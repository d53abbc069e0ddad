//! The job body: a JSON envelope any worker, in any language, can read.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::proto::DEFAULT_MAX_JOB_SIZE;

/// The schema version this crate writes.
pub const ENVELOPE_VERSION: u32 = 1;

/// A job's body, decoded: the JSON envelope any worker, in any language, can read.
///
/// # Schema (version 1)
///
/// One JSON object, UTF-8, no byte-order mark. The master writes the keys in
/// this order, with no whitespace; readers must accept any order and must
/// ignore keys they do not know (later versions may add some).
///
/// | key | type | meaning |
/// |---|---|---|
/// | `v` | integer | schema version, `1` |
/// | `event` | string | the event name (the topic it was published on, e.g. `activity.INVITE`) |
/// | `app` | string | the application (`zhihu`); the tube is the app's |
/// | `handler` | string | the stable name of the handler that runs it |
/// | `data` | string | the event's data as published, when those bytes are valid UTF-8 |
/// | `data_b64` | string | the event's data as published, standard base64 with padding (RFC 4648 §4), when they are not valid UTF-8 |
/// | `attempt` | integer | tries made *before* this body was put: `0` from the master; in a buried envelope, the number of tries made in all |
/// | `first_seen` | integer | when the master first saw the event, unix milliseconds |
/// | `ttr` | integer | optional: the time-to-run, seconds, the job was put with (workers touch before it ends) |
/// | `last_error` | string | optional: why the last try failed (present in buried envelopes, and only there) |
///
/// Exactly one of `data` and `data_b64` is present. The try a worker is
/// running is `attempt + reserves` (`reserves` from `stats-job`): beanstalk
/// cannot change a body, so retries are counted by the server (and these
/// counters start again at zero when a server restores its jobs after a
/// restart, miller's served engine included: a job may then get more
/// tries than the policy says, never fewer).
///
/// An envelope with `last_error` is a *bury copy*: the worker made it to
/// record why the job was buried. One that a worker receives from a plain
/// `reserve` was either kicked (`stats-job` `kicks` > 0): an operator wants
/// it run again, so it is run (one more try: its `attempt` is already the
/// policy's last); or it was never buried (`kicks` = 0: its worker stopped
/// between putting it and burying it, and its far delay has passed; the
/// original job came back and was handled on its own): it is buried again
/// without running. Workers in other languages must follow the same rule.
///
/// ```text
/// {"v":1,"event":"activity.INVITE","app":"zhihu","handler":"send_invitation_mail","data":"{\"MemberId\":7}","attempt":0,"first_seen":1700000000000,"ttr":60}
/// ```
///
/// Encoding and decoding are bounded: a body over the bound (beanstalkd's
/// default `max-job-size`, 65,535 bytes, unless told otherwise) is an
/// [`EnvelopeError::TooLarge`], never a job beanstalk would refuse later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The event name (a topic).
    pub event: String,
    /// The application.
    pub app: String,
    /// The handler's stable name.
    pub handler: String,
    /// The event's data, as published.
    pub data: Bytes,
    /// Tries made before this body was put (0 from the master).
    pub attempt: u32,
    /// When the master first saw the event, unix milliseconds.
    pub first_seen: u64,
    /// The time-to-run the job was put with, seconds.
    pub ttr: Option<u32>,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

/// Why bytes are not an envelope, or an envelope cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Over the bound (in bytes).
    #[error("envelope of {len} bytes over the bound of {max}")]
    TooLarge {
        /// Its length (or a lower bound of it).
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not JSON, or a key of the wrong type, or one missing.
    #[error("not a job envelope: {0}")]
    Json(String),
    /// A version this crate does not read.
    #[error("envelope version {0} (this worker reads 1)")]
    Version(u32),
    /// Both or neither of `data` and `data_b64`, or bad base64.
    #[error("envelope data: {0}")]
    Data(&'static str),
}

#[derive(Serialize)]
struct Out<'a> {
    v: u32,
    event: &'a str,
    app: &'a str,
    handler: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_b64: Option<String>,
    attempt: u32,
    first_seen: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttr: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
}

#[derive(Deserialize)]
struct In {
    v: u32,
    event: String,
    app: String,
    handler: String,
    data: Option<String>,
    data_b64: Option<String>,
    attempt: u32,
    first_seen: u64,
    ttr: Option<u32>,
    last_error: Option<String>,
}

impl Envelope {
    /// The envelope as JSON, within `max` bytes.
    ///
    /// # Errors
    /// [`EnvelopeError::TooLarge`] over `max`.
    pub fn encode(&self, max: usize) -> Result<Bytes, EnvelopeError> {
        // Base64 grows data by 4/3, JSON escapes up to 6x: refuse early
        // what cannot fit, before building it.
        if self.data.len() > max {
            return Err(EnvelopeError::TooLarge {
                len: self.data.len(),
                max,
            });
        }
        let text = std::str::from_utf8(&self.data).ok();
        let out = Out {
            v: ENVELOPE_VERSION,
            event: &self.event,
            app: &self.app,
            handler: &self.handler,
            data: text,
            data_b64: text.is_none().then(|| base64_encode(&self.data)),
            attempt: self.attempt,
            first_seen: self.first_seen,
            ttr: self.ttr,
            last_error: self.last_error.as_deref(),
        };
        let bytes = serde_json::to_vec(&out).map_err(|e| EnvelopeError::Json(e.to_string()))?;
        if bytes.len() > max {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        Ok(Bytes::from(bytes))
    }

    /// An envelope from a job body of at most `max` bytes.
    ///
    /// # Errors
    /// [`EnvelopeError`]: over the bound, not JSON, a wrong version, bad data.
    pub fn decode(body: &[u8], max: usize) -> Result<Envelope, EnvelopeError> {
        if body.len() > max {
            return Err(EnvelopeError::TooLarge {
                len: body.len(),
                max,
            });
        }
        let i: In = serde_json::from_slice(body).map_err(|e| EnvelopeError::Json(e.to_string()))?;
        if i.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(i.v));
        }
        let data = match (i.data, i.data_b64) {
            (Some(d), None) => Bytes::from(d.into_bytes()),
            (None, Some(b)) => {
                Bytes::from(base64_decode(&b).ok_or(EnvelopeError::Data("data_b64 is not base64"))?)
            }
            _ => return Err(EnvelopeError::Data("exactly one of data and data_b64")),
        };
        Ok(Envelope {
            event: i.event,
            app: i.app,
            handler: i.handler,
            data,
            attempt: i.attempt,
            first_seen: i.first_seen,
            ttr: i.ttr,
            last_error: i.last_error,
        })
    }
}

/// The default bound of an envelope: beanstalkd's default `max-job-size`.
pub const DEFAULT_MAX_ENVELOPE: usize = DEFAULT_MAX_JOB_SIZE as usize;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let s = text.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, chunk) in s.chunks(4).enumerate() {
        let last = ci + 1 == s.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            let v = B64.iter().position(|&x| x == c)? as u32;
            n = (n << 6) | v;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(data: &'static [u8]) -> Envelope {
        Envelope {
            event: "activity.INVITE".into(),
            app: "zhihu".into(),
            handler: "send_invitation_mail".into(),
            data: Bytes::from_static(data),
            attempt: 0,
            first_seen: 1_700_000_000_000,
            ttr: Some(60),
            last_error: None,
        }
    }

    #[test]
    fn golden_bytes_utf8_data() {
        let e = sample(br#"{"MemberId":7}"#);
        let bytes = e.encode(DEFAULT_MAX_ENVELOPE).unwrap();
        assert_eq!(
            &bytes[..],
            br#"{"v":1,"event":"activity.INVITE","app":"zhihu","handler":"send_invitation_mail","data":"{\"MemberId\":7}","attempt":0,"first_seen":1700000000000,"ttr":60}"#
        );
        assert_eq!(Envelope::decode(&bytes, DEFAULT_MAX_ENVELOPE).unwrap(), e);
    }

    #[test]
    fn golden_bytes_binary_data_and_last_error() {
        let mut e = sample(b"\xff\x00ab");
        e.attempt = 5;
        e.ttr = None;
        e.last_error = Some("boom \"x\"".into());
        let bytes = e.encode(DEFAULT_MAX_ENVELOPE).unwrap();
        assert_eq!(
            &bytes[..],
            br#"{"v":1,"event":"activity.INVITE","app":"zhihu","handler":"send_invitation_mail","data_b64":"/wBhYg==","attempt":5,"first_seen":1700000000000,"last_error":"boom \"x\""}"#
        );
        assert_eq!(Envelope::decode(&bytes, DEFAULT_MAX_ENVELOPE).unwrap(), e);
    }

    #[test]
    fn readers_accept_any_order_and_unknown_keys() {
        let body = br#"{"first_seen":1,"attempt":2,"future":[1,2],"data":"x","handler":"h","app":"a","event":"e","v":1}"#;
        let e = Envelope::decode(body, 1000).unwrap();
        assert_eq!((e.attempt, &e.data[..], e.ttr), (2, &b"x"[..], None));
    }

    #[test]
    fn bad_bodies_are_errors() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "not a job envelope"),
            (b"{\"v\":2}", "not a job envelope"),
            (
                br#"{"v":2,"event":"e","app":"a","handler":"h","data":"x","attempt":0,"first_seen":0}"#,
                "version 2",
            ),
            (
                br#"{"v":1,"event":"e","app":"a","handler":"h","attempt":0,"first_seen":0}"#,
                "exactly one",
            ),
            (
                br#"{"v":1,"event":"e","app":"a","handler":"h","data":"x","data_b64":"eA==","attempt":0,"first_seen":0}"#,
                "exactly one",
            ),
            (
                br#"{"v":1,"event":"e","app":"a","handler":"h","data_b64":"e=A=","attempt":0,"first_seen":0}"#,
                "not base64",
            ),
        ];
        for (body, want) in cases {
            let e = Envelope::decode(body, 1000).unwrap_err().to_string();
            assert!(e.contains(want), "{body:?}: {e}");
        }
    }

    #[test]
    fn bounds() {
        let e = sample(b"0123456789");
        let len = e.encode(1000).unwrap().len();
        assert!(matches!(
            e.encode(len - 1),
            Err(EnvelopeError::TooLarge { .. })
        ));
        assert!(e.encode(len).is_ok());
        assert!(matches!(
            Envelope::decode(&[b' '; 11], 10),
            Err(EnvelopeError::TooLarge { len: 11, max: 10 })
        ));
        let big = Envelope {
            data: Bytes::from(vec![b'a'; 70_000]),
            ..e
        };
        assert!(matches!(
            big.encode(DEFAULT_MAX_ENVELOPE),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn base64_round_trips_every_length_and_refuses_garbage() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..40 {
            let enc = base64_encode(&data[..n]);
            assert_eq!(base64_decode(&enc).as_deref(), Some(&data[..n]), "{n}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        for bad in ["Zm8", "Zm8=Zm8=", "Z===", "Zm!=", "===="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        fn envelope() -> impl Strategy<Value = Envelope> {
            (
                ".{0,20}",
                ".{0,20}",
                ".{0,20}",
                prop_oneof![
                    ".{0,40}".prop_map(|s| Bytes::from(s.into_bytes())),
                    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
                ],
                any::<u32>(),
                any::<u64>(),
                proptest::option::of(any::<u32>()),
                proptest::option::of(".{0,40}"),
            )
                .prop_map(
                    |(event, app, handler, data, attempt, first_seen, ttr, last_error)| Envelope {
                        event,
                        app,
                        handler,
                        data,
                        attempt,
                        first_seen,
                        ttr,
                        last_error,
                    },
                )
        }

        proptest! {
            #[test]
            fn envelopes_round_trip(e in envelope()) {
                let body = e.encode(1 << 20).unwrap();
                prop_assert_eq!(Envelope::decode(&body, 1 << 20).unwrap(), e);
                // Cut anywhere, it is an error, never a panic.
                for n in 0..body.len() {
                    prop_assert!(Envelope::decode(&body[..n], 1 << 20).is_err());
                }
                let too_large = matches!(Envelope::decode(&body, body.len() - 1), Err(EnvelopeError::TooLarge { .. }));
                prop_assert!(too_large);
            }
        }
    }
}

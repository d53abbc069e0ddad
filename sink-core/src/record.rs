//! The records sink writes to its segment log, and their byte layout.
//!
//! Every record is one segment-log record (length, crc32, payload; see
//! [`kids_core::SegmentLog`]) whose payload starts with a kind byte:
//!
//! ```text
//!  1 message      [1][offset u64][arrival ms u64][topic len u32][topic][payload ...]
//!  2 stream entry [2][offset u64][stream operation (XADD) ...]
//!  3 stream op    [3][stream operation (groups, acks, deletes, trims) ...]
//!  4 session op   [4][op u8][name len u32][name] then by op:
//!                   create: [cursor u64][filters u32]([len u32][filter])*
//!                   ack:    [cursor u64]
//!                   delete: nothing
//!  5 checkpoint   [5][next offset u64]  the state records that follow, up to
//!  6 checkpoint end [6]                  this one, restate all metadata
//! ```
//! Integers are little-endian. Offsets are dense: one per message or stream
//! entry, in the order they were appended. Every length is bounded and
//! checked against the bytes present, so a damaged record is an error,
//! never a panic or an allocation the input did not pay for.

use kids_core::Batch;

use crate::RecordError;

/// Longest topic (or stream key) a message may have.
pub const MAX_TOPIC: usize = 64 * 1024;
/// Longest session name.
pub const MAX_NAME: usize = 1024;
/// Longest session filter.
pub const MAX_FILTER: usize = 1024;
/// Most filters one session may have.
pub const MAX_FILTERS: usize = 256;

const MESSAGE: u8 = 1;
const STREAM_ENTRY: u8 = 2;
const STREAM_OP: u8 = 3;
const SESSION: u8 = 4;
const CHECKPOINT: u8 = 5;
const CHECKPOINT_END: u8 = 6;

const CREATE: u8 = 1;
const ACK: u8 = 2;
const DELETE: u8 = 3;

/// One decoded record, borrowing the bytes it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A published message.
    Message {
        /// Its offset.
        offset: u64,
        /// When it arrived, in ms since the Unix epoch.
        time_ms: u64,
        /// Its topic.
        topic: &'a [u8],
        /// Its payload.
        payload: &'a [u8],
    },
    /// A stream entry (an encoded XADD operation).
    StreamEntry {
        /// Its offset.
        offset: u64,
        /// The stream operation's bytes.
        op: &'a [u8],
    },
    /// Any other stream operation.
    StreamOp(&'a [u8]),
    /// A session operation.
    Session(SessionOp<'a>),
    /// The start of a checkpoint.
    Checkpoint {
        /// The offset the next message takes.
        next_offset: u64,
    },
    /// The end of a checkpoint.
    CheckpointEnd,
}

/// A change to a session, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOp<'a> {
    /// A session was created (or restated by a checkpoint).
    Create {
        /// Its name.
        name: &'a [u8],
        /// The last offset it has acknowledged.
        cursor: u64,
        /// Its topic filters.
        filters: Vec<&'a [u8]>,
    },
    /// A cumulative acknowledgement.
    Ack {
        /// The session.
        name: &'a [u8],
        /// The last offset acknowledged.
        cursor: u64,
    },
    /// The session was deleted or expired.
    Delete {
        /// The session.
        name: &'a [u8],
    },
}

/// Adds a message record to `batch`.
pub fn push_message(
    batch: &mut Batch,
    offset: u64,
    time_ms: u64,
    topic: &[u8],
    payload: &[u8],
) -> usize {
    let mut head = [0u8; 21];
    head[0] = MESSAGE;
    head[1..9].copy_from_slice(&offset.to_le_bytes());
    head[9..17].copy_from_slice(&time_ms.to_le_bytes());
    head[17..21].copy_from_slice(&(topic.len() as u32).to_le_bytes());
    batch.push(&[&head, topic, payload]);
    head.len() + topic.len() + payload.len()
}

/// Adds a stream entry record (an encoded XADD operation) to `batch`.
pub fn push_stream_entry(batch: &mut Batch, offset: u64, op: &[u8]) -> usize {
    let mut head = [0u8; 9];
    head[0] = STREAM_ENTRY;
    head[1..9].copy_from_slice(&offset.to_le_bytes());
    batch.push(&[&head, op]);
    head.len() + op.len()
}

/// Adds a stream operation record to `batch`.
pub fn push_stream_op(batch: &mut Batch, op: &[u8]) -> usize {
    batch.push(&[&[STREAM_OP], op]);
    1 + op.len()
}

/// Adds a session operation record to `batch`.
pub fn push_session(batch: &mut Batch, op: &SessionOp<'_>) -> usize {
    let mut b = Vec::with_capacity(64);
    b.push(SESSION);
    let (code, name) = match op {
        SessionOp::Create { name, .. } => (CREATE, name),
        SessionOp::Ack { name, .. } => (ACK, name),
        SessionOp::Delete { name } => (DELETE, name),
    };
    b.push(code);
    put_bytes(&mut b, name);
    match op {
        SessionOp::Create {
            cursor, filters, ..
        } => {
            b.extend_from_slice(&cursor.to_le_bytes());
            b.extend_from_slice(&(filters.len() as u32).to_le_bytes());
            for f in filters {
                put_bytes(&mut b, f);
            }
        }
        SessionOp::Ack { cursor, .. } => b.extend_from_slice(&cursor.to_le_bytes()),
        SessionOp::Delete { .. } => {}
    }
    batch.push(&[&b]);
    b.len()
}

/// Adds a checkpoint start record to `batch`.
pub fn push_checkpoint(batch: &mut Batch, next_offset: u64) -> usize {
    let mut b = [0u8; 9];
    b[0] = CHECKPOINT;
    b[1..].copy_from_slice(&next_offset.to_le_bytes());
    batch.push(&[&b]);
    b.len()
}

/// Adds a checkpoint end record to `batch`.
pub fn push_checkpoint_end(batch: &mut Batch) -> usize {
    batch.push(&[&[CHECKPOINT_END]]);
    1
}

fn put_bytes(b: &mut Vec<u8>, bytes: &[u8]) {
    b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    b.extend_from_slice(bytes);
}

/// Decodes a record.
///
/// # Errors
/// [`RecordError`] when the bytes are not a whole record of a known kind
/// with every length within its bound.
pub fn decode(payload: &[u8]) -> Result<Record<'_>, RecordError> {
    let mut r = Reader(payload);
    let kind = r.u8()?;
    let record = match kind {
        MESSAGE => {
            let offset = r.u64()?;
            let time_ms = r.u64()?;
            let topic = r.bytes("topic", MAX_TOPIC)?;
            Record::Message {
                offset,
                time_ms,
                topic,
                payload: r.rest(),
            }
        }
        STREAM_ENTRY => Record::StreamEntry {
            offset: r.u64()?,
            op: r.rest(),
        },
        STREAM_OP => Record::StreamOp(r.rest()),
        SESSION => {
            let code = r.u8()?;
            let name = r.bytes("session name", MAX_NAME)?;
            let op = match code {
                CREATE => {
                    let cursor = r.u64()?;
                    let n = r.u32()? as usize;
                    if n > MAX_FILTERS {
                        return Err(RecordError::TooLong {
                            field: "filter count",
                            len: n as u64,
                            max: MAX_FILTERS as u64,
                        });
                    }
                    let mut filters = Vec::with_capacity(n.min(r.0.len() / 4));
                    for _ in 0..n {
                        filters.push(r.bytes("filter", MAX_FILTER)?);
                    }
                    SessionOp::Create {
                        name,
                        cursor,
                        filters,
                    }
                }
                ACK => SessionOp::Ack {
                    name,
                    cursor: r.u64()?,
                },
                DELETE => SessionOp::Delete { name },
                other => return Err(RecordError::UnknownKind(other)),
            };
            r.end()?;
            Record::Session(op)
        }
        CHECKPOINT => {
            let next_offset = r.u64()?;
            r.end()?;
            Record::Checkpoint { next_offset }
        }
        CHECKPOINT_END => {
            r.end()?;
            Record::CheckpointEnd
        }
        other => return Err(RecordError::UnknownKind(other)),
    };
    Ok(record)
}

/// A cursor over a record's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::CutShort);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], RecordError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(RecordError::TooLong {
                field,
                len: len as u64,
                max: max as u64,
            });
        }
        self.take(len)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
    fn end(&self) -> Result<(), RecordError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Trailing(self.0.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload of the only record in `batch`, as the log stores it.
    pub(crate) fn payload_of(batch: &mut Batch) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) =
            kids_core::SegmentLog::open(dir.path(), kids_core::SegmentConfig::default())
                .expect("open");
        log.append_batch(batch).expect("append");
        let mut at = log.start();
        log.read(&mut at, 1).expect("read")[0].to_vec()
    }

    fn samples() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut b = Batch::default();
        push_message(&mut b, 7, 1_700_000_000_000, b"web.access", b"GET /");
        out.push(payload_of(&mut b));
        push_stream_entry(&mut b, 8, b"op-bytes");
        out.push(payload_of(&mut b));
        push_stream_op(&mut b, b"group");
        out.push(payload_of(&mut b));
        push_session(
            &mut b,
            &SessionOp::Create {
                name: b"mailer",
                cursor: 3,
                filters: vec![b"activity.*", b"web"],
            },
        );
        out.push(payload_of(&mut b));
        push_session(
            &mut b,
            &SessionOp::Ack {
                name: b"mailer",
                cursor: 9,
            },
        );
        out.push(payload_of(&mut b));
        push_session(&mut b, &SessionOp::Delete { name: b"mailer" });
        out.push(payload_of(&mut b));
        push_checkpoint(&mut b, 42);
        out.push(payload_of(&mut b));
        push_checkpoint_end(&mut b);
        out.push(payload_of(&mut b));
        out
    }

    #[test]
    fn every_kind_round_trips() {
        let s = samples();
        assert_eq!(
            decode(&s[0]),
            Ok(Record::Message {
                offset: 7,
                time_ms: 1_700_000_000_000,
                topic: b"web.access",
                payload: b"GET /"
            })
        );
        assert_eq!(
            decode(&s[1]),
            Ok(Record::StreamEntry {
                offset: 8,
                op: b"op-bytes"
            })
        );
        assert_eq!(decode(&s[2]), Ok(Record::StreamOp(b"group")));
        assert_eq!(
            decode(&s[3]),
            Ok(Record::Session(SessionOp::Create {
                name: b"mailer",
                cursor: 3,
                filters: vec![b"activity.*", b"web"]
            }))
        );
        assert_eq!(
            decode(&s[4]),
            Ok(Record::Session(SessionOp::Ack {
                name: b"mailer",
                cursor: 9
            }))
        );
        assert_eq!(
            decode(&s[5]),
            Ok(Record::Session(SessionOp::Delete { name: b"mailer" }))
        );
        assert_eq!(decode(&s[6]), Ok(Record::Checkpoint { next_offset: 42 }));
        assert_eq!(decode(&s[7]), Ok(Record::CheckpointEnd));
    }

    #[test]
    fn every_cut_of_a_fixed_layout_record_is_an_error() {
        // Message, stream entry and stream op records end in an open
        // payload, so only their fixed head can be cut short.
        let s = samples();
        for rec in &s[3..] {
            for cut in 0..rec.len() {
                assert!(decode(&rec[..cut]).is_err(), "{rec:?} cut at {cut}");
            }
            let mut longer = rec.clone();
            longer.push(0);
            assert_eq!(decode(&longer), Err(RecordError::Trailing(1)));
        }
        for cut in 0..21 {
            assert!(decode(&s[0][..cut]).is_err());
        }
    }

    #[test]
    fn lengths_over_their_bounds_are_refused_before_allocating() {
        let mut b = vec![SESSION, CREATE];
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(b'n');
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&b),
            Err(RecordError::TooLong {
                field: "filter count",
                ..
            })
        ));
        let mut m = vec![MESSAGE];
        m.extend_from_slice(&[0; 16]);
        m.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&m),
            Err(RecordError::TooLong { field: "topic", .. })
        ));
        assert_eq!(decode(&[99]), Err(RecordError::UnknownKind(99)));
        assert_eq!(decode(&[]), Err(RecordError::CutShort));
    }

    proptest::proptest! {
        #[test]
        fn messages_and_sessions_round_trip(
            offset: u64,
            time: u64,
            topic in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            name in proptest::collection::vec(proptest::num::u8::ANY, 0..32),
            filters in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..16), 0..8),
        ) {
            let mut b = Batch::default();
            push_message(&mut b, offset, time, &topic, &payload);
            let p = payload_of(&mut b);
            proptest::prop_assert_eq!(decode(&p), Ok(Record::Message { offset, time_ms: time, topic: &topic, payload: &payload }));
            let fs: Vec<&[u8]> = filters.iter().map(Vec::as_slice).collect();
            let op = SessionOp::Create { name: &name, cursor: offset, filters: fs };
            push_session(&mut b, &op);
            let p = payload_of(&mut b);
            proptest::prop_assert_eq!(decode(&p), Ok(Record::Session(op)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = decode(&bytes);
        }
    }
}

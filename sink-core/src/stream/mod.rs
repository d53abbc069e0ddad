//! The Redis Streams subset sink serves on its log (placeholder API; the
//! engine lands with the streams work).
#![allow(missing_docs, unreachable_pub, clippy::all, dead_code)]

use bytes::Bytes;
use kids_core::resp::Command;
use kids_core::{ReplyWriter, Request};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamCommand {
    Xlen,
}

pub static STREAM_COMMANDS: &[Command<StreamCommand>] = &[];

#[derive(Debug, Clone, Default)]
pub struct StreamsConfig {}

#[derive(Debug, Default)]
pub struct Streams {}

pub struct Ctx<'a> {
    pub now_ms: u64,
    pub next_offset: u64,
    pub ops: &'a mut Vec<StreamOp>,
}

#[derive(Debug)]
pub enum Outcome {
    Done,
    Block {
        keys: Vec<Bytes>,
        timeout_ms: u64,
        retry: Request,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOp {
    Add {
        offset: u64,
        key: Bytes,
        id: StreamId,
        fields: Vec<(Bytes, Bytes)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad stream op")]
pub struct OpError;

impl StreamOp {
    pub fn encode(&self, _out: &mut Vec<u8>) {}
    pub fn decode(_bytes: &[u8]) -> Result<StreamOp, OpError> {
        Err(OpError)
    }
}

impl Streams {
    pub fn new(_config: StreamsConfig) -> Self {
        Self {}
    }
    pub fn run(
        &mut self,
        _cmd: StreamCommand,
        _args: &Request,
        _cx: &mut Ctx<'_>,
        w: &mut ReplyWriter<'_>,
    ) -> Outcome {
        w.error(b"ERR not yet");
        Outcome::Done
    }
    pub fn timeout_reply(w: &mut ReplyWriter<'_>) {
        w.null_array();
    }
    pub fn apply(&mut self, _op: &StreamOp) -> Result<(), OpError> {
        Ok(())
    }
    pub fn checkpoint(&self, _out: &mut Vec<StreamOp>) {}
    pub fn oldest_offset(&self) -> Option<u64> {
        None
    }
    pub fn forget_before(&mut self, _offset: u64) -> u64 {
        0
    }
    pub fn len(&self) -> usize {
        0
    }
    pub fn memory_bytes(&self) -> u64 {
        0
    }
}

//! Errors: the crate's `Error`, the codec's `FrameError`, and the `Status` a call ends with.

use std::fmt;

/// A status code, numbered as gRPC numbers them so that they read the same
/// in logs of mixed systems. Codes this crate does not know are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u16);

impl Code {
    /// The call was cancelled, by the client or because its connection went away.
    pub const CANCELLED: Code = Code(1);
    /// An error the handler did not classify.
    pub const UNKNOWN: Code = Code(2);
    /// The request could not be decoded, or was not acceptable to the handler.
    pub const INVALID_ARGUMENT: Code = Code(3);
    /// The call's deadline passed before it was answered.
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    /// No such method on this server.
    pub const NOT_FOUND: Code = Code(5);
    /// A bound was reached: too many calls in flight, a frame too large.
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    /// The method exists but the handler does not implement it.
    pub const UNIMPLEMENTED: Code = Code(12);
    /// A bug on the server: a handler panicked, a response did not encode.
    pub const INTERNAL: Code = Code(13);
    /// The server could not be reached, or the connection was lost mid-call.
    pub const UNAVAILABLE: Code = Code(14);

    /// The code's name, if this crate knows the code.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "cancelled",
            2 => "unknown",
            3 => "invalid argument",
            4 => "deadline exceeded",
            5 => "not found",
            8 => "resource exhausted",
            12 => "unimplemented",
            13 => "internal",
            14 => "unavailable",
            _ => return None,
        })
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "code {}", self.0),
        }
    }
}

/// How a call ended when it did not end with a response: a code and a message.
///
/// Handlers return it for their own errors; the framework returns it for
/// deadlines, cancels, unknown methods and lost connections. It travels in
/// error frames, and is never cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// [`Code::INVALID_ARGUMENT`] with a message.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::INVALID_ARGUMENT, message)
    }

    /// [`Code::INTERNAL`] with a message.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::INTERNAL, message)
    }

    /// [`Code::UNAVAILABLE`] with a message.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::UNAVAILABLE, message)
    }

    /// [`Code::DEADLINE_EXCEEDED`].
    pub fn deadline_exceeded() -> Status {
        Status::new(Code::DEADLINE_EXCEEDED, "deadline exceeded")
    }

    /// [`Code::CANCELLED`].
    pub fn cancelled() -> Status {
        Status::new(Code::CANCELLED, "cancelled")
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

impl From<prost::DecodeError> for Status {
    fn from(err: prost::DecodeError) -> Status {
        Status::invalid_argument(format!("request does not decode: {err}"))
    }
}

/// The peer sent a frame this crate will not accept. After one of these the
/// stream cannot be resynchronised: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length field is above the codec's bound.
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLong {
        /// The frame's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A protocol version this crate does not speak.
    #[error("unknown protocol version {0}")]
    Version(u8),
    /// A frame kind this crate does not know.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// A compression codec this crate does not know.
    #[error("unknown compression codec {0}")]
    Codec(u8),
    /// Flags that are reserved, or not allowed on this kind of frame.
    #[error("flags {flags:#04x} not allowed on frame kind {kind}")]
    Flags {
        /// The frame kind.
        kind: u8,
        /// The flags byte.
        flags: u8,
    },
    /// The frame ends before a field it must have.
    #[error("frame ends before its fields do")]
    Truncated,
    /// Bytes after the last field of an error or cancel frame.
    #[error("bytes after the end of the frame's fields")]
    Trailing,
    /// A compressed payload declares a decompressed size above the bound.
    #[error("compressed payload declares {size} bytes, over the limit of {max}")]
    Bomb {
        /// The declared size.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// A compressed payload does not decompress to its declared size.
    #[error("compressed payload is damaged")]
    Decompress,
    /// An error frame's message is not UTF-8.
    #[error("error message is not UTF-8")]
    Utf8,
    /// A request with id 0, which is reserved for connection-level errors.
    #[error("request id 0 is reserved")]
    ReservedId,
    /// A request whose id is already in flight on the connection.
    #[error("request id {0} is already in flight")]
    IdInFlight(u64),
    /// A frame only the other side sends (a response from a client, say).
    #[error("a frame of a kind only the other side sends")]
    WrongDirection,
}

impl FrameError {
    /// The status a call fails with, or a connection is refused with, for
    /// this error: [`Code::RESOURCE_EXHAUSTED`] for a frame or payload over
    /// the bound, [`Code::INVALID_ARGUMENT`] for anything else.
    pub fn code(&self) -> Code {
        match self {
            FrameError::TooLong { .. } | FrameError::Bomb { .. } => Code::RESOURCE_EXHAUSTED,
            _ => Code::INVALID_ARGUMENT,
        }
    }

    /// The status the server closes a connection with for this error (in
    /// an error frame of id 0): its [`code`](FrameError::code) and message.
    pub fn status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }
}

/// An encoded message that lacks a proto2 `required` field (see
/// [`RequiredFields`](crate::RequiredFields)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequiredError {
    /// A required field is not there.
    #[error("missing required field {field} of {message}")]
    Missing {
        /// The full name of the message checked.
        message: &'static str,
        /// The field, as a path from that message: `b`, or `inner.b`.
        field: String,
    },
    /// The bytes are not a protobuf message.
    #[error("message does not decode")]
    Malformed,
    /// Messages nested deeper than this.
    #[error("messages nested deeper than {0} levels")]
    TooDeep(usize),
}

impl RequiredError {
    /// This error, found in field `field` of message `message`.
    pub(crate) fn within(self, message: &'static str, field: &str) -> RequiredError {
        match self {
            RequiredError::Missing { field: inner, .. } => RequiredError::Missing {
                message,
                field: format!("{field}.{inner}"),
            },
            other => other,
        }
    }

    /// The status a server answers a request with this error: [`Code::INVALID_ARGUMENT`].
    pub fn request_status(&self) -> Status {
        Status::invalid_argument(format!("request: {self}"))
    }

    /// The status a client's call ends with when the answer has this error:
    /// [`Code::INTERNAL`], as for an answer that does not decode.
    pub fn response_status(&self) -> Status {
        Status::internal(format!("response: {self}"))
    }
}

/// Why a server closed a connection that broke one of its limits (see
/// [`ReadLimits`](crate::ReadLimits)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// A frame was not whole this long after its first byte.
    #[error("frame not whole {0:?} after its first byte")]
    ReadTimeout(std::time::Duration),
    /// Nothing read or answered for this long.
    #[error("idle for {0:?}")]
    Idle(std::time::Duration),
    /// The server's connections held more than `max` bytes in partial frames.
    #[error("partial frames over the server's budget of {max} bytes")]
    OverBudget {
        /// The budget.
        max: usize,
    },
}

impl LimitError {
    /// The status the server closes the connection with (in an error frame
    /// of id 0): [`Code::DEADLINE_EXCEEDED`], [`Code::UNAVAILABLE`] when idle,
    /// [`Code::RESOURCE_EXHAUSTED`] over the budget.
    pub fn status(&self) -> Status {
        let code = match self {
            LimitError::ReadTimeout(_) => Code::DEADLINE_EXCEEDED,
            LimitError::Idle(_) => Code::UNAVAILABLE,
            LimitError::OverBudget { .. } => Code::RESOURCE_EXHAUSTED,
        };
        Status::new(code, self.to_string())
    }
}

/// Everything that can go wrong in this crate, apart from a call's [`Status`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer sent a frame this crate does not accept.
    #[error("protocol: {0}")]
    Frame(#[from] FrameError),
    /// The server closed a connection that broke one of its limits.
    #[error("limit: {0}")]
    Limit(#[from] LimitError),
    /// Reading or writing a socket or file failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Two methods of a router have the same id, or a service is added twice.
    #[error("method table: {0}")]
    Table(String),
    /// A .proto file does not parse or resolve, or code generation failed.
    #[error("proto: {0}")]
    Proto(String),
    /// A method's options in a .proto file are wrong.
    #[error("options: {0}")]
    Options(#[from] crate::options::OptionError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_show_their_name_or_number() {
        assert_eq!(Code::NOT_FOUND.to_string(), "not found");
        assert_eq!(Code(999).to_string(), "code 999");
        assert_eq!(
            Status::new(Code::INTERNAL, "boom").to_string(),
            "internal: boom"
        );
    }
}

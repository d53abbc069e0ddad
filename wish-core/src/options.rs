//! The static method table: each service's methods, their ids and their options.

use std::fmt;

use crate::frame::method_id;
use crate::required::RequiredFields;

/// A service's methods, as generated from a .proto file or written by hand.
///
/// ```
/// use wish_core::{MethodDesc, MethodOptions, ServiceDesc};
///
/// static ECHO: ServiceDesc = ServiceDesc::new(
///     "demo.Echo",
///     &[MethodDesc::new("demo.Echo.Say", MethodOptions::new().cache(60))],
/// );
/// ECHO.check().unwrap();
/// assert_eq!(ECHO.methods[0].name(), "Say");
/// ```
#[derive(Debug)]
pub struct ServiceDesc {
    /// The service's full name, `package.Service`.
    pub name: &'static str,
    /// Its methods, in declaration order; a dispatcher's method index is an index in here.
    pub methods: &'static [MethodDesc],
}

impl ServiceDesc {
    /// A service table.
    pub const fn new(name: &'static str, methods: &'static [MethodDesc]) -> ServiceDesc {
        ServiceDesc { name, methods }
    }

    /// Checks every method's options (see [`MethodOptions::check`]).
    ///
    /// # Errors
    /// The first method whose options contradict each other.
    pub fn check(&self) -> Result<(), OptionError> {
        for m in self.methods {
            m.options.check().map_err(|problem| OptionError {
                file: None,
                service: self.name.to_string(),
                method: m.name().to_string(),
                problem,
            })?;
        }
        Ok(())
    }
}

/// One method of a service.
#[derive(Debug)]
pub struct MethodDesc {
    /// Its full name, `calc.Advanced.Multiply`.
    pub full_name: &'static str,
    /// Its id on the wire: [`method_id`] of the full name.
    pub id: u32,
    /// Its options.
    pub options: MethodOptions,
    /// The required fields of its request: a server answers a request that
    /// lacks one with [`Code::INVALID_ARGUMENT`](crate::Code::INVALID_ARGUMENT), without calling the handler.
    pub request: &'static RequiredFields,
    /// The required fields of its response: a call whose answer lacks one
    /// fails with [`Code::INTERNAL`](crate::Code::INTERNAL) at the client.
    pub response: &'static RequiredFields,
    /// The field numbers of each `oneof` of its request (proto3's synthetic
    /// ones aside). A request that sends two members of one `oneof` is not
    /// cached: the last one sent wins, and the cache key, whose fields are
    /// sorted by number, could not tell which.
    pub request_oneofs: &'static [&'static [u32]],
}

impl MethodDesc {
    /// The method with this full name (`package.Service.Method`) and
    /// options, whose messages have no required fields.
    pub const fn new(full_name: &'static str, options: MethodOptions) -> MethodDesc {
        MethodDesc {
            full_name,
            id: method_id(full_name),
            options,
            request: &RequiredFields::NONE,
            response: &RequiredFields::NONE,
            request_oneofs: &[],
        }
    }

    /// With the members of its request's `oneof`s (see
    /// [`MethodDesc::request_oneofs`]; the code generator fills them in).
    pub const fn request_oneofs(mut self, oneofs: &'static [&'static [u32]]) -> MethodDesc {
        self.request_oneofs = oneofs;
        self
    }

    /// With the required fields of its request and response messages (the
    /// code generator fills them in from the .proto).
    pub const fn messages(
        mut self,
        request: &'static RequiredFields,
        response: &'static RequiredFields,
    ) -> MethodDesc {
        self.request = request;
        self.response = response;
        self
    }

    /// The method's own name, `Multiply`: the full name after its last dot.
    pub fn name(&self) -> &'static str {
        self.full_name
            .rsplit_once('.')
            .map_or(self.full_name, |(_, name)| name)
    }
}

/// The five method options, as declared in `wish/options.proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodOptions {
    /// `(cache)`: responses may be cached.
    pub cache: bool,
    /// `(expire)`: a cached response's lifetime in seconds; `None`: until evicted or stale.
    pub expire: Option<u32>,
    /// `(compress)`: payloads are compressed on the wire (above the codec's threshold, when it pays).
    pub compress: bool,
    /// `(timestamped)`: a cached response is served only if it is newer than
    /// every entity named by `timestamped_fields` (see the crate docs).
    pub timestamped: bool,
    /// `(timestamped_fields)`: the request fields that name entities, `"a:b"` in the .proto.
    pub timestamped_fields: &'static [EntityField],
}

impl Default for MethodOptions {
    fn default() -> Self {
        MethodOptions::new()
    }
}

impl MethodOptions {
    /// No option set: no cache, no compression.
    pub const fn new() -> MethodOptions {
        MethodOptions {
            cache: false,
            expire: None,
            compress: false,
            timestamped: false,
            timestamped_fields: &[],
        }
    }

    /// Cache responses for `seconds`.
    pub const fn cache(mut self, seconds: u32) -> MethodOptions {
        self.cache = true;
        self.expire = Some(seconds);
        self
    }

    /// Compress payloads.
    pub const fn compress(mut self) -> MethodOptions {
        self.compress = true;
        self
    }

    /// Serve a cached response only if newer than the entities these request fields name.
    pub const fn timestamped(mut self, fields: &'static [EntityField]) -> MethodOptions {
        self.timestamped = true;
        self.timestamped_fields = fields;
        self
    }

    /// Checks the rules the .proto compiler also checks.
    ///
    /// # Errors
    /// `expire` without `cache` or equal to 0; `timestamped` without `cache`;
    /// `timestamped` without fields or fields without `timestamped`; a field listed twice.
    pub fn check(&self) -> Result<(), OptionProblem> {
        let names: Vec<&str> = self.timestamped_fields.iter().map(|f| f.name).collect();
        let declared = (!names.is_empty()).then_some(&names[..]);
        check_rules(self.cache, self.expire, self.timestamped, declared)
    }
}

/// The rules between the options, for a table and for a .proto alike.
/// `fields` is `None` when `(timestamped_fields)` is not declared.
pub(crate) fn check_rules(
    cache: bool,
    expire: Option<u32>,
    timestamped: bool,
    fields: Option<&[&str]>,
) -> Result<(), OptionProblem> {
    match expire {
        Some(_) if !cache => return Err(OptionProblem::ExpireWithoutCache),
        Some(0) => return Err(OptionProblem::ZeroExpire),
        _ => {}
    }
    if timestamped && !cache {
        return Err(OptionProblem::TimestampedWithoutCache);
    }
    let names = fields.unwrap_or_default();
    if timestamped && names.iter().all(|n| n.is_empty()) {
        return Err(OptionProblem::TimestampedWithoutFields);
    }
    if !timestamped && fields.is_some() {
        return Err(OptionProblem::FieldsWithoutTimestamped);
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(OptionProblem::FieldTwice(name.to_string()));
        }
    }
    Ok(())
}

/// A request field that names an entity for `timestamped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityField {
    /// The field's name: the entity is `name=value`.
    pub name: &'static str,
    /// Its number in the request message.
    pub number: u32,
    /// Its type, to render its value.
    pub kind: FieldKind,
    /// Its value, rendered, when the request leaves it out.
    pub default: &'static str,
}

/// The scalar types a `timestamped_fields` field may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum FieldKind {
    Int32,
    Int64,
    UInt32,
    UInt64,
    SInt32,
    SInt64,
    Bool,
    Enum,
    Fixed32,
    Fixed64,
    SFixed32,
    SFixed64,
    Float,
    Double,
    String,
    Bytes,
}

/// Method options that contradict each other, or name the wrong fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    /// The .proto file, when the error comes from one.
    pub file: Option<String>,
    /// The service's full name.
    pub service: String,
    /// The method's name.
    pub method: String,
    /// What is wrong.
    pub problem: OptionProblem,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        write!(
            f,
            "service {}, method {}: {}",
            self.service, self.method, self.problem
        )
    }
}

impl std::error::Error for OptionError {}

/// What is wrong with a method's options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionProblem {
    /// `(expire)` on a method without `(cache) = true`.
    #[error("(expire) needs (cache) = true")]
    ExpireWithoutCache,
    /// `(expire) = 0`.
    #[error("(expire) must be at least 1 second")]
    ZeroExpire,
    /// `(timestamped)` on a method without `(cache) = true`.
    #[error("(timestamped) needs (cache) = true")]
    TimestampedWithoutCache,
    /// `(timestamped) = true` without `(timestamped_fields)`.
    #[error("(timestamped) needs (timestamped_fields)")]
    TimestampedWithoutFields,
    /// `(timestamped_fields)` without `(timestamped) = true`.
    #[error("(timestamped_fields) needs (timestamped) = true")]
    FieldsWithoutTimestamped,
    /// A listed field is not in the request message.
    #[error("(timestamped_fields) names {field:?}, which {message} does not have")]
    NoSuchField {
        /// The field.
        field: String,
        /// The request message.
        message: String,
    },
    /// A listed field is repeated.
    #[error("(timestamped_fields) names {0:?}, which is repeated")]
    RepeatedField(String),
    /// A listed field is a message or a map.
    #[error("(timestamped_fields) names {0:?}, which is a message, not a scalar")]
    MessageField(String),
    /// A field listed twice.
    #[error("(timestamped_fields) names {0:?} twice")]
    FieldTwice(String),
}

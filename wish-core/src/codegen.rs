//! From .proto to Rust (feature `build`): method options read from the descriptor pool, checked, and turned into handler traits, dispatchers, clients and method tables.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost_reflect::{Cardinality, DescriptorPool, Kind, MessageDescriptor, Value};
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

use crate::error::Error;
use crate::options::{OptionError, OptionProblem, check_rules};

pub use crate::python::{PYTHON_RUNTIME, PythonPackage};

/// The source of `wish/options.proto`, which declares the five method options.
///
/// [`Builder`] provides it to every compilation and adds
/// `import "wish/options.proto";` to files that use the options without importing it.
pub const OPTIONS_PROTO: &str = include_str!("../proto/wish/options.proto");

/// The import path of [`OPTIONS_PROTO`].
pub const OPTIONS_PROTO_NAME: &str = "wish/options.proto";

/// The options a method declares, as written: `None` where the .proto is silent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclaredOptions {
    /// `(cache)`.
    pub cache: Option<bool>,
    /// `(expire)`, seconds.
    pub expire: Option<u32>,
    /// `(compress)`.
    pub compress: Option<bool>,
    /// `(timestamped)`.
    pub timestamped: Option<bool>,
    /// `(timestamped_fields)`, as written (`"a:b"`).
    pub timestamped_fields: Option<String>,
}

/// A method as the compiler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodInfo {
    /// `Multiply`.
    pub name: String,
    /// `calc.Advanced.Multiply`.
    pub full_name: String,
    /// The request message's full name.
    pub input: String,
    /// The response message's full name.
    pub output: String,
    /// Its options, as declared.
    pub declared: DeclaredOptions,
    /// The `timestamped_fields` resolved against the request message.
    pub(crate) fields: Vec<Entity>,
    /// The field numbers of each `oneof` of the request (not proto3's
    /// synthetic ones), for the cache key.
    pub(crate) oneofs: Vec<Vec<u32>>,
}

/// A service as the compiler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The .proto file that declares it.
    pub file: String,
    /// `calc.Advanced`.
    pub full_name: String,
    /// Its methods, in declaration order.
    pub methods: Vec<MethodInfo>,
}

/// Compiles .proto files into Rust, for a `build.rs`.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     wish_core::build::Builder::new().compile(&["proto/calc.proto"], &["proto"])?;
///     Ok(())
/// }
/// ```
/// and in the crate: `include!(concat!(env!("OUT_DIR"), "/calc.rs"));` (one
/// file per protobuf package). The crate depends on `wish-core` and `prost`.
#[derive(Debug, Default)]
pub struct Builder {
    out_dir: Option<PathBuf>,
}

impl Builder {
    /// A builder that writes to `$OUT_DIR`.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Writes to this directory instead.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Compiles `protos`, looked up in `includes`, and writes one Rust file
    /// per package: prost's messages, then per service a
    /// `<Service>Handler` trait, a `<Service>Server` dispatcher, a
    /// `<Service>Client` and a `<SERVICE>_SERVICE` method table.
    ///
    /// # Errors
    /// [`Error::Proto`] when a file does not parse or resolve,
    /// [`Error::Options`] when a method's options are wrong (naming the file,
    /// service and method), [`Error::Io`] when the output cannot be written.
    // Tells cargo, on stdout as build scripts do, to rerun when a file changes.
    #[allow(clippy::print_stdout)]
    pub fn compile(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<Vec<ServiceInfo>, Error> {
        let (compiler, services) = load(protos, includes)?;
        let mut config = prost_build::Config::new();
        if let Some(dir) = &self.out_dir {
            config.out_dir(dir);
        } else if std::env::var_os("OUT_DIR").is_none() {
            return Err(Error::Proto(
                "OUT_DIR is not set: call from build.rs, or set Builder::out_dir".into(),
            ));
        }
        // Maps as BTreeMap, so that a message encodes to the same bytes every
        // time and cache keys are stable.
        config.btree_map(["."]);
        config.service_generator(Box::new(Generator {
            services: services.clone(),
            pool: compiler.descriptor_pool(),
        }));
        config
            .compile_fds(compiler.file_descriptor_set())
            .map_err(|e| Error::Proto(format!("generating code: {e}")))?;
        if self.out_dir.is_none() {
            // The include directories too: an imported file may change.
            for path in protos
                .iter()
                .map(AsRef::as_ref)
                .chain(includes.iter().map(AsRef::as_ref))
            {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        Ok(services)
    }
}

/// Parses `protos` (with `wish/options.proto` available, and imported where
/// it is missing) and reads and checks every service's method options.
///
/// # Errors
/// As [`Builder::compile`].
pub fn describe(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(DescriptorPool, Vec<ServiceInfo>), Error> {
    let (compiler, services) = load(protos, includes)?;
    Ok((compiler.descriptor_pool(), services))
}

pub(crate) fn load(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(protox::Compiler, Vec<ServiceInfo>), Error> {
    let mut chain = ChainFileResolver::new();
    for include in includes {
        chain.add(IncludeFileResolver::new(include.as_ref().to_owned()));
    }
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(Resolver { inner: chain });
    compiler.include_imports(true);
    compiler.include_source_info(true);
    compiler
        .open_files(protos.iter().map(|p| p.as_ref()))
        .map_err(|e| Error::Proto(format!("{e:?}")))?;
    let services = services(&compiler.descriptor_pool())?;
    Ok((compiler, services))
}

/// Serves `wish/options.proto`, and adds its import to files that lack it.
struct Resolver {
    inner: ChainFileResolver,
}

impl FileResolver for Resolver {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.inner.resolve_path(path)
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == OPTIONS_PROTO_NAME {
            return File::from_source(name, OPTIONS_PROTO);
        }
        let file = self.inner.open_file(name)?;
        let imports = &file.file_descriptor_proto().dependency;
        let Some(source) = file.source() else {
            return Ok(file);
        };
        if name.starts_with("google/protobuf/") || imports.iter().any(|d| d == OPTIONS_PROTO_NAME) {
            return Ok(file);
        }
        // Appended, so that line numbers in errors stay those of the file.
        let source = format!("{source}\nimport \"{OPTIONS_PROTO_NAME}\";\n");
        File::from_source(name, &source)
    }
}

fn services(pool: &DescriptorPool) -> Result<Vec<ServiceInfo>, Error> {
    let ext = |name: &str| pool.get_extension_by_name(name);
    let (cache, expire, compress, timestamped, fields) = (
        ext("cache"),
        ext("expire"),
        ext("compress"),
        ext("timestamped"),
        ext("timestamped_fields"),
    );
    let mut out = Vec::new();
    for service in pool.services() {
        let file = service.parent_file().name().to_string();
        if file == OPTIONS_PROTO_NAME || file.starts_with("google/protobuf/") {
            continue;
        }
        let mut methods = Vec::new();
        for method in service.methods() {
            let err = |problem: OptionProblem| {
                Error::Options(OptionError {
                    file: Some(file.clone()),
                    service: service.full_name().to_string(),
                    method: method.name().to_string(),
                    problem,
                })
            };
            if method.is_client_streaming() || method.is_server_streaming() {
                return Err(Error::Proto(format!(
                    "{file}: service {}, method {}: streaming methods are not supported",
                    service.full_name(),
                    method.name()
                )));
            }
            let opts = method.options();
            let get = |ext: &Option<prost_reflect::ExtensionDescriptor>| {
                ext.as_ref()
                    .filter(|e| opts.has_extension(e))
                    .map(|e| opts.get_extension(e).into_owned())
            };
            let declared = DeclaredOptions {
                cache: get(&cache).and_then(|v| v.as_bool()),
                expire: get(&expire).and_then(|v| v.as_u32()),
                compress: get(&compress).and_then(|v| v.as_bool()),
                timestamped: get(&timestamped).and_then(|v| v.as_bool()),
                timestamped_fields: get(&fields).and_then(|v| v.as_str().map(str::to_string)),
            };
            let fields = check(&declared, &method.input()).map_err(err)?;
            methods.push(MethodInfo {
                name: method.name().to_string(),
                full_name: method.full_name().to_string(),
                input: method.input().full_name().to_string(),
                output: method.output().full_name().to_string(),
                declared,
                fields,
                oneofs: method
                    .input()
                    .oneofs()
                    .filter(|o| !o.is_synthetic())
                    .map(|o| o.fields().map(|f| f.number()).collect())
                    .collect(),
            });
        }
        out.push(ServiceInfo {
            file,
            full_name: service.full_name().to_string(),
            methods,
        });
    }
    Ok(out)
}

/// A `timestamped_fields` field resolved against the request message: what
/// an `EntityField` holds, for the Rust and the Python generators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entity {
    pub(crate) name: String,
    pub(crate) number: u32,
    /// The `FieldKind` variant's name.
    pub(crate) kind: &'static str,
    /// The field's default, rendered as the entity's value.
    pub(crate) default: String,
}

impl Entity {
    /// Rust source of an `EntityField`.
    fn rust(&self) -> String {
        format!(
            "::wish_core::EntityField {{ name: {:?}, number: {}, kind: ::wish_core::FieldKind::{}, default: {:?} }}",
            self.name, self.number, self.kind, self.default
        )
    }
}

/// Checks a method's declared options; the listed fields, resolved.
fn check(d: &DeclaredOptions, input: &MessageDescriptor) -> Result<Vec<Entity>, OptionProblem> {
    let names: Vec<&str> = match &d.timestamped_fields {
        Some(list) => list.split(':').map(str::trim).collect(),
        None => Vec::new(),
    };
    check_rules(
        d.cache == Some(true),
        d.expire,
        d.timestamped == Some(true),
        d.timestamped_fields.is_some().then_some(&names[..]),
    )?;
    let mut out = Vec::new();
    for name in &names {
        let field = input
            .get_field_by_name(name)
            .ok_or_else(|| OptionProblem::NoSuchField {
                field: name.to_string(),
                message: input.full_name().to_string(),
            })?;
        if field.is_list() || field.is_map() {
            return Err(OptionProblem::RepeatedField(name.to_string()));
        }
        let kind = match field.kind() {
            Kind::Double => "Double",
            Kind::Float => "Float",
            Kind::Int32 => "Int32",
            Kind::Int64 => "Int64",
            Kind::Uint32 => "UInt32",
            Kind::Uint64 => "UInt64",
            Kind::Sint32 => "SInt32",
            Kind::Sint64 => "SInt64",
            Kind::Fixed32 => "Fixed32",
            Kind::Fixed64 => "Fixed64",
            Kind::Sfixed32 => "SFixed32",
            Kind::Sfixed64 => "SFixed64",
            Kind::Bool => "Bool",
            Kind::String => "String",
            Kind::Bytes => "Bytes",
            Kind::Enum(_) => "Enum",
            Kind::Message(_) => return Err(OptionProblem::MessageField(name.to_string())),
        };
        let default = match field.default_value() {
            Value::Bool(b) => b.to_string(),
            Value::I32(v) | Value::EnumNumber(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::String(s) => s,
            Value::Bytes(b) => {
                let mut out = String::new();
                // Writing to a String does not fail.
                let _ = crate::wire::hex(&b, &mut out);
                out
            }
            _ => String::new(),
        };
        out.push(Entity {
            name: name.to_string(),
            number: field.number(),
            kind,
            default,
        });
    }
    Ok(out)
}

/// Emits each service's code after prost's messages.
struct Generator {
    services: Vec<ServiceInfo>,
    pool: DescriptorPool,
}

impl prost_build::ServiceGenerator for Generator {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let full = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let Some(info) = self.services.iter().find(|s| s.full_name == full) else {
            return;
        };
        let rules = Rules::of(
            &self.pool,
            info,
            &format!("{}_SERVICE", screaming(&service.proto_name)),
        );
        emit(&service, info, &rules, buf);
    }
}

/// The `RequiredFields` statics a service's messages need (see
/// `wish_core::RequiredFields`): one per message type, reachable from a
/// method's request or response, that has required fields itself or in a
/// message nested in it. Statics may refer to each other, so a recursive
/// type is no trouble.
struct Rules {
    /// The Rust source of the statics.
    statics: Vec<String>,
    /// Full message name to the name of its static.
    names: std::collections::HashMap<String, String>,
}

impl Rules {
    fn of(pool: &DescriptorPool, info: &ServiceInfo, prefix: &str) -> Rules {
        // Every message type reachable from the methods, in a stable order.
        let mut reachable: Vec<MessageDescriptor> = Vec::new();
        let mut todo: Vec<MessageDescriptor> = info
            .methods
            .iter()
            .flat_map(|m| [&m.input, &m.output])
            .filter_map(|name| pool.get_message_by_name(name))
            .collect();
        while let Some(msg) = todo.pop() {
            if reachable.iter().any(|m| m.full_name() == msg.full_name()) {
                continue;
            }
            todo.extend(msg.fields().filter_map(|f| match f.kind() {
                Kind::Message(inner) => Some(inner),
                _ => None,
            }));
            reachable.push(msg);
        }
        reachable.sort_by(|a, b| a.full_name().cmp(b.full_name()));
        // Which of them matter: a fixpoint over "has a field that matters".
        let mut matters: Vec<bool> = reachable
            .iter()
            .map(|m| m.fields().any(|f| f.cardinality() == Cardinality::Required))
            .collect();
        let index = |name: &str| reachable.iter().position(|m| m.full_name() == name);
        loop {
            let mut changed = false;
            for (i, msg) in reachable.iter().enumerate() {
                if matters[i] {
                    continue;
                }
                let leads = msg.fields().any(|f| match f.kind() {
                    Kind::Message(inner) => index(inner.full_name()).is_some_and(|j| matters[j]),
                    _ => false,
                });
                if leads {
                    matters[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let names: std::collections::HashMap<String, String> = reachable
            .iter()
            .zip(&matters)
            .filter(|(_, m)| **m)
            .enumerate()
            .map(|(k, (msg, _))| {
                (
                    msg.full_name().to_string(),
                    format!("{prefix}_REQUIRED_{k}"),
                )
            })
            .collect();
        let mut statics = Vec::new();
        for msg in &reachable {
            let Some(name) = names.get(msg.full_name()) else {
                continue;
            };
            let mut required = String::new();
            let mut nested = String::new();
            // The oneofs (not proto3's synthetic ones) with a member in `nested`.
            let mut oneofs: Vec<prost_reflect::OneofDescriptor> = Vec::new();
            for f in msg.fields() {
                if f.cardinality() == Cardinality::Required {
                    let _ = write!(
                        required,
                        "::wish_core::RequiredField::new({}, {:?}), ",
                        f.number(),
                        f.name()
                    );
                }
                if let Kind::Message(inner) = f.kind()
                    && let Some(rules) = names.get(inner.full_name())
                {
                    let _ = write!(
                        nested,
                        "::wish_core::NestedField::new({}, {:?}, {}, &{rules})",
                        f.number(),
                        f.name(),
                        f.is_list() || f.is_map()
                    );
                    if let Some(oneof) = f.containing_oneof().filter(|o| !o.is_synthetic()) {
                        let k = match oneofs.iter().position(|o| o.name() == oneof.name()) {
                            Some(k) => k,
                            None => {
                                oneofs.push(oneof);
                                oneofs.len() - 1
                            }
                        };
                        let _ = write!(nested, ".in_oneof({k})");
                    }
                    if f.is_group() {
                        nested.push_str(".group()");
                    }
                    if msg.is_map_entry() && f.number() == 2 {
                        nested.push_str(".map_value()");
                    }
                    nested.push_str(", ");
                }
            }
            let mut members = String::new();
            for oneof in &oneofs {
                let numbers: Vec<String> = oneof.fields().map(|f| f.number().to_string()).collect();
                let _ = write!(members, "&[{}], ", numbers.join(", "));
            }
            let oneofs = if oneofs.is_empty() {
                String::new()
            } else {
                format!("\n.oneofs(&[{members}])")
            };
            let source = format!(
                "/// The required fields of `{full}`.\n\
                 static {name}: ::wish_core::RequiredFields = ::wish_core::RequiredFields::new(\n    {full:?},\n    &[{required}],\n    &[{nested}],\n){oneofs};\n",
                full = msg.full_name(),
            );
            statics.push(source);
        }
        Rules { statics, names }
    }

    /// The Rust expression for the rules of message `full_name`.
    fn of_message(&self, full_name: &str) -> String {
        match self.names.get(full_name) {
            Some(name) => format!("&{name}"),
            None => "&::wish_core::RequiredFields::NONE".to_string(),
        }
    }
}

fn screaming(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn emit(service: &prost_build::Service, info: &ServiceInfo, rules: &Rules, buf: &mut String) {
    let name = &service.name;
    let table = format!("{}_SERVICE", screaming(&service.proto_name));
    let full = &info.full_name;
    let w = buf;
    for source in &rules.statics {
        let _ = writeln!(w, "{source}");
    }
    let _ = writeln!(
        w,
        "/// The method table of `{full}`: ids and options of its methods.\n\
         pub static {table}: ::wish_core::ServiceDesc = ::wish_core::ServiceDesc::new(\n    {full:?},\n    &["
    );
    for m in &info.methods {
        let d = &m.declared;
        let expire = d
            .expire
            .map_or("None".to_string(), |s| format!("Some({s})"));
        // Only a cached method's key needs its request's oneofs.
        let oneofs = if d.cache == Some(true) && !m.oneofs.is_empty() {
            let sets: Vec<String> = m.oneofs.iter().map(|o| format!("&{o:?}")).collect();
            format!("\n            .request_oneofs(&[{}])", sets.join(", "))
        } else {
            String::new()
        };
        let _ = writeln!(
            w,
            "        ::wish_core::MethodDesc::new({:?}, ::wish_core::MethodOptions {{ cache: {}, expire: {expire}, compress: {}, timestamped: {}, timestamped_fields: &[{}] }})\n            .messages({}, {}){oneofs},",
            m.full_name,
            d.cache == Some(true),
            d.compress == Some(true),
            d.timestamped == Some(true),
            m.fields
                .iter()
                .map(Entity::rust)
                .collect::<Vec<_>>()
                .join(", "),
            rules.of_message(&m.input),
            rules.of_message(&m.output),
        );
    }
    let _ = writeln!(w, "    ],\n);\n");

    // The handler trait.
    let _ = writeln!(
        w,
        "/// Implement this to serve `{full}`; serve it with [`{name}Server`].\n\
         pub trait {name}Handler: ::core::marker::Send + ::core::marker::Sync + 'static {{"
    );
    for m in &service.methods {
        let _ = writeln!(
            w,
            "    /// `{full}.{}`.\n    fn {}(\n        &self,\n        ctx: ::wish_core::CallContext,\n        request: {},\n    ) -> impl ::core::future::Future<Output = ::core::result::Result<{}, ::wish_core::Status>> + ::core::marker::Send;",
            m.proto_name, m.name, m.input_type, m.output_type
        );
    }
    let _ = writeln!(w, "}}\n");

    // The dispatcher.
    let _ = writeln!(
        w,
        "/// Serves a [`{name}Handler`] as a [`wish_core::Service`].\n\
         #[derive(Debug)]\n\
         pub struct {name}Server<H>(::std::sync::Arc<H>);\n\n\
         impl<H: {name}Handler> {name}Server<H> {{\n    \
             /// Serves `handler`.\n    \
             pub fn new(handler: H) -> Self {{\n        Self(::std::sync::Arc::new(handler))\n    }}\n\n    \
             /// Serves a shared handler.\n    \
             pub fn from_arc(handler: ::std::sync::Arc<H>) -> Self {{\n        Self(handler)\n    }}\n}}\n\n\
         impl<H: {name}Handler> ::wish_core::Service for {name}Server<H> {{\n    \
             fn descriptor(&self) -> &'static ::wish_core::ServiceDesc {{\n        &{table}\n    }}\n\n    \
             fn call(\n        &self,\n        method: usize,\n        ctx: ::wish_core::CallContext,\n        request: ::wish_core::Bytes,\n    ) -> ::wish_core::BoxFuture<'static, ::core::result::Result<::wish_core::Bytes, ::wish_core::Status>> {{\n        \
                 let handler = ::std::sync::Arc::clone(&self.0);\n        \
                 match method {{"
    );
    for (i, m) in service.methods.iter().enumerate() {
        let _ = writeln!(
            w,
            "            {i} => ::std::boxed::Box::pin(async move {{\n                \
                 let request = <{} as ::prost::Message>::decode(request)?;\n                \
                 let response = handler.{}(ctx, request).await?;\n                \
                 ::core::result::Result::Ok(::wish_core::Bytes::from(::prost::Message::encode_to_vec(&response)))\n            }}),",
            m.input_type, m.name
        );
    }
    let _ = writeln!(
        w,
        "            _ => ::std::boxed::Box::pin(async move {{\n                \
             ::core::result::Result::Err(::wish_core::Status::new(::wish_core::Code::NOT_FOUND, \"no such method\"))\n            }}),\n        }}\n    }}\n}}\n"
    );

    // The client.
    let _ = writeln!(
        w,
        "/// A typed client of `{full}` over any [`wish_core::Channel`].\n\
         #[derive(Debug, Clone)]\n\
         pub struct {name}Client<C> {{\n    channel: C,\n}}\n\n\
         impl<C: ::wish_core::Channel> {name}Client<C> {{\n    \
             /// A client calling through `channel`.\n    \
             pub fn new(channel: C) -> Self {{\n        Self {{ channel }}\n    }}\n\n    \
             /// The channel.\n    \
             pub fn channel(&self) -> &C {{\n        &self.channel\n    }}"
    );
    for (i, m) in service.methods.iter().enumerate() {
        let _ = writeln!(
            w,
            "\n    /// Calls `{full}.{proto}`.\n    \
             pub async fn {n}(&self, request: {inp}) -> ::core::result::Result<{out}, ::wish_core::Status> {{\n        \
                 ::core::result::Result::Ok(self.{n}_with(request, ::wish_core::CallOptions::new()).await?.value)\n    }}\n\n    \
             /// Calls `{full}.{proto}` with per-call options; says whether the answer came from a cache.\n    \
             pub async fn {n}_with(\n        &self,\n        request: {inp},\n        options: ::wish_core::CallOptions,\n    ) -> ::core::result::Result<::wish_core::Reply<{out}>, ::wish_core::Status> {{\n        \
                 ::wish_core::call(&self.channel, &{table}.methods[{i}], &request, options).await\n    }}",
            proto = m.proto_name,
            n = m.name,
            inp = m.input_type,
            out = m.output_type,
        );
    }
    let _ = writeln!(w, "}}");
}

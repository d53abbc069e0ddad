//! Options from .proto files: the seed's calc.proto verbatim, and each validation error.

use std::path::PathBuf;

use wish_core::build::{DeclaredOptions, describe};
use wish_core::{Error, OptionProblem};

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/proto")
}

#[test]
fn the_seed_proto_compiles_verbatim_and_its_options_are_read() {
    let source = std::fs::read_to_string(seed_dir().join("calc.proto")).unwrap();
    assert!(
        !source.contains("import"),
        "the seed has no import: it is added for the user"
    );
    assert!(
        source.contains("required int32 a = 1;"),
        "proto2 required fields"
    );
    let (_pool, services) = describe(&["calc.proto"], &[seed_dir()]).unwrap();
    let names: Vec<&str> = services.iter().map(|s| s.full_name.as_str()).collect();
    assert_eq!(names, ["calc.Simple", "calc.Advanced"]);
    let simple = &services[0].methods;
    assert_eq!(simple[0].name, "Plus");
    assert_eq!(
        simple[0].declared,
        DeclaredOptions {
            cache: Some(false),
            ..Default::default()
        },
        "Plus: explicit false"
    );
    assert_eq!(simple[1].name, "Minus");
    assert_eq!(
        simple[1].declared,
        DeclaredOptions::default(),
        "Minus: absent"
    );
    let multiply = &services[1].methods[0];
    assert_eq!(multiply.full_name, "calc.Advanced.Multiply");
    assert_eq!(multiply.input, "calc.CalcRequest");
    assert_eq!(
        multiply.declared,
        DeclaredOptions {
            cache: Some(true),
            expire: Some(3600),
            compress: Some(true),
            timestamped: Some(true),
            timestamped_fields: Some("a:b".into()),
        }
    );
    assert_eq!(services[1].methods[1].declared, DeclaredOptions::default());
}

fn check(rpc_options: &str) -> Result<(), Error> {
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "syntax = \"proto3\";\npackage t;\n\
         message Inner {{ int32 x = 1; }}\n\
         message Req {{ int32 a = 1; string s = 2; repeated int32 r = 3; Inner m = 4; map<string, int32> kv = 5; sint64 z = 6; }}\n\
         service Svc {{\n  rpc Get (Req) returns (Req) {{ {rpc_options} }}\n}}\n"
    );
    std::fs::write(dir.path().join("t.proto"), source).unwrap();
    describe(&["t.proto"], &[dir.path()]).map(|_| ())
}

fn problem(rpc_options: &str) -> OptionProblem {
    match check(rpc_options) {
        Err(Error::Options(e)) => {
            assert_eq!(e.file.as_deref(), Some("t.proto"));
            assert_eq!((e.service.as_str(), e.method.as_str()), ("t.Svc", "Get"));
            let shown = e.to_string();
            assert!(
                shown.starts_with("t.proto: service t.Svc, method Get: "),
                "{shown}"
            );
            e.problem
        }
        other => panic!("{rpc_options}: expected an options error, got {other:?}"),
    }
}

#[test]
fn each_validation_error_names_file_service_and_method() {
    use OptionProblem::*;
    let cases: &[(&str, OptionProblem)] = &[
        ("option (expire) = 60;", ExpireWithoutCache),
        (
            "option (cache) = false; option (expire) = 60;",
            ExpireWithoutCache,
        ),
        ("option (cache) = true; option (expire) = 0;", ZeroExpire),
        (
            "option (timestamped) = true; option (timestamped_fields) = \"a\";",
            TimestampedWithoutCache,
        ),
        (
            "option (cache) = true; option (timestamped) = true;",
            TimestampedWithoutFields,
        ),
        (
            "option (cache) = true; option (timestamped_fields) = \"a\";",
            FieldsWithoutTimestamped,
        ),
        (
            "option (cache) = true; option (timestamped) = true; option (timestamped_fields) = \"a:nope\";",
            NoSuchField {
                field: "nope".into(),
                message: "t.Req".into(),
            },
        ),
        (
            "option (cache) = true; option (timestamped) = true; option (timestamped_fields) = \"r\";",
            RepeatedField("r".into()),
        ),
        (
            "option (cache) = true; option (timestamped) = true; option (timestamped_fields) = \"kv\";",
            RepeatedField("kv".into()),
        ),
        (
            "option (cache) = true; option (timestamped) = true; option (timestamped_fields) = \"m\";",
            MessageField("m".into()),
        ),
        (
            "option (cache) = true; option (timestamped) = true; option (timestamped_fields) = \"a:s:a\";",
            FieldTwice("a".into()),
        ),
    ];
    for (options, want) in cases {
        assert_eq!(&problem(options), want, "{options}");
    }
    // And what is allowed.
    check("").unwrap();
    check("option (cache) = true;").unwrap();
    check("option (cache) = true; option (timestamped) = true; option (timestamped_fields) = \"a:s:z\";").unwrap();
    check("option (compress) = true;").unwrap();
}

#[test]
fn parse_errors_and_explicit_imports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.proto"), "package t;\nmessage {").unwrap();
    match describe(&["bad.proto"], &[dir.path()]) {
        Err(Error::Proto(m)) => assert!(m.contains("bad.proto"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A file that imports the options itself is taken as it is.
    std::fs::write(
        dir.path().join("ok.proto"),
        "syntax = \"proto3\";\nimport \"wish/options.proto\";\npackage t;\nmessage M { int32 a = 1; }\n\
         service S { rpc Get (M) returns (M) { option (cache) = true; option (expire) = 5; } }\n",
    )
    .unwrap();
    let (_, services) = describe(&["ok.proto"], &[dir.path()]).unwrap();
    assert_eq!(services[0].methods[0].declared.expire, Some(5));
}

#[test]
fn the_builder_writes_one_rust_file_per_package() {
    let out = tempfile::tempdir().unwrap();
    let services = wish_core::build::Builder::new()
        .out_dir(out.path())
        .compile(&["calc.proto"], &[seed_dir()])
        .unwrap();
    assert_eq!(services.len(), 2);
    let code = std::fs::read_to_string(out.path().join("calc.rs")).unwrap();
    for item in [
        "pub struct CalcRequest",
        "pub static ADVANCED_SERVICE: ::wish_core::ServiceDesc",
        "pub trait AdvancedHandler",
        "pub struct AdvancedServer<H>",
        "pub struct SimpleClient<C>",
        "kind: ::wish_core::FieldKind::Int32,",
        "expire: Some(3600),",
    ] {
        assert!(code.contains(item), "missing {item}");
    }
}

#[test]
fn the_python_package_has_the_messages_tables_clients_and_servers() {
    let out = tempfile::tempdir().unwrap();
    let services = wish_core::build::PythonPackage::new("calc_wish")
        .version("1.2.3")
        .generate(&["calc.proto"], &[seed_dir()], out.path())
        .unwrap();
    assert_eq!(services.len(), 2);
    let init = std::fs::read_to_string(out.path().join("calc_wish/__init__.py")).unwrap();
    for item in [
        "CalcRequest = _message(\"calc.CalcRequest\")",
        "ADVANCED_SERVICE = _rt.ServiceDesc(\"calc.Advanced\", [",
        "cache=True, expire=3600, compress=True, timestamped=True, timestamped_fields=[_rt.EntityField(\"a\", 1, \"Int32\", \"0\"), _rt.EntityField(\"b\", 2, \"Int32\", \"0\")]",
        "class AdvancedClient:",
        "class AdvancedAsyncClient:",
        "class SimpleServer(_rt.Service):",
        "    async def multiply(self, ctx, request):",
        "    def multiply_with(self, request, **options):",
    ] {
        assert!(init.contains(item), "missing {item}");
    }
    let runtime = std::fs::read_to_string(out.path().join("calc_wish/wish_runtime.py")).unwrap();
    assert_eq!(runtime, wish_core::build::PYTHON_RUNTIME);
    let pyproject = std::fs::read_to_string(out.path().join("pyproject.toml")).unwrap();
    assert!(pyproject.contains("name = \"calc-wish\"\nversion = \"1.2.3\""));
    assert!(pyproject.contains("dependencies = [\"protobuf>=4.21\", \"lz4>=3.1\"]"));
}

#[test]
fn python_names_that_would_clash_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let generate = |name: &str, source: &str| {
        std::fs::write(dir.path().join("t.proto"), source).unwrap();
        wish_core::build::PythonPackage::new(name).generate(&["t.proto"], &[dir.path()], out.path())
    };
    let proto = |messages: &str, rpcs: &str| {
        format!(
            "syntax = \"proto3\";\npackage t;\nmessage M {{ int32 a = 1; }}\n{messages}\n\
             service Svc {{ rpc Get (M) returns (M); {rpcs} }}\n"
        )
    };
    for (name, source, what) in [
        ("t", proto("message Client { int32 a = 1; }", ""), "Client"),
        (
            "t",
            proto("message SvcClient { int32 a = 1; }", ""),
            "SvcClient",
        ),
        ("t", proto("", "rpc GetWith (M) returns (M);"), "get_with"),
        ("t", proto("message None { int32 a = 1; }", ""), "None"),
        ("t", proto("message _pool { int32 a = 1; }", ""), "_pool"),
        (
            "t",
            proto("message hasattr { int32 a = 1; }", ""),
            "hasattr",
        ),
        ("t", proto("enum class { A = 0; }", ""), "class"),
        ("not-a-name", proto("", ""), "not-a-name"),
        ("import", proto("", ""), "import"),
    ] {
        match generate(name, &source) {
            Err(Error::Proto(m)) => assert!(m.contains(what), "{what}: {m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(generate("t", &proto("", "rpc Import (M) returns (M);")).is_ok());
    let init = std::fs::read_to_string(out.path().join("t/__init__.py")).unwrap();
    assert!(
        init.contains("async def import_(self, ctx, request):"),
        "a keyword gets a _"
    );
}

//! The kids configuration language as a plain tree of directives, for programs with a config of their own.
//!
//! [`crate::Config`] reads kids' own keys; other programs of the SDK (miller's
//! master and worker, say) write their files in the same language and read
//! them with [`parse_directives`]: the same tokenizer (`#` comments, `"`/`'`
//! quoting, `;` and `{ }`), no knowledge of any key.
//!
//! ```text
//! name value value ;                 a directive with values
//! name value { name value; … }       a block: values, then child directives
//! ```
//!
//! ```
//! use kids_core::parse_directives;
//! let tree = parse_directives("m.conf", "beanstalk { port 11300; }\nsource sink { filter 'a.*' b; }").unwrap();
//! assert_eq!(tree[0].name, "beanstalk");
//! let port = &tree[0].children().unwrap()[0];
//! assert_eq!((port.name.as_str(), port.values[0].text.as_str(), port.line), ("port", "11300", 1));
//! assert_eq!(tree[1].values[0].text, "sink");
//! assert_eq!(tree[1].children().unwrap()[0].values.len(), 2);
//! ```

use crate::ConfigError;
use crate::config::{Pos, Tok, tokenize};

/// How deep blocks may nest before the file is refused (a bound on the
/// parser's recursion).
pub const MAX_DEPTH: usize = 32;

/// One value of a directive, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The value, without its quotes.
    pub text: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

/// One directive: `name values… ;` or `name values… { children }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The key, as written (callers compare case-insensitively if they wish).
    pub name: String,
    /// The values after the key, in order.
    pub values: Vec<Value>,
    /// The directives inside its `{ }`, when it is a block.
    pub block: Option<Vec<Directive>>,
    /// 1-based line of the key.
    pub line: usize,
    /// 1-based column of the key.
    pub col: usize,
}

impl Directive {
    /// The directives inside its block (`None` for a `;` directive).
    pub fn children(&self) -> Option<&[Directive]> {
        self.block.as_deref()
    }

    /// A [`ConfigError`] in `file` at this directive's key.
    pub fn error(&self, file: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }
}

impl Value {
    /// A [`ConfigError`] in `file` at this value.
    pub fn error(&self, file: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }
}

/// Parses `src` into its directives; `file` names it in errors.
///
/// # Errors
/// A [`ConfigError`] with the file, line and column of the first problem: an
/// unterminated quote, a value where a key belongs, a missing `;` or `}`, a
/// `}` with no block open, blocks nested deeper than [`MAX_DEPTH`].
pub fn parse_directives(file: &str, src: &str) -> Result<Vec<Directive>, ConfigError> {
    let toks = tokenize(file, src)?;
    let mut i = 0;
    let out = list(file, &toks, &mut i, 0)?;
    Ok(out)
}

fn err(file: &str, pos: Pos, message: String) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        line: pos.line,
        col: pos.col,
        message,
    }
}

/// Directives up to end of file (depth 0) or the `}` closing a block.
fn list(
    file: &str,
    toks: &[(Tok, Pos)],
    i: &mut usize,
    depth: usize,
) -> Result<Vec<Directive>, ConfigError> {
    let mut out = Vec::new();
    loop {
        let Some((tok, pos)) = toks.get(*i).cloned() else {
            return Ok(out);
        };
        *i += 1;
        let name = match tok {
            Tok::Eof if depth == 0 => return Ok(out),
            Tok::Eof => return Err(err(file, pos, "expected `}` before end of file".into())),
            Tok::Close if depth > 0 => return Ok(out),
            Tok::Close => return Err(err(file, pos, "`}` with no block open".into())),
            Tok::Word(w) => w,
            t => return Err(err(file, pos, format!("expected a directive, found {t}"))),
        };
        let mut values = Vec::new();
        let block = loop {
            let Some((tok, vpos)) = toks.get(*i).cloned() else {
                return Err(err(file, pos, format!("`{name}` is not ended by `;`")));
            };
            *i += 1;
            match tok {
                Tok::Word(text) | Tok::Quoted(text) => values.push(Value {
                    text,
                    line: vpos.line,
                    col: vpos.col,
                }),
                Tok::Semi => break None,
                Tok::Open if depth + 1 >= MAX_DEPTH => {
                    return Err(err(
                        file,
                        vpos,
                        format!("blocks nested deeper than {MAX_DEPTH}"),
                    ));
                }
                Tok::Open => break Some(list(file, toks, i, depth + 1)?),
                t => {
                    return Err(err(
                        file,
                        vpos,
                        format!("expected `;` or `{{` after `{name}`, found {t}"),
                    ));
                }
            }
        };
        out.push(Directive {
            name,
            values,
            block,
            line: pos.line,
            col: pos.col,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_blocks_values_and_positions() {
        let src = "# c\na 1 \"two words\";\nb x {\n  c;\n  d { e 'q'; }\n}\n";
        let tree = parse_directives("t.conf", src).unwrap();
        assert_eq!(tree.len(), 2);
        assert_eq!(tree[0].name, "a");
        assert_eq!(tree[0].values[1].text, "two words");
        assert_eq!((tree[0].values[1].line, tree[0].values[1].col), (2, 5));
        assert_eq!(tree[0].block, None);
        let b = tree[1].children().unwrap();
        assert_eq!(
            (b[0].name.as_str(), b[0].values.len(), b[0].line),
            ("c", 0, 4)
        );
        assert_eq!(b[1].children().unwrap()[0].values[0].text, "q");
        assert_eq!(parse_directives("t", "").unwrap(), vec![]);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let cases = [
            (
                "a 1",
                "t:1:4: expected `;` or `{` after `a`, found end of file",
            ),
            ("a {", "t:1:4: expected `}` before end of file"),
            ("}", "t:1:1: `}` with no block open"),
            ("\n ;", "t:2:2: expected a directive, found `;`"),
            ("a 'x", "t:1:3: unterminated '-quoted value"),
            ("a b }", "t:1:5: expected `;` or `{` after `a`, found `}`"),
        ];
        for (src, want) in cases {
            let e = parse_directives("t", src).unwrap_err();
            assert_eq!(e.to_string(), want, "{src:?}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "a {".repeat(MAX_DEPTH + 1);
        let e = parse_directives("t", &deep).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        let ok = format!(
            "{}{}",
            "a {".repeat(MAX_DEPTH - 1),
            "}".repeat(MAX_DEPTH - 1)
        );
        assert!(parse_directives("t", &ok).is_ok());
    }
}

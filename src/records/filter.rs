//! The filter language of List: the practical subset of AIP-160.
//!
//! ```text
//! expression  := sequence { "AND" sequence }
//! sequence    := factor { factor }                  (juxtaposition = AND)
//! factor      := term { "OR" term }                 (OR binds tighter than AND)
//! term        := [ "NOT" | "-" ] simple
//! simple      := restriction | "(" expression ")"
//! restriction := path comparator value
//! path        := name { "." name }                  (custom_fields.<key>...)
//! comparator  := "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
//! value       := string | number | "true" | "false" | "*" | bare word
//! ```
//!
//! Strings are "double" or 'single' quoted with backslash escapes; a trailing
//! `*` in a string compared with `=` is a prefix wildcard. Timestamps are RFC
//! 3339 strings. Bare literals (global search) and functions are rejected:
//! use `search` for free text. Limits: [`MAX_LEN`] characters, [`MAX_DEPTH`]
//! nested parentheses/NOTs, [`MAX_CLAUSES`] restrictions.

use std::fmt;

/// Longest filter, in bytes.
pub const MAX_LEN: usize = 2048;
/// Deepest nesting of parentheses and NOTs.
pub const MAX_DEPTH: usize = 12;
/// Most restrictions in one filter.
pub const MAX_CLAUSES: usize = 40;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `:` (has)
    Has,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Has => ":",
        })
    }
}

/// The right-hand side of a restriction.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// A quoted string or a bare word.
    Text(String),
    /// A number, kept as written (exact decimal).
    Number(String),
    /// `true` / `false`.
    Bool(bool),
    /// `*` (presence, with `:`).
    Any,
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// All must hold.
    And(Vec<Expr>),
    /// One must hold.
    Or(Vec<Expr>),
    /// Must not hold.
    Not(Box<Expr>),
    /// `path op value`, at byte offset `pos` of the filter.
    Cmp {
        /// Field path, e.g. `["custom_fields", "tier"]`.
        path: Vec<String>,
        /// Comparator.
        op: Op,
        /// Value.
        value: Literal,
        /// Where the restriction starts (for error messages).
        pos: usize,
    },
}

/// A syntax error: where and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the filter.
    pub pos: usize,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.pos, self.message)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(String),
    Op(Op),
    LParen,
    RParen,
    Dot,
    Minus,
    Star,
    End,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("\"{w}\""),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Num(n) => format!("number {n}"),
        Tok::Op(o) => format!("\"{o}\""),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Dot => "\".\"".into(),
        Tok::Minus => "\"-\"".into(),
        Tok::Star => "\"*\"".into(),
        Tok::End => "the end of the filter".into(),
    }
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |pos, message: &str| ParseError {
        pos,
        message: message.to_owned(),
    };
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            b')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            b'.' => {
                out.push((start, Tok::Dot));
                i += 1;
            }
            b'*' => {
                out.push((start, Tok::Star));
                i += 1;
            }
            b':' => {
                out.push((start, Tok::Op(Op::Has)));
                i += 1;
            }
            b'=' => {
                out.push((start, Tok::Op(Op::Eq)));
                i += 1;
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                out.push((start, Tok::Op(Op::Ne)));
                i += 2;
            }
            b'<' | b'>' => {
                let eq = b.get(i + 1) == Some(&b'=');
                let op = match (c, eq) {
                    (b'<', false) => Op::Lt,
                    (b'<', true) => Op::Le,
                    (_, false) => Op::Gt,
                    (_, true) => Op::Ge,
                };
                out.push((start, Tok::Op(op)));
                i += if eq { 2 } else { 1 };
            }
            b'"' | b'\'' => {
                let quote = c;
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(&ch) = b.get(i) else {
                        return Err(err(start, "unterminated string"));
                    };
                    if ch == quote {
                        i += 1;
                        break;
                    }
                    if ch == b'\\' {
                        match b.get(i + 1) {
                            Some(&e) if e == quote || e == b'\\' || e == b'*' => {
                                if e == b'*' {
                                    s.push('\\');
                                }
                                s.push(e as char);
                                i += 2;
                                continue;
                            }
                            _ => {
                                return Err(err(i, "unknown escape (use \\\", \\' , \\\\ or \\*)"));
                            }
                        }
                    }
                    // Copy one UTF-8 character.
                    let len = utf8_len(ch);
                    let piece = src.get(i..i + len).ok_or_else(|| err(i, "invalid text"))?;
                    s.push_str(piece);
                    i += len;
                }
                out.push((start, Tok::Str(s)));
            }
            b'-' if b.get(i + 1).is_some_and(|d| d.is_ascii_digit()) && !prev_is_operand(&out) => {
                let (n, next) = number(src, i);
                out.push((start, Tok::Num(n)));
                i = next;
            }
            b'-' => {
                out.push((start, Tok::Minus));
                i += 1;
            }
            b'0'..=b'9' => {
                let (n, next) = number(src, i);
                // Something like 2026-01-02T03:04:05Z unquoted: a word.
                if next < b.len()
                    && (b[next].is_ascii_alphabetic() || b[next] == b'-' || b[next] == b':')
                {
                    let (w, next) = word(src, i, true);
                    out.push((start, Tok::Word(w)));
                    i = next;
                } else {
                    out.push((start, Tok::Num(n)));
                    i = next;
                }
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let (w, next) = word(src, i, false);
                if next == i {
                    // A character that cannot start a word (symbols, emoji):
                    // refuse it rather than stand still.
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(err(start, &format!("unexpected character {ch:?}")));
                }
                out.push((start, Tok::Word(w)));
                i = next;
            }
            _ => {
                return Err(err(
                    start,
                    &format!(
                        "unexpected character {:?}",
                        src[start..].chars().next().unwrap_or('?')
                    ),
                ));
            }
        }
    }
    out.push((src.len(), Tok::End));
    Ok(out)
}

fn prev_is_operand(out: &[(usize, Tok)]) -> bool {
    !matches!(
        out.last(),
        None | Some((_, Tok::Op(_) | Tok::LParen | Tok::Word(_)))
    ) && !matches!(out.last(), Some((_, Tok::Word(w))) if w == "AND" || w == "OR" || w == "NOT")
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn number(src: &str, start: usize) -> (String, usize) {
    let b = src.as_bytes();
    let mut i = start;
    if b[i] == b'-' {
        i += 1;
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    (src[start..i].to_owned(), i)
}

/// A bare word: letters, digits, `_ . - @`; timestamps (`time`) also take
/// `: +`. Dots make field paths (`custom_fields.tier`) and bare values
/// (`acme.com`).
fn word(src: &str, start: usize, time: bool) -> (String, usize) {
    let mut end = start;
    for ch in src[start..].chars() {
        let ok = ch.is_alphanumeric()
            || matches!(ch, '_' | '.' | '-' | '@')
            || (time && matches!(ch, ':' | '+'));
        if !ok {
            break;
        }
        end += ch.len_utf8();
    }
    (src[start..end].to_owned(), end)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    depth: usize,
    clauses: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].1
    }
    fn pos(&self) -> usize {
        self.toks[self.at].0
    }
    fn next(&mut self) -> (usize, Tok) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }
    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Word(w) if w == kw)
    }
    fn fail<T>(&self, expected: &str) -> Result<T, ParseError> {
        Err(ParseError {
            pos: self.pos(),
            message: format!("expected {expected}, found {}", describe(self.peek())),
        })
    }

    fn expression(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.sequence()?];
        while self.keyword("AND") {
            self.next();
            items.push(self.sequence()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::And(items)
        })
    }

    fn sequence(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.factor()?];
        while !matches!(self.peek(), Tok::End | Tok::RParen) && !self.keyword("AND") {
            items.push(self.factor()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::And(items)
        })
    }

    fn factor(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.term()?];
        while self.keyword("OR") {
            self.next();
            items.push(self.term()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::Or(items)
        })
    }

    fn nest(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError {
                pos: self.pos(),
                message: format!("nested more than {MAX_DEPTH} levels deep"),
            });
        }
        Ok(())
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        if self.keyword("NOT") || matches!(self.peek(), Tok::Minus) {
            self.next();
            self.nest()?;
            let inner = self.simple()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.simple()
    }

    fn simple(&mut self) -> Result<Expr, ParseError> {
        if matches!(self.peek(), Tok::LParen) {
            self.next();
            self.nest()?;
            let e = self.expression()?;
            if !matches!(self.peek(), Tok::RParen) {
                return self.fail("\")\"");
            }
            self.next();
            self.depth -= 1;
            return Ok(e);
        }
        self.restriction()
    }

    fn name(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Word(w) if !matches!(w.as_str(), "AND" | "OR" | "NOT") => {
                self.next();
                Ok(w)
            }
            _ => self.fail("a field name"),
        }
    }

    fn restriction(&mut self) -> Result<Expr, ParseError> {
        let pos = self.pos();
        let mut path: Vec<String> = Vec::new();
        loop {
            let name = self.name()?;
            if name.split('.').any(str::is_empty) {
                return Err(ParseError {
                    pos,
                    message: format!("\"{name}\" is not a field path"),
                });
            }
            path.extend(name.split('.').map(str::to_owned));
            if !matches!(self.peek(), Tok::Dot) {
                break;
            }
            self.next();
        }
        let op = match self.peek() {
            Tok::Op(op) => *op,
            _ => {
                return self.fail("a comparator (=, !=, <, <=, >, >=, :) — bare words are not filters; use `search` for free text");
            }
        };
        self.next();
        let value = match self.next() {
            (_, Tok::Str(s)) => Literal::Text(s),
            (_, Tok::Num(n)) => Literal::Number(n),
            (_, Tok::Star) => Literal::Any,
            (_, Tok::Word(w)) if w == "true" => Literal::Bool(true),
            (_, Tok::Word(w)) if w == "false" => Literal::Bool(false),
            (p, Tok::Word(w)) if matches!(w.as_str(), "AND" | "OR" | "NOT") => {
                return Err(ParseError {
                    pos: p,
                    message: format!("expected a value after {op}, found \"{w}\""),
                });
            }
            (_, Tok::Word(w)) => Literal::Text(w),
            (p, t) => {
                return Err(ParseError {
                    pos: p,
                    message: format!("expected a value after {op}, found {}", describe(&t)),
                });
            }
        };
        self.clauses += 1;
        if self.clauses > MAX_CLAUSES {
            return Err(ParseError {
                pos,
                message: format!("more than {MAX_CLAUSES} restrictions"),
            });
        }
        Ok(Expr::Cmp {
            path,
            op,
            value,
            pos,
        })
    }
}

/// Parses a filter. An empty (or blank) filter is `None`.
pub fn parse(src: &str) -> Result<Option<Expr>, ParseError> {
    if src.len() > MAX_LEN {
        return Err(ParseError {
            pos: MAX_LEN,
            message: format!("longer than {MAX_LEN} bytes"),
        });
    }
    if let Some(pos) = src.find('\0') {
        // Postgres text cannot hold NUL: refused here, not by the database.
        return Err(ParseError {
            pos,
            message: "NUL characters are not allowed".into(),
        });
    }
    if src.trim().is_empty() {
        return Ok(None);
    }
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        at: 0,
        depth: 0,
        clauses: 0,
    };
    let e = p.expression()?;
    if !matches!(p.peek(), Tok::End) {
        return p.fail("AND, OR or the end of the filter");
    }
    Ok(Some(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(path: &str, op: Op, value: Literal) -> Expr {
        Expr::Cmp {
            path: path.split('.').map(str::to_owned).collect(),
            op,
            value,
            pos: 0,
        }
    }

    /// The parse with positions zeroed, for comparisons.
    fn p(src: &str) -> Expr {
        fn strip(e: Expr) -> Expr {
            match e {
                Expr::And(v) => Expr::And(v.into_iter().map(strip).collect()),
                Expr::Or(v) => Expr::Or(v.into_iter().map(strip).collect()),
                Expr::Not(b) => Expr::Not(Box::new(strip(*b))),
                Expr::Cmp {
                    path, op, value, ..
                } => Expr::Cmp {
                    path,
                    op,
                    value,
                    pos: 0,
                },
            }
        }
        strip(parse(src).unwrap().unwrap())
    }

    fn t(s: &str) -> Literal {
        Literal::Text(s.into())
    }

    #[test]
    fn comparisons_and_values() {
        assert_eq!(p(r#"name = "Acme""#), cmp("name", Op::Eq, t("Acme")));
        assert_eq!(p("name='Acme'"), cmp("name", Op::Eq, t("Acme")));
        assert_eq!(
            p("stage != closed_won"),
            cmp("stage", Op::Ne, t("closed_won"))
        );
        assert_eq!(
            p("annual_revenue >= 1000.50"),
            cmp("annual_revenue", Op::Ge, Literal::Number("1000.50".into()))
        );
        assert_eq!(
            p("probability<-1"),
            cmp("probability", Op::Lt, Literal::Number("-1".into()))
        );
        assert_eq!(
            p("version <= 3"),
            cmp("version", Op::Le, Literal::Number("3".into()))
        );
        assert_eq!(
            p("value > 1e3"),
            cmp("value", Op::Gt, Literal::Number("1e3".into()))
        );
        assert_eq!(
            p("is_primary = true"),
            cmp("is_primary", Op::Eq, Literal::Bool(true))
        );
        assert_eq!(p("tags:vip"), cmp("tags", Op::Has, t("vip")));
        assert_eq!(
            p("custom_fields.tier:*"),
            cmp("custom_fields.tier", Op::Has, Literal::Any)
        );
        assert_eq!(
            p(r#"custom_fields.a.b = "x y""#),
            cmp("custom_fields.a.b", Op::Eq, t("x y"))
        );
        assert_eq!(
            p("created_at > 2026-01-02T03:04:05Z"),
            cmp("created_at", Op::Gt, t("2026-01-02T03:04:05Z"))
        );
        assert_eq!(p(r#"name = "Ac\"me*""#), cmp("name", Op::Eq, t("Ac\"me*")));
        assert_eq!(p(r#"name = "lit\*""#), cmp("name", Op::Eq, t("lit\\*")));
        assert_eq!(p("name = \"Zoë\""), cmp("name", Op::Eq, t("Zoë")));
    }

    #[test]
    fn precedence_is_aips() {
        // OR binds tighter than AND: a AND (b OR c).
        assert_eq!(
            p("a = 1 AND b = 2 OR c = 3"),
            Expr::And(vec![
                cmp("a", Op::Eq, Literal::Number("1".into())),
                Expr::Or(vec![
                    cmp("b", Op::Eq, Literal::Number("2".into())),
                    cmp("c", Op::Eq, Literal::Number("3".into()))
                ]),
            ])
        );
        // Juxtaposition is AND; NOT and - negate one term.
        assert_eq!(
            p("a = 1 NOT b = 2 -c = 3"),
            Expr::And(vec![
                cmp("a", Op::Eq, Literal::Number("1".into())),
                Expr::Not(Box::new(cmp("b", Op::Eq, Literal::Number("2".into())))),
                Expr::Not(Box::new(cmp("c", Op::Eq, Literal::Number("3".into())))),
            ])
        );
        assert_eq!(
            p("(a = 1 AND b = 2) OR c = 3"),
            Expr::Or(vec![
                Expr::And(vec![
                    cmp("a", Op::Eq, Literal::Number("1".into())),
                    cmp("b", Op::Eq, Literal::Number("2".into()))
                ]),
                cmp("c", Op::Eq, Literal::Number("3".into())),
            ])
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = parse("name = ").unwrap_err();
        assert_eq!(e.pos, 7);
        assert!(e.message.contains("expected a value"), "{e}");
        let e = parse("acme").unwrap_err();
        assert!(e.message.contains("comparator"), "{e}");
        let e = parse("(name = 1").unwrap_err();
        assert_eq!(e.pos, 9);
        assert!(e.message.contains("\")\""), "{e}");
        let e = parse("name = \"x").unwrap_err();
        assert_eq!(e.pos, 7);
        assert!(parse("name = 1 )").is_err());
        assert!(parse("name == 1").is_err());
        assert!(parse("name = 1 AND").is_err());
        assert!(parse("fn(x) = 1").is_err());
        assert!(parse("a = 1 ; drop table x").is_err());
        assert_eq!(parse("   ").unwrap(), None);
    }

    #[test]
    fn limits() {
        assert!(parse(&"x".repeat(MAX_LEN + 1)).is_err());
        let deep = format!(
            "{}a = 1{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        let ok = format!("{}a = 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let many = vec!["a = 1"; MAX_CLAUSES + 1].join(" OR ");
        assert!(parse(&many).unwrap_err().message.contains("restrictions"));
        let nots = format!("{}a = 1", "NOT ".repeat(MAX_DEPTH + 1));
        assert!(parse(&nots).is_err());
    }

    #[test]
    fn every_character_moves_the_lexer() {
        // Regression: a non-alphanumeric non-ASCII character once made the
        // lexer stand still (an endless loop).
        for s in [
            "\u{d74fb}",
            "a = \u{1f600}",
            "\u{1f600} = 1",
            "é",
            "a = é\u{301}",
            "\u{feff}a = 1",
        ] {
            let _ = parse(s);
        }
        assert!(
            parse("\u{1f600} = 1")
                .unwrap_err()
                .message
                .contains("unexpected character")
        );
    }

    #[test]
    fn nul_is_refused_with_its_position() {
        let e = parse("name = \"a\0b\"").unwrap_err();
        assert_eq!(e.pos, 9);
        assert!(e.message.contains("NUL"), "{e}");
        assert!(parse("\0").is_err());
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "\"", "'", "\\", "(((", ")))", "-", "--1", "a.b.", ".a = 1", "a = -", "a:", "é = ü",
            "a = \"\\", "\u{0}", "a = 1e", "a =1.", "*", "a = *", "NOT", "OR a = 1",
        ] {
            let _ = parse(s);
        }
    }
}

//! The composition expression language: `"red & circle & !left"`, `"a | 2*b"`, `"0.5*!left & (red | blue)"`.
//!
//! Precedence: `!` and `w*` bind tightest, then `&`, then `|`; parentheses group. Names start with a letter
//! or `_` and may contain letters, digits and `_ - . : =` (so `shape=circle` is one name). Weights are
//! positive decimal numbers (`2`, `0.5`, `1e-1`); negate with `!`. What the operators mean for energies is
//! in [`crate::energy::compose`]; data sources use the same expressions to describe attribute sets.
//!
//! Nesting (parentheses, `!` and `w*`, each one level) is limited to [`MAX_DEPTH`] levels: the parser is
//! recursive, and a deeper expression is an error pointing at the first token past the limit rather than a
//! stack overflow.

use crate::error::{invalid, EbmError};
use std::fmt;
use std::str::FromStr;

/// The deepest nesting an expression may have: every `(`, `!` and `w*` opens one level. Far more than a
/// composition needs; it keeps the recursive parser (and everything that walks the tree) off the end of
/// the stack.
pub const MAX_DEPTH: usize = 64;

// ---------------------------------------------------------------------------------------------------------

/// A node of a parsed composition expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// An expert (attribute) name; `pos` is its column (0-based, in characters) in the source.
    Name {
        /// The name.
        name: String,
        /// 0-based character offset of the name in the source.
        pos: usize,
    },
    /// `!e`: the negated `f`.
    Not(Box<Expr>),
    /// `w*e`: `f` scaled by a positive, finite weight.
    Weight(f64, Box<Expr>),
    /// `e₁ & e₂ & …`: the sum of the `f`s (two or more operands).
    And(Vec<Expr>),
    /// `e₁ | e₂ | …`: the log-sum-exp of the `f`s (two or more operands).
    Or(Vec<Expr>),
}

impl Expr {
    /// Evaluates the expression as a boolean formula over attribute names (`!` is NOT, weights are
    /// ignored), e.g. to check whether a sample satisfies what was asked for.
    pub fn satisfied_by(&self, has: &dyn Fn(&str) -> bool) -> bool {
        match self {
            Expr::Name { name, .. } => has(name),
            Expr::Not(e) => !e.satisfied_by(has),
            Expr::Weight(_, e) => e.satisfied_by(has),
            Expr::And(es) => es.iter().all(|e| e.satisfied_by(has)),
            Expr::Or(es) => es.iter().any(|e| e.satisfied_by(has)),
        }
    }

    fn collect_names<'s>(&'s self, out: &mut Vec<(&'s str, usize)>) {
        match self {
            Expr::Name { name, pos } => out.push((name, *pos)),
            Expr::Not(e) | Expr::Weight(_, e) => e.collect_names(out),
            Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| e.collect_names(out)),
        }
    }

    fn prec(&self) -> u8 {
        match self {
            Expr::Or(_) => 0,
            Expr::And(_) => 1,
            _ => 2,
        }
    }

    fn fmt_in(&self, f: &mut fmt::Formatter<'_>, min_prec: u8) -> fmt::Result {
        let paren = self.prec() < min_prec;
        if paren {
            write!(f, "(")?;
        }
        match self {
            Expr::Name { name, .. } => write!(f, "{name}")?,
            Expr::Not(e) => {
                write!(f, "!")?;
                e.fmt_in(f, 2)?;
            }
            Expr::Weight(w, e) => {
                write!(f, "{w}*")?;
                e.fmt_in(f, 2)?;
            }
            Expr::And(es) | Expr::Or(es) => {
                let (sep, p) = if matches!(self, Expr::And(_)) { (" & ", 2) } else { (" | ", 1) };
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        write!(f, "{sep}")?;
                    }
                    e.fmt_in(f, p)?;
                }
            }
        }
        if paren {
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// Prints the expression with the fewest parentheses that keep its meaning; parsing the output gives the
/// same tree (up to name positions).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_in(f, 0)
    }
}

/// A parse or name-resolution error in an expression, pointing at the offending place.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    /// The expression as given.
    pub source: String,
    /// 0-based character offset of the problem.
    pub pos: usize,
    /// Length (in characters, ≥ 1) of the offending token, for the `^^^` marker.
    pub len: usize,
    /// What is wrong.
    pub msg: String,
    /// The names that would have been accepted (set for unknown names).
    pub known: Vec<String>,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {} of expression \"{}\"", self.msg, self.pos + 1, self.source)?;
        if !self.known.is_empty() {
            write!(f, "; known names: {}", self.known.join(", "))?;
        }
        write!(f, "\n    {}\n    {}{}", self.source, " ".repeat(self.pos), "^".repeat(self.len.max(1)))
    }
}

impl std::error::Error for ExprError {}

impl From<ExprError> for EbmError {
    fn from(e: ExprError) -> Self {
        invalid("expression", e.to_string())
    }
}

/// A parsed expression together with its source text (kept for error messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    source: String,
    root: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Num(f64),
    And,
    Or,
    Not,
    Star,
    LParen,
    RParen,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Name(n) => format!("the name '{n}'"),
            Tok::Num(v) => format!("the number {v}"),
            Tok::And => "'&'".into(),
            Tok::Or => "'|'".into(),
            Tok::Not => "'!'".into(),
            Tok::Star => "'*'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
        }
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '=')
}

struct Parser<'s> {
    source: &'s str,
    toks: Vec<(Tok, usize, usize)>,
    i: usize,
    end: usize,
    /// Levels of `(`, `!` and `w*` open at the current token.
    depth: usize,
}

impl<'s> Parser<'s> {
    fn err(&self, pos: usize, len: usize, msg: impl Into<String>) -> ExprError {
        ExprError { source: self.source.to_string(), pos, len, msg: msg.into(), known: Vec::new() }
    }

    fn lex(source: &'s str) -> std::result::Result<Self, ExprError> {
        let chars: Vec<char> = source.chars().collect();
        let mut p = Parser { source, toks: Vec::new(), i: 0, end: chars.len(), depth: 0 };
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let start = i;
            let tok = match c {
                c if c.is_whitespace() => {
                    i += 1;
                    continue;
                }
                '&' => Tok::And,
                '|' => Tok::Or,
                '!' => Tok::Not,
                '*' => Tok::Star,
                '(' => Tok::LParen,
                ')' => Tok::RParen,
                c if c.is_ascii_digit() || c == '.' => {
                    while i < chars.len()
                        && (chars[i].is_ascii_alphanumeric()
                            || chars[i] == '.'
                            || (matches!(chars[i], '+' | '-') && matches!(chars[i - 1], 'e' | 'E')))
                    {
                        i += 1;
                    }
                    let text: String = chars[start..i].iter().collect();
                    let v: f64 =
                        text.parse().map_err(|_| p.err(start, i - start, format!("invalid number '{text}'")))?;
                    p.toks.push((Tok::Num(v), start, i - start));
                    continue;
                }
                c if is_name_start(c) => {
                    while i < chars.len() && is_name_char(chars[i]) {
                        i += 1;
                    }
                    p.toks.push((Tok::Name(chars[start..i].iter().collect()), start, i - start));
                    continue;
                }
                other => {
                    return Err(p.err(
                        start,
                        1,
                        format!("unexpected character '{other}' (operators are & | ! * and parentheses)"),
                    ))
                }
            };
            p.toks.push((tok, start, 1));
            i += 1;
        }
        Ok(p)
    }

    fn peek(&self) -> Option<&(Tok, usize, usize)> {
        self.toks.get(self.i)
    }

    fn or(&mut self) -> std::result::Result<Expr, ExprError> {
        let mut items = vec![self.and()?];
        while matches!(self.peek(), Some((Tok::Or, ..))) {
            self.i += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::Or(items) })
    }

    fn and(&mut self) -> std::result::Result<Expr, ExprError> {
        let mut items = vec![self.unary()?];
        while matches!(self.peek(), Some((Tok::And, ..))) {
            self.i += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::And(items) })
    }

    fn unary(&mut self) -> std::result::Result<Expr, ExprError> {
        let Some((tok, pos, len)) = self.peek().cloned() else {
            let what = if self.toks.is_empty() { "empty expression" } else { "unexpected end of expression" };
            return Err(self.err(self.end, 1, format!("{what}: expected a name, '!', a weight or '('")));
        };
        self.i += 1;
        let opens = matches!(tok, Tok::Not | Tok::Num(_) | Tok::LParen);
        if opens {
            if self.depth >= MAX_DEPTH {
                return Err(self.err(
                    pos,
                    len,
                    format!("the expression nests deeper than {MAX_DEPTH} levels (each '(', '!' and weight opens one)"),
                ));
            }
            self.depth += 1;
        }
        let e = self.unary_tok(tok, pos, len);
        if opens {
            self.depth -= 1;
        }
        e
    }

    /// The operand that starts with `tok` (already consumed) at `pos`.
    fn unary_tok(&mut self, tok: Tok, pos: usize, len: usize) -> std::result::Result<Expr, ExprError> {
        match tok {
            Tok::Name(name) => Ok(Expr::Name { name, pos }),
            Tok::Not => Ok(Expr::Not(Box::new(self.unary()?))),
            Tok::Num(w) => {
                match self.peek() {
                    Some((Tok::Star, ..)) => self.i += 1,
                    Some((t, p, l)) => {
                        return Err(self.err(
                            *p,
                            *l,
                            format!("expected '*' after the weight {w}, found {}", t.describe()),
                        ))
                    }
                    None => return Err(self.err(self.end, 1, format!("expected '*' after the weight {w}"))),
                }
                if !(w > 0.0) || !w.is_finite() {
                    return Err(self.err(
                        pos,
                        len,
                        format!("weight {w} must be positive and finite (negate with '!')"),
                    ));
                }
                Ok(Expr::Weight(w, Box::new(self.unary()?)))
            }
            Tok::LParen => {
                let e = self.or()?;
                match self.peek() {
                    Some((Tok::RParen, ..)) => {
                        self.i += 1;
                        Ok(e)
                    }
                    Some((t, p, l)) => Err(self.err(
                        *p,
                        *l,
                        format!("expected ')' to close the '(' at column {}, found {}", pos + 1, t.describe()),
                    )),
                    None => Err(self.err(pos, 1, "this '(' is never closed")),
                }
            }
            other => {
                Err(self.err(pos, len, format!("expected a name, '!', a weight or '(', found {}", other.describe())))
            }
        }
    }
}

impl Expression {
    /// Parses `source`. Errors point at the offending column.
    pub fn parse(source: &str) -> std::result::Result<Self, ExprError> {
        let mut p = Parser::lex(source)?;
        let root = p.or()?;
        if let Some((t, pos, len)) = p.peek() {
            let msg = if *t == Tok::RParen {
                "unmatched ')'".to_string()
            } else {
                format!("unexpected {} after a complete expression (missing '&' or '|'?)", t.describe())
            };
            return Err(p.err(*pos, *len, msg));
        }
        Ok(Expression { source: source.to_string(), root })
    }

    /// Parses `source` and checks that every name is in `known`.
    pub fn parse_known<S: AsRef<str>>(source: &str, known: &[S]) -> std::result::Result<Self, ExprError> {
        let e = Self::parse(source)?;
        e.check_names(known)?;
        Ok(e)
    }

    /// Errors at the first name that is not in `known`; the error lists the known names.
    pub fn check_names<S: AsRef<str>>(&self, known: &[S]) -> std::result::Result<(), ExprError> {
        let mut names = Vec::new();
        self.root.collect_names(&mut names);
        for (n, pos) in names {
            if !known.iter().any(|k| k.as_ref() == n) {
                let mut known: Vec<String> = known.iter().map(|k| k.as_ref().to_string()).collect();
                known.sort();
                known.dedup();
                let len = n.chars().count();
                return Err(ExprError {
                    source: self.source.clone(),
                    pos,
                    len,
                    msg: format!("unknown name '{n}'"),
                    known,
                });
            }
        }
        Ok(())
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The tree.
    pub fn root(&self) -> &Expr {
        &self.root
    }

    /// The distinct names, in order of first appearance.
    pub fn names(&self) -> Vec<String> {
        let mut all = Vec::new();
        self.root.collect_names(&mut all);
        let mut out: Vec<String> = Vec::new();
        for (n, _) in all {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
        out
    }

    /// See [`Expr::satisfied_by`].
    pub fn satisfied_by(&self, has: &dyn Fn(&str) -> bool) -> bool {
        self.root.satisfied_by(has)
    }
}

impl FromStr for Expression {
    type Err = ExprError;
    fn from_str(s: &str) -> std::result::Result<Self, ExprError> {
        Expression::parse(s)
    }
}

/// The canonical form of the tree (see [`Expr`]'s `Display`).
impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_weights_and_parentheses() {
        let e = Expression::parse("red & circle & !left").unwrap();
        assert_eq!(e.to_string(), "red & circle & !left");
        assert!(matches!(e.root(), Expr::And(v) if v.len() == 3 && matches!(v[2], Expr::Not(_))));
        // & binds tighter than |; ! and w* tighter than &
        let e = Expression::parse("a | b & !c | 2*d").unwrap();
        assert_eq!(e.to_string(), "a | b & !c | 2*d");
        assert!(matches!(e.root(), Expr::Or(v) if v.len() == 3));
        let e = Expression::parse("0.5*!left & (red|blue)").unwrap();
        assert_eq!(e.to_string(), "0.5*!left & (red | blue)");
        let Expr::And(v) = e.root() else { panic!("{e:?}") };
        assert!(matches!(&v[0], Expr::Weight(w, inner) if *w == 0.5 && matches!(**inner, Expr::Not(_))));
        // round trip of the canonical form, and names in order of first use
        let e = Expression::parse("  2*(shape=circle | x.y) & !(a & 1e-1*b) ").unwrap();
        assert_eq!(Expression::parse(&e.to_string()).unwrap().to_string(), e.to_string());
        assert_eq!(e.names(), vec!["shape=circle", "x.y", "a", "b"]);
        let e = Expression::parse("a & a | a").unwrap();
        assert_eq!(e.names(), vec!["a"]);
    }

    #[test]
    fn boolean_evaluation_follows_the_operators() {
        let e = Expression::parse("red & circle & !left | 3*blue").unwrap();
        let has = |set: &'static [&'static str]| move |n: &str| set.contains(&n);
        assert!(e.satisfied_by(&has(&["red", "circle"])));
        assert!(!e.satisfied_by(&has(&["red", "circle", "left"])));
        assert!(e.satisfied_by(&has(&["blue", "left"])));
        assert!(!e.satisfied_by(&has(&["red"])));
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        let cases: [(&str, usize, &str); 10] = [
            ("red & & circle", 6, "expected a name, '!', a weight or '(', found '&'"),
            ("(red | blue", 0, "this '(' is never closed"),
            ("(red | blue blue)", 12, "expected ')' to close the '(' at column 1, found the name 'blue'"),
            ("red $ blue", 4, "unexpected character '$'"),
            ("", 0, "empty expression"),
            ("red &", 5, "unexpected end of expression"),
            ("red)", 3, "unmatched ')'"),
            ("2 red", 2, "expected '*' after the weight 2, found the name 'red'"),
            ("0*red", 0, "weight 0 must be positive"),
            ("1.2.3*red", 0, "invalid number '1.2.3'"),
        ];
        for (src, pos, want) in cases {
            let e = Expression::parse(src).unwrap_err();
            assert_eq!(e.pos, pos, "{src}: {e}");
            assert!(e.to_string().contains(want), "{src}: {e}");
            assert!(e.to_string().contains(&format!("at column {}", pos + 1)), "{src}: {e}");
        }
        assert!(Expression::parse("red blue").unwrap_err().msg.contains("missing '&' or '|'"));
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_an_error_at_its_column_not_a_stack_overflow() {
        // 20 000 levels overflowed the stack of the recursive parser
        for (open, close) in [("(", ")"), ("!", ""), ("2*", "")] {
            let src = format!("{}red{}", open.repeat(20_000), close.repeat(20_000));
            let e = Expression::parse(&src).unwrap_err();
            assert_eq!(e.pos, MAX_DEPTH * open.len(), "{open}: {}", e.msg);
            assert!(e.msg.contains(&format!("nests deeper than {MAX_DEPTH} levels")), "{}", e.msg);
            assert!(e.to_string().contains(&format!("at column {}", MAX_DEPTH * open.len() + 1)), "{}", e.msg);
        }
        // the limit itself is fine, and sibling groups do not add up
        let src = format!("{}red{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(Expression::parse(&src).unwrap().to_string(), "red");
        let wide = vec!["!(a & (b | !c))"; 1000].join(" & ");
        assert!(Expression::parse(&wide).is_ok());
        let mixed = format!("{}a", "!(2*".repeat(MAX_DEPTH / 3)) + &")".repeat(MAX_DEPTH / 3);
        assert!(Expression::parse(&mixed).is_ok());
    }
}

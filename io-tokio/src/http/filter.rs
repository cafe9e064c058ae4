//! `?filter=` expressions, as Consul evaluates them with go-bexpr on the
//! catalog and health endpoints: `Selector == value`, `!=`, `value in
//! Selector`, `not in`, `Selector contains value`, `not contains`,
//! `matches` / `not matches` (Go regular expressions), `is empty`, `is not
//! empty`, joined with `and`, `or`, `not` and parentheses (`not` binds
//! tightest, then `and`, then `or`).
//!
//! A selector names fields of the JSON the endpoint answers with
//! (`Service.Tags`, `ServiceMeta.version`, `Checks.Status`); a path through
//! a list matches if any element does, as bexpr walks slices. Values are
//! `"double quoted"` (with escapes), `` `raw` `` or a bare word. Filtering
//! is done on the answer after the read, so `X-Consul-Index` is the read's.
//!
//! A malformed expression, an unknown top-level field, or a value that
//! cannot be compared with the field (`Port == web`) is a 400 `Failed to
//! create boolean expression evaluator: ...`.

use serde::Serialize;
use serde_json::Value;

use super::reply::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match {
        selector: Vec<String>,
        op: MatchOp,
        value: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MatchOp {
    Equal,
    NotEqual,
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    Matches,
    NotMatches,
}

/// A parsed `?filter=` expression.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    expr: Expr,
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Eq,
    Ne,
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::Eq);
                i += 2;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::Ne);
                i += 2;
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated string at {}", i)),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let e = chars.get(i + 1).ok_or("unterminated escape")?;
                            v.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => *other,
                            });
                            i += 2;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Quoted(v));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|c| *c == '`')
                    .ok_or_else(|| format!("unterminated raw string at {i}"))?;
                out.push(Token::Quoted(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            _ => {
                let start = i;
                let ends_word = |i: usize| {
                    let c = chars[i];
                    let op = (c == '=' || c == '!') && chars.get(i + 1) == Some(&'=');
                    c.is_whitespace() || matches!(c, '(' | ')' | '"' | '`') || op
                };
                while i < chars.len() && !ends_word(i) {
                    // A map index (`Meta["a b"]`) is part of the selector,
                    // quotes and spaces included.
                    if chars[i] == '[' {
                        match chars[i..].iter().position(|c| *c == ']') {
                            Some(end) => i += end + 1,
                            None => return Err(format!("unterminated \"[\" at {i}")),
                        }
                    } else {
                        i += 1;
                    }
                }
                if start == i {
                    return Err(format!("unexpected character {c:?} at {i}"));
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

/// How deep `not` and parentheses may nest, and how many comparisons an
/// expression may hold: a query string is the network's, and parsing and
/// evaluating recurse.
const NESTING_MAX: usize = 64;
const TERMS_MAX: usize = 512;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(x)) if x == w)
    }
    fn peek_word_at(&self, n: usize, w: &str) -> bool {
        matches!(self.tokens.get(self.at + n), Some(Token::Word(x)) if x == w)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.peek_word("and") {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        // `not` before a match or a group (not `not in`, which follows a value).
        if self.peek_word("not") {
            self.at += 1;
            self.depth += 1;
            if self.depth > NESTING_MAX {
                return Err(format!("expression nested deeper than {NESTING_MAX}"));
            }
            let e = Expr::Not(Box::new(self.not()?));
            self.depth -= 1;
            return Ok(e);
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(Token::Open) => {
                self.at += 1;
                self.depth += 1;
                if self.depth > NESTING_MAX {
                    return Err(format!("expression nested deeper than {NESTING_MAX}"));
                }
                let e = self.or()?;
                self.depth -= 1;
                match self.next() {
                    Some(Token::Close) => Ok(e),
                    _ => Err("expected \")\"".into()),
                }
            }
            Some(_) => {
                self.terms += 1;
                if self.terms > TERMS_MAX {
                    return Err(format!("expression has more than {TERMS_MAX} comparisons"));
                }
                self.matcher()
            }
            None => Err("unexpected end of expression".into()),
        }
    }

    fn matcher(&mut self) -> Result<Expr, String> {
        let first = self.next().ok_or("unexpected end of expression")?;
        // `value in Selector` / `value not in Selector`.
        let value_first =
            self.peek_word("in") || (self.peek_word("not") && self.peek_word_at(1, "in"));
        if value_first {
            let value = match first {
                Token::Word(w) | Token::Quoted(w) => w,
                other => return Err(format!("unexpected {other:?}")),
            };
            let op = if self.peek_word("not") {
                self.at += 2;
                MatchOp::NotIn
            } else {
                self.at += 1;
                MatchOp::In
            };
            let selector = match self.next() {
                Some(Token::Word(w)) => selector(&w)?,
                _ => return Err("expected a selector after \"in\"".into()),
            };
            return Ok(Expr::Match {
                selector,
                op,
                value,
            });
        }
        let selector = match first {
            Token::Word(w) => selector(&w)?,
            other => return Err(format!("expected a selector, got {other:?}")),
        };
        let op = match self.next() {
            Some(Token::Eq) => MatchOp::Equal,
            Some(Token::Ne) => MatchOp::NotEqual,
            Some(Token::Word(w)) => match w.as_str() {
                "is" => {
                    let negated = self.peek_word("not");
                    if negated {
                        self.at += 1;
                    }
                    if !self.peek_word("empty") {
                        return Err("expected \"empty\" after \"is\"".into());
                    }
                    self.at += 1;
                    let op = if negated {
                        MatchOp::IsNotEmpty
                    } else {
                        MatchOp::IsEmpty
                    };
                    return Ok(Expr::Match {
                        selector,
                        op,
                        value: String::new(),
                    });
                }
                "contains" => MatchOp::In,
                "matches" => MatchOp::Matches,
                "not" => match self.next() {
                    Some(Token::Word(w)) if w == "contains" => MatchOp::NotIn,
                    Some(Token::Word(w)) if w == "matches" => MatchOp::NotMatches,
                    _ => return Err("expected \"contains\" or \"matches\" after \"not\"".into()),
                },
                other => return Err(format!("unknown operator {other:?}")),
            },
            other => return Err(format!("expected an operator, got {other:?}")),
        };
        let value = match self.next() {
            Some(Token::Word(w)) | Some(Token::Quoted(w)) => w,
            _ => return Err("expected a value".into()),
        };
        Ok(Expr::Match {
            selector,
            op,
            value,
        })
    }
}

/// `A.B["c d"].E` -> ["A", "B", "c d", "E"].
fn selector(w: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut rest = w;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| format!("invalid selector {w:?}"))?;
            parts.push(r[..end].trim_matches('"').to_string());
            rest = r[end + 1..].trim_start_matches('.');
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end == 0 {
                return Err(format!("invalid selector {w:?}"));
            }
            parts.push(rest[..end].to_string());
            rest = rest[end..].strip_prefix('.').unwrap_or(&rest[end..]);
        }
    }
    if parts.is_empty()
        || !parts[0]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
    {
        return Err(format!("invalid selector {w:?}"));
    }
    Ok(parts)
}

impl Filter {
    pub(crate) fn parse(text: &str) -> Result<Filter, String> {
        let mut p = Parser {
            tokens: tokenize(text)?,
            at: 0,
            depth: 0,
            terms: 0,
        };
        let expr = p.or()?;
        if p.at < p.tokens.len() {
            return Err(format!(
                "unexpected {:?} after the expression",
                p.tokens[p.at]
            ));
        }
        Ok(Filter {
            expr,
            text: text.to_string(),
        })
    }

    /// Whether `item` (one element of the answer, as JSON) passes.
    pub(crate) fn matches(&self, item: &Value) -> Result<bool, String> {
        eval(&self.expr, item)
    }
}

fn eval(e: &Expr, item: &Value) -> Result<bool, String> {
    match e {
        Expr::Or(a, b) => Ok(eval(a, item)? || eval(b, item)?),
        Expr::And(a, b) => Ok(eval(a, item)? && eval(b, item)?),
        Expr::Not(a) => Ok(!eval(a, item)?),
        Expr::Match {
            selector,
            op,
            value,
        } => {
            let found = resolve(item, selector)?;
            match op {
                MatchOp::Equal => any_equal(&found, value, selector),
                MatchOp::NotEqual => any_equal(&found, value, selector).map(|b| !b),
                MatchOp::In => Ok(found.iter().any(|v| holds(v, value))),
                MatchOp::NotIn => Ok(!found.iter().any(|v| holds(v, value))),
                MatchOp::IsEmpty => Ok(found.iter().all(|v| is_empty(v))),
                MatchOp::IsNotEmpty => Ok(!found.iter().all(|v| is_empty(v))),
                MatchOp::Matches => matches_re(&found, value),
                MatchOp::NotMatches => matches_re(&found, value).map(|b| !b),
            }
        }
    }
}

/// The values `path` reaches from `item`; through a list, every element's.
fn resolve<'a>(item: &'a Value, path: &[String]) -> Result<Vec<&'a Value>, String> {
    let mut current = vec![item];
    for (depth, part) in path.iter().enumerate() {
        let mut next = Vec::new();
        for v in current {
            let mut stack = vec![v];
            while let Some(v) = stack.pop() {
                match v {
                    Value::Array(items) => stack.extend(items.iter()),
                    Value::Object(map) => match map.get(part.as_str()) {
                        Some(x) => next.push(x),
                        // A field the answer does not have at all is a
                        // typo, as bexpr's selector validation says.
                        None if depth == 0 => {
                            return Err(format!("Selector {:?} is not valid", path.join(".")))
                        }
                        None => {}
                    },
                    _ => {}
                }
            }
        }
        current = next;
    }
    Ok(current)
}

fn any_equal(found: &[&Value], raw: &str, path: &[String]) -> Result<bool, String> {
    for v in found {
        let leaves: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for leaf in leaves {
            let eq = match leaf {
                Value::String(s) => s == raw,
                Value::Null => raw.is_empty(),
                Value::Bool(b) => {
                    let want = raw.parse::<bool>().map_err(|_| {
                        format!(
                            "error getting match value in expression: {raw:?} is not a bool for {:?}",
                            path.join(".")
                        )
                    })?;
                    *b == want
                }
                Value::Number(n) => {
                    let want = raw.parse::<f64>().map_err(|_| {
                        format!(
                            "error getting match value in expression: {raw:?} is not a number for {:?}",
                            path.join(".")
                        )
                    })?;
                    n.as_f64() == Some(want)
                }
                Value::Object(_) | Value::Array(_) => false,
            };
            if eq {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// `value in v` / `v contains value`: an element of a list, a key of a map,
/// a substring of a string.
fn holds(v: &Value, raw: &str) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|i| match i {
            Value::String(s) => s == raw,
            Value::Number(n) => raw.parse::<f64>().ok() == n.as_f64(),
            Value::Bool(b) => raw.parse::<bool>().ok() == Some(*b),
            _ => false,
        }),
        Value::Object(map) => map.contains_key(raw),
        Value::String(s) => s.contains(raw),
        _ => false,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn matches_re(found: &[&Value], pattern: &str) -> Result<bool, String> {
    let re = regex_automata::meta::Regex::new(pattern)
        .map_err(|e| format!("Failed to compile regular expression {pattern:?}: {e}"))?;
    Ok(found.iter().any(|v| match v {
        Value::String(s) => re.is_match(s.as_str()),
        Value::Array(items) => items
            .iter()
            .any(|i| matches!(i, Value::String(s) if re.is_match(s.as_str()))),
        _ => false,
    }))
}

fn invalid(e: String) -> ApiError {
    ApiError::bad_request(format!(
        "Failed to create boolean expression evaluator: {e}"
    ))
}

/// `?filter=` from the query: `None` when absent or empty.
pub(crate) fn from_query(text: Option<&str>) -> Result<Option<Filter>, ApiError> {
    match text.filter(|t| !t.trim().is_empty()) {
        None => Ok(None),
        Some(t) => Filter::parse(t).map(Some).map_err(invalid),
    }
}

/// The items of an answer that pass `filter` (all of them without one).
pub(crate) fn apply<T: Serialize>(
    items: Vec<T>,
    filter: Option<&Filter>,
) -> Result<Vec<T>, ApiError> {
    let Some(f) = filter else {
        return Ok(items);
    };
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let v = serde_json::to_value(&item)
            .map_err(|e| ApiError::internal(format!("Failed to encode response: {e}")))?;
        if f.matches(&v)
            .map_err(|e| invalid(format!("{e} (in {:?})", f.text)))?
        {
            kept.push(item);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn passes(expr: &str, item: &Value) -> bool {
        Filter::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .matches(item)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    fn instance() -> Value {
        json!({
            "Node": "web-1",
            "ServiceName": "web",
            "ServiceTags": ["v1", "primary"],
            "ServicePort": 8080,
            "ServiceMeta": {"version": "1.2", "team": "a"},
            "ServiceEnableTagOverride": false,
            "Checks": [
                {"CheckID": "serfHealth", "Status": "passing"},
                {"CheckID": "web:http", "Status": "critical"}
            ],
            "Empty": "",
            "Nothing": null
        })
    }

    /// The operators of go-bexpr as Consul's filtering docs show them.
    #[test]
    fn every_operator() {
        let i = instance();
        assert!(passes("Node == web-1", &i));
        assert!(passes("Node == \"web-1\"", &i));
        assert!(passes("Node == `web-1`", &i));
        assert!(!passes("Node != web-1", &i));
        assert!(passes("ServicePort == 8080", &i));
        assert!(passes("ServiceEnableTagOverride == false", &i));
        assert!(passes("v1 in ServiceTags", &i));
        assert!(passes("v9 not in ServiceTags", &i));
        assert!(passes("ServiceTags contains primary", &i));
        assert!(passes("ServiceTags not contains canary", &i));
        assert!(passes("version in ServiceMeta", &i));
        assert!(passes("ServiceMeta.version == \"1.2\"", &i));
        assert!(passes("ServiceMeta[\"team\"] == a", &i));
        assert!(!passes("ServiceMeta.missing == a", &i));
        assert!(passes("Node matches \"^web-[0-9]+$\"", &i));
        assert!(passes("Node not matches \"^db\"", &i));
        assert!(passes("Empty is empty", &i));
        assert!(passes("Nothing is empty", &i));
        assert!(passes("ServiceTags is not empty", &i));
        assert!(passes("Node contains eb-", &i));
        // Through a list: any element.
        assert!(passes("Checks.Status == critical", &i));
        assert!(passes("Checks.CheckID == serfHealth", &i));
        assert!(!passes("Checks.Status == warning", &i));
        // Boolean structure and precedence: not > and > or.
        assert!(passes(
            "Node == x or Node == web-1 and v1 in ServiceTags",
            &i
        ));
        assert!(!passes(
            "(Node == x or Node == web-1) and v9 in ServiceTags",
            &i
        ));
        assert!(passes("not Node == x", &i));
        assert!(passes("not (Node == x or ServicePort == 1)", &i));
        assert!(!passes("not not Node == x", &i));
    }

    #[test]
    fn bad_expressions_and_bad_values_are_errors() {
        for bad in [
            "",
            "Node ==",
            "Node = web",
            "== web",
            "(Node == web",
            "Node == web)",
            "Node is full",
            "Node not equals web",
            "Node == \"unterminated",
            "1Node == web",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad:?} parsed");
        }
        let i = instance();
        for bad in [
            "Nodes == web-1",
            "ServicePort == web",
            "ServiceEnableTagOverride == maybe",
            "Node matches \"(\"",
        ] {
            let f = Filter::parse(bad).unwrap();
            assert!(f.matches(&i).is_err(), "{bad:?} evaluated");
        }
    }

    /// Input from the network never recurses without bound.
    #[test]
    fn nesting_and_length_are_bounded() {
        let deep = format!("{}Node == a{}", "(".repeat(64), ")".repeat(64));
        assert!(Filter::parse(&deep).is_ok());
        let deeper = format!("{}Node == a{}", "(".repeat(65), ")".repeat(65));
        assert!(Filter::parse(&deeper)
            .unwrap_err()
            .contains("nested deeper"));
        let nots = format!("{}Node == a", "not ".repeat(100_000));
        assert!(Filter::parse(&nots).is_err());
        let parens = "(".repeat(100_000);
        assert!(Filter::parse(&parens).is_err());
        let many = vec!["Node == a"; 512].join(" or ");
        assert!(Filter::parse(&many).is_ok());
        let too_many = vec!["Node == a"; 513].join(" or ");
        assert!(Filter::parse(&too_many)
            .unwrap_err()
            .contains("more than 512"));
    }
}

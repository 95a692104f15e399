//! Client histories of a key-value store: what each client asked, when, and what it was told.
//!
//! A [`History`] is filled in by whoever drives the clients (the deterministic simulation
//! with virtual ticks, or the chaos harness with wall-clock nanoseconds) and is then handed
//! to [`crate::linearizability::check`]:
//!
//! ```text
//!  client ──invoke(client, op, t0)──► History ◄──complete(id, outcome, t1)── client
//!                                        │
//!            to_text() ──► file ──► from_text()      (re-check a failing run later)
//!                                        │
//!                                        ▼
//!                            linearizability::check ──► Verdict
//! ```
//!
//! Keys and values are byte strings ([`Key`], [`Value`], both `Vec<u8>`). Time is a bare
//! `u64` whose unit the caller picks (virtual ticks or nanoseconds); the checker only
//! compares times, so one history must use one unit throughout.
//!
//! # Text form
//!
//! [`History::to_text`] writes one line per operation; [`History::from_text`] reads it back:
//!
//! ```text
//! # raftkit history v1: <id> <client> <invoked> <completed|-> <op> <args> -> <outcome>
//! 0 c1 100 250 put "k1" "v1" -> ok
//! 1 c2 120 300 get "k1" -> ok "v1"
//! 2 c0 130 310 cas "k1" nil "v2" -> ok false
//! 3 c0 320 330 delete "k1" -> fail
//! 4 c3 340 900 put "k1" "v3" -> unknown
//! 5 c4 350 - get "k1" -> pending
//! ```
//!
//! Byte strings are quoted; `\\`, `\"` and any byte outside printable ASCII are written as
//! `\xNN`. `nil` is an absent value. `pending` marks an operation never completed (it counts as
//! `unknown`). Blank lines and lines starting with `#` are ignored. Ids must run 0, 1, 2, …
//! in line order.

use std::fmt::{self, Write as _};

use thiserror::Error;

/// A key of the store: any byte string.
pub type Key = Vec<u8>;

/// A value of the store: any byte string (the empty string is a value, distinct from absent).
pub type Value = Vec<u8>;

/// Identifies an operation within one [`History`]: its position in invocation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Identifies a client. The checker does not use it; it makes reports readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

/// An operation a client invokes on the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key written.
        key: Key,
        /// The value written.
        value: Value,
    },
    /// Read `key`.
    Get {
        /// The key read.
        key: Key,
    },
    /// Remove `key`.
    Delete {
        /// The key removed.
        key: Key,
    },
    /// If `key` currently holds `expected` (`None`: is absent), set it to `new` (`None`:
    /// delete it) and return swapped = true; otherwise change nothing and return false.
    Cas {
        /// The key compared and maybe written.
        key: Key,
        /// The value the key must hold for the swap; `None` means it must be absent.
        expected: Option<Value>,
        /// The value written on a swap; `None` deletes the key.
        new: Option<Value>,
    },
}

/// The kind of an [`Op`], without its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// [`Op::Put`].
    Put,
    /// [`Op::Get`].
    Get,
    /// [`Op::Delete`].
    Delete,
    /// [`Op::Cas`].
    Cas,
}

/// What a successful operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Returned {
    /// A `Put` or `Delete` was applied.
    Done,
    /// A `Get` read this value (`None`: the key was absent).
    Value(Option<Value>),
    /// A `Cas` was applied; `true` if it swapped.
    Swapped(bool),
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It took effect, exactly once, between invocation and completion, and returned this.
    Ok(Returned),
    /// It definitely did not take effect (for example, rejected before it was proposed).
    Fail,
    /// The client cannot tell (timeout, dropped connection): it may have taken effect at any
    /// time after its invocation, even after the client gave up, or never.
    Unknown,
}

/// How and when an operation completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// What the client was told.
    pub outcome: Outcome,
    /// When the client was told, in the history's time unit.
    pub completed_at: u64,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its id in the history.
    pub id: OpId,
    /// The client that invoked it.
    pub client: ClientId,
    /// What was asked.
    pub op: Op,
    /// When it was invoked, in the history's time unit.
    pub invoked_at: u64,
    /// How it ended; `None` if it never completed, which counts as [`Outcome::Unknown`].
    pub completion: Option<Completion>,
}

/// A recorded client history. Build it with [`History::invoke`] and [`History::complete`],
/// or read it with [`History::from_text`].
///
/// ```
/// use raftkit_tests::history::{ClientId, History, Op, Outcome, Returned};
///
/// let mut history = History::new();
/// let put = history.invoke(ClientId(1), Op::Put { key: b"k".to_vec(), value: b"v".to_vec() }, 10);
/// let get = history.invoke(ClientId(2), Op::Get { key: b"k".to_vec() }, 15);
/// history.complete(put, Outcome::Ok(Returned::Done), 20)?;
/// history.complete(get, Outcome::Ok(Returned::Value(Some(b"v".to_vec()))), 30)?;
///
/// let text = history.to_text();
/// assert_eq!(History::from_text(&text)?, history);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    records: Vec<Record>,
}

/// Why [`History::complete`] refused a completion.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CompleteError {
    /// The id was not returned by `invoke` on this history.
    #[error("no operation {id} in this history")]
    UnknownOp {
        /// The id given.
        id: OpId,
    },
    /// The operation was completed before.
    #[error("operation {id} is already completed")]
    AlreadyCompleted {
        /// The id given.
        id: OpId,
    },
    /// The completion time is earlier than the invocation time.
    #[error("operation {id} completed at {completed_at}, before its invocation at {invoked_at}")]
    BeforeInvocation {
        /// The id given.
        id: OpId,
        /// When it was invoked.
        invoked_at: u64,
        /// The completion time given.
        completed_at: u64,
    },
    /// The returned value does not fit the operation (e.g. a `Get` that returned `Swapped`).
    #[error("operation {id} is a {kind} and cannot return {returned}")]
    ReturnMismatch {
        /// The id given.
        id: OpId,
        /// The operation's kind.
        kind: OpKind,
        /// What was given as its return.
        returned: Returned,
    },
}

/// Why [`History::from_text`] could not read a history.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("line {line}: {kind}")]
pub struct ParseHistoryError {
    /// The 1-based line number.
    pub line: usize,
    /// What was wrong on it.
    pub kind: ParseErrorKind,
}

/// What was wrong with a line of a history's text form.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The line ended before this field.
    #[error("missing {field}")]
    Missing {
        /// The field expected next.
        field: &'static str,
    },
    /// A field that must be a decimal `u64` was not.
    #[error("{field} must be a number, found {token}")]
    BadNumber {
        /// The field.
        field: &'static str,
        /// The token found.
        token: String,
    },
    /// A field had a token it cannot take.
    #[error("{field} cannot be {token}")]
    Unexpected {
        /// The field.
        field: &'static str,
        /// The token found.
        token: String,
    },
    /// A quoted byte string has no closing quote.
    #[error("unterminated string starting at column {column}")]
    UnterminatedString {
        /// The 1-based column of its opening quote.
        column: usize,
    },
    /// A quoted byte string has an escape other than `\\`, `\"` or `\xNN`.
    #[error("bad escape at column {column}")]
    BadEscape {
        /// The 1-based column of the backslash.
        column: usize,
    },
    /// The line's id is not the next one.
    #[error("expected id {expected}, found {found}")]
    IdOutOfOrder {
        /// The id the line must have.
        expected: u64,
        /// The id it has.
        found: u64,
    },
    /// `pending` needs completion time `-`, and `-` needs `pending`.
    #[error("completion time `-` goes with outcome `pending`, and only with it")]
    PendingMismatch,
    /// The line is well formed but describes an impossible completion.
    #[error(transparent)]
    Inconsistent(#[from] CompleteError),
}

impl Op {
    /// The key it reads or writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Delete { key } | Op::Cas { key, .. } => key,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Put { .. } => OpKind::Put,
            Op::Get { .. } => OpKind::Get,
            Op::Delete { .. } => OpKind::Delete,
            Op::Cas { .. } => OpKind::Cas,
        }
    }
}

impl OpKind {
    /// Whether an operation of this kind can return `returned`.
    pub fn can_return(self, returned: &Returned) -> bool {
        matches!(
            (self, returned),
            (OpKind::Put | OpKind::Delete, Returned::Done)
                | (OpKind::Get, Returned::Value(_))
                | (OpKind::Cas, Returned::Swapped(_))
        )
    }
}

impl Record {
    /// Its outcome; [`Outcome::Unknown`] if it never completed.
    pub fn outcome(&self) -> &Outcome {
        static NEVER_COMPLETED: Outcome = Outcome::Unknown;
        self.completion
            .as_ref()
            .map_or(&NEVER_COMPLETED, |c| &c.outcome)
    }

    /// When it completed, if it did.
    pub fn completed_at(&self) -> Option<u64> {
        self.completion.as_ref().map(|c| c.completed_at)
    }
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records that `client` invoked `op` at `time`. Complete it later with the returned id.
    pub fn invoke(&mut self, client: ClientId, op: Op, time: u64) -> OpId {
        let id = OpId(self.records.len() as u64);
        self.records.push(Record {
            id,
            client,
            op,
            invoked_at: time,
            completion: None,
        });
        id
    }

    /// Records that operation `id` ended with `outcome` at `time`. An operation never
    /// completed counts as [`Outcome::Unknown`].
    ///
    /// # Errors
    /// If `id` is not in this history, is already completed, `time` is before its invocation,
    /// or `outcome` returns something its kind cannot (see [`OpKind::can_return`]). The
    /// history is unchanged then.
    pub fn complete(&mut self, id: OpId, outcome: Outcome, time: u64) -> Result<(), CompleteError> {
        let record = usize::try_from(id.0)
            .ok()
            .and_then(|i| self.records.get_mut(i))
            .ok_or(CompleteError::UnknownOp { id })?;
        if record.completion.is_some() {
            return Err(CompleteError::AlreadyCompleted { id });
        }
        if time < record.invoked_at {
            return Err(CompleteError::BeforeInvocation {
                id,
                invoked_at: record.invoked_at,
                completed_at: time,
            });
        }
        if let Outcome::Ok(returned) = &outcome {
            let kind = record.op.kind();
            if !kind.can_return(returned) {
                let returned = returned.clone();
                return Err(CompleteError::ReturnMismatch { id, kind, returned });
            }
        }
        record.completion = Some(Completion {
            outcome,
            completed_at: time,
        });
        Ok(())
    }

    /// All operations, in invocation-call order (index = [`OpId`]).
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The operation `id`, if it is in this history.
    pub fn get(&self, id: OpId) -> Option<&Record> {
        usize::try_from(id.0).ok().and_then(|i| self.records.get(i))
    }

    /// How many operations were invoked.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no operation was invoked.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The text form: a header comment, then one line per operation (see the module docs).
    pub fn to_text(&self) -> String {
        let mut out = String::from(HEADER);
        out.push('\n');
        for record in &self.records {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{record}");
        }
        out
    }

    /// Reads the text form written by [`History::to_text`].
    ///
    /// # Errors
    /// The first malformed or inconsistent line, with its 1-based number. Never panics.
    pub fn from_text(text: &str) -> Result<History, ParseHistoryError> {
        let mut history = History::new();
        for (index, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            history
                .parse_line(trimmed)
                .map_err(|kind| ParseHistoryError {
                    line: index + 1,
                    kind,
                })?;
        }
        Ok(history)
    }

    fn parse_line(&mut self, line: &str) -> Result<(), ParseErrorKind> {
        let mut tokens = Tokens::new(line);
        let id = tokens.number("id")?;
        let expected = self.records.len() as u64;
        if id != expected {
            return Err(ParseErrorKind::IdOutOfOrder {
                expected,
                found: id,
            });
        }
        let client = tokens.word("client")?;
        let client = client
            .strip_prefix('c')
            .and_then(|n| n.parse().ok())
            .map(ClientId)
            .ok_or_else(|| unexpected("client", client))?;
        let invoked_at = tokens.number("invocation time")?;
        let completed_at = match tokens.word("completion time")? {
            "-" => None,
            token => Some(token.parse().map_err(|_| ParseErrorKind::BadNumber {
                field: "completion time",
                token: token.to_owned(),
            })?),
        };
        let op = tokens.op()?;
        let kind = op.kind();
        let arrow = tokens.word("`->`")?;
        if arrow != "->" {
            return Err(unexpected("`->`", arrow));
        }
        let outcome = tokens.outcome(kind)?;
        if let Some(token) = tokens.next_token()? {
            return Err(unexpected("end of line", &token.to_string()));
        }
        let id = self.invoke(client, op, invoked_at);
        match (completed_at, outcome) {
            (None, None) => Ok(()),
            (Some(time), Some(outcome)) => Ok(self.complete(id, outcome, time)?),
            _ => Err(ParseErrorKind::PendingMismatch),
        }
    }
}

const HEADER: &str =
    "# raftkit history v1: <id> <client> <invoked> <completed|-> <op> <args> -> <outcome>";

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Delete => "delete",
            OpKind::Cas => "cas",
        })
    }
}

impl fmt::Display for Op {
    /// `put "k" "v"`, `get "k"`, `delete "k"`, `cas "k" nil "v"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), Quoted(self.key()))?;
        match self {
            Op::Put { value, .. } => write!(f, " {}", Quoted(value)),
            Op::Get { .. } | Op::Delete { .. } => Ok(()),
            Op::Cas { expected, new, .. } => {
                write!(f, " {} {}", MaybeQuoted(expected), MaybeQuoted(new))
            }
        }
    }
}

impl fmt::Display for Returned {
    /// Nothing for `Done`, else `"v"`, `nil`, `true` or `false`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Returned::Done => Ok(()),
            Returned::Value(value) => write!(f, "{}", MaybeQuoted(value)),
            Returned::Swapped(swapped) => write!(f, "{swapped}"),
        }
    }
}

impl fmt::Display for Outcome {
    /// `ok`, `ok "v"`, `ok nil`, `ok true`, `fail` or `unknown`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(Returned::Done) => f.write_str("ok"),
            Outcome::Ok(returned) => write!(f, "ok {returned}"),
            Outcome::Fail => f.write_str("fail"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

impl fmt::Display for Record {
    /// One line of the text form, without the newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.id.0, self.client, self.invoked_at)?;
        match &self.completion {
            Some(c) => write!(f, "{} {} -> {}", c.completed_at, self.op, c.outcome),
            None => write!(f, "- {} -> pending", self.op),
        }
    }
}

/// Displays bytes as a quoted, escaped string.
pub(crate) struct Quoted<'a>(pub(crate) &'a [u8]);

/// Displays an optional value as a [`Quoted`] string or `nil`.
pub(crate) struct MaybeQuoted<'a>(pub(crate) &'a Option<Value>);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for &byte in self.0 {
            match byte {
                b'\\' => f.write_str("\\\\")?,
                b'"' => f.write_str("\\\"")?,
                0x20..=0x7e => f.write_char(char::from(byte))?,
                _ => write!(f, "\\x{byte:02x}")?,
            }
        }
        f.write_char('"')
    }
}

impl fmt::Display for MaybeQuoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{}", Quoted(value)),
            None => f.write_str("nil"),
        }
    }
}

fn hex_digit(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn unexpected(field: &'static str, token: &str) -> ParseErrorKind {
    ParseErrorKind::Unexpected {
        field,
        token: token.to_owned(),
    }
}

/// One token of a line: a bare word or a quoted byte string.
enum Token<'a> {
    Word(&'a str),
    Bytes(Vec<u8>),
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(word) => f.write_str(word),
            Token::Bytes(bytes) => write!(f, "{}", Quoted(bytes)),
        }
    }
}

/// Splits a line into tokens on whitespace, keeping quoted strings whole.
struct Tokens<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn new(line: &'a str) -> Tokens<'a> {
        Tokens { line, pos: 0 }
    }

    fn next_token(&mut self) -> Result<Option<Token<'a>>, ParseErrorKind> {
        let bytes = self.line.as_bytes();
        while bytes.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        match bytes.get(start) {
            None => Ok(None),
            Some(b'"') => self.quoted(start).map(|b| Some(Token::Bytes(b))),
            Some(_) => {
                while bytes
                    .get(self.pos)
                    .is_some_and(|b| !b.is_ascii_whitespace())
                {
                    self.pos += 1;
                }
                // Both ends sit at ASCII bytes (whitespace or the line's ends), so they are
                // char boundaries; `get` keeps this panic-free regardless.
                let word = self.line.get(start..self.pos).unwrap_or_default();
                Ok(Some(Token::Word(word)))
            }
        }
    }

    fn quoted(&mut self, start: usize) -> Result<Vec<u8>, ParseErrorKind> {
        let bytes = self.line.as_bytes();
        let mut out = Vec::new();
        self.pos = start + 1;
        loop {
            let at = self.pos;
            match bytes.get(at) {
                None => return Err(ParseErrorKind::UnterminatedString { column: start + 1 }),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let bad = ParseErrorKind::BadEscape { column: at + 1 };
                    match bytes.get(at + 1) {
                        Some(&c @ (b'\\' | b'"')) => {
                            out.push(c);
                            self.pos += 2;
                        }
                        Some(b'x') => {
                            let hex = bytes.get(at + 2..at + 4).unwrap_or_default();
                            let digit = |i: usize| hex.get(i).and_then(|&d| hex_digit(d));
                            let (Some(high), Some(low)) = (digit(0), digit(1)) else {
                                return Err(bad);
                            };
                            out.push(high << 4 | low);
                            self.pos += 4;
                        }
                        _ => return Err(bad),
                    }
                }
                Some(&b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn word(&mut self, field: &'static str) -> Result<&'a str, ParseErrorKind> {
        match self.next_token()? {
            Some(Token::Word(word)) => Ok(word),
            Some(token @ Token::Bytes(_)) => Err(unexpected(field, &token.to_string())),
            None => Err(ParseErrorKind::Missing { field }),
        }
    }

    fn number(&mut self, field: &'static str) -> Result<u64, ParseErrorKind> {
        let word = self.word(field)?;
        word.parse().map_err(|_| ParseErrorKind::BadNumber {
            field,
            token: word.to_owned(),
        })
    }

    fn maybe_bytes(&mut self, field: &'static str) -> Result<Option<Vec<u8>>, ParseErrorKind> {
        match self.next_token()? {
            Some(Token::Bytes(bytes)) => Ok(Some(bytes)),
            Some(Token::Word("nil")) => Ok(None),
            Some(token) => Err(unexpected(field, &token.to_string())),
            None => Err(ParseErrorKind::Missing { field }),
        }
    }

    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, ParseErrorKind> {
        self.maybe_bytes(field)?
            .ok_or_else(|| unexpected(field, "nil"))
    }

    fn op(&mut self) -> Result<Op, ParseErrorKind> {
        let name = self.word("operation")?;
        let key = self.bytes("key")?;
        Ok(match name {
            "put" => Op::Put {
                key,
                value: self.bytes("value")?,
            },
            "get" => Op::Get { key },
            "delete" => Op::Delete { key },
            "cas" => Op::Cas {
                key,
                expected: self.maybe_bytes("expected value")?,
                new: self.maybe_bytes("new value")?,
            },
            _ => return Err(unexpected("operation", name)),
        })
    }

    /// The outcome; `None` for `pending`.
    fn outcome(&mut self, kind: OpKind) -> Result<Option<Outcome>, ParseErrorKind> {
        let word = self.word("outcome")?;
        Ok(Some(match word {
            "ok" => Outcome::Ok(match kind {
                OpKind::Put | OpKind::Delete => Returned::Done,
                OpKind::Get => Returned::Value(self.maybe_bytes("value read")?),
                OpKind::Cas => match self.word("swapped")? {
                    "true" => Returned::Swapped(true),
                    "false" => Returned::Swapped(false),
                    token => return Err(unexpected("swapped", token)),
                },
            }),
            "fail" => Outcome::Fail,
            "unknown" => Outcome::Unknown,
            "pending" => return Ok(None),
            _ => return Err(unexpected("outcome", word)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn key(k: &str) -> Key {
        k.as_bytes().to_vec()
    }

    /// A history with every op kind, every outcome, a pending op and awkward bytes.
    fn sample() -> History {
        let mut h = History::new();
        let awkward = b"a \"q\" \\ \x00\xff\n\xc3\xa9".to_vec();
        let ops = [
            (
                Op::Put {
                    key: key("k1"),
                    value: awkward.clone(),
                },
                Some(Outcome::Ok(Returned::Done)),
            ),
            (
                Op::Get { key: key("k1") },
                Some(Outcome::Ok(Returned::Value(Some(awkward)))),
            ),
            (
                Op::Get { key: key("k 2") },
                Some(Outcome::Ok(Returned::Value(None))),
            ),
            (Op::Delete { key: Vec::new() }, Some(Outcome::Fail)),
            (
                Op::Cas {
                    key: key("k1"),
                    expected: None,
                    new: Some(Vec::new()),
                },
                Some(Outcome::Ok(Returned::Swapped(false))),
            ),
            (
                Op::Cas {
                    key: key("k1"),
                    expected: Some(key("x")),
                    new: None,
                },
                Some(Outcome::Ok(Returned::Swapped(true))),
            ),
            (
                Op::Put {
                    key: key("k1"),
                    value: key("v"),
                },
                Some(Outcome::Unknown),
            ),
            (Op::Get { key: key("k1") }, None),
        ];
        for (i, (op, outcome)) in ops.into_iter().enumerate() {
            let t = 10 * i as u64;
            let id = h.invoke(ClientId(i as u64 % 3), op, t);
            if let Some(outcome) = outcome {
                h.complete(id, outcome, t + 15).expect("valid completion");
            }
        }
        h
    }

    #[test]
    fn text_round_trip_keeps_every_field() {
        let h = sample();
        let text = h.to_text();
        assert_eq!(History::from_text(&text), Ok(h));
        assert!(text.contains("3 c0 30 45 delete \"\" -> fail\n"), "{text}");
        assert!(text.contains("7 c1 70 - get \"k1\" -> pending\n"), "{text}");
        assert!(
            text.contains(r#"put "k1" "a \"q\" \\ \x00\xff\x0a\xc3\xa9" -> ok"#),
            "{text}"
        );
    }

    #[test]
    fn from_text_skips_comments_and_blank_lines() {
        let text = "# a comment\n\n  0 c1 1 2 get \"k\" -> ok nil  \n   # another\n";
        let h = History::from_text(text).expect("valid");
        assert_eq!(h.len(), 1);
        assert_eq!(
            *h.records()[0].outcome(),
            Outcome::Ok(Returned::Value(None))
        );
    }

    #[test]
    fn from_text_names_the_bad_line() {
        use ParseErrorKind as K;
        let good = "0 c1 1 2 put \"k\" \"v\" -> ok\n";
        let cases: &[(&str, &str, ParseErrorKind)] = &[
            (
                "bad id",
                "x",
                K::BadNumber {
                    field: "id",
                    token: "x".into(),
                },
            ),
            (
                "id skips",
                "2 c1 1 2 get \"k\" -> ok nil",
                K::IdOutOfOrder {
                    expected: 1,
                    found: 2,
                },
            ),
            (
                "bad client",
                "1 client1 1 2 get \"k\" -> ok nil",
                K::Unexpected {
                    field: "client",
                    token: "client1".into(),
                },
            ),
            (
                "missing time",
                "1 c1",
                K::Missing {
                    field: "invocation time",
                },
            ),
            (
                "negative time",
                "1 c1 -5 2 get \"k\" -> ok nil",
                K::BadNumber {
                    field: "invocation time",
                    token: "-5".into(),
                },
            ),
            (
                "bad completion",
                "1 c1 1 x get \"k\" -> ok nil",
                K::BadNumber {
                    field: "completion time",
                    token: "x".into(),
                },
            ),
            (
                "unknown op",
                "1 c1 1 2 scan \"k\" -> ok",
                K::Unexpected {
                    field: "operation",
                    token: "scan".into(),
                },
            ),
            (
                "unquoted key",
                "1 c1 1 2 get k -> ok nil",
                K::Unexpected {
                    field: "key",
                    token: "k".into(),
                },
            ),
            (
                "nil key",
                "1 c1 1 2 get nil -> ok nil",
                K::Unexpected {
                    field: "key",
                    token: "nil".into(),
                },
            ),
            (
                "unterminated",
                "1 c1 1 2 get \"k -> ok",
                K::UnterminatedString { column: 14 },
            ),
            (
                "bad escape",
                "1 c1 1 2 get \"\\q\" -> ok nil",
                K::BadEscape { column: 15 },
            ),
            (
                "short hex",
                "1 c1 1 2 get \"\\x4\" -> ok nil",
                K::BadEscape { column: 15 },
            ),
            (
                "signed hex",
                "1 c1 1 2 get \"\\x+1\" -> ok nil",
                K::BadEscape { column: 15 },
            ),
            (
                "no arrow",
                "1 c1 1 2 get \"k\" ok nil",
                K::Unexpected {
                    field: "`->`",
                    token: "ok".into(),
                },
            ),
            (
                "no outcome",
                "1 c1 1 2 get \"k\" ->",
                K::Missing { field: "outcome" },
            ),
            (
                "bad outcome",
                "1 c1 1 2 get \"k\" -> maybe",
                K::Unexpected {
                    field: "outcome",
                    token: "maybe".into(),
                },
            ),
            (
                "get without value",
                "1 c1 1 2 get \"k\" -> ok",
                K::Missing {
                    field: "value read",
                },
            ),
            (
                "bad swapped",
                "1 c1 1 2 cas \"k\" nil nil -> ok yes",
                K::Unexpected {
                    field: "swapped",
                    token: "yes".into(),
                },
            ),
            (
                "trailing",
                "1 c1 1 2 delete \"k\" -> ok \"x\"",
                K::Unexpected {
                    field: "end of line",
                    token: "\"x\"".into(),
                },
            ),
            (
                "pending with time",
                "1 c1 1 2 get \"k\" -> pending",
                K::PendingMismatch,
            ),
            (
                "time without outcome",
                "1 c1 1 - get \"k\" -> ok nil",
                K::PendingMismatch,
            ),
            (
                "completed before invoked",
                "1 c1 5 2 get \"k\" -> ok nil",
                K::Inconsistent(CompleteError::BeforeInvocation {
                    id: OpId(1),
                    invoked_at: 5,
                    completed_at: 2,
                }),
            ),
        ];
        for (name, line, kind) in cases {
            let text = format!("{good}{line}\n");
            let err = History::from_text(&text).expect_err(name);
            assert_eq!(
                err,
                ParseHistoryError {
                    line: 2,
                    kind: kind.clone()
                },
                "case {name}"
            );
            assert!(
                err.to_string().starts_with("line 2: "),
                "case {name}: {err}"
            );
        }
    }

    #[test]
    fn from_text_never_panics_on_mangled_input() {
        let text = sample().to_text();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let alphabet: Vec<char> = " \"\\xnil-0123456789c>é\n".chars().collect();
        for _ in 0..2_000 {
            let mut chars: Vec<char> = text.chars().collect();
            for _ in 0..rng.random_range(1..4) {
                if chars.is_empty() {
                    break;
                }
                let at = rng.random_range(0..chars.len());
                match rng.random_range(0..3) {
                    0 => {
                        chars.remove(at);
                    }
                    1 => chars.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                    _ => chars.truncate(at),
                }
            }
            let mangled: String = chars.into_iter().collect();
            if let Err(err) = History::from_text(&mangled) {
                assert!(err.line >= 1, "{err}");
            }
        }
    }

    #[test]
    fn complete_rejects_impossible_completions() {
        let mut h = History::new();
        let get = h.invoke(ClientId(1), Op::Get { key: key("k") }, 10);
        let cases = [
            (
                OpId(9),
                Outcome::Fail,
                20,
                CompleteError::UnknownOp { id: OpId(9) },
            ),
            (
                get,
                Outcome::Fail,
                5,
                CompleteError::BeforeInvocation {
                    id: get,
                    invoked_at: 10,
                    completed_at: 5,
                },
            ),
            (
                get,
                Outcome::Ok(Returned::Swapped(true)),
                20,
                CompleteError::ReturnMismatch {
                    id: get,
                    kind: OpKind::Get,
                    returned: Returned::Swapped(true),
                },
            ),
        ];
        for (id, outcome, time, expected) in cases {
            assert_eq!(h.complete(id, outcome, time), Err(expected));
        }
        assert_eq!(
            h.records()[0].completion,
            None,
            "a refused completion changes nothing"
        );
        h.complete(get, Outcome::Unknown, 10)
            .expect("completing at invocation time is fine");
        assert_eq!(
            h.complete(get, Outcome::Fail, 30),
            Err(CompleteError::AlreadyCompleted { id: get })
        );
    }

    #[test]
    fn never_completed_ops_count_as_unknown() {
        let mut h = History::new();
        let id = h.invoke(ClientId(0), Op::Delete { key: key("k") }, 3);
        assert_eq!(*h.get(id).expect("recorded").outcome(), Outcome::Unknown);
        assert_eq!(h.get(id).expect("recorded").completed_at(), None);
        assert_eq!(h.get(OpId(1)), None);
    }
}

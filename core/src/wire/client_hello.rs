//! A peek at a TLS ClientHello without terminating TLS: the server name (SNI)
//! and the ALPN protocols a client asks for, read from the first bytes of a
//! connection. A mesh gateway routes on them (`<node>.server.<dc>.<domain>`,
//! `server.<dc>.<domain>`) and replays the bytes to the backend untouched;
//! the server port names them when a handshake fails.
//!
//! [`peek_client_hello`] is a pure function of the bytes read so far: call it
//! again with more bytes until it answers something other than
//! [`Peek::NeedMore`]. Every length field is checked against what holds it
//! and against [`CLIENT_HELLO_BYTES_MAX`]; nothing is allocated past that.
//!
//! Specs: records and the ClientHello, RFC 8446 §5.1 and §4.1.2 (a
//! handshake message may span records; records carry at most 2^14 bytes of
//! plaintext, none are empty, and no other record type may interleave);
//! `server_name`, RFC 6066 §3 (one `host_name`, ASCII, no trailing dot, not an
//! IP literal); ALPN, RFC 7301 §3.1 (a non-empty list of non-empty names).
//! Where rustls (the backend's TLS) is more lenient, the peek is stricter, never
//! the other way: the `client_hello` fuzz target checks that whenever
//! `rustls::server::Acceptor` accepts a hello, the peek finds the same server
//! name and protocols or refuses for one of [`Malformed::stricter_than_rustls`].

use std::collections::BTreeSet;
use std::fmt;

/// The most bytes (records and their headers) the peek reads: past this a
/// hello is refused ([`Malformed::TooLarge`]). Real hellos are well under
/// 2 KiB; rustls refuses handshake messages over 64 KiB.
pub const CLIENT_HELLO_BYTES_MAX: usize = 64 * 1024;
/// The most plaintext a TLS record may carry (RFC 8446 §5.1).
pub const TLS_RECORD_PLAINTEXT_MAX: usize = 1 << 14;
/// A record's header: content type, legacy version (2 bytes), length (2).
pub const TLS_RECORD_HEADER_LEN: usize = 5;

const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// A handshake message's header: type and a 24-bit length.
const HANDSHAKE_HEADER_LEN: usize = 4;
/// The smallest ClientHello body: version, random, an empty session id,
/// one cipher suite, one compression method, no extensions.
const CLIENT_HELLO_BODY_MIN: usize = 2 + 32 + 1 + 2 + 2 + 1 + 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const EXTENSION_ALPN: u16 = 16;
const SERVER_NAME_HOST_NAME: u8 = 0;

/// What the bytes read so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peek {
    /// The hello is not whole yet. It cannot be whole before the buffer holds
    /// `at_least` bytes (always more than it holds now); an error may show
    /// sooner.
    NeedMore { at_least: usize },
    /// The first record is not a TLS handshake record.
    NotTls(NotTls),
    /// A TLS handshake that is not a well-formed ClientHello.
    Malformed(Malformed),
    /// A whole, well-formed ClientHello.
    Hello(ClientHello),
}

/// What a ClientHello asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of `server_name`, lowercased (DNS names compare without
    /// case). `None` without the extension, and for an IP literal, which
    /// RFC 6066 forbids and rustls ignores as well.
    pub sni: Option<String>,
    /// The ALPN protocols, in the client's order; empty without the extension.
    pub alpn: Vec<Vec<u8>>,
    /// How many bytes of the buffer the hello occupies: every record up to
    /// and including the one that ends it.
    pub bytes: usize,
}

/// Why the first bytes are not a TLS handshake.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NotTls {
    /// The first record's content type is not handshake (22).
    ContentType(u8),
    /// The first record's legacy version is not 3.x.
    Version(u8),
}

/// Why a TLS handshake is not a well-formed ClientHello.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The hello cannot end within [`CLIENT_HELLO_BYTES_MAX`] bytes.
    TooLarge,
    /// A record longer than [`TLS_RECORD_PLAINTEXT_MAX`].
    RecordTooLong(usize),
    /// A handshake record with no bytes (RFC 8446 §5.1 forbids it).
    EmptyRecord,
    /// A record of another content type before the hello ended.
    Interleaved(u8),
    /// A later record's legacy version is not 3.x.
    RecordVersion(u8),
    /// The first handshake message is not a ClientHello (its type).
    NotClientHello(u8),
    /// A length that does not fit what holds it, or a list too short or too long.
    Length(&'static str),
    /// Bytes left over after the named structure.
    Trailing(&'static str),
    /// An extension type sent twice (RFC 8446 §4.2).
    DuplicateExtension(u16),
    /// A `server_name` that breaks RFC 6066 §3.
    ServerName(ServerNameError),
    /// An ALPN protocol name that is empty (RFC 7301 §3.1).
    EmptyProtocolName,
}

/// How a `server_name` extension breaks RFC 6066 §3.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ServerNameError {
    /// An empty list, or an empty name.
    Empty,
    /// A name type other than `host_name` (0).
    NameType(u8),
    /// Two `host_name`s.
    TwoHostNames,
    /// A name with a trailing dot.
    TrailingDot,
    /// Neither a DNS name nor an IP literal.
    Invalid,
}

impl NotTls {
    /// Bytes the peek calls "not TLS" that rustls' `Acceptor` would still
    /// take as a ClientHello: a first record whose legacy version is not
    /// 3.x. rustls ignores that field (RFC 8446 §5.1 lets a server do so);
    /// the peek cannot, because on a shared port the content type and the
    /// version byte are how TLS is told from the other protocols there, and
    /// every TLS client since SSL 3.0 sends 3.x. The differential fuzz
    /// target allows exactly this one (found by it: a hello in a record of
    /// version 0.2).
    pub fn stricter_than_rustls(&self) -> bool {
        matches!(self, NotTls::Version(_))
    }
}

impl Malformed {
    /// Refusals of hellos that rustls would accept: the peek is deliberately
    /// stricter here (the RFCs' limits, and no name type a gateway cannot
    /// route on). The differential fuzz target allows exactly these.
    pub fn stricter_than_rustls(&self) -> bool {
        matches!(
            self,
            Malformed::TooLarge
                | Malformed::RecordTooLong(_)
                | Malformed::ServerName(ServerNameError::NameType(_))
                | Malformed::ServerName(ServerNameError::TrailingDot)
        )
    }
}

/// Read a ClientHello from the first bytes of a connection. Total: any bytes
/// give an answer, and once an answer other than `NeedMore` is given, more
/// bytes after these do not change it.
pub fn peek_client_hello(buf: &[u8]) -> Peek {
    match walk(buf) {
        Ok(peek) => peek,
        Err(Stop::NotTls(e)) => Peek::NotTls(e),
        Err(Stop::Malformed(e)) => Peek::Malformed(e),
    }
}

enum Stop {
    NotTls(NotTls),
    Malformed(Malformed),
}

impl From<Malformed> for Stop {
    fn from(e: Malformed) -> Stop {
        Stop::Malformed(e)
    }
}

/// Walk the records in order, collecting handshake bytes until the hello is
/// whole. Every check runs as soon as the bytes it reads are there, in byte
/// order, so a prefix never answers differently from the whole.
fn walk(buf: &[u8]) -> Result<Peek, Stop> {
    let mut handshake: Vec<u8> = Vec::new();
    // The handshake bytes the hello needs (header and body), once known.
    let mut hello_len: Option<usize> = None;
    let mut pos = 0;
    loop {
        let header = &buf[pos..buf.len().min(pos + TLS_RECORD_HEADER_LEN)];
        check_record_start(header, pos == 0)?;
        // The hello needs `missing` more handshake bytes, so at least one
        // more record header and those bytes.
        let needed = hello_len.unwrap_or(HANDSHAKE_HEADER_LEN + CLIENT_HELLO_BODY_MIN);
        let missing = needed - handshake.len();
        let floor = pos + TLS_RECORD_HEADER_LEN + missing;
        if floor > CLIENT_HELLO_BYTES_MAX {
            return Err(Malformed::TooLarge.into());
        }
        if header.len() < TLS_RECORD_HEADER_LEN {
            return Ok(Peek::NeedMore { at_least: floor });
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(Malformed::EmptyRecord.into());
        }
        if len > TLS_RECORD_PLAINTEXT_MAX {
            return Err(Malformed::RecordTooLong(len).into());
        }
        let end = pos + TLS_RECORD_HEADER_LEN + len;
        if hello_end_min(end, len, missing) > CLIENT_HELLO_BYTES_MAX {
            return Err(Malformed::TooLarge.into());
        }
        let fragment = &buf[(pos + TLS_RECORD_HEADER_LEN).min(buf.len())..end.min(buf.len())];
        let before = handshake.len();
        handshake.extend_from_slice(fragment);
        if hello_len.is_none() {
            if let Some(&kind) = handshake.first() {
                if kind != HANDSHAKE_CLIENT_HELLO {
                    return Err(Malformed::NotClientHello(kind).into());
                }
            }
            if handshake.len() >= HANDSHAKE_HEADER_LEN {
                let body = usize::from(handshake[1]) << 16
                    | usize::from(handshake[2]) << 8
                    | usize::from(handshake[3]);
                if body < CLIENT_HELLO_BODY_MIN {
                    return Err(Malformed::Length("ClientHello").into());
                }
                let total = HANDSHAKE_HEADER_LEN + body;
                hello_len = Some(total);
                // What is missing is now known exactly: can it still fit?
                if hello_end_min(end, len, total - before) > CLIENT_HELLO_BYTES_MAX {
                    return Err(Malformed::TooLarge.into());
                }
            }
        }
        if let Some(total) = hello_len {
            if handshake.len() >= total {
                let (sni, alpn) = parse_body(&handshake[HANDSHAKE_HEADER_LEN..total])?;
                if handshake.len() > total {
                    return Err(Malformed::Trailing("ClientHello's record").into());
                }
                if end > buf.len() {
                    return Ok(Peek::NeedMore { at_least: end });
                }
                return Ok(Peek::Hello(ClientHello {
                    sni,
                    alpn,
                    bytes: end,
                }));
            }
        }
        if end > buf.len() {
            let needed = hello_len.unwrap_or(HANDSHAKE_HEADER_LEN + CLIENT_HELLO_BODY_MIN);
            return Ok(Peek::NeedMore {
                at_least: hello_end_min(end, len, needed - before),
            });
        }
        pos = end;
    }
}

/// The least buffer length at which a hello still `missing` handshake bytes
/// short can end, given a record of `len` bytes ending at `end` that holds the
/// next of them: this record, then one more header and the rest.
fn hello_end_min(end: usize, len: usize, missing: usize) -> usize {
    if missing <= len {
        end
    } else {
        end + TLS_RECORD_HEADER_LEN + (missing - len)
    }
}

/// The content type and version bytes of a record header, as far as they
/// are there.
fn check_record_start(header: &[u8], first: bool) -> Result<(), Stop> {
    if let Some(&kind) = header.first() {
        if kind != CONTENT_TYPE_HANDSHAKE {
            return Err(if first {
                Stop::NotTls(NotTls::ContentType(kind))
            } else {
                Stop::Malformed(Malformed::Interleaved(kind))
            });
        }
    }
    if let Some(&major) = header.get(1) {
        if major != 3 {
            return Err(if first {
                Stop::NotTls(NotTls::Version(major))
            } else {
                Stop::Malformed(Malformed::RecordVersion(major))
            });
        }
    }
    Ok(())
}

/// A ClientHello's body (RFC 8446 §4.1.2): the server name and ALPN protocols.
type Asked = (Option<String>, Vec<Vec<u8>>);

fn parse_body(body: &[u8]) -> Result<Asked, Malformed> {
    let mut r = Reader(body);
    r.take(2, "legacy_version")?;
    r.take(32, "random")?;
    if r.vec_u8("legacy_session_id")?.len() > 32 {
        return Err(Malformed::Length("legacy_session_id"));
    }
    let suites = r.vec_u16("cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Malformed::Length("cipher_suites"));
    }
    if r.vec_u8("legacy_compression_methods")?.is_empty() {
        return Err(Malformed::Length("legacy_compression_methods"));
    }
    let (mut sni, mut alpn) = (None, Vec::new());
    if r.0.is_empty() {
        // A TLS 1.2 hello may have no extensions at all.
        return Ok((sni, alpn));
    }
    let mut extensions = Reader(r.vec_u16("extensions")?);
    if !r.0.is_empty() {
        return Err(Malformed::Trailing("ClientHello"));
    }
    let mut seen = BTreeSet::new();
    while !extensions.0.is_empty() {
        let kind = extensions.u16("extension type")?;
        let data = extensions.vec_u16("extension_data")?;
        if !seen.insert(kind) {
            return Err(Malformed::DuplicateExtension(kind));
        }
        match kind {
            EXTENSION_SERVER_NAME => sni = parse_server_name(data)?,
            EXTENSION_ALPN => alpn = parse_alpn(data)?,
            _ => {}
        }
    }
    Ok((sni, alpn))
}

/// `server_name` (RFC 6066 §3): one `host_name`; an IP literal counts as none.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, Malformed> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec_u16("server_name_list")?);
    if !outer.0.is_empty() {
        return Err(Malformed::Trailing("server_name"));
    }
    if list.0.is_empty() {
        return Err(Malformed::ServerName(ServerNameError::Empty));
    }
    let mut found: Option<Option<String>> = None;
    while !list.0.is_empty() {
        let kind = list.u8("name_type")?;
        if kind != SERVER_NAME_HOST_NAME {
            return Err(Malformed::ServerName(ServerNameError::NameType(kind)));
        }
        let name = list.vec_u16("host_name")?;
        if found.is_some() {
            return Err(Malformed::ServerName(ServerNameError::TwoHostNames));
        }
        found = Some(host_name(name)?);
    }
    Ok(found.flatten())
}

/// A `host_name`: a DNS name (lowercased), or `None` for an IP literal.
fn host_name(name: &[u8]) -> Result<Option<String>, Malformed> {
    let invalid = Malformed::ServerName(ServerNameError::Invalid);
    if name.is_empty() {
        return Err(Malformed::ServerName(ServerNameError::Empty));
    }
    let text = std::str::from_utf8(name).map_err(|_| invalid)?;
    if is_dns_name(text) {
        return Ok(Some(text.to_ascii_lowercase()));
    }
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Ok(None);
    }
    if text.ends_with('.') && is_dns_name(&text[..text.len() - 1]) {
        return Err(Malformed::ServerName(ServerNameError::TrailingDot));
    }
    Err(invalid)
}

/// A DNS name as certificates name hosts (the rules of rustls' `DnsName`,
/// less its trailing dot): at most 253 bytes of labels of 1 to 63 letters,
/// digits, `-` and `_`, no label starting or ending with `-`, and a last
/// label that cannot be read as a number (so `10.0.0.1` is an address).
pub fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    };
    if !name.split('.').all(label_ok) {
        return false;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let numeric = last.bytes().all(|c| c.is_ascii_digit());
    let hex = last.len() >= 2
        && last.as_bytes()[0] == b'0'
        && matches!(last.as_bytes()[1], b'x' | b'X')
        && last[2..].bytes().all(|c| c.is_ascii_hexdigit());
    !numeric && !hex
}

/// ALPN (RFC 7301 §3.1): a non-empty list of non-empty protocol names.
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, Malformed> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec_u16("protocol_name_list")?);
    if !outer.0.is_empty() {
        return Err(Malformed::Trailing(
            "application_layer_protocol_negotiation",
        ));
    }
    if list.0.is_empty() {
        return Err(Malformed::Length("protocol_name_list"));
    }
    let mut names = Vec::new();
    while !list.0.is_empty() {
        let name = list.vec_u8("ProtocolName")?;
        if name.is_empty() {
            return Err(Malformed::EmptyProtocolName);
        }
        names.push(name.to_vec());
    }
    Ok(names)
}

/// A bounded reader over a slice: every read checks the length it is given
/// against what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Malformed> {
        if n > self.0.len() {
            return Err(Malformed::Length(field));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, Malformed> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, Malformed> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec_u8(&mut self, field: &'static str) -> Result<&'a [u8], Malformed> {
        let n = self.u8(field)?;
        self.take(usize::from(n), field)
    }

    fn vec_u16(&mut self, field: &'static str) -> Result<&'a [u8], Malformed> {
        let n = self.u16(field)?;
        self.take(usize::from(n), field)
    }
}

impl fmt::Display for NotTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotTls::ContentType(t) => write!(f, "record type {t} is not a TLS handshake (22)"),
            NotTls::Version(v) => write!(f, "record version {v}.x is not TLS (3.x)"),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::TooLarge => write!(
                f,
                "the ClientHello does not end within {CLIENT_HELLO_BYTES_MAX} bytes"
            ),
            Malformed::RecordTooLong(n) => write!(
                f,
                "a {n}-byte record (TLS allows {TLS_RECORD_PLAINTEXT_MAX})"
            ),
            Malformed::EmptyRecord => write!(f, "an empty handshake record"),
            Malformed::Interleaved(t) => {
                write!(f, "a record of type {t} inside the ClientHello")
            }
            Malformed::RecordVersion(v) => write!(f, "a record of version {v}.x"),
            Malformed::NotClientHello(t) => {
                write!(f, "handshake message type {t} is not a ClientHello (1)")
            }
            Malformed::Length(field) => write!(f, "bad length of {field}"),
            Malformed::Trailing(field) => write!(f, "bytes after the {field}"),
            Malformed::DuplicateExtension(t) => write!(f, "extension {t} sent twice"),
            Malformed::ServerName(e) => write!(f, "server_name: {e}"),
            Malformed::EmptyProtocolName => write!(f, "an empty ALPN protocol name"),
        }
    }
}

impl fmt::Display for ServerNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerNameError::Empty => write!(f, "empty"),
            ServerNameError::NameType(t) => write!(f, "name type {t} is not host_name (0)"),
            ServerNameError::TwoHostNames => write!(f, "two host names"),
            ServerNameError::TrailingDot => write!(f, "a host name with a trailing dot"),
            ServerNameError::Invalid => write!(f, "neither a DNS name nor an IP address"),
        }
    }
}

/// Building ClientHellos, for tests and fuzz seeds: the hello a client with
/// these `sni` and `alpn` would send (a plausible TLS 1.3 body), cut into
/// records of at most `record_len` bytes of handshake data each.
pub fn build_client_hello(sni: Option<&str>, alpn: &[&[u8]], record_len: usize) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(name) = sni {
        let mut entry = vec![SERVER_NAME_HOST_NAME];
        push_vec_u16(&mut entry, name.as_bytes());
        let mut list = Vec::new();
        push_vec_u16(&mut list, &entry);
        push_extension(&mut extensions, EXTENSION_SERVER_NAME, &list);
    }
    if !alpn.is_empty() {
        let mut names = Vec::new();
        for p in alpn {
            names.push(u8::try_from(p.len()).expect("a protocol name fits 255 bytes"));
            names.extend_from_slice(p);
        }
        let mut list = Vec::new();
        push_vec_u16(&mut list, &names);
        push_extension(&mut extensions, EXTENSION_ALPN, &list);
    }
    // supported_versions: TLS 1.3; signature_algorithms: ed25519.
    push_extension(&mut extensions, 43, &[2, 3, 4]);
    push_extension(&mut extensions, 13, &[0, 2, 8, 7]);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // no session id
    push_vec_u16(&mut body, &[0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
    push_vec_u16(&mut body, &extensions);
    let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
    let len = u32::try_from(body.len()).expect("a small hello");
    handshake.extend_from_slice(&len.to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    records(&handshake, record_len)
}

/// Cut handshake bytes into handshake records of at most `record_len` bytes.
pub fn records(handshake: &[u8], record_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in handshake.chunks(record_len.max(1)) {
        out.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 3, 1]);
        push_vec_u16(&mut out, chunk);
    }
    out
}

fn push_vec_u16(out: &mut Vec<u8>, data: &[u8]) {
    let len = u16::try_from(data.len()).expect("fits a u16 length");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

fn push_extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    push_vec_u16(out, data);
}

#[cfg(test)]
#[path = "client_hello_test.rs"]
mod tests;

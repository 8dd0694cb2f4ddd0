//! The JSON form of the wire types, read and written by hand for the types
//! every `authorize` decision carries, through serde for the rest.
//!
//! Every envelope and reply crosses the sandbox as JSON (`ABI.md`), so this
//! is on the path of every decision, on both sides of it. serde's derived
//! code spent most of a decision's time here, inside the module above all;
//! the hand-written reader and writer below do the same work in less (the
//! README's benchmark section has the figures).
//!
//! They are exact stand-ins for serde, not a second format:
//!
//! - [`to_writer`] writes the very bytes `serde_json::to_writer` writes:
//!   fields in declaration order, the same fields left out, the same escapes.
//! - [`from_str`] takes a fast path only through JSON it fully understands:
//!   known fields, once each, strings without escapes. Anything else (an
//!   escape, an unknown or repeated field, a missing one, a syntax error)
//!   is read by `serde_json` instead, so what is accepted, what it decodes
//!   to and every error message stay serde's.
//!
//! The tests below and the `policy_output` fuzz target hold both paths to
//! that.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    Acknowledgement, Actor, ActorKind, AuthorizeDecision, AuthorizeInput, BillingDecision,
    BillingInput, Cycle, CycleUnit, Effect, Envelope, Lock, Period, Reply, SettingsVerdict,
    Subject, SubjectKind, SubjectRef, Timestamp, TransitionDecision, TransitionInput, Trigger,
};

/// Nesting beyond this many subjects (parents of parents) is left to serde,
/// which has its own recursion limit; it keeps the fast reader's recursion
/// well inside a policy's small stack.
const MAX_SUBJECT_DEPTH: u32 = 16;

/// Reads the members of an object into the caller's locals: `{` then, per
/// member, the arm of its key, each an `Option<()>`. Any other key, or any
/// arm's `None`, returns `None` from the enclosing function. `members!(r,
/// after_first, ...)` goes on after a member already read.
macro_rules! members {
    ($r:ident, { $($key:literal => $read:expr),* $(,)? }) => {
        $r.eat(b'{')?;
        if $r.eat(b'}').is_none() {
            members!(@in_order $r, { $($key => $read),* });
        }
    };
    ($r:ident, after_first, { $($key:literal => $read:expr),* $(,)? }) => {
        if $r.next_member()? {
            members!(@in_order $r, { $($key => $read),* });
        }
    };
    // The members in the order the host writes them, each key compared in
    // place; what is left (another order, an unknown key) goes through the
    // general loop.
    (@in_order $r:ident, { $($key:literal => $read:expr),* }) => {
        'members: {
            $(
                if $r.expect_key(concat!("\"", $key, "\":").as_bytes()) {
                    $read?;
                    if !$r.next_member()? {
                        break 'members;
                    }
                }
            )*
            loop {
                match $r.key()? {
                    $($key => $read?,)*
                    _ => return None,
                }
                if !$r.next_member()? {
                    break;
                }
            }
        }
    };
}

/// Reads the members of an object straight into the fields of a value
/// being decoded, as [`members!`] reads them, each arm a statement that
/// assigns its field (its `?` returns `None` from the enclosing function).
/// Each key has a bit in `$seen`, so a field given twice goes to serde,
/// which refuses it, and the caller checks the required ones afterwards.
///
/// Unlike the arms of [`members!`], nothing is staged in an `Option` and
/// moved into place at the end: a policy module spends much of an
/// envelope's decoding on such moves.
macro_rules! fields {
    ($r:ident, $seen:ident, { $($key:literal [$bit:literal] => $read:expr),* $(,)? }) => {
        let mut $seen: u16 = 0;
        members!($r, {
            $($key => {
                if $seen & (1 << $bit) != 0 {
                    None
                } else {
                    $seen |= 1 << $bit;
                    $read;
                    Some(())
                }
            }),*
        });
    };
}

/// What writing a value gives: serde's error when serde would fail (a
/// timestamp RFC 3339 cannot express, such as one in a negative year).
pub type Written = Result<(), serde_json::Error>;

/// A wire type's JSON form. The provided methods go through serde; the
/// types on the path of every decision override them by hand.
pub trait WireJson: Serialize + DeserializeOwned {
    /// Appends the value's JSON to `out`, byte for byte what serde writes.
    #[doc(hidden)]
    fn write_json(&self, out: &mut Vec<u8>) -> Written {
        serde_json::to_writer(out, self)
    }

    /// Reads the value at the reader's position; `None` sends the whole
    /// text to serde instead.
    #[doc(hidden)]
    fn read_json(reader: &mut Reader<'_>) -> Option<Self> {
        reader.serde()
    }

    /// [`WireJson::read_json`] into `place`, where a large value can be
    /// decoded where it stays instead of being moved there. After `None`,
    /// `place` may hold part of a value, to be thrown away.
    #[doc(hidden)]
    #[inline(always)]
    fn read_json_into(reader: &mut Reader<'_>, place: &mut Option<Self>) -> Option<()> {
        *place = Some(Self::read_json(reader)?);
        Some(())
    }
}

/// Appends `value`'s JSON to `out`: the bytes `serde_json::to_writer` writes.
///
/// # Errors
///
/// serde's error where serde fails; `out` then holds part of the value.
pub fn to_writer<T: WireJson>(out: &mut Vec<u8>, value: &T) -> Written {
    value.write_json(out)
}

/// Reads a `T` from JSON `text`, as `serde_json::from_str` does.
///
/// # Errors
///
/// serde's error, with its line and column, when the text is not a `T`.
pub fn from_str<T: WireJson>(text: &str) -> Result<T, serde_json::Error> {
    fast_or_serde(text, T::read_json)
}

/// Appends an envelope to `out`; `settings` is JSON text already.
///
/// # Errors
///
/// As [`to_writer`].
pub fn write_envelope<I: WireJson>(
    out: &mut Vec<u8>,
    now: Timestamp,
    settings: &str,
    input: &I,
) -> Written {
    out.extend_from_slice(b"{\"now\":");
    now.write_json(out)?;
    out.extend_from_slice(b",\"settings\":");
    out.extend_from_slice(settings.as_bytes());
    out.extend_from_slice(b",\"input\":");
    input.write_json(out)?;
    out.push(b'}');
    Ok(())
}

/// Reads an envelope, as `serde_json::from_str::<Envelope<S, I>>` does.
///
/// # Errors
///
/// serde's error when the text is not such an envelope.
pub fn read_envelope<S: DeserializeOwned, I: WireJson>(
    text: &str,
) -> Result<Envelope<S, I>, serde_json::Error> {
    fast_or_serde(text, envelope_members)
}

/// Reads an envelope from bytes as they came, as [`read_envelope`] reads
/// its text once the bytes are checked to be UTF-8.
///
/// The fast path checks only the strings it meets that are not ASCII, so
/// the envelope is not checked as a whole first.
///
/// # Errors
///
/// [`ReadError::NotUtf8`] when the bytes are not UTF-8, otherwise serde's
/// error as [`read_envelope`].
#[inline(always)]
pub fn read_envelope_bytes<S: DeserializeOwned, I: WireJson>(
    bytes: &[u8],
) -> Result<Envelope<S, I>, ReadError> {
    fast_or_serde_bytes(bytes, envelope_members)
}

/// Why [`read_envelope_bytes`] or [`read_reply_bytes`] could not read.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes are not UTF-8.
    NotUtf8(std::str::Utf8Error),
    /// The text is not an envelope or reply of these types; serde's error.
    Json(serde_json::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotUtf8(error) => write!(f, "not UTF-8: {error}"),
            ReadError::Json(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {}

/// [`read_envelope_bytes`] with the input read into `input`, where it stays
/// (by `read_input` on the fast path), and the rest returned: the time, the
/// settings, and whether the fast path read the envelope (`false`: serde
/// did). `input` holds the input whenever this returns `Ok`.
#[inline(always)]
pub(crate) fn read_envelope_bytes_into<'a, S: DeserializeOwned, I: WireJson>(
    bytes: &'a [u8],
    input: &mut Option<I>,
    read_input: impl FnOnce(&mut Reader<'a>, &mut Option<I>) -> Option<()>,
) -> Result<(Timestamp, S, bool), ReadError> {
    match fast(bytes, |r| envelope_members_into(r, input, read_input)) {
        Some((now, settings)) => Ok((now, settings, true)),
        None => {
            let envelope = serde_bytes::<Envelope<S, I>>(bytes)?;
            *input = Some(envelope.input);
            Ok((envelope.now, envelope.settings, false))
        }
    }
}

#[inline(always)]
fn envelope_members<S: DeserializeOwned, I: WireJson>(
    r: &mut Reader<'_>,
) -> Option<Envelope<S, I>> {
    let mut input = None;
    let (now, settings) = envelope_members_into(r, &mut input, I::read_json_into)?;
    Some(Envelope {
        now,
        settings,
        input: input?,
    })
}

/// The envelope's members, the input read into `input`, which starts out
/// `None`; `None` also when the input is missing.
#[inline(always)]
fn envelope_members_into<'a, S: DeserializeOwned, I: WireJson>(
    r: &mut Reader<'a>,
    input: &mut Option<I>,
    read_input: impl FnOnce(&mut Reader<'a>, &mut Option<I>) -> Option<()>,
) -> Option<(Timestamp, S)> {
    let (mut now, mut settings) = (None, None);
    let mut read_input = Some(read_input);
    members!(r, {
        "now" => r.once(&mut now, Timestamp::read_json),
        "settings" => r.once(&mut settings, Reader::settings),
        // A second `input` goes to serde, which refuses it.
        "input" => read_input.take()?(r, input),
    });
    // Read once, and in full: a failed read returned `None` above.
    input.as_ref()?;
    Some((now?, settings?))
}

/// The JSON of a reply, as `serde_json::to_vec` writes it; an `error`
/// reply saying why when the output cannot be written.
pub fn reply_to_vec<T: WireJson>(reply: &Reply<T>) -> Vec<u8> {
    // Room for a denial's reason without growing the buffer on the way.
    let mut out = Vec::with_capacity(512);
    let written = match reply {
        Reply::Ok(output) => {
            out.extend_from_slice(b"{\"ok\":");
            output.write_json(&mut out)
        }
        Reply::Error(message) => {
            out.extend_from_slice(b"{\"error\":");
            string(&mut out, message);
            Ok(())
        }
    };
    if let Err(error) = written {
        out.clear();
        out.extend_from_slice(b"{\"error\":");
        string(&mut out, &format!("cannot encode reply: {error}"));
    }
    out.push(b'}');
    out
}

/// Reads a reply, as `serde_json::from_str::<Reply<T>>` does.
///
/// # Errors
///
/// serde's error when the text is not such a reply.
pub fn read_reply<T: WireJson>(text: &str) -> Result<Reply<T>, serde_json::Error> {
    fast_or_serde(text, reply_members)
}

/// Reads a reply from bytes as they came, as [`read_envelope_bytes`] reads
/// an envelope.
///
/// # Errors
///
/// [`ReadError::NotUtf8`] when the bytes are not UTF-8, otherwise serde's
/// error as [`read_reply`].
pub fn read_reply_bytes<T: WireJson>(bytes: &[u8]) -> Result<Reply<T>, ReadError> {
    fast_or_serde_bytes(bytes, reply_members)
}

fn reply_members<T: WireJson>(r: &mut Reader<'_>) -> Option<Reply<T>> {
    let mut reply = None;
    members!(r, {
        "ok" => r.once(&mut reply, |r| T::read_json(r).map(Reply::Ok)),
        "error" => r.once(&mut reply, |r| r.string().map(Reply::Error)),
    });
    reply
}

/// Reads the bytes on the fast path, or with [`serde_bytes`] where that
/// path gives up.
#[inline(always)]
fn fast_or_serde_bytes<'a, T: DeserializeOwned>(
    bytes: &'a [u8],
    read: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Result<T, ReadError> {
    fast(bytes, read).map_or_else(|| serde_bytes(bytes), Ok)
}

/// Reads the bytes with serde once they are checked to be UTF-8: what the
/// `_bytes` readers fall back to, and what they must agree with (the SDK's
/// tests and the host's fuzz target compare them).
#[doc(hidden)]
pub fn serde_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ReadError> {
    let text = std::str::from_utf8(bytes).map_err(ReadError::NotUtf8)?;
    serde_json::from_str(text).map_err(ReadError::Json)
}

/// Reads the whole text on the fast path, or with serde where that path
/// gives up.
fn fast_or_serde<'a, T: DeserializeOwned>(
    text: &'a str,
    read: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Result<T, serde_json::Error> {
    fast(text.as_bytes(), read).map_or_else(|| serde_json::from_str(text), Ok)
}

/// Runs a fast read over the whole text; `None` unless it read all of it.
#[inline(always)]
fn fast<'a, T>(bytes: &'a [u8], read: impl FnOnce(&mut Reader<'a>) -> Option<T>) -> Option<T> {
    let mut reader = Reader {
        bytes,
        at: 0,
        subjects: 0,
    };
    let value = read(&mut reader)?;
    reader.skip_space();
    (reader.at == bytes.len()).then_some(value)
}

/// A cursor over JSON text for the fast path. Every method returns `None`
/// on anything it does not handle, which hands the text to serde.
///
/// The text comes as bytes not yet checked to be UTF-8: every `&str` the
/// reader hands out is checked (or ASCII) on its own.
#[doc(hidden)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Subjects being read, one inside the other.
    subjects: u32,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The host writes no white space: one comparison then decides, made
    /// outside any loop. A module's CPU metering charges every entry into a
    /// loop, and a reader skips space before every token.
    #[inline(always)]
    fn skip_space(&mut self) {
        if self.bytes().get(self.at).is_some_and(|&byte| byte <= b' ') {
            self.skip_space_slowly();
        }
    }

    #[cold]
    #[inline(never)]
    fn skip_space_slowly(&mut self) {
        while let Some(&byte) = self.bytes().get(self.at) {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.at += 1;
        }
    }

    /// The next byte that is not white space, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes().get(self.at).copied()
    }

    #[inline(always)]
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn eat_word(&mut self, word: &str) -> Option<()> {
        self.skip_space();
        self.bytes()[self.at..]
            .starts_with(word.as_bytes())
            .then(|| self.at += word.len())
    }

    /// A timestamp in the canonical form the host writes, read in place;
    /// `None` (consuming nothing) for any other value.
    #[inline(always)]
    fn canonical_timestamp(&mut self) -> Option<Timestamp> {
        self.skip_space();
        let quoted: &[u8; 22] = self.bytes().get(self.at..self.at + 22)?.try_into().ok()?;
        if quoted[0] != b'"' || quoted[21] != b'"' {
            return None;
        }
        let timestamp = Timestamp::parse_canonical_bytes(quoted[1..21].try_into().ok()?)?;
        self.at += 22;
        Some(timestamp)
    }

    /// A string without escapes, borrowed from the text.
    #[inline(always)]
    fn str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        self.at += plain_prefix::<true>(&self.bytes()[start..]);
        let ascii = *self.bytes().get(self.at)? < 0x80;
        if !ascii {
            self.at += plain_prefix::<false>(&self.bytes()[self.at..]);
        }
        if *self.bytes().get(self.at)? != b'"' {
            return None;
        }
        let text = &self.bytes()[start..self.at];
        self.at += 1;
        if ascii {
            // SAFETY: every byte is below 0x80, so this is ASCII.
            Some(unsafe { std::str::from_utf8_unchecked(text) })
        } else {
            std::str::from_utf8(text).ok()
        }
    }

    #[inline(always)]
    fn string(&mut self) -> Option<String> {
        let text = self.str()?;
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        if let Some(owned) = short_string(text, self.bytes()) {
            return Some(owned);
        }
        Some(text.to_owned())
    }

    fn bool(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.eat_word("true").map(|()| true),
            b'f' => self.eat_word("false").map(|()| false),
            _ => None,
        }
    }

    /// Consumes `null` when it comes next.
    fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.eat_word("null").is_some()
    }

    /// After a member: `true` after a comma (another member follows),
    /// `false` after the closing brace.
    #[inline(always)]
    fn next_member(&mut self) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            b'}' => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// Consumes `bytes` when they come next, exactly so: a key given
    /// quoted and with its colon (`"key":`), or a kind's quoted name.
    #[inline(always)]
    fn expect_key(&mut self, bytes: &[u8]) -> bool {
        let found = self.bytes()[self.at..].starts_with(bytes);
        if found {
            self.at += bytes.len();
        }
        found
    }

    /// Consumes `bytes` when they come next, after any white space.
    /// Inlined, so that a literal is compared in place rather than by a
    /// call to `memcmp`, which a module runs a byte at a time.
    #[inline(always)]
    fn expect_bytes(&mut self, bytes: &[u8]) -> bool {
        self.skip_space();
        self.expect_key(bytes)
    }

    /// A member's key and the colon after it.
    #[inline(always)]
    fn key(&mut self) -> Option<&'a str> {
        let key = self.str()?;
        self.eat(b':')?;
        Some(key)
    }

    /// An array, each element read by `read`.
    fn vec<T>(&mut self, mut read: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        if self.eat(b']').is_some() {
            return Some(items);
        }
        loop {
            items.push(read(self)?);
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(items);
                }
                _ => return None,
            }
        }
    }

    /// An array read into `items`, each element read in place into a
    /// `blank` one pushed first.
    fn vec_into<T>(
        &mut self,
        items: &mut Vec<T>,
        blank: impl Fn() -> T,
        mut read: impl FnMut(&mut Self, &mut T) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        if items.capacity() == 0 {
            // Room for two straight away (a subject rarely has more locks):
            // the first `push` into an empty vector takes the general path
            // for growing one, a call a module makes at some cost.
            *items = Vec::with_capacity(2);
        }
        loop {
            items.push(blank());
            read(self, items.last_mut()?)?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A value that may be `null`, which is `None`, as serde reads an
    /// `Option`.
    #[inline(always)]
    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.null() {
            Some(None)
        } else {
            read(self).map(Some)
        }
    }

    /// A subject's switches: names and whether each is on. A name given
    /// twice counts with its last value, as serde reads a map.
    fn switches(&mut self) -> Option<BTreeMap<String, bool>> {
        let mut switches = BTreeMap::new();
        self.eat(b'{')?;
        if self.eat(b'}').is_none() {
            loop {
                let name = self.key()?;
                switches.insert(name.to_owned(), self.bool()?);
                if !self.next_member()? {
                    break;
                }
            }
        }
        Some(switches)
    }

    /// Reads a field's value into `slot`; a field seen twice goes to serde,
    /// which refuses it.
    fn once<T>(
        &mut self,
        slot: &mut Option<T>,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(read(self)?);
        Some(())
    }

    /// The text of the next value, skipped over without checking it closely:
    /// whoever decodes it checks it.
    fn raw(&mut self) -> Option<&'a str> {
        self.skip_space();
        let start = self.at;
        let bytes = self.bytes();
        let mut depth = 0usize;
        loop {
            match *bytes.get(self.at)? {
                b'"' => loop {
                    self.at += 1;
                    match *bytes.get(self.at)? {
                        b'"' => break,
                        b'\\' => self.at += 1,
                        _ => {}
                    }
                },
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth = depth.checked_sub(1)?,
                // A number or a literal ends where the next token starts.
                _ if depth == 0 => {
                    while !matches!(
                        bytes.get(self.at),
                        None | Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
                    ) {
                        self.at += 1;
                    }
                    break;
                }
                _ => {}
            }
            self.at += 1;
            if depth == 0 {
                break;
            }
        }
        std::str::from_utf8(&bytes[start..self.at]).ok()
    }

    /// An operator's settings: no settings (`{}`) decode from an empty
    /// object without running serde's parser.
    fn settings<T: DeserializeOwned>(&mut self) -> Option<T> {
        if self.expect_bytes(b"{}") {
            T::deserialize(Value::Object(serde_json::Map::new())).ok()
        } else {
            self.serde()
        }
    }

    /// The next value, decoded by serde.
    fn serde<T: DeserializeOwned>(&mut self) -> Option<T> {
        serde_json::from_str(self.raw()?).ok()
    }
}

/// How many bytes at the start of `bytes` stand in a JSON string as they
/// are: neither `"`, `\` nor a control character, nor (`ASCII`) a byte
/// above 0x7f. Sixteen at a time with wasm's SIMD (which `.cargo/config.toml`
/// turns on for policies) or x86_64's SSE2, eight at a time in a `u64`
/// otherwise.
#[inline(always)]
fn plain_prefix<const ASCII: bool>(bytes: &[u8]) -> usize {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use core::arch::wasm32::{
            i8x16_bitmask, i8x16_eq, u8x16_lt, u8x16_splat, v128, v128_load, v128_or,
        };
        let mut at = 0;
        while at + 16 <= bytes.len() {
            // SAFETY: the 16 bytes at `at` are inside `bytes`; wasm loads
            // need no alignment.
            let v = unsafe { v128_load(bytes.as_ptr().add(at).cast::<v128>()) };
            let quote = i8x16_eq(v, u8x16_splat(b'"'));
            let backslash = i8x16_eq(v, u8x16_splat(b'\\'));
            let control = u8x16_lt(v, u8x16_splat(0x20));
            let mut special = v128_or(v128_or(quote, backslash), control);
            if ASCII {
                // The high bit of a byte above 0x7f is its own flag.
                special = v128_or(special, v);
            }
            let flags = i8x16_bitmask(special);
            if flags != 0 {
                return at + flags.trailing_zeros() as usize;
            }
            at += 16;
        }
        at + plain_prefix_by_words::<ASCII>(&bytes[at..])
    }
    // SSE2 is part of every x86_64 processor.
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        let mut at = 0;
        while at + 16 <= bytes.len() {
            // SAFETY: the 16 bytes at `at` are inside `bytes`; the load
            // needs no alignment, and SSE2 is always there on x86_64.
            let flags = unsafe {
                let v = _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>());
                let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
                let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
                // Below 0x20 exactly where the unsigned maximum with 0x1f
                // is 0x1f.
                let low = _mm_set1_epi8(0x1f);
                let control = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
                let mut special = _mm_or_si128(_mm_or_si128(quote, backslash), control);
                if ASCII {
                    // The high bit of a byte above 0x7f is its own flag.
                    special = _mm_or_si128(special, v);
                }
                _mm_movemask_epi8(special)
            };
            if flags != 0 {
                return at + flags.trailing_zeros() as usize;
            }
            at += 16;
        }
        at + plain_prefix_by_words::<ASCII>(&bytes[at..])
    }
    #[cfg(not(any(
        all(target_arch = "wasm32", target_feature = "simd128"),
        target_arch = "x86_64"
    )))]
    plain_prefix_by_words::<ASCII>(bytes)
}

/// [`plain_prefix`] eight bytes at a time in a `u64`, the last few too:
/// byte by byte they cost a module some thirty instructions each, and most
/// strings a writer scans end in a few.
#[inline(always)]
fn plain_prefix_by_words<const ASCII: bool>(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `v` is zero where the result has its high bit set; bits
    // above the lowest may be false alarms, the lowest is exact.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    // The high bits of the special bytes of a little-endian word, exact
    // for the lowest.
    let specials = |word: u64| {
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
        let quote = zero(word ^ (ONES * u64::from(b'"')));
        let backslash = zero(word ^ (ONES * u64::from(b'\\')));
        let high = if ASCII { word & HIGH } else { 0 };
        control | quote | backslash | high
    };
    let first = |special: u64| (special.trailing_zeros() / 8) as usize;
    let len = bytes.len();
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let special = specials(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        if special != 0 {
            return at + first(special);
        }
        at += 8;
    }
    if at == len {
        return len;
    }
    if len >= 8 {
        // The last eight bytes: those before `at` are plain, so the lowest
        // flag is the first special byte after it.
        let from = len - 8;
        let special = specials(u64::from_le_bytes(
            bytes[from..].try_into().expect("eight bytes"),
        ));
        return if special == 0 {
            len
        } else {
            from + first(special)
        };
    }
    if len >= 4 {
        // Four to seven bytes: the first four and the last four, which
        // overlap, in one word. The lowest flag in the last four is the
        // first special byte only when the first four have none.
        let head = u32::from_le_bytes(bytes[..4].try_into().expect("four bytes"));
        let tail = u32::from_le_bytes(bytes[len - 4..].try_into().expect("four bytes"));
        let special = specials(u64::from(head) | u64::from(tail) << 32);
        return match first(special) {
            8 => len,
            at if at < 4 => at,
            at => at + len - 8,
        };
    }
    // One to three bytes, each at its own place in a word (the middle one
    // and the last may be the same byte, which then comes twice), the rest
    // filled with a plain byte: the first flag is at the byte's index.
    let word = [
        bytes[0],
        bytes[len / 2],
        bytes[len - 1],
        b'A',
        b'A',
        b'A',
        b'A',
        b'A',
    ];
    first(specials(u64::from_le_bytes(word))).min(len)
}

/// A copy of `text`, a string of at most 16 bytes inside `within` with 16
/// bytes to read from its start, in one SIMD load and store. Most strings
/// of an envelope are that short (ids, kinds, reasons), and `to_owned`
/// copies them with `memory.copy`, a call out of the module.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn short_string(text: &str, within: &[u8]) -> Option<String> {
    use core::arch::wasm32::{v128, v128_load, v128_store};
    use std::alloc::Layout;
    const BLOCK: usize = 16;
    let offset = text.as_ptr() as usize - within.as_ptr() as usize;
    if text.is_empty() || text.len() > BLOCK || offset + BLOCK > within.len() {
        return None;
    }
    let layout = Layout::new::<[u8; BLOCK]>();
    // SAFETY: the layout's size is not zero.
    #[cfg(feature = "allocator")]
    let block = unsafe { crate::allocator::alloc(layout) };
    #[cfg(not(feature = "allocator"))]
    let block = unsafe { std::alloc::alloc(layout) };
    if block.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: the 16 bytes read lie inside `within` (checked above) and
    // the 16 written are the new block. The string's bytes are the first
    // `text.len()` of them, UTF-8 as `text` is; its capacity is the block,
    // allocated by the global allocator with the layout `String` frees.
    unsafe {
        v128_store(
            block.cast::<v128>(),
            v128_load(text.as_ptr().cast::<v128>()),
        );
        Some(String::from_raw_parts(block, text.len(), BLOCK))
    }
}

/// A JSON string, escaped as serde_json escapes it. Inlined where it is
/// written: most strings need no escape, and then this is a scan and one
/// copy between the quotes.
#[inline(always)]
fn string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let plain = plain_prefix::<false>(bytes);
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    extend(out, &bytes[..plain]);
    if plain < bytes.len() {
        escaped(out, &bytes[plain..]);
    }
    out.push(b'"');
}

/// `out.extend_from_slice(bytes)`, copying a slice of at most 16 bytes
/// (the keys and most values the writers copy) with two loads and stores
/// that may overlap. For such a copy, a call to `memcpy` natively, or
/// wasmtime's `memory.copy` in a module, costs more than the copy itself.
#[inline(always)]
fn extend(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n > 16 {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(16);
    let src = bytes.as_ptr();
    // SAFETY: `reserve` left at least 16 bytes of spare capacity, so every
    // write lands there; every read lies in `bytes`. The writes cover
    // exactly the first `n` spare bytes, which `set_len` then counts.
    unsafe {
        let dst = out.as_mut_ptr().add(out.len());
        if n >= 8 {
            let (head, tail) = (
                src.cast::<u64>().read_unaligned(),
                src.add(n - 8).cast::<u64>().read_unaligned(),
            );
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 {
            let (head, tail) = (
                src.cast::<u32>().read_unaligned(),
                src.add(n - 4).cast::<u32>().read_unaligned(),
            );
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else if n > 0 {
            // One to three bytes: the first, the middle and the last.
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
        out.set_len(out.len() + n);
    }
}

/// The rest of a string from its first byte to escape on.
#[inline(never)]
fn escaped(out: &mut Vec<u8>, mut rest: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    while let Some(&byte) = rest.first() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]),
        }
        rest = &rest[1..];
        let plain = plain_prefix::<false>(rest);
        out.extend_from_slice(&rest[..plain]);
        rest = &rest[plain..];
    }
}

/// A member's key as [`Object`] writes it, made by `key!("name")`: the
/// comma before it, the quoted name and the colon, so that it goes out in
/// one copy (without the comma when it is the first).
#[derive(Clone, Copy)]
struct Key(&'static [u8]);

macro_rules! key {
    ($name:literal) => {
        Key(concat!(",\"", $name, "\":").as_bytes())
    };
}

/// Writes an object's fields, each after a comma but the first, and keeps
/// the first error of a field's value for [`Object::end`].
struct Object<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
    written: Written,
}

impl<'o> Object<'o> {
    #[inline]
    fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Object {
            out,
            first: true,
            written: Ok(()),
        }
    }

    fn note(&mut self, written: Written) -> &mut Self {
        if self.written.is_ok() {
            self.written = written;
        }
        self
    }

    #[inline]
    fn key(&mut self, key: Key) -> &mut Vec<u8> {
        let first = std::mem::take(&mut self.first);
        extend(self.out, &key.0[usize::from(first)..]);
        self.out
    }

    #[inline]
    fn str(&mut self, key: Key, value: &str) -> &mut Self {
        string(self.key(key), value);
        self
    }

    #[inline]
    fn value<T: WireJson>(&mut self, key: Key, value: &T) -> &mut Self {
        let written = value.write_json(self.key(key));
        self.note(written)
    }

    // This, `opt` and `write_kind_and_id` inlined: the host wrote the
    // bench's envelope in 80 ns instead of 100-140 (minimum of 301 rounds,
    // alternately); an `authorize` reply, which a module writes, uses none
    // of them, and the module's code came out the same.
    #[inline]
    fn opt_str(&mut self, key: Key, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.str(key, value);
        }
        self
    }

    #[inline]
    fn opt<T: WireJson>(&mut self, key: Key, value: Option<&T>) -> &mut Self {
        if let Some(value) = value {
            self.value(key, value);
        }
        self
    }

    fn serde<T: Serialize>(&mut self, key: Key, value: &T) -> &mut Self {
        let written = serde_json::to_writer(&mut *self.key(key), value);
        self.note(written)
    }

    fn list<T: WireJson>(&mut self, key: Key, items: &[T]) -> &mut Self {
        let out = self.key(key);
        out.push(b'[');
        let mut written = Ok(());
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            written = written.and(item.write_json(out));
        }
        out.push(b']');
        self.note(written)
    }

    fn end(&mut self) -> Written {
        self.out.push(b'}');
        std::mem::replace(&mut self.written, Ok(()))
    }
}

impl WireJson for Timestamp {
    fn write_json(&self, out: &mut Vec<u8>) -> Written {
        out.push(b'"');
        if self.push_canonical(out) {
            out.push(b'"');
            return Ok(());
        }
        out.pop();
        serde_json::to_writer(out, self)
    }

    fn read_json(r: &mut Reader<'_>) -> Option<Self> {
        r.canonical_timestamp().or_else(|| r.str()?.parse().ok())
    }
}

/// The kinds of actor and subject: their names as strings.
macro_rules! kind_by_name {
    ($($kind:ty),*) => {$(
        impl WireJson for $kind {
            fn write_json(&self, out: &mut Vec<u8>) -> Written {
                extend(out, self.quoted_name().as_bytes());
                Ok(())
            }

            // Inlined where a kind is read: a call cost the SUB-4 deny, with
            // four kinds in its input, 50-70 ns in a module (measured
            // alternately in one process). Inlining the larger readers
            // around it, or the timestamp's, made the module slower.
            #[inline(always)]
            fn read_json(r: &mut Reader<'_>) -> Option<Self> {
                r.skip_space();
                // The names as the host writes them, compared in place.
                Self::ALL
                    .into_iter()
                    .find(|kind| r.expect_key(kind.quoted_name().as_bytes()))
                    .or_else(|| r.str()?.parse().ok())
            }
        }
    )*};
}

kind_by_name!(ActorKind, SubjectKind);

/// `{"kind": ..., "id": ...}`: the shape of an actor and of a subject
/// reference.
#[inline]
fn write_kind_and_id<K: WireJson>(out: &mut Vec<u8>, kind: &K, id: &str) -> Written {
    Object::new(out)
        .value(key!("kind"), kind)
        .str(key!("id"), id)
        .end()
}

/// Reads `{"kind": ..., "id": ...}` into the two fields.
fn read_kind_and_id_into<K: WireJson>(
    r: &mut Reader<'_>,
    kind: &mut K,
    id: &mut String,
) -> Option<()> {
    fields!(r, seen, {
        "kind" [0] => *kind = K::read_json(r)?,
        "id" [1] => *id = r.string()?,
    });
    (seen == 0b11).then_some(())
}

impl WireJson for Actor {
    fn write_json(&self, out: &mut Vec<u8>) -> Written {
        write_kind_and_id(out, &self.kind, &self.id)
    }

    fn read_json(r: &mut Reader<'_>) -> Option<Self> {
        let mut actor = Actor::staff(String::new());
        read_actor_into(r, &mut actor)?;
        Some(actor)
    }
}

fn read_actor_into(r: &mut Reader<'_>, actor: &mut Actor) -> Option<()> {
    read_kind_and_id_into(r, &mut actor.kind, &mut actor.id)
}

impl WireJson for SubjectRef {
    fn write_json(&self, out: &mut Vec<u8>) -> Written {
        write_kind_and_id(out, &self.kind, &self.id)
    }

    fn read_json(r: &mut Reader<'_>) -> Option<Self> {
        let mut subject = SubjectRef {
            kind: SubjectKind::Customer,
            id: String::new(),
        };
        read_kind_and_id_into(r, &mut subject.kind, &mut subject.id)?;
        Some(subject)
    }
}

impl WireJson for Lock {
    fn write_json(&self, out: &mut Vec<u8>) -> Written {
        Object::new(out)
            .opt_str(key!("id"), self.id.as_deref())
            .str(key!("kind"), &self.kind)
            .value(key!("actor"), &self.actor)
            .str(key!("reason"), &self.reason)
            .opt_str(key!("message"), self.message.as_deref())
            .value(key!("since"), &self.since)
            .opt(key!("until"), self.until.as_ref())
            .end()
    }

    fn read_json(r: &mut Reader<'_>) -> Option<Self> {
        let mut lock = blank_lock();
        read_lock_into(r, &mut lock)?;
        Some(lock)
    }
}

/// A lock to decode into; every field it needs is then set.
fn blank_lock() -> Lock {
    Lock {
        id: None,
        kind: String::new(),
        actor: Actor::staff(String::new()),
        reason: String::new(),
        message: None,
        since: Timestamp(time::OffsetDateTime::UNIX_EPOCH),
        until: None,
    }
}

fn read_lock_into(r: &mut Reader<'_>, lock: &mut Lock) -> Option<()> {
    /// `kind`, `actor`, `reason` and `since`.
    const REQUIRED: u16 = 0b10_1110;
    fields!(r, seen, {
        "id" [0] => lock.id = r.nullable(Reader::string)?,
        "kind" [1] => lock.kind = r.string()?,
        "actor" [2] => read_actor_into(r, &mut lock.actor)?,
        "reason" [3] => lock.reason = r.string()?,
        "message" [4] => lock.message = r.nullable(Reader::string)?,
        "since" [5] => lock.since = Timestamp::read_json(r)?,
        "until" [6] => lock.until = r.nullable(Timestamp::read_json)?,
    });
    (seen & REQUIRED == REQUIRED).then_some(())
}

impl WireJson for Subject {
    fn write_json(&self, out: &mut Vec<u8>) -> Written {
        let mut object = Object::new(out);
        object
            .value(key!("kind"), &self.kind)
            .str(key!("id"), &self.id)
            .opt_str(key!("status"), self.status.as_deref());
        if !self.switches.is_empty() {
            object.serde(key!("switches"), &self.switches);
        }
        if !self.locks.is_empty() {
            object.list(key!("locks"), &self.locks);
        }
        object.opt(key!("parent"), self.parent.as_deref());
        if !self.children.is_empty() {
            object.list(key!("children"), &self.children);
        }
        if !self.attributes.is_empty() {
            object.serde(key!("attributes"), &self.attributes);
        }
        object.end()
    }

    fn read_json(r: &mut Reader<'_>) -> Option<Self> {
        let mut subject = Subject::new(SubjectKind::Customer, String::new());
        read_subject_into(r, &mut subject)?;
        Some(subject)
    }
}

fn read_subject_into(r: &mut Reader<'_>, subject: &mut Subject) -> Option<()> {
    /// `kind` and `id`.
    const REQUIRED: u16 = 0b11;
    if r.subjects >= MAX_SUBJECT_DEPTH {
        return None;
    }
    r.subjects += 1;
    fields!(r, seen, {
        "kind" [0] => subject.kind = SubjectKind::read_json(r)?,
        "id" [1] => subject.id = r.string()?,
        "status" [2] => subject.status = r.nullable(Reader::string)?,
        "switches" [3] => subject.switches = r.switches()?,
        "locks" [4] => r.vec_into(&mut subject.locks, blank_lock, read_lock_into)?,
        "parent" [5] => subject.parent = r.nullable(|r| {
            // Decoded where it will stay, not moved into the box after.
            let mut parent = Box::new(Subject::new(SubjectKind::Customer, String::new()));
            read_subject_into(r, &mut parent)?;
            Some(parent)
        })?,
        "children" [6] => subject.children = r.vec(SubjectRef::read_json)?,
        "attributes" [7] => subject.attributes = r.serde()?,
    });
    r.subjects -= 1;
    (seen & REQUIRED == REQUIRED).then_some(())
}

impl WireJson for AuthorizeInput {
    fn write_json(&self, out: &mut Vec<u8>) -> Written {
        let mut object = Object::new(out);
        object
            .str(key!("action"), &self.action)
            .value(key!("actor"), &self.actor)
            .value(key!("subject"), &self.subject);
        if !self.acknowledgements.is_empty() {
            object.serde(key!("acknowledgements"), &self.acknowledgements);
        }
        if !self.params.is_null() {
            object.serde(key!("params"), &self.params);
        }
        object.end()
    }

    fn read_json(r: &mut Reader<'_>) -> Option<Self> {
        let mut input = None;
        Self::read_json_into(r, &mut input)?;
        input
    }

    #[inline(always)]
    fn read_json_into(r: &mut Reader<'_>, place: &mut Option<Self>) -> Option<()> {
        /// `action`, `actor` and `subject`.
        const REQUIRED: u16 = 0b111;
        let input = place.insert(AuthorizeInput {
            action: String::new(),
            actor: Actor::staff(String::new()),
            subject: Subject::new(SubjectKind::Customer, String::new()),
            acknowledgements: Vec::new(),
            params: Value::Null,
        });
        fields!(r, seen, {
            "action" [0] => input.action = r.string()?,
            "actor" [1] => read_actor_into(r, &mut input.actor)?,
            "subject" [2] => read_subject_into(r, &mut input.subject)?,
            "acknowledgements" [3] => input.acknowledgements = r.vec(Reader::string)?,
            "params" [4] => input.params = r.serde()?,
        });
        (seen & REQUIRED == REQUIRED).then_some(())
    }
}

impl WireJson for Acknowledgement {
    fn write_json(&self, out: &mut Vec<u8>) -> Written {
        Object::new(out)
            .str(key!("code"), &self.code)
            .str(key!("reason"), &self.reason)
            .end()
    }

    fn read_json(r: &mut Reader<'_>) -> Option<Self> {
        let (mut code, mut reason) = (None, None);
        members!(r, {
            "code" => r.once(&mut code, Reader::string),
            "reason" => r.once(&mut reason, Reader::string),
        });
        Some(Acknowledgement {
            code: code?,
            reason: reason?,
        })
    }
}

impl WireJson for AuthorizeDecision {
    fn write_json(&self, out: &mut Vec<u8>) -> Written {
        match self {
            AuthorizeDecision::Allow => {
                out.extend_from_slice(b"{\"decision\":\"allow\"}");
                Ok(())
            }
            AuthorizeDecision::Deny { code, reason } => Object::new(out)
                .str(key!("decision"), "deny")
                .str(key!("code"), code)
                .str(key!("reason"), reason)
                .end(),
            AuthorizeDecision::NeedsConfirmation { required } => Object::new(out)
                .str(key!("decision"), "needs_confirmation")
                .list(key!("required"), required)
                .end(),
        }
    }

    /// The tag must come first; serde reads it anywhere.
    fn read_json(r: &mut Reader<'_>) -> Option<Self> {
        r.eat(b'{')?;
        if r.key()? != "decision" {
            return None;
        }
        match r.str()? {
            // Nothing may follow the tag.
            "allow" => (!r.next_member()?).then_some(AuthorizeDecision::Allow),
            "deny" => {
                let (mut code, mut reason) = (None, None);
                members!(r, after_first, {
                    "code" => r.once(&mut code, Reader::string),
                    "reason" => r.once(&mut reason, Reader::string),
                });
                Some(AuthorizeDecision::Deny {
                    code: code?,
                    reason: reason?,
                })
            }
            "needs_confirmation" => {
                let mut required = None;
                members!(r, after_first, {
                    "required" => r.once(&mut required, |r| r.vec(Acknowledgement::read_json)),
                });
                Some(AuthorizeDecision::NeedsConfirmation {
                    required: required?,
                })
            }
            _ => None,
        }
    }
}

// The other hooks' types go through serde: they are not on the path of
// every decision.
impl WireJson for () {}
impl WireJson for Value {}
impl WireJson for SettingsVerdict {}
impl WireJson for BillingInput {}
impl WireJson for BillingDecision {}
impl WireJson for TransitionInput {}
impl WireJson for TransitionDecision {}
impl WireJson for Effect {}
impl WireJson for Period {}
impl WireJson for Cycle {}
impl WireJson for CycleUnit {}
impl WireJson for Trigger {}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde_json::json;

    use super::*;

    /// `plain_prefix`, however many bytes it takes at a time, finds the
    /// byte a plain scan finds: each kind of byte at each position of
    /// strings shorter and longer than one block.
    #[test]
    fn the_block_scan_stops_where_a_plain_scan_does() {
        fn plain<const ASCII: bool>(bytes: &[u8]) -> usize {
            bytes
                .iter()
                .position(|&b| b < 0x20 || b == b'"' || b == b'\\' || (ASCII && b >= 0x80))
                .unwrap_or(bytes.len())
        }
        // The block scans, and the word scan on its own as a module without
        // SIMD runs it and as the block scans finish with it.
        let check = |bytes: &[u8], what: &str| {
            for (ours, scan) in [
                (plain_prefix::<true>(bytes), "blocks, ASCII"),
                (plain_prefix_by_words::<true>(bytes), "words, ASCII"),
            ] {
                assert_eq!(ours, plain::<true>(bytes), "{what}: {scan}");
            }
            for (ours, scan) in [
                (plain_prefix::<false>(bytes), "blocks"),
                (plain_prefix_by_words::<false>(bytes), "words"),
            ] {
                assert_eq!(ours, plain::<false>(bytes), "{what}: {scan}");
            }
        };
        for len in 0..48 {
            for at in 0..len {
                for byte in [b'"', b'\\', 0x00, 0x1f, b' ', 0x7f, 0x80, 0xc3, 0xff] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    check(&bytes, &format!("{byte:#x} at {at} of {len}"));
                }
            }
        }
        // Two special bytes: the scans that gather bytes into a word must
        // report the first, whichever lands lower in the word.
        for len in 0..24 {
            for first in 0..len {
                for second in first + 1..len {
                    for (a, b) in [(b'"', 0x00), (0x00, b'\\'), (0x80, b'"'), (b'\\', 0x1f)] {
                        let mut bytes = vec![b'a'; len];
                        bytes[first] = a;
                        bytes[second] = b;
                        check(&bytes, &format!("{bytes:?}"));
                    }
                }
            }
        }
    }

    /// Strings of every length around the short copy's cases are written
    /// as serde writes them, also after a buffer's first byte.
    #[test]
    fn strings_of_every_length_are_written_as_serde_writes_them() {
        for len in 0..40 {
            for text in [
                "abcdefghijklmnopqrstuvwxyz0123456789ABCD"[..len].to_owned(),
                "ä".repeat(len / 2),
                format!("{}\"", "x".repeat(len)),
            ] {
                let mut out = vec![b'['];
                string(&mut out, &text);
                let expected = serde_json::to_vec(&[&text]).expect("serde writes strings");
                assert_eq!(out, expected[..expected.len() - 1], "{text:?}");
            }
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a valid time")
    }

    fn lock(id: Option<&str>, message: Option<&str>, until: Option<&str>) -> Lock {
        Lock {
            id: id.map(str::to_owned),
            kind: "full".into(),
            actor: Actor::staff("anna"),
            reason: "payment_default".into(),
            message: message.map(str::to_owned),
            since: at("2026-11-01T00:00:00Z"),
            until: until.map(at),
        }
    }

    /// Subjects from the bare minimum to every field set.
    fn subjects() -> Vec<Subject> {
        let bare = Subject::new(SubjectKind::Invoice, "i-1");
        let mut customer = Subject::new(SubjectKind::Customer, "c-1");
        customer.status = Some("active".into());
        customer.locks = vec![
            lock(Some("l-1"), None, None),
            lock(
                None,
                Some("Zahlung ausstehend, bitte melden"),
                Some("2026-12-01T00:00:00Z"),
            ),
        ];
        customer.children = vec![
            SubjectRef::new(SubjectKind::Contract, "k-1"),
            SubjectRef::new(SubjectKind::Contract, "k-2"),
        ];
        customer.attributes = json!({"invoices": 3, "payments": 0.5, "tags": ["a", {"b": null}]})
            .as_object()
            .cloned()
            .expect("an object");
        let mut contract = Subject::new(SubjectKind::Contract, "k-1");
        contract.switches = [
            ("automatic_billing".to_owned(), true),
            ("x".to_owned(), false),
        ]
        .into_iter()
        .collect();
        contract.parent = Some(Box::new(customer));
        let mut odd = Subject::new(
            SubjectKind::Case,
            "ä \"quoted\" \\ tab\t nl\n \u{1} \u{7f} /",
        );
        odd.locks = vec![lock(Some("\u{8}\u{c}\r"), Some("line one\nline two"), None)];
        odd.locks[0].since = at("2026-11-22T15:05:09.5+01:00");
        vec![bare, contract, odd]
    }

    fn inputs() -> Vec<AuthorizeInput> {
        subjects()
            .into_iter()
            .map(|subject| AuthorizeInput {
                action: "change_contract".into(),
                actor: Actor::self_service("c-1"),
                subject,
                acknowledgements: vec![],
                params: Value::Null,
            })
            .chain([AuthorizeInput {
                action: "deactivate_case".into(),
                actor: Actor::system("scheduler"),
                subject: Subject::new(SubjectKind::Case, "f-1"),
                acknowledgements: vec!["open_invoices_locked".into()],
                params: json!({"reason": "paid", "amount": 12.5}),
            }])
            .collect()
    }

    fn decisions() -> Vec<AuthorizeDecision> {
        vec![
            AuthorizeDecision::Allow,
            AuthorizeDecision::deny("customer_locked", "`x` is refused (lock by \"anna\")\n"),
            AuthorizeDecision::NeedsConfirmation {
                required: vec![Acknowledgement {
                    code: "open_invoices".into(),
                    reason: "die offenen Rechnungen werden gesperrt".into(),
                }],
            },
            AuthorizeDecision::NeedsConfirmation { required: vec![] },
        ]
    }

    /// Writes `value` by hand and through serde, expects the same bytes,
    /// and reads them back both ways.
    fn same_as_serde<T: WireJson + PartialEq + Debug>(value: &T) {
        let mut ours = Vec::new();
        to_writer(&mut ours, value).expect("writes");
        let theirs = serde_json::to_vec(value).expect("serializes");
        let text = String::from_utf8(theirs).expect("UTF-8");
        assert_eq!(String::from_utf8_lossy(&ours), text);
        assert_eq!(&from_str::<T>(&text).expect("reads back"), value);
        let pretty = serde_json::to_string_pretty(value).expect("serializes");
        assert_eq!(
            &from_str::<T>(&pretty).expect("reads back"),
            value,
            "{pretty}"
        );
    }

    /// Whether `text` took the fast path, not serde.
    fn fast_reads<T: WireJson>(text: &str) -> bool {
        fast(text.as_bytes(), T::read_json).is_some()
    }

    #[test]
    fn hand_written_json_is_byte_for_byte_serdes() {
        for subject in subjects() {
            same_as_serde(&subject);
        }
        for input in inputs() {
            same_as_serde(&input);
        }
        for decision in decisions() {
            same_as_serde(&decision);
            let reply = Reply::Ok(decision);
            assert_eq!(reply_to_vec(&reply), serde_json::to_vec(&reply).unwrap());
            let text = serde_json::to_string(&reply).unwrap();
            assert_eq!(read_reply::<AuthorizeDecision>(&text).unwrap(), reply);
        }
        let error = Reply::<AuthorizeDecision>::Error("cannot read `x`: \"y\"".into());
        assert_eq!(reply_to_vec(&error), serde_json::to_vec(&error).unwrap());
        // Kinds are written from their quoted names, copied whole.
        for kind in ActorKind::ALL {
            same_as_serde(&kind);
        }
        for kind in SubjectKind::ALL {
            same_as_serde(&kind);
        }
    }

    #[test]
    fn what_serde_cannot_write_is_an_error_here_too() {
        let mut lock = lock(None, None, None);
        lock.since = time::Date::from_calendar_date(-5, time::Month::March, 1)
            .unwrap()
            .midnight()
            .assume_utc()
            .into();
        let theirs = serde_json::to_vec(&lock).unwrap_err().to_string();
        let mut subject = Subject::new(SubjectKind::Customer, "c-1");
        subject.locks.push(lock.clone());
        let ours = to_writer(&mut Vec::new(), &subject)
            .unwrap_err()
            .to_string();
        assert_eq!(ours, theirs);
        // A reply says so instead of failing.
        let schedule = TransitionDecision::Apply {
            effects: vec![Effect::Schedule {
                subject: SubjectRef::new(SubjectKind::Customer, "c-1"),
                at: lock.since,
                action: "unlock".into(),
                params: Value::Null,
            }],
        };
        let reply: Value = serde_json::from_slice(&reply_to_vec(&Reply::Ok(schedule))).unwrap();
        assert_eq!(
            reply,
            json!({ "error": format!("cannot encode reply: {theirs}") })
        );
    }

    #[test]
    fn the_fast_path_reads_what_carries_no_escapes() {
        let [bare, contract, odd] = subjects().try_into().expect("three subjects");
        for subject in [&bare, &contract] {
            let text = serde_json::to_string(subject).unwrap();
            assert!(fast_reads::<Subject>(&text), "{text}");
            let pretty = serde_json::to_string_pretty(subject).unwrap();
            assert!(fast_reads::<Subject>(&pretty), "{pretty}");
        }
        // Escapes are serde's to read.
        assert!(!fast_reads::<Subject>(
            &serde_json::to_string(&odd).unwrap()
        ));
        for decision in &decisions()[..3] {
            let text = serde_json::to_string(&Reply::Ok(decision)).unwrap();
            assert_eq!(
                fast(text.as_bytes(), |r| {
                    let mut reply = None;
                    members!(r, { "ok" => r.once(&mut reply, AuthorizeDecision::read_json) });
                    reply
                })
                .is_some(),
                !text.contains("\\\""),
                "{text}"
            );
        }
    }

    #[test]
    fn envelopes_are_written_and_read_as_serde_does() {
        let settings = r#"{"allowed_while_locked":["end_contract"]}"#;
        for input in inputs() {
            let mut ours = Vec::new();
            write_envelope(&mut ours, at("2026-11-22T10:00:00Z"), settings, &input).unwrap();
            let raw = serde_json::value::RawValue::from_string(settings.to_owned()).unwrap();
            let envelope = Envelope {
                now: at("2026-11-22T10:00:00Z"),
                settings: &*raw,
                input: &input,
            };
            let theirs = serde_json::to_vec(&envelope).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
            let text = std::str::from_utf8(&ours).unwrap();
            let read = read_envelope::<Value, AuthorizeInput>(text).unwrap();
            assert_eq!(read.input, input);
            assert_eq!(
                read.settings,
                json!({"allowed_while_locked": ["end_contract"]})
            );
        }
    }

    /// Reads `text` both ways: the same value, or the same error message.
    fn agrees<T: WireJson + PartialEq + Debug>(text: &str) {
        let ours = from_str::<T>(text).map_err(|e| e.to_string());
        let theirs = serde_json::from_str::<T>(text).map_err(|e| e.to_string());
        assert_eq!(ours, theirs, "{text}");
    }

    #[test]
    fn what_the_fast_path_leaves_serde_accepts_or_refuses_as_before() {
        let lock = r#""locks":[{"kind":"full","actor":{"kind":"staff","id":"anna"},"reason":"r","since":"2026-11-01T00:00:00Z"}]"#;
        for text in [
            // Refused by serde: each error message is serde's.
            r#"{"kind":"contract"}"#.to_owned(),
            r#"{"kind":"contract","id":"k-1","id":"k-2"}"#.to_owned(),
            r#"{"kind":"contract","id":null}"#.to_owned(),
            r#"{"kind":"contract","id":"k-1","locks":null}"#.to_owned(),
            r#"{"kind":"contract","id":"k-1","switches":{"a":1}}"#.to_owned(),
            r#"{"kind":"tenant","id":"k-1"}"#.to_owned(),
            r#"{"kind":"contract","id":"k-1"} x"#.to_owned(),
            r#"{"kind":"contract","id":"k-1",}"#.to_owned(),
            r#"{"kind";"contract","id":"k-1"}"#.to_owned(),
            r#"{"kind":"contract","id":"k-1""#.to_owned(),
            r#"{"kind":"contract","id":"k-1","attributes":{"a":01}}"#.to_owned(),
            r#"{"kind":"contract","id":"k-1","attributes":[1]}"#.to_owned(),
            r#"{"kind":"contract","id":"k-1","status":"a\qb"}"#.to_owned(),
            format!(
                r#"{{"kind":"contract","id":"k-1",{}}}"#,
                lock.replace("2026-11-01", "2026-13-01")
            ),
            "{\"kind\":\"contract\",\"id\":\"k\u{1}\"}".to_owned(),
            // Every field read in place is still checked: required, once.
            r#"{"kind":"contract","id":"k-1","kind":"customer"}"#.to_owned(),
            r#"{"id":"k-1","kind":"contract","id":"k-2"}"#.to_owned(),
            r#"{"kind":"customerx","id":"c-1"}"#.to_owned(),
            format!(
                r#"{{"kind":"contract","id":"k-1",{}}}"#,
                lock.replace(r#","reason":"r""#, "")
            ),
            format!(
                r#"{{"kind":"contract","id":"k-1",{}}}"#,
                lock.replace(r#","id":"anna""#, "")
            ),
            format!(
                r#"{{"kind":"contract","id":"k-1",{}}}"#,
                lock.replace(r#""kind":"full""#, r#""kind":"full","kind":"login""#)
            ),
            format!(
                r#"{{"kind":"contract","id":"k-1",{}}}"#,
                lock.replace("2026-11-01", "2026-02-30")
            ),
            format!(
                r#"{{"kind":"contract","id":"k-1",{}}}"#,
                lock.replace("00:00:00Z", "00:00:00+01:00")
            ),
            // Accepted by serde, though not on the fast path.
            r#"{"kind":"contract","id":"k\"1","unknown":{"a":[1,2]}}"#.to_owned(),
            r#"{"kind":"contract","id":"k-1","status":"\u00e4nderung"}"#.to_owned(),
            r#"["contract","k-1"]"#.to_owned(),
            // Accepted on the fast path, in the host's order or another.
            r#"{"id":"k-1","kind":"contract","parent":{"parent":null,"id":"c-1","kind":"customer"}}"#.to_owned(),
            format!(
                r#" {{ "id" : "k-1" , "kind" : "contract" , "status" : null, "parent": null, {lock} }} "#
            ),
            r#"{"kind":"contract","id":"k-1","switches":{"a":true,"a":false}}"#.to_owned(),
            r#"{"kind":"contract","id":"k-1","attributes":{"n":-1.5e3,"t":true,"s":"x,y}"}}"#
                .to_owned(),
        ] {
            agrees::<Subject>(&text);
        }
        for text in [
            r#"{"action":"a","actor":{"kind":"staff","id":"x"},"subject":{"kind":"case","id":"f"},"params":null}"#,
            r#"{"action":"a","actor":{"kind":"staff","id":"x"},"subject":{"kind":"case","id":"f"},"params":[1,{"a":"]"}]}"#,
            r#"{"action":"a","actor":{"kind":"staff","id":"x"},"subject":{"kind":"case","id":"f"},"acknowledgements":null}"#,
            r#"{"action":"a","actor":{"kind":"staff","id":"x"},"subject":{"kind":"case","id":"f"},"params":1 2}"#,
            r#"{"action":"a","actor":{"kind":"staff","id":"x"}}"#,
            r#"{"action":"a","actor":{"kind":"staff","id":"x"},"subject":{"kind":"case","id":"f"},"action":"b"}"#,
        ] {
            agrees::<AuthorizeInput>(text);
        }
        for text in [
            r#"{"ok":{"decision":"allow"}}"#,
            r#"{"ok":{"decision":"allow","extra":1}}"#,
            r#"{"ok":{"code":"c","decision":"deny","reason":"r"}}"#,
            r#"{"ok":{"decision":"deny","code":"c"}}"#,
            r#"{"ok":{"decision":"maybe"}}"#,
            r#"{"ok":{"decision":"allow"},"error":"both"}"#,
            r#"{"error":"cannot read"}"#,
            r#"{"error":"cannot \"read\""}"#,
            r#"{}"#,
            r#"{"ok":{"decision":"needs_confirmation","required":[{"code":"c","reason":"r"}]}}"#,
        ] {
            let ours = read_reply::<AuthorizeDecision>(text).map_err(|e| e.to_string());
            let theirs =
                serde_json::from_str::<Reply<AuthorizeDecision>>(text).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{text}");
        }
    }

    /// Settings that need a field.
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Required {
        reasons: Vec<String>,
    }

    /// A read from bytes gave serde's value or error once the bytes are
    /// checked as UTF-8, whatever the fast path met.
    fn same_as_serde_bytes<T: DeserializeOwned + PartialEq + Debug>(
        ours: Result<T, ReadError>,
        bytes: &[u8],
    ) {
        let theirs = serde_bytes::<T>(bytes).map_err(|e| e.to_string());
        assert_eq!(
            ours.map_err(|e| e.to_string()),
            theirs,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }

    /// An envelope read from bytes, as [`same_as_serde_bytes`].
    fn agrees_on_bytes<S: DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
        same_as_serde_bytes(read_envelope_bytes::<S, AuthorizeInput>(bytes), bytes);
    }

    #[test]
    fn an_envelope_from_bytes_reads_as_serde_reads_its_checked_text() {
        let envelope = |settings: &str, action: &str| {
            format!(
                r#"{{"now":"2026-11-22T10:00:00Z","settings":{settings},"input":{{"action":"{action}","actor":{{"kind":"staff","id":"anna"}},"subject":{{"kind":"case","id":"f"}}}}}}"#
            )
            .into_bytes()
        };
        let plain = envelope("{}", "änderung der Straße €");
        assert!(fast(&plain, envelope_members::<Value, AuthorizeInput>).is_some());
        agrees_on_bytes::<Value>(&plain);
        // A byte that is not UTF-8 at every place of the action, and in the
        // settings, which serde reads.
        let start = plain.len() - 90;
        for at in start..plain.len() {
            for bad in [&[0xff][..], &[0xc3, b'a'], &[0xed, 0xa0, 0x80]] {
                let mut bytes = plain.clone();
                let end = (at + bad.len()).min(bytes.len());
                bytes[at..end].copy_from_slice(&bad[..end - at]);
                agrees_on_bytes::<Value>(&bytes);
            }
        }
        let mut bytes = envelope(r#"{"a":"x"}"#, "a");
        let x = bytes.iter().position(|&b| b == b'x').unwrap();
        bytes[x] = 0xff;
        agrees_on_bytes::<Value>(&bytes);
        // No settings read without serde's parser, and refused as serde does
        // by settings that need a field.
        agrees_on_bytes::<Value>(&envelope("{}", "a"));
        agrees_on_bytes::<Value>(&envelope(" { } ", "a"));
        agrees_on_bytes::<Required>(&envelope("{}", "a"));
        agrees_on_bytes::<Required>(&envelope(r#"{"reasons":["r"]}"#, "a"));
        agrees_on_bytes::<()>(&envelope("{}", "a"));
        agrees_on_bytes::<std::collections::HashMap<String, u8>>(&envelope("{}", "a"));
    }

    #[test]
    fn a_reply_from_bytes_reads_as_serde_reads_its_checked_text() {
        let reply =
            r#"{"ok":{"decision":"deny","code":"customer_locked","reason":"gesperrt: Straße"}}"#;
        let agrees =
            |bytes: &[u8]| same_as_serde_bytes(read_reply_bytes::<AuthorizeDecision>(bytes), bytes);
        agrees(reply.as_bytes());
        assert!(fast(reply.as_bytes(), reply_members::<AuthorizeDecision>).is_some());
        for at in 0..reply.len() {
            let mut bytes = reply.as_bytes().to_vec();
            bytes[at] = 0xff;
            agrees(&bytes);
        }
    }

    #[test]
    fn subjects_nested_deeper_than_the_fast_path_goes_are_read_by_serde() {
        let mut subject = Subject::new(SubjectKind::Invoice, "i-0");
        for i in 1..40 {
            let mut child = Subject::new(SubjectKind::Invoice, format!("i-{i}"));
            child.parent = Some(Box::new(subject));
            subject = child;
        }
        let text = serde_json::to_string(&subject).unwrap();
        assert!(!fast_reads::<Subject>(&text));
        assert_eq!(from_str::<Subject>(&text).unwrap(), subject);
    }
}

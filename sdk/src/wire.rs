//! The typed contract between the host and a policy: one input and one output
//! type per hook, shared by `rulehost` (the host) and policy crates.
//!
//! Every type here travels as JSON (see `ABI.md`). Field names are
//! `snake_case`; enums are tagged with a `decision` or `effect` field so a
//! policy in another language can produce them with any JSON library.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub mod json;

pub use json::WireJson;

/// The ABI version a policy built with this SDK exports from
/// `rulehost_abi_version`; the host refuses a module exporting another one.
pub const ABI_VERSION: i32 = 1;

/// A point in time, carried as an RFC 3339 string (`2026-11-22T14:00:00Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub OffsetDateTime);

impl Timestamp {
    /// The wrapped date and time.
    pub fn get(self) -> OffsetDateTime {
        self.0
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(value: OffsetDateTime) -> Self {
        Timestamp(value)
    }
}

impl Timestamp {
    /// Appends the time to `out` as `Display` writes it. In a policy
    /// module this costs a fraction of `write!`, whose formatting machinery
    /// is dearer there than the text it writes.
    pub fn push_to(self, out: &mut String) {
        // SAFETY: `push_canonical` appends ASCII digits and separators, or
        // nothing, so the string stays UTF-8.
        if !self.push_canonical(unsafe { out.as_mut_vec() }) {
            out.push_str(&self.to_string());
        }
    }

    /// The canonical form `YYYY-MM-DDTHH:MM:SSZ`, when the time is UTC, in
    /// whole seconds and within years 0..=9999: the form the host writes.
    fn canonical(self) -> Option<[u8; 20]> {
        let mut out = *CANONICAL_TEMPLATE;
        self.write_canonical(&mut out).then_some(out)
    }

    /// Writes the digits of the canonical form over `out`, which holds
    /// [`CANONICAL_TEMPLATE`] already; `false` (and `out` left as it is)
    /// when the time has no canonical form. Written in place, two bytes at
    /// a time: a form built elsewhere and then copied is read back while
    /// its bytes are still being stored, which stalls the processor.
    #[inline]
    fn write_canonical(self, out: &mut [u8; 20]) -> bool {
        let t = self.0;
        if !t.offset().is_utc() || t.nanosecond() != 0 || !(0..=9999).contains(&t.year()) {
            return false;
        }
        let (year, ordinal) = t.to_ordinal_date();
        let (month, day) = month_and_day(ordinal, time::util::is_leap_year(year));
        let (hour, minute, second) = t.to_hms();
        let year = year as usize;
        for (at, value) in [
            (0, year / 100),
            (2, year % 100),
            (5, month),
            (8, day),
            (11, hour.into()),
            (14, minute.into()),
            (17, second.into()),
        ] {
            out[at..at + 2].copy_from_slice(&TWO_DIGITS[2 * value..2 * value + 2]);
        }
        true
    }

    /// Appends the canonical form to `out`; `false` (and nothing appended)
    /// when the time has none.
    pub(crate) fn push_canonical(self, out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(CANONICAL_TEMPLATE);
        let digits = out
            .last_chunk_mut()
            .expect("the twenty bytes just appended");
        if self.write_canonical(digits) {
            return true;
        }
        out.truncate(out.len() - CANONICAL_TEMPLATE.len());
        false
    }

    /// Parses the canonical form without the general RFC 3339 parser;
    /// `None` for anything else.
    fn parse_canonical(text: &str) -> Option<Self> {
        Timestamp::parse_canonical_bytes(text.as_bytes().try_into().ok()?)
    }

    /// [`Timestamp::parse_canonical`] of exactly the form's 20 bytes: every
    /// position is known, so nothing is searched or bounds-checked.
    fn parse_canonical_bytes(b: &[u8; 20]) -> Option<Self> {
        let separators = (b[4] ^ b'-')
            | (b[7] ^ b'-')
            | (b[10] ^ b'T')
            | (b[13] ^ b':')
            | (b[16] ^ b':')
            | (b[19] ^ b'Z');
        let digit = |at: usize| b[at].wrapping_sub(b'0');
        let not_digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .into_iter()
            .fold(0, |bad, at| bad | u8::from(digit(at) > 9));
        if separators | not_digits != 0 {
            return None;
        }
        let two = |at: usize| digit(at) * 10 + digit(at + 1);
        let year = i32::from(two(0)) * 100 + i32::from(two(2));
        let month = time::Month::try_from(two(5)).ok()?;
        let date = time::Date::from_calendar_date(year, month, two(8)).ok()?;
        let clock = time::Time::from_hms(two(11), two(14), two(17)).ok()?;
        Some(Timestamp(date.with_time(clock).assume_utc()))
    }
}

/// The canonical form's separators, which [`Timestamp::write_canonical`]
/// fills in with digits.
const CANONICAL_TEMPLATE: &[u8; 20] = b"0000-00-00T00:00:00Z";

/// `00` to `99`, two bytes each: a number below 100 is its two digits at
/// twice its value.
const TWO_DIGITS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The month (1..=12) and day of the month of day `ordinal` (1..=366) of a
/// year, without searching a table of month lengths: counted from March, a
/// month's start is a linear function of its number, rounded down (the
/// calendar of Hinnant's `civil_from_days`), and January and February end
/// the count.
fn month_and_day(ordinal: u16, leap: bool) -> (usize, usize) {
    let january_and_february = 59 + usize::from(leap);
    let ordinal = usize::from(ordinal);
    // Days since March 1st, 0..=365.
    let since_march = if ordinal > january_and_february {
        ordinal - january_and_february - 1
    } else {
        ordinal + 305
    };
    let from_march = (5 * since_march + 2) / 153;
    let day = since_march - (153 * from_march + 2) / 5 + 1;
    let month = if from_march < 10 {
        from_march + 3
    } else {
        from_march - 9
    };
    (month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.canonical() {
            return f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?);
        }
        match self.0.format(&Rfc3339) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl FromStr for Timestamp {
    type Err = time::error::Parse;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match Timestamp::parse_canonical(text) {
            Some(timestamp) => Ok(timestamp),
            None => OffsetDateTime::parse(text, &Rfc3339).map(Timestamp),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.canonical() {
            Some(text) => serializer
                .serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?),
            None => time::serde::rfc3339::serialize(&self.0, serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 date and time such as `2026-11-22T14:00:00Z`")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Timestamp, E> {
                text.parse()
                    .map_err(|e| E::custom(format_args!("invalid date and time `{text}`: {e}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The hooks a policy may implement. Each is one wasm export (see `ABI.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// May this action run on this subject in its current state?
    Authorize,
    /// Should billing proceed for this contract now, and for which periods?
    Billing,
    /// What follows when an action runs, a lock expires or a date arrives?
    Transition,
    /// Are these operator settings acceptable? Called when they are installed.
    ValidateSettings,
}

impl Hook {
    /// Every hook, in a fixed order.
    pub const ALL: [Hook; 4] = [
        Hook::Authorize,
        Hook::Billing,
        Hook::Transition,
        Hook::ValidateSettings,
    ];

    /// The hook's name as used in JSON, on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Authorize => "authorize",
            Hook::Billing => "billing",
            Hook::Transition => "transition",
            Hook::ValidateSettings => "validate_settings",
        }
    }

    /// The name of the wasm export that implements the hook.
    pub fn export_name(self) -> &'static str {
        match self {
            Hook::Authorize => "rulehost_authorize",
            Hook::Billing => "rulehost_billing",
            Hook::Transition => "rulehost_transition",
            Hook::ValidateSettings => "rulehost_validate_settings",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a hook name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownHook(pub String);

impl fmt::Display for UnknownHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown hook `{}`: expected one of `authorize`, `billing`, `transition`, `validate_settings`",
            self.0
        )
    }
}

impl std::error::Error for UnknownHook {}

impl FromStr for Hook {
    type Err = UnknownHook;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Hook::ALL
            .into_iter()
            .find(|hook| hook.name() == name)
            .ok_or_else(|| UnknownHook(name.to_owned()))
    }
}

/// Ties a hook to its input and output types, so the host and the SDK can
/// only ever exchange the right pair.
pub trait HookKind {
    /// Which hook this is.
    const HOOK: Hook;
    /// What the host sends in the envelope's `input` field.
    type Input: WireJson;
    /// What the policy answers in the reply's `ok` field.
    type Output: WireJson;

    /// The refusal for this hook: what a policy that cannot decide, or a
    /// policy that failed, answers. Denies, skips or refuses; never allows.
    fn refusal(code: &str, reason: String) -> Self::Output;
}

/// Marker for the `authorize` hook.
#[derive(Debug)]
pub enum Authorize {}
/// Marker for the `billing` hook.
#[derive(Debug)]
pub enum Billing {}
/// Marker for the `transition` hook.
#[derive(Debug)]
pub enum Transition {}
/// Marker for the `validate_settings` hook.
#[derive(Debug)]
pub enum ValidateSettings {}

impl HookKind for Authorize {
    const HOOK: Hook = Hook::Authorize;
    type Input = AuthorizeInput;
    type Output = AuthorizeDecision;

    fn refusal(code: &str, reason: String) -> AuthorizeDecision {
        AuthorizeDecision::deny(code, reason)
    }
}

impl HookKind for Billing {
    const HOOK: Hook = Hook::Billing;
    type Input = BillingInput;
    type Output = BillingDecision;

    fn refusal(code: &str, reason: String) -> BillingDecision {
        BillingDecision::Skip {
            code: code.to_owned(),
            reason,
        }
    }
}

impl HookKind for Transition {
    const HOOK: Hook = Hook::Transition;
    type Input = TransitionInput;
    type Output = TransitionDecision;

    fn refusal(code: &str, reason: String) -> TransitionDecision {
        TransitionDecision::Refuse {
            code: code.to_owned(),
            reason,
        }
    }
}

impl HookKind for ValidateSettings {
    const HOOK: Hook = Hook::ValidateSettings;
    type Input = Value;
    type Output = SettingsVerdict;

    fn refusal(code: &str, reason: String) -> SettingsVerdict {
        SettingsVerdict::Invalid {
            errors: vec![format!("{code}: {reason}")],
        }
    }
}

/// What the host writes into guest memory for every hook call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<S, I> {
    /// The host's clock at the time of the request; policies have no other.
    pub now: Timestamp,
    /// The operator's settings for this policy set (`{}` when none).
    pub settings: S,
    /// The hook's input.
    pub input: I,
}

/// What a policy writes back: `{"ok": output}`, or `{"error": "message"}`
/// when it could not read its input. The host turns an error into a
/// fail-closed decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    /// The hook's output.
    Ok(T),
    /// Why the policy could not answer.
    Error(String),
}

/// A kind's variants and their names on the wire, from one list: `ALL`,
/// `name` and `FromStr`. Parsing is a `match`, which compares each name in
/// place; the JSON reader compares the quoted names of `ALL` before it
/// falls back to it.
macro_rules! kind_names {
    ($kind:ident, $what:literal, { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $kind {
            /// Every kind.
            pub const ALL: [$kind; [$($name),*].len()] = [$($kind::$variant),*];

            /// The kind's name as used in JSON.
            pub fn name(self) -> &'static str {
                match self {
                    $($kind::$variant => $name,)*
                }
            }

            /// The name as a JSON string, quotes included: the JSON writer
            /// copies it whole, as no name has a character to escape, and
            /// the reader compares it in place.
            pub(crate) fn quoted_name(self) -> &'static str {
                match self {
                    $($kind::$variant => concat!("\"", $name, "\""),)*
                }
            }
        }

        impl FromStr for $kind {
            type Err = String;

            /// Parses a kind's name; the error names the value and the kinds.
            fn from_str(name: &str) -> Result<Self, Self::Err> {
                match name {
                    $($name => Ok($kind::$variant),)*
                    _ => {
                        let names = [$(concat!("`", $name, "`")),*].join(", ");
                        Err(format!("unknown {} kind `{name}`: expected one of {names}", $what))
                    }
                }
            }
        }
    };
}

/// Who asks for an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A member of the operator's staff, in the back office.
    Staff,
    /// The customer, through a self-service portal.
    SelfService,
    /// The host or the backend acting on its own (scheduler, billing run).
    System,
}

kind_names!(ActorKind, "actor", {
    Staff => "staff",
    SelfService => "self_service",
    System => "system",
});

/// An actor: its kind and the backend's id for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Staff, self-service or system.
    pub kind: ActorKind,
    /// The backend's id of the staff member, customer or system component.
    pub id: String,
}

impl Actor {
    /// A staff member.
    pub fn staff(id: impl Into<String>) -> Self {
        Actor {
            kind: ActorKind::Staff,
            id: id.into(),
        }
    }

    /// The customer in a self-service portal.
    pub fn self_service(id: impl Into<String>) -> Self {
        Actor {
            kind: ActorKind::SelfService,
            id: id.into(),
        }
    }

    /// The host or backend acting on its own.
    pub fn system(id: impl Into<String>) -> Self {
        Actor {
            kind: ActorKind::System,
            id: id.into(),
        }
    }
}

/// What kind of thing a subject is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A customer, member or debtor.
    Customer,
    /// A contract, membership or subscription.
    Contract,
    /// An invoice.
    Invoice,
    /// A collections case.
    Case,
}

kind_names!(SubjectKind, "subject", {
    Customer => "customer",
    Contract => "contract",
    Invoice => "invoice",
    Case => "case",
});

/// Names a subject by kind and the backend's own id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubjectRef {
    /// What kind of subject.
    pub kind: SubjectKind,
    /// The backend's id of it.
    pub id: String,
}

impl SubjectRef {
    /// A reference to subject `id` of `kind`.
    pub fn new(kind: SubjectKind, id: impl Into<String>) -> Self {
        SubjectRef {
            kind,
            id: id.into(),
        }
    }
}

impl fmt::Display for SubjectRef {
    /// `kind:id`, as in `customer:c-1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.id)
    }
}

impl FromStr for SubjectRef {
    type Err = String;

    /// Parses `kind:id`, as in `customer:c-1`; the error names the value.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, id) = text
            .split_once(':')
            .filter(|(_, id)| !id.is_empty())
            .ok_or_else(|| format!("subject `{text}` is not `KIND:ID` (`customer:c-1`)"))?;
        Ok(SubjectRef::new(kind.parse()?, id))
    }
}

/// A lock on a subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The host's id of the lock, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What the lock blocks, for example `full`, `access` or `login`.
    pub kind: String,
    /// Who locked.
    pub actor: Actor,
    /// Why, usually one of the operator's configured reasons.
    pub reason: String,
    /// A free-text message for the customer or the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the lock took effect.
    pub since: Timestamp,
    /// When a timed lock ends; `None` for a lock that stays until lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

impl Lock {
    /// Whether the lock is in force at `now`: started, and not yet ended.
    pub fn is_active_at(&self, now: Timestamp) -> bool {
        self.since <= now && self.until.is_none_or(|until| now < until)
    }
}

/// A snapshot of a subject as the host and backend know it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// What kind of subject.
    pub kind: SubjectKind,
    /// The backend's id of it.
    pub id: String,
    /// Its lifecycle status (`active`, `ended`, `deactivated`...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Named on/off switches, such as a contract's `automatic_billing`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub switches: BTreeMap<String, bool>,
    /// The locks placed on this subject itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<Lock>,
    /// The subject this one belongs to (a contract's customer, an invoice's
    /// case), whose locks apply here as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Box<Subject>>,
    /// The subjects that belong to this one (a customer's contracts), as far
    /// as the backend or the host knows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<SubjectRef>,
    /// Anything else the backend passes along for the policy.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, Value>,
}

impl Subject {
    /// A subject with no status, switches, locks, parent or attributes.
    pub fn new(kind: SubjectKind, id: impl Into<String>) -> Self {
        Subject {
            kind,
            id: id.into(),
            status: None,
            switches: BTreeMap::new(),
            locks: Vec::new(),
            parent: None,
            children: Vec::new(),
            attributes: serde_json::Map::new(),
        }
    }

    /// This subject's reference.
    pub fn reference(&self) -> SubjectRef {
        SubjectRef {
            kind: self.kind,
            id: self.id.clone(),
        }
    }

    /// Every lock in force at `now`, on this subject or on any subject it
    /// belongs to.
    pub fn active_locks(&self, now: Timestamp) -> impl Iterator<Item = &Lock> {
        std::iter::successors(Some(self), |subject| subject.parent.as_deref())
            .flat_map(|subject| subject.locks.iter())
            .filter(move |lock| lock.is_active_at(now))
    }

    /// Whether any lock is in force at `now` on this subject or its parents.
    pub fn is_locked(&self, now: Timestamp) -> bool {
        self.active_locks(now).next().is_some()
    }

    /// The value of a named switch; a switch never set is off.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.get(name).copied().unwrap_or(false)
    }

    /// The count the backend passed as attribute `name` (`invoices`); 0
    /// when absent or not a count.
    pub fn count(&self, name: &str) -> u64 {
        self.attributes
            .get(name)
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// Input of the `authorize` hook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthorizeInput {
    /// The action to run, in the operator's vocabulary (`change_contract`).
    pub action: String,
    /// Who asks.
    pub actor: Actor,
    /// What the action runs on, with its locks.
    pub subject: Subject,
    /// The acknowledgements the caller gives with the request (COL-3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledgements: Vec<String>,
    /// Action parameters.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

/// An acknowledgement a request must carry before it is allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Machine code the caller sends back in `acknowledgements`.
    pub code: String,
    /// What the person acknowledges, in words.
    pub reason: String,
}

/// Output of the `authorize` hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum AuthorizeDecision {
    /// The action may run.
    Allow,
    /// The action may not run.
    Deny {
        /// Machine code, stable across versions (`customer_locked`).
        code: String,
        /// Why, in words a staff member can act on.
        reason: String,
    },
    /// The action may run once the caller repeats it with these
    /// acknowledgements.
    NeedsConfirmation {
        /// Every acknowledgement still missing.
        required: Vec<Acknowledgement>,
    },
}

impl AuthorizeDecision {
    /// A denial with a machine code and a reason.
    pub fn deny(code: impl Into<String>, reason: impl Into<String>) -> Self {
        AuthorizeDecision::Deny {
            code: code.into(),
            reason: reason.into(),
        }
    }

    /// Whether the decision is `allow`.
    pub fn is_allow(&self) -> bool {
        matches!(self, AuthorizeDecision::Allow)
    }

    /// The same refusal as a `transition` decision, for a deny.
    pub fn into_refusal(self) -> Option<TransitionDecision> {
        match self {
            AuthorizeDecision::Deny { code, reason } => {
                Some(TransitionDecision::Refuse { code, reason })
            }
            _ => None,
        }
    }
}

/// How often a contract is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cycle {
    /// How many units make one period.
    pub every: u32,
    /// The unit.
    pub unit: CycleUnit,
}

/// The unit of a billing cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleUnit {
    /// Calendar days.
    Day,
    /// Calendar months (a period starting on the 31st ends on the last day
    /// of a shorter month).
    Month,
}

/// Input of the `billing` hook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BillingInput {
    /// The contract to bill, with its customer as `parent`.
    pub contract: Subject,
    /// The end of the last period billed; the next period starts here.
    pub billed_until: Timestamp,
    /// The contract's billing cycle.
    pub cycle: Cycle,
}

/// A billing period, `start` inclusive, `end` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// First instant of the period.
    pub start: Timestamp,
    /// First instant after the period.
    pub end: Timestamp,
}

/// Output of the `billing` hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum BillingDecision {
    /// Bill these periods, oldest first (several when catching up).
    Proceed {
        /// The periods to bill.
        periods: Vec<Period>,
    },
    /// Do not bill now.
    Skip {
        /// Machine code (`customer_locked`).
        code: String,
        /// Why, in words.
        reason: String,
    },
}

/// What made a transition happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Someone ran an action.
    Action,
    /// A timed lock reached its end.
    Expired,
    /// A scheduled transition fell due.
    Scheduled,
}

/// Input of the `transition` hook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionInput {
    /// What made the transition happen.
    pub trigger: Trigger,
    /// The action (`lock`, `unlock`, `end_contract`, `deactivate_case`...).
    pub action: String,
    /// Who runs it; the system for expiries and schedules.
    pub actor: Actor,
    /// What it runs on.
    pub subject: Subject,
    /// Action parameters.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

impl TransitionInput {
    /// The `authorize` question for the same action, actor and subject, so
    /// a policy can refuse a transition exactly as it refuses the action.
    pub fn authorize_input(&self) -> AuthorizeInput {
        AuthorizeInput {
            action: self.action.clone(),
            actor: self.actor.clone(),
            subject: self.subject.clone(),
            acknowledgements: Vec::new(),
            params: Value::Null,
        }
    }
}

/// A change the host applies (or hands back to the backend) when a
/// transition is accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Place a lock; the transition's actor is recorded as who locked.
    SetLock {
        /// The subject to lock.
        subject: SubjectRef,
        /// What the lock blocks.
        kind: String,
        /// Why.
        reason: String,
        /// A free-text message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// When a timed lock ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Timestamp>,
    },
    /// Lift locks of a kind (or all locks) from a subject.
    LiftLock {
        /// The subject to unlock.
        subject: SubjectRef,
        /// Only locks of this kind; all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        /// Why.
        reason: String,
    },
    /// Run `action` on `subject` at `at`, with trigger `scheduled`.
    Schedule {
        /// The subject the action will run on.
        subject: SubjectRef,
        /// When.
        at: Timestamp,
        /// Which action.
        action: String,
        /// Its parameters.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        params: Value,
    },
    /// Drop a pending scheduled `action` on `subject`.
    CancelSchedule {
        /// The subject.
        subject: SubjectRef,
        /// Which action.
        action: String,
    },
    /// Set a subject's lifecycle status.
    SetStatus {
        /// The subject.
        subject: SubjectRef,
        /// The new status.
        status: String,
    },
    /// Turn a named switch on or off.
    SetSwitch {
        /// The subject.
        subject: SubjectRef,
        /// The switch (`automatic_billing`).
        switch: String,
        /// On or off.
        on: bool,
    },
    /// Work only the backend can do (delete or credit an invoice, send a
    /// letter): the host does not apply it but returns it to the caller.
    Backend {
        /// What the backend should do (`credit_invoice`).
        action: String,
        /// What it is about.
        subject: SubjectRef,
        /// Anything else the backend needs.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        data: Value,
    },
    /// Tell the backend something happened.
    Notify {
        /// The event name (`customer.locked`).
        event: String,
        /// What it is about.
        subject: SubjectRef,
        /// Anything else.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        data: Value,
    },
}

/// Output of the `transition` hook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum TransitionDecision {
    /// Accept the transition and apply these effects, in order.
    Apply {
        /// The effects.
        effects: Vec<Effect>,
    },
    /// Refuse the transition; nothing changes.
    Refuse {
        /// Machine code (`case_deactivated`).
        code: String,
        /// Why, in words.
        reason: String,
    },
}

impl TransitionDecision {
    /// A refusal with a machine-readable code and a reason for people.
    pub fn refuse(code: impl Into<String>, reason: impl Into<String>) -> Self {
        TransitionDecision::Refuse {
            code: code.into(),
            reason: reason.into(),
        }
    }
}

/// Output of the `validate_settings` hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum SettingsVerdict {
    /// The settings are acceptable.
    Valid,
    /// The settings are refused.
    Invalid {
        /// One message per problem, each naming the field and value.
        errors: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_in_canonical_and_general_form() {
        for text in [
            "2026-11-22T14:05:09Z",
            "0001-01-01T00:00:00Z",
            "2028-02-29T23:59:59Z",
        ] {
            let parsed: Timestamp = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(
                serde_json::to_string(&parsed).unwrap(),
                format!("\"{text}\"")
            );
        }
        let offset: Timestamp = "2026-11-22T15:05:09.5+01:00".parse().unwrap();
        assert_eq!(offset, "2026-11-22T14:05:09.5Z".parse().unwrap());
        assert_eq!(offset.to_string(), "2026-11-22T15:05:09.5+01:00");
    }

    #[test]
    fn month_and_day_agree_with_the_calendar_on_every_day_of_four_centuries() {
        // The Gregorian calendar repeats every 400 years; 2000 is a leap
        // year divisible by 400, 2100 a year divisible by 100 that is not.
        let mut date = time::Date::from_calendar_date(1999, time::Month::January, 1).unwrap();
        let end = time::Date::from_calendar_date(2401, time::Month::January, 1).unwrap();
        while date < end {
            let expected = (usize::from(u8::from(date.month())), usize::from(date.day()));
            assert_eq!(
                month_and_day(date.ordinal(), time::util::is_leap_year(date.year())),
                expected,
                "{date}"
            );
            date = date.next_day().unwrap();
        }
    }

    #[test]
    fn canonical_timestamps_are_written_as_rfc3339_writes_them() {
        use time::format_description::well_known::Rfc3339;
        for text in [
            "0000-01-01T00:00:00Z",
            "0400-02-29T23:59:59Z",
            "1999-12-31T09:08:07Z",
            "2026-11-22T10:00:00Z",
            "2100-03-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let time = OffsetDateTime::parse(text, &Rfc3339).unwrap();
            let canonical = Timestamp(time).canonical().expect("canonical");
            assert_eq!(std::str::from_utf8(&canonical).unwrap(), text);
        }
    }

    #[test]
    fn push_to_appends_what_display_writes() {
        for text in ["2026-11-22T14:05:09Z", "2026-11-22T15:05:09.5+01:00"] {
            let time: Timestamp = text.parse().unwrap();
            let mut out = String::from("since ");
            time.push_to(&mut out);
            assert_eq!(out, format!("since {time}"));
            assert_eq!(out, format!("since {text}"));
        }
    }

    #[test]
    fn invalid_timestamps_are_refused_naming_the_value() {
        for text in [
            "2026-02-30T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-1x-22T00:00:00Z",
            "yesterday",
        ] {
            let error = serde_json::from_str::<Timestamp>(&format!("\"{text}\""))
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(&format!("invalid date and time `{text}`: ")),
                "{error}"
            );
        }
    }
}

//! GSM 03.38 / 3GPP TS 23.038 character tables: the default alphabet, its
//! extension table, and the national language locking and single shift
//! tables this crate supports, plus the [`Language`] and
//! [`NationalLanguages`] configuration types.

use std::fmt;
use std::str::FromStr;

/// The septet that escapes to the single shift (extension) table.
pub(crate) const ESC: u8 = 0x1B;

/// Characters below this code point have a direct reverse lookup table.
const REV_LEN: usize = 0x180;

/// Marker for "no septet" in the reverse lookup tables.
const NONE: u8 = 0xFF;

// ---------------------------------------------------------------------------
// Tables (3GPP TS 23.038 §6.2.1, §6.2.1.1, Annex A.2.1–A.2.3, A.3.1, A.3.3).
// Locking tables are indexed by septet; index 0x1B holds a placeholder (the
// escape code itself is never a character). Single shift tables list the
// septet that follows the escape and the character it stands for.
// ---------------------------------------------------------------------------

/// GSM 7-bit default alphabet (TS 23.038 §6.2.1).
#[rustfmt::skip]
pub(crate) const DEFAULT_LOCKING: [char; 128] = [
    '@', '\u{A3}', '$', '\u{A5}', '\u{E8}', '\u{E9}', '\u{F9}', '\u{EC}', // 0x00
    '\u{F2}', '\u{C7}', '\n', '\u{D8}', '\u{F8}', '\r', '\u{C5}', '\u{E5}', // 0x08
    '\u{394}', '_', '\u{3A6}', '\u{393}', '\u{39B}', '\u{3A9}', '\u{3A0}', '\u{3A8}', // 0x10
    '\u{3A3}', '\u{398}', '\u{39E}', '\u{1B}', '\u{C6}', '\u{E6}', '\u{DF}', '\u{C9}', // 0x18
    ' ', '!', '"', '#', '\u{A4}', '%', '&', '\'', // 0x20
    '(', ')', '*', '+', ',', '-', '.', '/', // 0x28
    '0', '1', '2', '3', '4', '5', '6', '7', // 0x30
    '8', '9', ':', ';', '<', '=', '>', '?', // 0x38
    '\u{A1}', 'A', 'B', 'C', 'D', 'E', 'F', 'G', // 0x40
    'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', // 0x48
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', // 0x50
    'X', 'Y', 'Z', '\u{C4}', '\u{D6}', '\u{D1}', '\u{DC}', '\u{A7}', // 0x58
    '\u{BF}', 'a', 'b', 'c', 'd', 'e', 'f', 'g', // 0x60
    'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', // 0x68
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', // 0x70
    'x', 'y', 'z', '\u{E4}', '\u{F6}', '\u{F1}', '\u{FC}', '\u{E0}', // 0x78
];
/// Turkish national language locking shift table (TS 23.038 A.3.1).
#[rustfmt::skip]
pub(crate) const TURKISH_LOCKING: [char; 128] = [
    '@', '\u{A3}', '$', '\u{A5}', '\u{20AC}', '\u{E9}', '\u{F9}', '\u{131}', // 0x00
    '\u{F2}', '\u{C7}', '\n', '\u{11E}', '\u{11F}', '\r', '\u{C5}', '\u{E5}', // 0x08
    '\u{394}', '_', '\u{3A6}', '\u{393}', '\u{39B}', '\u{3A9}', '\u{3A0}', '\u{3A8}', // 0x10
    '\u{3A3}', '\u{398}', '\u{39E}', '\u{1B}', '\u{15E}', '\u{15F}', '\u{DF}', '\u{C9}', // 0x18
    ' ', '!', '"', '#', '\u{A4}', '%', '&', '\'', // 0x20
    '(', ')', '*', '+', ',', '-', '.', '/', // 0x28
    '0', '1', '2', '3', '4', '5', '6', '7', // 0x30
    '8', '9', ':', ';', '<', '=', '>', '?', // 0x38
    '\u{130}', 'A', 'B', 'C', 'D', 'E', 'F', 'G', // 0x40
    'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', // 0x48
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', // 0x50
    'X', 'Y', 'Z', '\u{C4}', '\u{D6}', '\u{D1}', '\u{DC}', '\u{A7}', // 0x58
    '\u{E7}', 'a', 'b', 'c', 'd', 'e', 'f', 'g', // 0x60
    'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', // 0x68
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', // 0x70
    'x', 'y', 'z', '\u{E4}', '\u{F6}', '\u{F1}', '\u{FC}', '\u{E0}', // 0x78
];
/// Portuguese national language locking shift table (TS 23.038 A.3.3).
#[rustfmt::skip]
pub(crate) const PORTUGUESE_LOCKING: [char; 128] = [
    '@', '\u{A3}', '$', '\u{A5}', '\u{EA}', '\u{E9}', '\u{FA}', '\u{ED}', // 0x00
    '\u{F3}', '\u{E7}', '\n', '\u{D4}', '\u{F4}', '\r', '\u{C1}', '\u{E1}', // 0x08
    '\u{394}', '_', '\u{AA}', '\u{C7}', '\u{C0}', '\u{221E}', '^', '\\', // 0x10
    '\u{20AC}', '\u{D3}', '|', '\u{1B}', '\u{C2}', '\u{E2}', '\u{CA}', '\u{C9}', // 0x18
    ' ', '!', '"', '#', '\u{BA}', '%', '&', '\'', // 0x20
    '(', ')', '*', '+', ',', '-', '.', '/', // 0x28
    '0', '1', '2', '3', '4', '5', '6', '7', // 0x30
    '8', '9', ':', ';', '<', '=', '>', '?', // 0x38
    '\u{CD}', 'A', 'B', 'C', 'D', 'E', 'F', 'G', // 0x40
    'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', // 0x48
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', // 0x50
    'X', 'Y', 'Z', '\u{C3}', '\u{D5}', '\u{DA}', '\u{DC}', '\u{A7}', // 0x58
    '~', 'a', 'b', 'c', 'd', 'e', 'f', 'g', // 0x60
    'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', // 0x68
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', // 0x70
    'x', 'y', 'z', '\u{E3}', '\u{F5}', '`', '\u{FC}', '\u{E0}', // 0x78
];
/// Default alphabet extension table (TS 23.038 §6.2.1.1).
#[rustfmt::skip]
pub(crate) const DEFAULT_SINGLE: &[(u8, char)] = &[
    (0x0A, '\u{C}'), // U+000C
    (0x14, '^'), // U+005E
    (0x28, '{'), // U+007B
    (0x29, '}'), // U+007D
    (0x2F, '\\'), // U+005C
    (0x3C, '['), // U+005B
    (0x3D, '~'), // U+007E
    (0x3E, ']'), // U+005D
    (0x40, '|'), // U+007C
    (0x65, '\u{20AC}'), // U+20AC
];
/// Turkish national language single shift table (TS 23.038 A.2.1).
#[rustfmt::skip]
pub(crate) const TURKISH_SINGLE: &[(u8, char)] = &[
    (0x0A, '\u{C}'), // U+000C
    (0x14, '^'), // U+005E
    (0x28, '{'), // U+007B
    (0x29, '}'), // U+007D
    (0x2F, '\\'), // U+005C
    (0x3C, '['), // U+005B
    (0x3D, '~'), // U+007E
    (0x3E, ']'), // U+005D
    (0x40, '|'), // U+007C
    (0x47, '\u{11E}'), // U+011E
    (0x49, '\u{130}'), // U+0130
    (0x53, '\u{15E}'), // U+015E
    (0x63, '\u{E7}'), // U+00E7
    (0x65, '\u{20AC}'), // U+20AC
    (0x67, '\u{11F}'), // U+011F
    (0x69, '\u{131}'), // U+0131
    (0x73, '\u{15F}'), // U+015F
];
/// Spanish national language single shift table (TS 23.038 A.2.2).
#[rustfmt::skip]
pub(crate) const SPANISH_SINGLE: &[(u8, char)] = &[
    (0x09, '\u{E7}'), // U+00E7
    (0x0A, '\u{C}'), // U+000C
    (0x14, '^'), // U+005E
    (0x28, '{'), // U+007B
    (0x29, '}'), // U+007D
    (0x2F, '\\'), // U+005C
    (0x3C, '['), // U+005B
    (0x3D, '~'), // U+007E
    (0x3E, ']'), // U+005D
    (0x40, '|'), // U+007C
    (0x41, '\u{C1}'), // U+00C1
    (0x49, '\u{CD}'), // U+00CD
    (0x4F, '\u{D3}'), // U+00D3
    (0x55, '\u{DA}'), // U+00DA
    (0x61, '\u{E1}'), // U+00E1
    (0x65, '\u{20AC}'), // U+20AC
    (0x69, '\u{ED}'), // U+00ED
    (0x6F, '\u{F3}'), // U+00F3
    (0x75, '\u{FA}'), // U+00FA
];
/// Portuguese national language single shift table (TS 23.038 A.2.3).
#[rustfmt::skip]
pub(crate) const PORTUGUESE_SINGLE: &[(u8, char)] = &[
    (0x05, '\u{EA}'), // U+00EA
    (0x09, '\u{E7}'), // U+00E7
    (0x0A, '\u{C}'), // U+000C
    (0x0B, '\u{D4}'), // U+00D4
    (0x0C, '\u{F4}'), // U+00F4
    (0x0E, '\u{C1}'), // U+00C1
    (0x0F, '\u{E1}'), // U+00E1
    (0x12, '\u{3A6}'), // U+03A6
    (0x13, '\u{393}'), // U+0393
    (0x14, '^'), // U+005E
    (0x15, '\u{3A9}'), // U+03A9
    (0x16, '\u{3A0}'), // U+03A0
    (0x17, '\u{3A8}'), // U+03A8
    (0x18, '\u{3A3}'), // U+03A3
    (0x19, '\u{398}'), // U+0398
    (0x1F, '\u{CA}'), // U+00CA
    (0x28, '{'), // U+007B
    (0x29, '}'), // U+007D
    (0x2F, '\\'), // U+005C
    (0x3C, '['), // U+005B
    (0x3D, '~'), // U+007E
    (0x3E, ']'), // U+005D
    (0x40, '|'), // U+007C
    (0x41, '\u{C0}'), // U+00C0
    (0x49, '\u{CD}'), // U+00CD
    (0x4F, '\u{D3}'), // U+00D3
    (0x55, '\u{DA}'), // U+00DA
    (0x5B, '\u{C3}'), // U+00C3
    (0x5C, '\u{D5}'), // U+00D5
    (0x61, '\u{C2}'), // U+00C2
    (0x65, '\u{20AC}'), // U+20AC
    (0x69, '\u{ED}'), // U+00ED
    (0x6F, '\u{F3}'), // U+00F3
    (0x75, '\u{FA}'), // U+00FA
    (0x7B, '\u{E3}'), // U+00E3
    (0x7C, '\u{F5}'), // U+00F5
    (0x7F, '\u{E2}'), // U+00E2
];

// ---------------------------------------------------------------------------
// Lookup structures built at compile time from the tables above.
// ---------------------------------------------------------------------------

/// Slots for the code points at or above [`REV_LEN`] that any supported
/// table holds: Greek capitals U+0393..=U+03A9, the euro sign and the
/// infinity sign.
const HIGH_LEN: usize = 25;

/// The slot of a code point at or above [`REV_LEN`], if any table can
/// hold it.
#[inline]
const fn high_index(u: u32) -> Option<usize> {
    match u {
        0x0393..=0x03A9 => Some((u - 0x0393) as usize),
        0x20AC => Some(23),
        0x221E => Some(24),
        _ => None,
    }
}

/// Records septet `s` for character `c` in the reverse tables (first wins).
const fn set_rev(rev: &mut [u8; REV_LEN], high: &mut [u8; HIGH_LEN], c: char, s: u8) {
    let u = c as u32;
    if (u as usize) < REV_LEN {
        if rev[u as usize] == NONE {
            rev[u as usize] = s;
        }
    } else if let Some(i) = high_index(u) {
        if high[i] == NONE {
            high[i] = s;
        }
    } else {
        panic!("table character outside the reverse lookup ranges");
    }
}

/// Looks a character up in the reverse tables.
#[inline]
fn get_rev(rev: &[u8; REV_LEN], high: &[u8; HIGH_LEN], c: char) -> Option<u8> {
    let u = c as u32;
    let s = if (u as usize) < REV_LEN {
        rev[u as usize]
    } else {
        match high_index(u) {
            Some(i) => high[i],
            None => NONE,
        }
    };
    (s != NONE).then_some(s)
}

/// A locking shift table (or the default alphabet) with its reverse lookup.
pub(crate) struct Locking {
    chars: &'static [char; 128],
    rev: [u8; REV_LEN],
    high: [u8; HIGH_LEN],
}

impl Locking {
    const fn new(chars: &'static [char; 128]) -> Self {
        let mut rev = [NONE; REV_LEN];
        let mut high = [NONE; HIGH_LEN];
        let mut i = 0;
        while i < 128 {
            if i != ESC as usize {
                set_rev(&mut rev, &mut high, chars[i], i as u8);
            }
            i += 1;
        }
        Self { chars, rev, high }
    }

    /// The septet for `c`, if this table has it.
    #[inline]
    pub(crate) fn septet(&self, c: char) -> Option<u8> {
        get_rev(&self.rev, &self.high, c)
    }

    /// The character for a septet; `None` for the escape code or values
    /// above 0x7F.
    #[inline]
    pub(crate) fn char(&self, septet: u8) -> Option<char> {
        if septet == ESC || septet >= 0x80 {
            None
        } else {
            Some(self.chars[septet as usize])
        }
    }
}

/// A single shift table (or the default extension table) with both lookups.
pub(crate) struct Single {
    #[cfg_attr(not(test), allow(dead_code))]
    entries: &'static [(u8, char)],
    fwd: [char; 128],
    rev: [u8; REV_LEN],
    high: [u8; HIGH_LEN],
}

impl Single {
    const fn new(entries: &'static [(u8, char)]) -> Self {
        let mut fwd = ['\0'; 128];
        let mut rev = [NONE; REV_LEN];
        let mut high = [NONE; HIGH_LEN];
        let mut i = 0;
        while i < entries.len() {
            let (s, c) = entries[i];
            fwd[s as usize] = c;
            set_rev(&mut rev, &mut high, c, s);
            i += 1;
        }
        Self {
            entries,
            fwd,
            rev,
            high,
        }
    }

    /// The septet that follows the escape for `c`, if this table has it.
    #[inline]
    pub(crate) fn septet(&self, c: char) -> Option<u8> {
        get_rev(&self.rev, &self.high, c)
    }

    /// The character an escaped septet stands for, if defined.
    #[inline]
    pub(crate) fn char(&self, septet: u8) -> Option<char> {
        if septet >= 0x80 {
            return None;
        }
        let c = self.fwd[septet as usize];
        (c != '\0').then_some(c)
    }
}

pub(crate) static LOCK_DEFAULT: Locking = Locking::new(&DEFAULT_LOCKING);
static LOCK_TURKISH: Locking = Locking::new(&TURKISH_LOCKING);
static LOCK_PORTUGUESE: Locking = Locking::new(&PORTUGUESE_LOCKING);
pub(crate) static SINGLE_DEFAULT: Single = Single::new(DEFAULT_SINGLE);
static SINGLE_TURKISH: Single = Single::new(TURKISH_SINGLE);
static SINGLE_SPANISH: Single = Single::new(SPANISH_SINGLE);
static SINGLE_PORTUGUESE: Single = Single::new(PORTUGUESE_SINGLE);

/// Septet cost of each character below U+0100 in the default alphabet:
/// 1 (default table), 2 (escape + extension table) or 0 (not encodable).
pub(crate) static DEFAULT_COST: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if LOCK_DEFAULT.rev[i] != NONE {
            1
        } else if SINGLE_DEFAULT.rev[i] != NONE {
            2
        } else {
            0
        };
        i += 1;
    }
    t
};

/// Marker added to [`ASCII_COST`] sums for a character outside the default
/// alphabet: the high half of the sum counts them, the low half septets.
pub(crate) const ASCII_BAD: u64 = 1 << 32;

/// [`DEFAULT_COST`] of the ASCII range, widened so one sum carries both the
/// septet count and the count of unencodable characters.
pub(crate) static ASCII_COST: [u64; 128] = {
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = match DEFAULT_COST[i] {
            0 => ASCII_BAD,
            n => n as u64,
        };
        i += 1;
    }
    t
};

/// Septet cost of `c` in the default alphabet (see [`DEFAULT_COST`]).
#[inline]
pub(crate) fn default_cost(c: char) -> u8 {
    let u = c as u32;
    if u < 256 {
        DEFAULT_COST[u as usize]
    } else if LOCK_DEFAULT.septet(c).is_some() {
        1
    } else if SINGLE_DEFAULT.septet(c).is_some() {
        2
    } else {
        0
    }
}

/// The locking table in force for a language (the default alphabet when
/// none, or when the language defines no locking shift table).
pub(crate) fn locking_table(lang: Option<Language>) -> &'static Locking {
    match lang {
        Some(Language::Turkish) => &LOCK_TURKISH,
        Some(Language::Portuguese) => &LOCK_PORTUGUESE,
        Some(Language::Spanish) | None => &LOCK_DEFAULT,
    }
}

/// The single shift table in force for a language (the default extension
/// table when none).
pub(crate) fn single_table(lang: Option<Language>) -> &'static Single {
    match lang {
        Some(Language::Turkish) => &SINGLE_TURKISH,
        Some(Language::Spanish) => &SINGLE_SPANISH,
        Some(Language::Portuguese) => &SINGLE_PORTUGUESE,
        None => &SINGLE_DEFAULT,
    }
}

/// The pair of tables a GSM 7-bit text is encoded with.
#[derive(Clone, Copy)]
pub(crate) struct Tables {
    pub(crate) locking: &'static Locking,
    pub(crate) single: &'static Single,
}

impl Tables {
    pub(crate) fn for_shift(shift: NationalShift) -> Self {
        Self {
            locking: locking_table(shift.locking),
            single: single_table(shift.single),
        }
    }

    /// Septet cost of `c`: 1, 2 (escaped) or 0 when not encodable.
    #[inline]
    pub(crate) fn cost(&self, c: char) -> u8 {
        if self.locking.septet(c).is_some() {
            1
        } else if self.single.septet(c).is_some() {
            2
        } else {
            0
        }
    }
}

// ---------------------------------------------------------------------------
// Public configuration types.
// ---------------------------------------------------------------------------

/// A national language of 3GPP TS 23.038 Annex A whose shift tables this
/// crate implements.
///
/// Parsed from configuration with [`FromStr`]: `"turkish"`, `"spanish"`,
/// `"portuguese"` (case-insensitive; the ISO 639-1 codes `tr`, `es`, `pt`
/// are accepted too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Language {
    /// Turkish: locking shift table A.3.1 and single shift table A.2.1.
    Turkish,
    /// Spanish: single shift table A.2.2 only (TS 23.038 defines no Spanish
    /// locking shift table; a received one means the default alphabet).
    Spanish,
    /// Portuguese: locking shift table A.3.3 and single shift table A.2.3.
    Portuguese,
}

impl Language {
    /// Every supported language, in national language identifier order.
    pub const ALL: [Language; 3] = [Language::Turkish, Language::Spanish, Language::Portuguese];

    /// The national language identifier carried in the UDH
    /// (TS 23.038 §6.2.1.2.4): Turkish 1, Spanish 2, Portuguese 3.
    pub const fn id(self) -> u8 {
        match self {
            Language::Turkish => 1,
            Language::Spanish => 2,
            Language::Portuguese => 3,
        }
    }

    /// The language for a national language identifier, if supported.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Language::Turkish),
            2 => Some(Language::Spanish),
            3 => Some(Language::Portuguese),
            _ => None,
        }
    }

    /// The name of any national language identifier of TS 23.038
    /// §6.2.1.2.4 (0 is the default alphabet; 1–13 are Turkish, Spanish,
    /// Portuguese, Bengali, Gujarati, Hindi, Kannada, Malayalam, Oriya,
    /// Punjabi, Tamil, Telugu and Urdu), whether or not this crate has its
    /// tables; `None` for a reserved identifier.
    pub const fn name_of_id(id: u8) -> Option<&'static str> {
        Some(match id {
            0 => "default",
            1 => "turkish",
            2 => "spanish",
            3 => "portuguese",
            4 => "bengali",
            5 => "gujarati",
            6 => "hindi",
            7 => "kannada",
            8 => "malayalam",
            9 => "oriya",
            10 => "punjabi",
            11 => "tamil",
            12 => "telugu",
            13 => "urdu",
            _ => return None,
        })
    }

    /// Whether TS 23.038 defines a locking shift table for this language.
    pub const fn has_locking_table(self) -> bool {
        !matches!(self, Language::Spanish)
    }

    /// The lower-case configuration name (`"turkish"`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Language::Turkish => "turkish",
            Language::Spanish => "spanish",
            Language::Portuguese => "portuguese",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Language`] or [`NationalLanguages`] from text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseLanguageError {
    /// The text that names no supported language.
    pub input: String,
}

impl fmt::Display for ParseLanguageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown national language {:?} (expected turkish, spanish or portuguese)",
            self.input
        )
    }
}

impl std::error::Error for ParseLanguageError {}

impl FromStr for Language {
    type Err = ParseLanguageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        for (lang, names) in [
            (Language::Turkish, ["turkish", "tr"]),
            (Language::Spanish, ["spanish", "es"]),
            (Language::Portuguese, ["portuguese", "pt"]),
        ] {
            if names.iter().any(|n| n.eq_ignore_ascii_case(t)) {
                return Ok(lang);
            }
        }
        Err(ParseLanguageError {
            input: s.to_owned(),
        })
    }
}

/// A set of national languages whose shift tables a link may use.
///
/// The default is the empty set (default alphabet only). Parsed from a
/// comma- or whitespace-separated list such as `"turkish, spanish"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NationalLanguages(u8);

impl NationalLanguages {
    /// The empty set.
    pub const NONE: NationalLanguages = NationalLanguages(0);

    /// Every supported language.
    pub const fn all() -> Self {
        NationalLanguages(0)
            .with(Language::Turkish)
            .with(Language::Spanish)
            .with(Language::Portuguese)
    }

    /// This set plus `lang`.
    #[must_use]
    pub const fn with(self, lang: Language) -> Self {
        NationalLanguages(self.0 | (1 << lang.id()))
    }

    /// Adds `lang` to the set.
    pub fn insert(&mut self, lang: Language) {
        *self = self.with(lang);
    }

    /// Whether `lang` is in the set.
    pub const fn contains(self, lang: Language) -> bool {
        self.0 & (1 << lang.id()) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The languages in the set, in identifier order.
    pub fn iter(self) -> impl Iterator<Item = Language> {
        Language::ALL.into_iter().filter(move |&l| self.contains(l))
    }
}

impl FromIterator<Language> for NationalLanguages {
    fn from_iter<I: IntoIterator<Item = Language>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl From<Language> for NationalLanguages {
    fn from(lang: Language) -> Self {
        Self::NONE.with(lang)
    }
}

impl FromStr for NationalLanguages {
    type Err = ParseLanguageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(Language::from_str)
            .collect()
    }
}

/// The national language shift tables a GSM 7-bit message is encoded with:
/// a locking shift table replacing the default alphabet and/or a single
/// shift table replacing the default extension table. `None` means the
/// default table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NationalShift {
    /// The locking shift table (UDH IEI 0x25), if any.
    pub locking: Option<Language>,
    /// The single shift table (UDH IEI 0x24), if any.
    pub single: Option<Language>,
}

impl NationalShift {
    /// Default alphabet and default extension table.
    pub const NONE: NationalShift = NationalShift {
        locking: None,
        single: None,
    };

    /// Whether neither a locking nor a single shift table is used.
    pub const fn is_none(self) -> bool {
        self.locking.is_none() && self.single.is_none()
    }

    /// How many national language information elements (3 octets each)
    /// this selection puts in the UDH of every segment.
    pub const fn ie_count(self) -> u32 {
        self.locking.is_some() as u32 + self.single.is_some() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_high_table_character_passes_the_precheck() {
        let locks = [&DEFAULT_LOCKING, &TURKISH_LOCKING, &PORTUGUESE_LOCKING];
        for t in locks {
            for &c in t.iter() {
                assert!(
                    (c as usize) < REV_LEN || high_index(c as u32).is_some(),
                    "{c:?}"
                );
            }
        }
        for t in [
            DEFAULT_SINGLE,
            TURKISH_SINGLE,
            SPANISH_SINGLE,
            PORTUGUESE_SINGLE,
        ] {
            for &(_, c) in t {
                assert!(
                    (c as usize) < REV_LEN || high_index(c as u32).is_some(),
                    "{c:?}"
                );
            }
        }
    }

    #[test]
    fn locking_tables_have_no_duplicate_characters() {
        for t in [&DEFAULT_LOCKING, &TURKISH_LOCKING, &PORTUGUESE_LOCKING] {
            let mut seen = std::collections::HashSet::new();
            for &c in t.iter() {
                assert!(seen.insert(c), "duplicate {c:?}");
            }
        }
    }

    #[test]
    fn lookups_round_trip_through_every_table() {
        for lang in [None, Some(Language::Turkish), Some(Language::Portuguese)] {
            let t = locking_table(lang);
            for s in 0u8..0x80 {
                if s == ESC {
                    assert_eq!(t.char(s), None);
                    continue;
                }
                let c = t.char(s).unwrap();
                assert_eq!(t.septet(c), Some(s), "{lang:?} {s:#x}");
            }
        }
        for lang in [
            None,
            Some(Language::Turkish),
            Some(Language::Spanish),
            Some(Language::Portuguese),
        ] {
            let t = single_table(lang);
            for &(s, c) in t.entries {
                assert_eq!(t.septet(c), Some(s));
                assert_eq!(t.char(s), Some(c));
            }
        }
    }

    #[test]
    fn spot_check_code_points_against_the_standard() {
        assert_eq!(LOCK_DEFAULT.septet('@'), Some(0x00));
        assert_eq!(LOCK_DEFAULT.septet('Δ'), Some(0x10));
        assert_eq!(LOCK_DEFAULT.septet('¿'), Some(0x60));
        assert_eq!(LOCK_DEFAULT.septet('Ç'), Some(0x09));
        assert_eq!(SINGLE_DEFAULT.septet('€'), Some(0x65));
        assert_eq!(SINGLE_DEFAULT.septet('\u{0C}'), Some(0x0A));
        assert_eq!(LOCK_TURKISH.septet('ı'), Some(0x07));
        assert_eq!(LOCK_TURKISH.septet('İ'), Some(0x40));
        assert_eq!(LOCK_TURKISH.septet('ç'), Some(0x60));
        assert_eq!(LOCK_TURKISH.septet('€'), Some(0x04));
        assert_eq!(SINGLE_TURKISH.septet('Ş'), Some(0x53));
        assert_eq!(SINGLE_SPANISH.septet('á'), Some(0x61));
        assert_eq!(SINGLE_SPANISH.septet('ç'), Some(0x09));
        assert_eq!(LOCK_PORTUGUESE.septet('∞'), Some(0x15));
        assert_eq!(LOCK_PORTUGUESE.septet('`'), Some(0x7D));
        assert_eq!(SINGLE_PORTUGUESE.septet('â'), Some(0x7F));
        assert_eq!(default_cost('a'), 1);
        assert_eq!(default_cost('['), 2);
        assert_eq!(default_cost('`'), 0);
        assert_eq!(default_cost('Ω'), 1);
        assert_eq!(default_cost('€'), 2);
        assert_eq!(default_cost('П'), 0);
    }

    #[test]
    fn languages_parse_from_config_names() {
        assert_eq!("turkish".parse::<Language>().unwrap(), Language::Turkish);
        assert_eq!("Spanish".parse::<Language>().unwrap(), Language::Spanish);
        assert_eq!(
            "portuguese".parse::<Language>().unwrap(),
            Language::Portuguese
        );
        assert_eq!("pt".parse::<Language>().unwrap(), Language::Portuguese);
        assert!("klingon".parse::<Language>().is_err());
        let set: NationalLanguages = "turkish, spanish".parse().unwrap();
        assert!(set.contains(Language::Turkish) && set.contains(Language::Spanish));
        assert!(!set.contains(Language::Portuguese));
        assert_eq!(
            "".parse::<NationalLanguages>().unwrap(),
            NationalLanguages::NONE
        );
        for l in Language::ALL {
            assert_eq!(Language::from_id(l.id()), Some(l));
            assert_eq!(l.to_string().parse::<Language>().unwrap(), l);
        }
    }
}

//! Where a text is cut into parts: greedy packing of whole extended
//! grapheme clusters, shared by [`analyze`](crate::analyze),
//! [`split`] and [`encode`](crate::encode), and the counts a client needs
//! to show "characters left".

use std::ops::Range;

use unicode_segmentation::{GraphemeIndices, UnicodeSegmentation};

use crate::tables::Tables;
use crate::{Analysis, Encoding, Packer, TextOptions};

/// The clusters a text is packed in, with their byte offsets.
///
/// UCS-2 text is cut at extended grapheme cluster boundaries (UAX #29). A
/// GSM 7-bit or Latin-1 text can hold only one cluster of several
/// characters, `\r\n` (neither alphabet has a combining mark, joiner,
/// variation selector or regional indicator; a test checks every table),
/// so there the cheaper character walk keeps that pair together.
enum Clusters<'a> {
    Graphemes(GraphemeIndices<'a>),
    Chars { text: &'a str, pos: usize },
}

impl<'a> Clusters<'a> {
    fn new(text: &'a str, encoding: Encoding) -> Self {
        match encoding {
            Encoding::Ucs2 => Clusters::Graphemes(text.grapheme_indices(true)),
            Encoding::Gsm7 | Encoding::Latin1 => Clusters::Chars { text, pos: 0 },
        }
    }
}

impl<'a> Iterator for Clusters<'a> {
    type Item = (usize, &'a str);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Clusters::Graphemes(g) => g.next(),
            Clusters::Chars { text, pos } => {
                let at = *pos;
                let rest = text.get(at..)?;
                let len = if rest.starts_with("\r\n") {
                    2
                } else {
                    rest.chars().next()?.len_utf8()
                };
                *pos += len;
                Some((at, &rest[..len]))
            }
        }
    }
}

/// Units one character takes in `encoding` (0 for a GSM character the
/// tables lack).
#[inline]
fn char_cost(c: char, encoding: Encoding, tables: Tables) -> u32 {
    match encoding {
        Encoding::Gsm7 => u32::from(tables.cost(c)),
        Encoding::Latin1 => 1,
        Encoding::Ucs2 => c.len_utf16() as u32,
    }
}

/// Packs `text` greedily into parts of at most `cap` units, whole clusters
/// at a time; a cluster longer than a part is cut at character boundaries
/// (an escape or surrogate pair still stays whole). Calls `start` with the
/// byte offset at which every part begins; returns the part count.
pub(crate) fn pack(
    text: &str,
    encoding: Encoding,
    tables: Tables,
    cap: u32,
    mut start: impl FnMut(usize),
) -> usize {
    let mut p = Packer::new(cap);
    for (at, cluster) in Clusters::new(text, encoding) {
        let whole: u32 = cluster
            .chars()
            .map(|c| char_cost(c, encoding, tables))
            .sum();
        if whole <= cap {
            if p.push(whole) {
                start(at);
            }
        } else {
            for (i, c) in cluster.char_indices() {
                if p.push(char_cost(c, encoding, tables)) {
                    start(at + i);
                }
            }
        }
    }
    p.segments()
}

/// One part of a split text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Part {
    /// Byte range of the part in the text.
    pub range: Range<usize>,
    /// Units it takes in the chosen encoding (septets, octets or UTF-16
    /// code units).
    pub units: u32,
    /// Unicode scalar values in it.
    pub characters: u32,
    /// Extended grapheme clusters in it (what a reader counts as
    /// characters).
    pub graphemes: u32,
}

/// A text cut into its parts: what [`split`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The analysis the parts follow.
    pub analysis: Analysis,
    /// The parts, in order; one for a single-segment message or with
    /// [`Concat::MessagePayload`](crate::Concat::MessagePayload), none for
    /// an empty text.
    pub parts: Vec<Part>,
}

/// Analyses `text` for a link with `opts` and cuts it into the parts
/// [`encode`](crate::encode) would send, with the counts of each. Never
/// fails: a text beyond the link's segment limit is split all the same.
///
/// ```
/// use smsgw_text::{split, TextOptions};
/// let s = split(&"a".repeat(200), &TextOptions::default());
/// assert_eq!(s.parts.iter().map(|p| p.units).collect::<Vec<_>>(), [153, 47]);
/// ```
pub fn split(text: &str, opts: &TextOptions) -> Split {
    split_with(text, crate::analyze(text, opts))
}

fn split_with(text: &str, analysis: Analysis) -> Split {
    let starts = part_starts(text, &analysis);
    let tables = Tables::for_shift(analysis.shift);
    let parts = starts
        .iter()
        .zip(starts.iter().skip(1).chain([&text.len()]))
        .map(|(&a, &b)| {
            let t = &text[a..b];
            Part {
                range: a..b,
                units: t
                    .chars()
                    .map(|c| char_cost(c, analysis.encoding, tables))
                    .sum(),
                characters: saturate(t.chars().count()),
                graphemes: saturate(t.graphemes(true).count()),
            }
        })
        .collect();
    Split { analysis, parts }
}

/// How the text reaches handsets. The same as [`split`] except with
/// [`Concat::MessagePayload`](crate::Concat::MessagePayload), where the
/// gateway sends one submit_sm and the SMSC splits it: then the encoding
/// and shift tables chosen for the link, cut into the parts an SMSC
/// splitting with an 8-bit reference UDH would send (an estimate: an SMSC
/// may split otherwise).
///
/// ```
/// use smsgw_text::{split_on_air, Concat, TextOptions};
/// let o = TextOptions::default().with_concat(Concat::MessagePayload);
/// let s = split_on_air(&"a".repeat(200), &o);
/// assert_eq!((s.analysis.segments, s.analysis.per_segment), (2, 153));
/// ```
pub fn split_on_air(text: &str, opts: &TextOptions) -> Split {
    if opts.concat != crate::Concat::MessagePayload {
        return split(text, opts);
    }
    let choice = crate::choose(text, opts);
    let radio = opts.with_concat(crate::Concat::Udh8);
    let layout = crate::Layout::new(choice.encoding, &radio, choice.shift);
    let tables = Tables::for_shift(choice.shift);
    let (segments, per_segment) = if choice.units == 0 {
        (0, layout.single)
    } else if choice.units <= layout.single as usize {
        (1, layout.single)
    } else {
        (
            pack(text, choice.encoding, tables, layout.multi, |_| {}),
            layout.multi,
        )
    };
    let analysis = crate::analyze_from(crate::Choice {
        segments,
        per_segment,
        ..choice
    });
    split_with(text, analysis)
}

/// Byte offsets at which the parts of `text` begin under `analysis`.
pub(crate) fn part_starts(text: &str, analysis: &Analysis) -> Vec<usize> {
    if text.is_empty() {
        return Vec::new();
    }
    if analysis.segments <= 1 {
        return vec![0];
    }
    let mut starts = Vec::with_capacity(analysis.segments as usize);
    let n = pack(
        text,
        analysis.encoding,
        Tables::for_shift(analysis.shift),
        analysis.per_segment,
        |at| starts.push(at),
    );
    debug_assert_eq!(n as u32, analysis.segments);
    starts
}

/// How long a text is by the three measures clients meet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TextCounts {
    /// Unicode scalar values (what most languages' `length` of a string
    /// counts outside JavaScript and Java).
    pub scalar_values: u32,
    /// UTF-16 code units (JavaScript's and Java's `length`).
    pub utf16_units: u32,
    /// Extended grapheme clusters: the characters a reader sees.
    pub graphemes: u32,
}

/// Counts `text` by scalar values, UTF-16 code units and extended grapheme
/// clusters.
///
/// ```
/// let c = smsgw_text::count("👍🏽 ok");
/// assert_eq!((c.scalar_values, c.utf16_units, c.graphemes), (5, 7, 4));
/// ```
pub fn count(text: &str) -> TextCounts {
    TextCounts {
        scalar_values: saturate(text.chars().count()),
        utf16_units: saturate(text.encode_utf16().count()),
        graphemes: saturate(text.graphemes(true).count()),
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

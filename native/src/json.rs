//! A strict JSON reader for one record, and the conversion of its values to the wire
//! schema's Arrow columns.
//!
//! The reader accepts only what the Python reference codec (schemas/codecs/json_codec.py)
//! is certain to accept with the same values. Anything else (not JSON, a value of another
//! type, a duplicate key, a lone surrogate, a number it would round differently, deep
//! nesting, a float in a map...) is *deferred*: `Err(Defer)`, and the Python codec gives
//! that record its row or its reason and detail. So a deferral is never a wrong answer, only
//! a slower one.

use std::borrow::Cow;

/// The record is left to the reference decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defer;

pub type R<T> = Result<T, Defer>;

/// Nesting deeper than this defers (the reference's own bound is 255).
const MAX_DEPTH: u32 = 64;
/// Number literals longer than this defer (big integers, long fractions).
const MAX_NUMBER_LEN: usize = 32;

/// One parsed JSON value; strings borrow the record's bytes unless they hold escapes.
#[derive(Debug)]
pub enum J<'a> {
    Null,
    Bool(bool),
    /// The literal's text and whether it is an integer (no fraction, no exponent).
    Num(&'a str, bool),
    Str(Cow<'a, str>),
    Arr(Vec<J<'a>>),
    Obj(Vec<(Cow<'a, str>, J<'a>)>),
}

pub struct Parser<'a> {
    pub(crate) s: &'a [u8],
    text: &'a str,
    pub i: usize,
    depth: u32,
    /// Set when a read failed because the input ended where a string's next character, a
    /// string's escaped character or a structural token (a value, a key, `:`, `,`, a
    /// closing bracket) was due: where msgspec, meeting the same bytes, says "Input data was
    /// truncated" (its string and token readers stop at the same places).
    pub eof: bool,
    /// Set by a number literal with an exponent or of more than 18 characters: a value
    /// that could be beyond a double's range or 64 bits (the reference has its own paths
    /// for those), so no native reject is given for its record.
    pub wide_number: bool,
}

/// The index of the first byte at or after `i` that is `"`, `\\` or a control character
/// (below 0x20), or `s.len()`: eight bytes a step (SWAR). In each of the three masks the
/// lowest flagged byte is a true match (borrows only flag bytes above a true match), so the
/// lowest flag of their union is the first match.
#[inline]
pub fn scan_plain(s: &[u8], i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    let i = scan_plain_sse2(s, i);
    scan_plain_swar(s, i)
}

/// [`scan_plain`] sixteen bytes a step (SSE2, in every x86-64 CPU): the index of the first
/// match, or of the last block shorter than sixteen bytes, from which the scan is the SWAR
/// one's. A byte `c` is a control character when `max(c, 0x1f) == 0x1f` (unsigned).
#[cfg(target_arch = "x86_64")]
#[inline]
fn scan_plain_sse2(s: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, __m128i,
    };
    // SAFETY: SSE2 is part of x86-64; every load reads s[i..i + 16], within the slice
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let ctl = _mm_set1_epi8(0x1f);
        while i + 16 <= s.len() {
            let v = _mm_loadu_si128(s.as_ptr().add(i) as *const __m128i);
            let m = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl),
            );
            let bits = _mm_movemask_epi8(m) as u32;
            if bits != 0 {
                return i + bits.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    i
}

/// [`scan_plain`] eight bytes a step (SWAR), then byte by byte.
#[inline]
fn scan_plain_swar(s: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while i + 8 <= s.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        let w = u64::from_le_bytes(w);
        let q = w ^ (LO * b'"' as u64);
        let b = w ^ (LO * b'\\' as u64);
        let m = ((q.wrapping_sub(LO) & !q) | (b.wrapping_sub(LO) & !b) | (w.wrapping_sub(LO * 0x20) & !w)) & HI;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < s.len() && !matches!(s[i], b'"' | b'\\') && s[i] >= 0x20 {
        i += 1;
    }
    i
}

impl<'a> Parser<'a> {
    /// A parser over `text` (already checked to be UTF-8).
    pub fn new(text: &'a str) -> Self {
        Parser { s: text.as_bytes(), text, i: 0, depth: 0, eof: false, wide_number: false }
    }

    #[inline]
    pub fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    #[inline]
    pub fn eat(&mut self, c: u8) -> R<()> {
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            None => self.end(),
            _ => Err(Defer),
        }
    }

    /// `Err(Defer)`, noting that the input ended where a token was due.
    #[inline]
    pub fn end<T>(&mut self) -> R<T> {
        self.eof = true;
        Err(Defer)
    }

    pub fn at_end(&self) -> bool {
        self.i == self.s.len()
    }

    pub(crate) fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Defer)
        }
    }

    /// Any JSON value (after leading whitespace has been skipped).
    pub fn value(&mut self) -> R<J<'a>> {
        let Some(c) = self.peek() else { return self.end() };
        match c {
            b'"' => Ok(J::Str(self.string()?)),
            b'{' => {
                self.enter()?;
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(J::Obj(items));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    let v = self.value()?;
                    items.push((k, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            break;
                        }
                        None => return self.end(),
                        _ => return Err(Defer),
                    }
                }
                self.depth -= 1;
                Ok(J::Obj(items))
            }
            b'[' => {
                self.enter()?;
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(J::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value()?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            break;
                        }
                        None => return self.end(),
                        _ => return Err(Defer),
                    }
                }
                self.depth -= 1;
                Ok(J::Arr(items))
            }
            b't' => self.literal(b"true").map(|_| J::Bool(true)),
            b'f' => self.literal(b"false").map(|_| J::Bool(false)),
            b'n' => self.literal(b"null").map(|_| J::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Defer),
        }
    }

    pub(crate) fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Defer)
        } else {
            Ok(())
        }
    }

    /// Leave a nesting level [`Parser::enter`] entered.
    #[inline]
    pub(crate) fn leave(&mut self) {
        self.depth -= 1;
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.i - start
    }

    /// A number literal by RFC 8259's grammar; its text is kept for the column's own parse.
    pub(crate) fn number(&mut self) -> R<J<'a>> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Defer),
        }
        let mut int = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            int = false;
            if self.digits() == 0 {
                return Err(Defer);
            }
        }
        if matches!(self.peek(), Some(b'e') | Some(b'E')) {
            self.i += 1;
            int = false;
            if matches!(self.peek(), Some(b'+') | Some(b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Defer);
            }
        }
        if self.i - start > MAX_NUMBER_LEN {
            return Err(Defer);
        }
        if self.i - start > 18 || self.s[start..self.i].iter().any(|&c| c == b'e' || c == b'E') {
            self.wide_number = true;
        }
        Ok(J::Num(&self.text[start..self.i], int))
    }

    fn hex4(&mut self) -> R<u32> {
        if self.i + 4 > self.s.len() {
            return Err(Defer);
        }
        let mut v = 0u32;
        for k in 0..4 {
            let d = (self.s[self.i + k] as char).to_digit(16).ok_or(Defer)?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    /// Whether the string at the parser is `name`, read past it when it is: its bytes are
    /// exactly `name`'s between the quotes (no scan, no copy). Never true for a `name` with
    /// a `"`, `\\` or control character (its JSON text would differ).
    #[inline]
    pub fn string_is(&mut self, name: &str) -> bool {
        let n = name.len();
        let start = self.i + 1;
        if self.s.get(self.i) == Some(&b'"')
            && self.s.get(start + n) == Some(&b'"')
            && &self.s[start..start + n] == name.as_bytes()
            && name.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\')
        {
            self.i = start + n + 1;
            return true;
        }
        false
    }

    /// A string; control characters, lone surrogates and NUL defer.
    pub fn string(&mut self) -> R<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.i;
        // fast scan: no escape before the closing quote borrows the bytes
        self.i = scan_plain(self.s, self.i);
        match self.s.get(self.i) {
            None => return self.end(),
            Some(b'"') => {
                let out = &self.text[start..self.i];
                self.i += 1;
                return Ok(Cow::Borrowed(out));
            }
            Some(b'\\') => {}
            Some(_) => return Err(Defer), // a control character
        }
        let mut out = String::with_capacity(self.i - start + 16);
        out.push_str(&self.text[start..self.i]);
        loop {
            let Some(&c) = self.s.get(self.i) else { return self.end() };
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    self.i += 1;
                    let Some(&e) = self.s.get(self.i) else { return self.end() };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if self.s.get(self.i) != Some(&b'\\') || self.s.get(self.i + 1) != Some(&b'u') {
                                    return Err(Defer);
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(Defer);
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) || hi == 0 {
                                return Err(Defer);
                            } else {
                                hi
                            };
                            out.push(char::from_u32(cp).ok_or(Defer)?);
                        }
                        _ => return Err(Defer),
                    }
                }
                c if c < 0x20 => return Err(Defer),
                _ => {
                    // copy the run up to the next quote or backslash (UTF-8 safe: both ASCII)
                    let run = self.i;
                    self.i = scan_plain(self.s, self.i);
                    out.push_str(&self.text[run..self.i]);
                }
            }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

fn num(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(v)
}

/// Nanoseconds since the epoch of an ISO-8601 timestamp with a zone, exactly as the
/// reference accepts it (its regex, then Arrow's string → timestamp[ns, UTC] cast):
/// `YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}](Z|±HH:MM|±HHMM)`. Defers what the reference
/// rejects or might read differently (dates before 1970 or after 2261, invalid fields).
pub fn parse_ts_ns(s: &str) -> R<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return Err(Defer);
    }
    let y = num(&b[0..4]).ok_or(Defer)?;
    let mo = num(&b[5..7]).ok_or(Defer)?;
    let d = num(&b[8..10]).ok_or(Defer)?;
    let h = num(&b[11..13]).ok_or(Defer)?;
    let mi = num(&b[14..16]).ok_or(Defer)?;
    let se = num(&b[17..19]).ok_or(Defer)?;
    if !(1970..=2261).contains(&y) || !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59 {
        return Err(Defer);
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return Err(Defer);
        }
        frac_ns = num(&b[start..i]).ok_or(Defer)? * 10i64.pow((9 - n) as u32);
    }
    let offset_s = match b.get(i) {
        Some(b'Z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let rest = &b[i + 1..];
            let (oh, om) = match rest.len() {
                5 if rest[2] == b':' => (num(&rest[0..2]).ok_or(Defer)?, num(&rest[3..5]).ok_or(Defer)?),
                4 => (num(&rest[0..2]).ok_or(Defer)?, num(&rest[2..4]).ok_or(Defer)?),
                _ => return Err(Defer),
            };
            if oh > 23 || om > 59 {
                return Err(Defer);
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(Defer),
    };
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset_s;
    if secs < 0 || secs > 9_000_000_000 {
        return Err(Defer);
    }
    Ok(secs * 1_000_000_000 + frac_ns)
}

/// The integer an integer literal holds, if it fits in i64.
pub fn int_of(text: &str) -> R<i64> {
    text.parse::<i64>().map_err(|_| Defer)
}

/// The double a number literal reads as (correctly rounded, like the reference's parser);
/// integers of more than 15 digits and values beyond f64's range defer.
pub fn float_of(text: &str, is_int: bool) -> R<f64> {
    if is_int && text.trim_start_matches('-').len() > 15 {
        return Err(Defer);
    }
    let v: f64 = text.parse().map_err(|_| Defer)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Defer)
    }
}

/// A map entry's value as the reference writes it: strings as they are, integers as
/// decimal text, booleans as `true` / `false`, null as null. Floats and nested values defer
/// (the reference writes them with orjson's own formatting).
pub fn map_text<'b>(v: &'b J<'_>) -> R<Option<Cow<'b, str>>> {
    match v {
        J::Null => Ok(None),
        J::Str(s) => Ok(Some(Cow::Borrowed(s.as_ref()))),
        J::Bool(true) => Ok(Some(Cow::Borrowed("true"))),
        J::Bool(false) => Ok(Some(Cow::Borrowed("false"))),
        J::Num(t, true) => {
            if let Ok(i) = t.parse::<i64>() {
                Ok(Some(Cow::Owned(i.to_string())))
            } else if let Ok(u) = t.parse::<u64>() {
                Ok(Some(Cow::Owned(u.to_string())))
            } else {
                Err(Defer)
            }
        }
        _ => Err(Defer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> R<J<'_>> {
        let mut p = Parser::new(s);
        p.ws();
        let v = p.value()?;
        p.ws();
        if p.at_end() {
            Ok(v)
        } else {
            Err(Defer)
        }
    }

    #[test]
    fn accepts_plain_json() {
        assert!(matches!(parse(r#"{"a": [1, 2.5e3, "x\n\u00e9\ud83d\ude00", true, null]}"#), Ok(J::Obj(_))));
    }

    #[test]
    fn defers_what_it_is_unsure_of() {
        for bad in [r#"{"a": NaN}"#, r#"{"a": 01}"#, r#"{"a": "\ud800"}"#, r#"{"a": "\u0000"}"#, r#"{"a": 1,}"#, "{\"a\": \"\t\"}", r#"{"a": 1} x"#, "[".repeat(100).as_str()] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_plain_scan_stops_at_the_first_quote_backslash_or_control_character() {
        // every position of every stop byte, in texts of every length up to 40 (both the
        // 16-byte and 8-byte steps and the tail), with bytes above 0x7f around it
        for n in 0..40usize {
            for at in 0..=n {
                for stop in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
                    let mut s: Vec<u8> = (0..n).map(|k| [b'a', 0x20, 0xc3, 0xa9, 0x7f, 0xff][k % 6]).collect();
                    if at < n {
                        s[at] = stop;
                    }
                    for from in [0, at.min(3)] {
                        let naive = (from..n).find(|&k| matches!(s[k], b'"' | b'\\') || s[k] < 0x20).unwrap_or(n);
                        assert_eq!(scan_plain(&s, from), naive, "{s:?} from {from}");
                    }
                }
            }
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_ts_ns("1970-01-01T00:00:01Z"), Ok(1_000_000_000));
        assert_eq!(parse_ts_ns("1970-01-01 01:00:01.5+01:00"), Ok(1_500_000_000));
        assert_eq!(parse_ts_ns("1970-01-01T00:00:01.123456789-0000"), Ok(1_123_456_789));
        assert_eq!(parse_ts_ns("2024-02-29T00:00:00Z").is_ok(), true);
        for bad in ["2026-02-29T00:00:00Z", "2026-11-21T24:00:00Z", "2026-11-21T10:00:00+24:00", "2026-11-21T10:00:00", "1969-12-31T23:59:59Z", "2026-11-21T10:00:00.1234567891Z", "2026-11-21T10:00:00z"] {
            assert!(parse_ts_ns(bad).is_err(), "{bad}");
        }
    }
}

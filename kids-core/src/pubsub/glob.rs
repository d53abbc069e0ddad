//! Redis glob patterns (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes), matched in O(pattern × subject).

use bytes::Bytes;

/// A compiled Redis glob pattern.
///
/// Semantics are those of Redis's `stringmatchlen`, quirks included: an
/// empty subject matches only the empty pattern (so `*` does not match the
/// empty channel name), an unterminated `[` class runs to the end of the
/// pattern, and inside a class `\x` matches `x` exactly even when matching
/// ignores case. Range bounds compare as C `char` does on x86 (signed).
///
/// Unlike Redis's recursive matcher, matching never backtracks more than
/// once per `*`: it runs in time linear in pattern length × subject length,
/// so adversarial patterns cannot stall a publisher.
///
/// ```
/// use kids_core::Glob;
/// let g = Glob::new(b"news.[a-c]*", false);
/// assert!(g.matches(b"news.art"));
/// assert!(!g.matches(b"news.dog"));
/// assert!(Glob::new(b"NEWS.*", true).matches(b"news.x"));
/// ```
/// Memory is about 8 bytes per pattern byte plus 32 bytes per distinct `[...]` class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: Bytes,
    tokens: Vec<Token>,
    classes: Vec<[u64; 4]>,
    nocase: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// One byte, compared with case folding when the glob ignores case.
    Byte(u8),
    /// `?`
    Any,
    /// A class: index of its 256-bit set in `classes`.
    Class(u32),
    /// One or more `*`.
    Star,
}

fn lower(b: u8) -> u8 {
    b.to_ascii_lowercase()
}

impl Glob {
    /// Compiles `pattern`; `nocase` folds ASCII case.
    pub fn new(pattern: &[u8], nocase: bool) -> Self {
        let mut tokens = Vec::new();
        let mut classes: Vec<[u64; 4]> = Vec::new();
        let mut class_index: std::collections::HashMap<[u64; 4], u32> =
            std::collections::HashMap::new();
        let p = pattern;
        let mut i = 0;
        while i < p.len() {
            match p[i] {
                b'*' => {
                    while i + 1 < p.len() && p[i + 1] == b'*' {
                        i += 1;
                    }
                    tokens.push(Token::Star);
                }
                b'?' => tokens.push(Token::Any),
                b'[' => {
                    let (set, next) = class(p, i + 1, nocase);
                    let index = *class_index.entry(set).or_insert_with(|| {
                        classes.push(set);
                        (classes.len() - 1) as u32
                    });
                    tokens.push(Token::Class(index));
                    i = next;
                }
                b'\\' if i + 1 < p.len() => {
                    i += 1;
                    tokens.push(Token::Byte(p[i]));
                }
                b => tokens.push(Token::Byte(b)),
            }
            i += 1;
        }
        tokens.shrink_to_fit();
        Self {
            source: Bytes::copy_from_slice(pattern),
            tokens,
            classes,
            nocase,
        }
    }

    /// The pattern as given.
    pub fn source(&self) -> &Bytes {
        &self.source
    }

    fn one(&self, t: &Token, c: u8) -> bool {
        match t {
            Token::Byte(b) => {
                if self.nocase {
                    lower(*b) == lower(c)
                } else {
                    *b == c
                }
            }
            Token::Any => true,
            Token::Class(i) => {
                let set = &self.classes[*i as usize];
                set[(c >> 6) as usize] & (1 << (c & 63)) != 0
            }
            Token::Star => true,
        }
    }

    /// Whether `subject` matches the pattern.
    pub fn matches(&self, subject: &[u8]) -> bool {
        self.matches_counted(subject, &mut 0)
    }

    /// The literal bytes the pattern starts with (up to its first `*`, `?`
    /// or class), lowered when it ignores case: every subject it matches
    /// starts with them (compared lowered under `nocase`).
    pub(crate) fn literal_prefix(&self) -> Vec<u8> {
        self.literal(self.tokens.iter())
    }

    /// The literal bytes the pattern ends with (after its last `*`, `?` or
    /// class), lowered when it ignores case; in their order.
    pub(crate) fn literal_suffix(&self) -> Vec<u8> {
        let mut v = self.literal(self.tokens.iter().rev());
        v.reverse();
        v
    }

    fn literal<'a>(&self, tokens: impl Iterator<Item = &'a Token>) -> Vec<u8> {
        tokens
            .map_while(|t| match *t {
                Token::Byte(b) if self.nocase => Some(lower(b)),
                Token::Byte(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// [`Glob::matches`], adding the number of comparison steps to `steps`.
    pub(crate) fn matches_counted(&self, subject: &[u8], steps: &mut usize) -> bool {
        self.matches_within(subject, steps, usize::MAX)
            .unwrap_or(false)
    }

    /// [`Glob::matches_counted`], giving up (`None`) once `steps` would
    /// pass `limit`.
    pub(crate) fn matches_within(
        &self,
        subject: &[u8],
        steps: &mut usize,
        limit: usize,
    ) -> Option<bool> {
        if subject.is_empty() {
            return Some(self.source.is_empty());
        }
        let t = &self.tokens;
        let (mut ti, mut si) = (0usize, 0usize);
        // The last star seen, and the subject position its match ends at.
        let mut star: Option<(usize, usize)> = None;
        while si < subject.len() {
            if *steps >= limit {
                return None;
            }
            *steps += 1;
            if ti < t.len() && t[ti] == Token::Star {
                star = Some((ti, si));
                ti += 1;
            } else if ti < t.len() && self.one(&t[ti], subject[si]) {
                ti += 1;
                si += 1;
            } else if let Some((sti, ssi)) = star {
                ti = sti + 1;
                si = ssi + 1;
                star = Some((sti, ssi + 1));
            } else {
                return Some(false);
            }
        }
        Some(t[ti..].iter().all(|t| *t == Token::Star))
    }
}

/// Parses a class starting after `[`; returns the set and the index of its
/// last byte (`]`, or the pattern's last byte when unterminated).
fn class(p: &[u8], mut i: usize, nocase: bool) -> ([u64; 4], usize) {
    let not = p.get(i) == Some(&b'^');
    if not {
        i += 1;
    }
    // Each item decides membership for a subject byte as Redis does.
    let mut items: Vec<(u8, Option<u8>, bool)> = Vec::new(); // (lo, hi for ranges, exact)
    let end;
    loop {
        if i >= p.len() {
            end = p.len().saturating_sub(1);
            break;
        }
        let rem = p.len() - i;
        if p[i] == b'\\' && rem >= 2 {
            i += 1;
            items.push((p[i], None, true));
        } else if p[i] == b']' {
            end = i;
            break;
        } else if rem >= 3 && p[i + 1] == b'-' {
            items.push((p[i], Some(p[i + 2]), false));
            i += 2;
        } else {
            items.push((p[i], None, false));
        }
        i += 1;
    }
    let mut set = [0u64; 4];
    let mut add = |c: u8| set[(c >> 6) as usize] |= 1 << (c & 63);
    for &(lo, hi, exact) in &items {
        match hi {
            None if exact || !nocase => add(lo),
            None => {
                add(lo.to_ascii_lowercase());
                add(lo.to_ascii_uppercase());
            }
            Some(hi) => {
                // Redis compares C chars (signed on x86) and lowers after ordering.
                let (mut a, mut b) = (lo as i8 as i32, hi as i8 as i32);
                if a > b {
                    std::mem::swap(&mut a, &mut b);
                }
                let l = |v: i32| {
                    if nocase && (65..=90).contains(&v) {
                        v + 32
                    } else {
                        v
                    }
                };
                let (a, b) = (l(a), l(b));
                // A subject byte matches when its (lowered, under nocase) value is in range.
                for v in a..=b {
                    let c = v as i8 as u8;
                    if !(nocase && c.is_ascii_uppercase()) {
                        add(c);
                    }
                    if nocase && c.is_ascii_lowercase() {
                        add(c.to_ascii_uppercase());
                    }
                }
            }
        }
    }
    if not {
        set = set.map(|w| !w);
    }
    (set, end)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A direct transcription of Redis 7's recursive `stringmatchlen`, as the oracle.
    pub(crate) fn redis_match(p: &[u8], s: &[u8], nocase: bool) -> bool {
        fn at(p: &[u8], i: usize) -> u8 {
            p.get(i).copied().unwrap_or(0)
        }
        fn go(
            p: &[u8],
            mut pi: usize,
            s: &[u8],
            mut si: usize,
            nocase: bool,
            skip: &mut bool,
        ) -> bool {
            let low = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
            while pi < p.len() && si < s.len() {
                match p[pi] {
                    b'*' => {
                        while pi < p.len() && at(p, pi + 1) == b'*' {
                            pi += 1;
                        }
                        if p.len() - pi == 1 {
                            return true;
                        }
                        while si < s.len() {
                            if go(p, pi + 1, s, si, nocase, skip) {
                                return true;
                            }
                            if *skip {
                                return false;
                            }
                            si += 1;
                        }
                        *skip = true;
                        return false;
                    }
                    b'?' => si += 1,
                    b'[' => {
                        pi += 1;
                        let not = at(p, pi) == b'^';
                        if not {
                            pi += 1;
                        }
                        let mut hit = false;
                        loop {
                            let rem = p.len().saturating_sub(pi);
                            if at(p, pi) == b'\\' && rem >= 2 {
                                pi += 1;
                                if p[pi] == s[si] {
                                    hit = true;
                                }
                            } else if at(p, pi) == b']' && rem > 0 {
                                break;
                            } else if rem == 0 {
                                pi -= 1;
                                break;
                            } else if rem >= 3 && p[pi + 1] == b'-' {
                                let (mut a, mut b, mut c) = (
                                    p[pi] as i8 as i32,
                                    p[pi + 2] as i8 as i32,
                                    s[si] as i8 as i32,
                                );
                                if a > b {
                                    std::mem::swap(&mut a, &mut b);
                                }
                                if nocase {
                                    let l =
                                        |v: i32| if (65..=90).contains(&v) { v + 32 } else { v };
                                    a = l(a);
                                    b = l(b);
                                    c = l(c);
                                }
                                pi += 2;
                                if c >= a && c <= b {
                                    hit = true;
                                }
                            } else if low(p[pi]) == low(s[si]) {
                                hit = true;
                            }
                            pi += 1;
                        }
                        if not {
                            hit = !hit;
                        }
                        if !hit {
                            return false;
                        }
                        si += 1;
                    }
                    c => {
                        let mut c = c;
                        if c == b'\\' && p.len() - pi >= 2 {
                            pi += 1;
                            c = p[pi];
                        }
                        if low(c) != low(s[si]) {
                            return false;
                        }
                        si += 1;
                    }
                }
                pi += 1;
                if si == s.len() {
                    while at(p, pi) == b'*' && pi < p.len() {
                        pi += 1;
                    }
                    break;
                }
            }
            pi >= p.len() && si == s.len()
        }
        go(p, 0, s, 0, nocase, &mut false)
    }

    #[test]
    fn redis_examples() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"*", b"", false),
            (b"", b"", true),
            (b"*", b"a", true),
            (b"h?llo", b"hello", true),
            (b"h?llo", b"hllo", false),
            (b"h*llo", b"heeeello", true),
            (b"h[ae]llo", b"hallo", true),
            (b"h[^e]llo", b"hello", false),
            (b"h[a-b]llo", b"hbllo", true),
            (b"h[b-a]llo", b"hbllo", true),
            (b"h\\*llo", b"h*llo", true),
            (b"h\\*llo", b"hxllo", false),
            (b"a[bc", b"ac", true),
            (b"a[]", b"a]", false),
            (b"a*?", b"a", false),
            (b"a*", b"a", true),
            (b"a\\", b"a\\", true),
            (b"[\\]]", b"]", true),
        ];
        for &(p, s, want) in cases {
            assert_eq!(Glob::new(p, false).matches(s), want, "{p:?} {s:?}");
            assert_eq!(redis_match(p, s, false), want, "oracle {p:?} {s:?}");
        }
        assert!(Glob::new(b"H[A-C]Y", true).matches(b"hby"));
        // Found by proptest in CI: under nocase the subject is lowered before the
        // range test, so `B` (lowered to 98) is outside `*`..`[` (42..=91).
        for (p, sub, want) in [
            (&b"[*-["[..], &b"B"[..], false),
            (b"[*-[", b"b", false),
            (b"[*-[", b"0", true),
            (b"[*-[", b"[", true),
        ] {
            assert_eq!(Glob::new(p, true).matches(sub), want, "{p:?} {sub:?}");
            assert_eq!(redis_match(p, sub, true), want, "oracle {p:?} {sub:?}");
        }
        assert!(!Glob::new(b"[\\A]", true).matches(b"a"));
    }

    #[test]
    fn adversarial_pattern_is_linear() {
        // Exponential for a naive backtracking matcher: 30 stars, no match.
        let pattern = "a*".repeat(30) + "b";
        let subject = "a".repeat(10_000);
        let g = Glob::new(pattern.as_bytes(), false);
        // Counted work, not time: the matcher makes at most (|p|+1) x (|s|+1) steps,
        // where a backtracking matcher makes about C(10000, 30).
        let mut steps = 0;
        assert!(!g.matches_counted(subject.as_bytes(), &mut steps));
        assert!(
            steps <= (pattern.len() + 1) * (subject.len() + 1),
            "{steps} steps"
        );
        assert!(g.matches((subject + "b").as_bytes()));
    }

    #[test]
    fn every_range_class_agrees_with_redis_on_every_byte() {
        // Bytes around the case-folding and signed-char boundaries.
        let ends = [
            0u8, b'*', b'0', b'@', b'A', b'B', b'Z', b'[', b'`', b'a', b'b', b'z', b'{', 0x7f,
            0x80, 0xc3, 0xff,
        ];
        for &lo in &ends {
            for &hi in &ends {
                for neg in [false, true] {
                    let mut p = vec![b'['];
                    if neg {
                        p.push(b'^');
                    }
                    p.extend([lo, b'-', hi, b']']);
                    for nocase in [false, true] {
                        let g = Glob::new(&p, nocase);
                        for c in 0..=255u8 {
                            assert_eq!(
                                g.matches(&[c]),
                                redis_match(&p, &[c], nocase),
                                "{p:?} {c} nocase={nocase}"
                            );
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn agrees_with_redis(p in proptest::collection::vec(prop_oneof![
                Just(b'*'), Just(b'?'), Just(b'['), Just(b']'), Just(b'^'), Just(b'-'), Just(b'\\'),
                Just(b'a'), Just(b'b'), Just(b'A'), Just(b'z'), Just(0xe9u8)], 0..8),
            s in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'B'), Just(b'-'),
                Just(b']'), Just(b'*'), Just(b'\\'), Just(0xc3u8)], 0..8),
            nocase in any::<bool>()) {
            prop_assert_eq!(Glob::new(&p, nocase).matches(&s), redis_match(&p, &s, nocase));
        }
    }
}

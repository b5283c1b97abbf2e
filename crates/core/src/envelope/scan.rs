//! A strict one-pass JSON scanner: the fast path of [`super::parse`]. It reads an object's
//! members as borrowed slices of the input (each key's text, each value's JSON text) and
//! checks the whole text against the JSON grammar as `serde_json` reads it.
//!
//! It declines (`None`) whatever it does not read exactly as `serde_json` does: text that is
//! not JSON, a key with an escape, nesting deeper than [`MAX_DEPTH`]. The caller then reads
//! the same text with `serde_json`, so a declined text costs a second pass, never a different
//! answer. A text it accepts is one `serde_json` accepts, with the same slices
//! (`tests::the_scanner_reads_as_serde_json_does` holds the two side by side).
//!
//! Owns: the JSON grammar of the fast path. Must not: know any field's meaning.

/// The deepest nesting read here: a deeper text is left to `serde_json` (a second pass, the
/// same answer).
const MAX_DEPTH: usize = 64;

/// The bytes that end a run of a string's plain content: the quote, the backslash and the
/// control characters.
const STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

pub(super) struct Scan<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Scan<'a> {
    pub(super) fn new(text: &'a str) -> Scan<'a> {
        Scan { text, i: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.i).copied()
    }

    fn ws(&mut self) {
        let b = self.bytes();
        while self.i < b.len() && matches!(b[self.i], b' ' | b'\n' | b'\t' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    /// The whole text as one object, with nothing after it but whitespace: `member` is
    /// called with each key and value, in order.
    pub(super) fn whole_object(
        mut self,
        mut member: impl FnMut(&'a str, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.ws();
        self.object(1, &mut member)?;
        self.ws();
        (self.i == self.text.len()).then_some(())
    }

    /// An object from its `{`, to past its `}`.
    fn object(
        &mut self,
        depth: usize,
        member: &mut impl FnMut(&'a str, &'a str) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let start = self.i + 1;
            if self.string()? {
                // An escaped key: `serde_json` unescapes it before matching; left to it.
                return None;
            }
            let key = self.text.get(start..self.i - 1)?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let value = self.value(depth)?;
            member(key, value)?;
            if self.closed(b'}')? {
                return Some(());
            }
        }
    }

    /// After an item of an object or an array: `true` past the `close` that ends it,
    /// `false` past the comma before the next item, `None` for anything else.
    fn closed(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let c = self.peek()?;
        self.i += 1;
        if c == close {
            return Some(true);
        }
        (c == b',').then(|| self.ws())?;
        Some(false)
    }

    /// Any value, from its first byte: its text.
    fn value(&mut self, depth: usize) -> Option<&'a str> {
        let start = self.i;
        match self.peek()? {
            b'{' => self.object(depth + 1, &mut |_, _| Some(()))?,
            b'[' => self.array(depth + 1)?,
            b'"' => {
                self.string()?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            _ => self.number()?,
        }
        self.text.get(start..self.i)
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.value(depth)?;
            if self.closed(b']')? {
                return Some(());
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.bytes().get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A string from its opening quote to past its closing one; whether it has an escape.
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let b = self.bytes();
        let mut escaped = false;
        loop {
            // A run of plain bytes, one table lookup each.
            while self.i < b.len() && !STOP[usize::from(b[self.i])] {
                self.i += 1;
            }
            let c = *b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match *b.get(self.i)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = b.get(self.i + 1..self.i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                // A control character, which JSON does not allow in a string.
                _ => return None,
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => {
                self.i += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

//! The transfer encoding of a message's text parts, byte for byte what lettre's `Body::new`
//! makes of them (the same choice of encoding, CRLF line ends, quoted-printable lines of at most
//! 76 characters), in one linear pass each. lettre inserts each missing CR into the string in
//! turn and its quoted-printable encoder pushes a character at a time: together they cost more
//! than rendering the message did.

use lettre::message::{Body, header::ContentTransferEncoding};

/// The longest encoded line, without its CRLF (RFC 2045, 6.7).
const LIMIT: usize = 76;

/// `text` as the body of a MIME part.
pub fn encode(text: String) -> Body {
    match choose(text.as_bytes()) {
        ContentTransferEncoding::SevenBit => {
            Body::dangerous_pre_encoded(crlf(&text).into_bytes(), ContentTransferEncoding::SevenBit)
        }
        ContentTransferEncoding::QuotedPrintable => {
            Body::dangerous_pre_encoded(quoted_printable(text.as_bytes()), ContentTransferEncoding::QuotedPrintable)
        }
        // Base64 is for text mostly outside ASCII; lettre encodes that well enough.
        _ => Body::new(text),
    }
}

/// lettre's choice for a string when the relay is not known to take 8-bit lines: 7bit when
/// it is ASCII in short lines, else quoted-printable unless more than a third of it would need
/// escaping. Line lengths are counted the way lettre counts them (from one LF to the next).
fn choose(text: &[u8]) -> ContentTransferEncoding {
    let mut last = 0;
    let line_too_long = memchr::memchr_iter(b'\n', text).any(|at| {
        let longer = at - last >= LIMIT;
        last = at;
        longer
    }) || text.len() - last >= LIMIT;
    if text.is_ascii() && !line_too_long {
        return ContentTransferEncoding::SevenBit;
    }
    let escaped = text.iter().filter(|&&byte| !matches!(byte, b'\t' | b' '..=b'~')).count();
    if escaped <= text.len() / 3 { ContentTransferEncoding::QuotedPrintable } else { ContentTransferEncoding::Base64 }
}

/// Every LF not already after a CR gets one.
fn crlf(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    let mut from = 0;
    for at in memchr::memchr_iter(b'\n', bytes) {
        if at == 0 || bytes[at - 1] != b'\r' {
            out.push_str(&text[from..at]);
            out.push('\r');
            from = at;
        }
    }
    out.push_str(&text[from..]);
    out
}

/// Bytes that stand for themselves in quoted-printable text, by value.
const PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut byte = b' ';
    while byte <= b'~' {
        plain[byte as usize] = byte != b'=';
        byte += 1;
    }
    plain[b'\t' as usize] = true;
    plain
};

fn is_plain(byte: u8) -> bool {
    PLAIN[usize::from(byte)]
}

/// Quoted-printable text (CRLF pairs and lone LFs are line breaks, as if `crlf` had run first)
/// as the `quoted_printable` crate that lettre uses writes it, including where it breaks lines:
/// plain characters are copied while the line has room for them and a soft break, and an escape
/// that does not fit moves to the next line together with whatever was appended just before it.
/// A byte at a time: in HTML an `=` (escaped) comes every few characters, so runs of plain
/// characters are too short for anything cleverer to pay.
fn quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = QuotedPrintable { out: Vec::with_capacity(input.len() + input.len() / 8), on_line: 0, backup: 0 };
    let mut was_cr = false;
    for &byte in input {
        // A CR is a line break with the LF after it, and escaped without one.
        if std::mem::take(&mut was_cr) && byte != b'\n' {
            out.append(b"=0D");
        }
        match byte {
            b'\r' => was_cr = true,
            b'\n' => {
                out.escape_trailing_space();
                out.out.extend_from_slice(b"\r\n");
                out.on_line = 0;
            }
            _ if out.on_line + 3 <= LIMIT && is_plain(byte) => {
                out.out.push(byte);
                out.on_line += 1;
                out.backup = out.out.len();
            }
            _ => out.escape(byte),
        }
    }
    if was_cr {
        out.append(b"=0D");
    } else {
        out.escape_trailing_space();
    }
    out.out
}

struct QuotedPrintable {
    out: Vec<u8>,
    /// Characters on the current line.
    on_line: usize,
    /// Where the last thing appended starts.
    backup: usize,
}

impl QuotedPrintable {
    fn append(&mut self, piece: &[u8]) {
        if self.on_line + piece.len() > LIMIT {
            if self.on_line == LIMIT {
                // No room even for the soft break: it goes before the last thing appended.
                self.on_line = self.out.len() - self.backup;
                self.out.splice(self.backup..self.backup, *b"=\r\n");
            } else {
                self.out.extend_from_slice(b"=\r\n");
                self.on_line = 0;
            }
        }
        self.out.extend_from_slice(piece);
        self.on_line += piece.len();
        self.backup = self.out.len() - piece.len();
    }

    fn escape(&mut self, byte: u8) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        if is_plain(byte) {
            self.append(&[byte]);
        } else {
            self.append(&[b'=', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0x0F)]]);
        }
    }

    /// A space or tab may not end a line (RFC 2045, 6.7 (3)).
    fn escape_trailing_space(&mut self) {
        let escaped: &[u8] = match self.out.last() {
            Some(b' ') => b"=20",
            Some(b'\t') => b"=09",
            _ => return,
        };
        self.on_line -= 1;
        self.out.pop();
        self.append(escaped);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lettres(text: &str) -> (ContentTransferEncoding, Vec<u8>) {
        let body = Body::new(text.to_owned());
        (body.encoding(), body.into_vec())
    }

    fn ours(text: &str) -> (ContentTransferEncoding, Vec<u8>) {
        let body = encode(text.to_owned());
        (body.encoding(), body.into_vec())
    }

    #[test]
    fn short_ascii_stays_seven_bit_with_crlf_line_ends() {
        assert_eq!(ours("Hello\nworld\r\n"), (ContentTransferEncoding::SevenBit, b"Hello\r\nworld\r\n".to_vec()));
    }

    #[test]
    fn long_lines_and_other_characters_are_quoted_printable_like_lettre() {
        for text in [
            "Grüße, Zoë = ✓ \n\tdone \t\nx",
            &format!("{} \n{}=\n", "a".repeat(75), "b".repeat(200)),
            &format!("{}é{}", "c".repeat(74), "d".repeat(3)),
            "\n\r\r\n .\r",
        ] {
            assert_eq!(ours(text), lettres(text), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn every_text_is_encoded_as_lettre_encodes_it(
            text in "((a|b){60,80}|[ \\t\\r\\n=é✓.x]){0,60}"
        ) {
            prop_assert_eq!(ours(&text), lettres(&text));
        }
    }
}
